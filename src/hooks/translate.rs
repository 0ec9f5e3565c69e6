/*!
The statement tree to Rhai source text: one Rhai function per section (`on_B`, `on_S`, `on_F`, `on_T`,
`on_R`, `on_J`, ...) and per subroutine (`sub_<name>`), plus a table from each generated line to the
script line it came from, so errors name the user's line.

Every Tasmota oddity is made explicit here rather than hidden in an interpreter (spec section 4.2):
left-to-right evaluation by bracketing each step, single-precision floats by rounding every result
with `r32()`, non-short-circuit `&`/`|` for condition chains, per-case `switch`, at-least-once `for`,
string capacity with `cap()`. Types are fixed by `>D`, so every type decision (string or number,
which comparison) is made here, once.

Variables live in the map bound as `this` (`this.x`), so sections and subroutines share them as
Tasmota's globals; arrays, timers and the `chg[]` shadows are kept by the host (`src/hooks/host.rs`).
*/

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::ast::*;
use super::parse::parse_section;
use crate::script::model::{Declaration, LineNo, Literal, Script, SectionKind, VarKind};
use crate::script::{Diagnostic, Severity};

/// The generated Rhai and what the host needs to run it.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    /// The Rhai source: one function per section and subroutine.
    pub rhai: String,
    /// Script line of each generated line (index 0 = Rhai line 1); 0 where a line has no source.
    pub line_map: Vec<LineNo>,
    /// Every problem found, at the script's line and column (column within the trimmed line).
    pub diagnostics: Vec<Diagnostic>,
    /// The section functions defined (`on_B`, `on_S`, ...).
    pub functions: BTreeSet<String>,
    /// Variables read through `chg[]`: the host keeps a shadow copy of each.
    pub chg_vars: BTreeSet<String>,
    /// Each translated section's marker line and label (`>S`, `#readmeter`), in file order.
    pub sections: Vec<(LineNo, String)>,
}

impl Translation {
    /// The label of the section holding a script line (`>S`, `#readmeter`).
    pub fn section_at(&self, line: LineNo) -> Option<&str> {
        self.sections
            .iter()
            .filter(|(start, _)| *start <= line)
            .max_by_key(|(start, _)| *start)
            .map(|(_, label)| label.as_str())
    }

    /// The script line a generated Rhai line (1-based) came from.
    pub fn script_line(&self, rhai_line: usize) -> Option<LineNo> {
        let mut i = rhai_line.checked_sub(1)?;
        // A line without its own source (a closing brace) belongs to the statement above it.
        loop {
            match self.line_map.get(i) {
                Some(&l) if l != 0 => return Some(l),
                Some(_) if i > 0 => i -= 1,
                _ => return None,
            }
        }
    }
}

/// The type of a declared variable, fixed by its `>D` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VarType {
    Number,
    Text,
    Array,
}

/// The type of an expression: decided by its first operand, as in Tasmota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Num,
    Str,
}

/// Why a statement cannot be emitted: the diagnostic is already recorded; the statement is skipped.
struct Skip;

/// Built-in numbers (`upsecs`) and the host function that reads each.
const NUMBER_BUILTINS: &[&str] = &[
    "upsecs", "uptime", "time", "hours", "mins", "secs", "day", "wday", "month", "year", "epoch",
    "tper", "smlj",
];

/// Functions and commands that only make sense on the ESP: warned about once, no effect, read as 0.
const ESP_ONLY_FUNCTIONS: &[&str] = &[
    "spin", "spinm", "pwm", "ws2812", "beep", "adc", "udp", "mdns", "so", "smw", "ct", "sc", "gc",
    "won", "http", "pin", "wm", "pc", "pwr", "wific", "mqttc", "wifis", "bu", "nm", "sl", "ck",
    "pd", "tx", "wcs", "acp", "smld", "gtopic",
];

/// Commands that mean something off the ESP (the rest are warned about and ignored).
const KNOWN_COMMANDS: &[&str] = &["sensor53", "publish", "teleperiod", "backlog", "backlog0"];

/// Translate every runnable section of a compiled script.
pub fn translate(script: &Script) -> Translation {
    let mut t = Translator::new(script);
    t.run(script);
    t.finish()
}

struct Translator<'s> {
    vars: BTreeMap<String, (VarType, &'s Declaration)>,
    capacity: usize,
    subs: BTreeMap<String, Vec<String>>,
    out: String,
    line_map: Vec<LineNo>,
    diagnostics: Vec<Diagnostic>,
    functions: BTreeSet<String>,
    chg_vars: BTreeSet<String>,
    sections: Vec<(LineNo, String)>,
    indent: usize,
    /// Depth of `for` loops around the statement being emitted (`break` leaves a loop inside one).
    loops: usize,
    /// Nesting of `switch` and `for` temporaries, for unique local names.
    locals: usize,
    /// The section being translated (JSON paths are only in scope in `>T`/`>E`).
    section: Option<SectionKind>,
    /// Translating a condition: an unknown name reads 0 there instead of skipping the statement.
    in_condition: bool,
    /// The source line of the statement being emitted, for diagnostics.
    source: String,
}

impl<'s> Translator<'s> {
    fn new(script: &'s Script) -> Self {
        let mut vars = BTreeMap::new();
        for d in &script.declarations {
            let ty = if d
                .kinds
                .iter()
                .any(|k| matches!(k, VarKind::Median | VarKind::MovingAverage))
            {
                VarType::Array
            } else {
                match d.initial {
                    Literal::Text(_) => VarType::Text,
                    Literal::Number(_) => VarType::Number,
                }
            };
            vars.insert(d.name.clone(), (ty, d));
        }
        let mut subs = BTreeMap::new();
        for s in &script.sections {
            if let SectionKind::Subroutine { name, params } = &s.kind {
                // The first of two equal names is the one Tasmota calls.
                subs.entry(name.clone()).or_insert_with(|| params.clone());
            }
        }
        Translator {
            vars,
            capacity: script.string_capacity as usize,
            subs,
            out: String::new(),
            line_map: Vec::new(),
            diagnostics: Vec::new(),
            functions: BTreeSet::new(),
            chg_vars: BTreeSet::new(),
            sections: Vec::new(),
            indent: 0,
            loops: 0,
            locals: 0,
            section: None,
            in_condition: false,
            source: String::new(),
        }
    }

    fn finish(self) -> Translation {
        Translation {
            rhai: self.out,
            line_map: self.line_map,
            diagnostics: self.diagnostics,
            functions: self.functions,
            chg_vars: self.chg_vars,
            sections: self.sections,
        }
    }

    fn diag(&mut self, severity: Severity, pos: Pos, message: String) {
        self.diagnostics.push(Diagnostic {
            severity,
            line: pos.line,
            col: pos.col,
            message,
            source_line: self.source.clone(),
        });
    }

    fn warn(&mut self, pos: Pos, message: String) {
        self.diag(Severity::Warning, pos, message);
    }

    fn error(&mut self, pos: Pos, message: String) -> Skip {
        self.diag(Severity::Error, pos, message);
        Skip
    }

    /// One generated line, from script line `line` (0: none).
    fn emit(&mut self, line: LineNo, text: &str) {
        for _ in 0..self.indent {
            self.out.push_str("    ");
        }
        self.out.push_str(text);
        if line != 0 {
            let _ = write!(self.out, " // L{line}");
        }
        self.out.push('\n');
        self.line_map.push(line);
    }

    fn run(&mut self, script: &'s Script) {
        self.emit(
            0,
            "// Generated by sml from the script's sections; `// L<n>` is the script line.",
        );
        for section in &script.sections {
            let name = match &section.kind {
                SectionKind::Boot => "on_B".to_string(),
                SectionKind::BootSecond => "on_BS".to_string(),
                SectionKind::EverySecond => "on_S".to_string(),
                SectionKind::Every100ms => "on_F".to_string(),
                SectionKind::Restart => "on_R".to_string(),
                SectionKind::Teleperiod => "on_T".to_string(),
                SectionKind::Event => "on_E".to_string(),
                SectionKind::Json => {
                    self.json_section(section);
                    continue;
                }
                SectionKind::Subroutine { name, .. } => {
                    let f = sub_fn(name);
                    if self.functions.contains(&f) {
                        self.source = format!("#{name}");
                        self.warn(
                            Pos {
                                line: section.line,
                                col: 1,
                            },
                            format!(
                                "a second subroutine `#{name}`: Tasmota calls the first; ignored"
                            ),
                        );
                        continue;
                    }
                    f
                }
                SectionKind::Web | SectionKind::WebStatus => {
                    if !section.lines.is_empty() {
                        self.source.clear();
                        self.warn(
                            Pos {
                                line: section.line,
                                col: 1,
                            },
                            "web page sections (`>W`) are not shown off the ESP; ignored".into(),
                        );
                    }
                    continue;
                }
                SectionKind::Global => continue,
                SectionKind::Other(marker) => {
                    self.source = marker.clone();
                    if !section.lines.is_empty() {
                        self.warn(
                            Pos {
                                line: section.line,
                                col: 1,
                            },
                            format!("`{marker}` is not a section sml runs (an ESP-only or commented-out section); its lines are ignored"),
                        );
                    }
                    continue;
                }
            };
            let label = match &section.kind {
                SectionKind::Subroutine { name, .. } => format!("#{name}"),
                _ => format!(">{}", &name[3..]),
            };
            self.sections.push((section.line, label));
            let (stmts, mut diags) = parse_section(&section.lines);
            self.diagnostics.append(&mut diags);
            self.section = Some(section.kind.clone());
            self.functions.insert(name.clone());
            self.emit(0, "");
            self.emit(section.line, &format!("fn {name}() {{"));
            self.indent += 1;
            self.block(&stmts, section);
            self.indent -= 1;
            self.emit(0, "}");
        }
    }

    /// `>J`: every line is a `%var%` template appended to the sensor JSON; `on_J` returns the text.
    fn json_section(&mut self, section: &crate::script::model::Section) {
        self.section = Some(SectionKind::Json);
        self.functions.insert("on_J".into());
        self.emit(0, "");
        self.sections.push((section.line, ">J".into()));
        self.emit(section.line, "fn on_J() {");
        self.indent += 1;
        self.emit(0, "let j = \"\";");
        for l in &section.lines {
            self.source = l.text.clone();
            let template = match super::parse::parse_template(&l.text, l.line) {
                Some(t) => t,
                None => continue,
            };
            if let Ok(text) = self.template(&template) {
                self.emit(l.line, &format!("j += {text};"));
            }
        }
        self.emit(0, "j");
        self.indent -= 1;
        self.emit(0, "}");
    }

    fn block(&mut self, stmts: &[Statement], section: &crate::script::model::Section) {
        for s in stmts {
            self.source = section
                .lines
                .iter()
                .find(|l| l.line == s.pos.line)
                .map(|l| l.text.clone())
                .unwrap_or_default();
            if self.statement(s, section).is_err() {
                self.emit(s.pos.line, "// skipped: see `sml check`");
            }
        }
    }

    fn statement(
        &mut self,
        s: &Statement,
        section: &crate::script::model::Section,
    ) -> Result<(), Skip> {
        let line = s.pos.line;
        match &s.kind {
            StmtKind::Assign { target, op, value } => self.assign(s.pos, target, *op, value)?,
            StmtKind::If {
                cond,
                then,
                otherwise,
            } => {
                let c = self.cond_chain(cond)?;
                self.emit(line, &format!("if {c} {{"));
                self.indent += 1;
                self.block(then, section);
                self.indent -= 1;
                if !otherwise.is_empty() {
                    self.emit(0, "} else {");
                    self.indent += 1;
                    self.block(otherwise, section);
                    self.indent -= 1;
                }
                self.emit(0, "}");
            }
            StmtKind::Switch { value, cases } => {
                let (v, ty) = self.expr(value)?;
                self.locals += 1;
                let sw = format!("sw{}", self.locals);
                self.emit(line, &format!("{{ let {sw} = {v};"));
                self.indent += 1;
                for (pos, case, body) in cases {
                    let (c, cty) = match self.expr(case) {
                        Ok(c) => c,
                        Err(Skip) => continue,
                    };
                    let test = if cty == ty {
                        format!("{sw} == {c}")
                    } else {
                        self.warn(
                            *pos,
                            "`case` compares a string with a number: never true in Tasmota".into(),
                        );
                        "false".into()
                    };
                    self.emit(pos.line, &format!("if {test} {{"));
                    self.indent += 1;
                    self.block(body, section);
                    self.indent -= 1;
                    self.emit(0, "}");
                }
                self.indent -= 1;
                self.emit(0, "}");
                self.locals -= 1;
            }
            StmtKind::For {
                var,
                from,
                to,
                step,
                body,
            } => {
                let target = match self.vars.get(var) {
                    Some((VarType::Number, _)) => var_ref(var),
                    _ => {
                        self.warn(
                            s.pos,
                            format!("the loop variable `{var}` is not a number declared in `>D`: the loop is skipped"),
                        );
                        return Err(Skip);
                    }
                };
                let from = self.num_expr(from)?;
                let to = self.num_expr(to)?;
                let step = self.num_expr(step)?;
                self.locals += 1;
                let n = self.locals;
                self.emit(
                    line,
                    &format!(
                        "{target} = {from}; {{ let to{n} = {to}; let step{n} = {step}; loop {{"
                    ),
                );
                self.indent += 1;
                // Where an endless loop was when the operation limit stopped it.
                self.emit(line, &format!("at({line}.0);"));
                self.loops += 1;
                self.block(body, section);
                self.loops -= 1;
                self.emit(0, &format!("{target} = r32({target} + step{n});"));
                self.emit(
                    0,
                    &format!("if (step{n} >= 0.0 && {target} > to{n}) || (step{n} < 0.0 && {target} < to{n}) {{ break; }}"),
                );
                self.indent -= 1;
                self.emit(0, "} }");
                self.locals -= 1;
            }
            StmtKind::Break => {
                if self.loops > 0 {
                    self.emit(line, "break;");
                } else {
                    self.emit(line, "return;");
                }
            }
            StmtKind::Return(e) => match e {
                Some(e) => {
                    let (v, _) = self.expr(e)?;
                    self.emit(line, &format!("return {v};"));
                }
                None => self.emit(line, "return;"),
            },
            StmtKind::Command { kind, text } => {
                self.check_command(s.pos, text);
                let t = self.template(text)?;
                let f = match kind {
                    CommandKind::Silent => "cmd_silent",
                    CommandKind::Logged => "cmd",
                    CommandKind::Recursive => "cmd_recursive",
                };
                self.emit(line, &format!("{f}({t});"));
            }
            StmtKind::Print(t) => {
                let t = self.template(t)?;
                self.emit(line, &format!("print({t});"));
            }
            StmtKind::CallSub { name, args } => {
                let call = self.sub_call(s.pos, name, args)?;
                self.emit(line, &format!("{call};"));
            }
            StmtKind::Call(e) => {
                let (v, _) = self.expr(e)?;
                if v != "0.0" {
                    self.emit(line, &format!("{v};"));
                }
            }
            StmtKind::Svars => self.emit(line, "svars();"),
            StmtKind::Delay(e) => {
                let v = self.num_expr(e)?;
                self.emit(line, &format!("delay({v});"));
            }
            StmtKind::Dp(d) => self.emit(line, &format!("set_dp({}.0);", d)),
            StmtKind::Web => {
                self.warn(
                    s.pos,
                    "`wcs` sends web page content, which only the ESP's web page shows; ignored"
                        .into(),
                );
            }
            StmtKind::Ignored { word } => {
                let line_text = self.source.trim().to_string();
                self.warn(
                    s.pos,
                    format!("`{line_text}` has no effect in Tasmota (`{word}` reads as an unknown variable); did you mean `->{line_text}`?"),
                );
            }
        }
        Ok(())
    }

    fn assign(
        &mut self,
        pos: Pos,
        target: &Target,
        op: AssignOp,
        value: &Expr,
    ) -> Result<(), Skip> {
        let line = pos.line;
        // `v=PREFIX#key` in `>T`: absent key keeps the old value.
        if let (Target::Var(name), AssignOp::Set, Value::JsonPath(path), true) = (
            target,
            op,
            &value.first.value,
            value.rest.is_empty() && !value.first.negate,
        ) {
            if !self.json_in_scope() {
                return Err(self.error(
                    pos,
                    format!("`{path}` reads the JSON of `>T`/`>E`; there is none in this section"),
                ));
            }
            let Some((ty, _)) = self.vars.get(name).copied() else {
                return Err(self.unknown_target(pos, name));
            };
            let conv = match ty {
                VarType::Text => format!("cap(str_of(j), {}.0)", self.capacity),
                _ => "num_of(j)".to_string(),
            };
            let dest = var_ref(name);
            self.emit(
                line,
                &format!(
                    "{{ let j = tele({}); if j != () {{ {dest} = {conv}; }} }}",
                    rhai_str(path)
                ),
            );
            return Ok(());
        }
        match target {
            Target::Var(name) if name == "smlj" || name == "tper" => {
                let v = self.num_expr(value)?;
                let v = if op == AssignOp::Set {
                    v
                } else {
                    arith(op_of(op), &format!("{name}()"), &v)
                };
                self.emit(line, &format!("set_{name}({v});"));
            }
            Target::Var(name) => {
                let Some((ty, _)) = self.vars.get(name).copied() else {
                    if NUMBER_BUILTINS.contains(&name.as_str()) {
                        self.warn(pos, format!("`{name}` is a built-in that a script cannot set; Tasmota ignores this line"));
                        return Err(Skip);
                    }
                    return Err(self.unknown_target(pos, name));
                };
                let dest = var_ref(name);
                match ty {
                    VarType::Number => {
                        let v = self.num_expr(value)?;
                        let v = if op == AssignOp::Set {
                            v
                        } else {
                            arith(op_of(op), &dest, &v)
                        };
                        self.emit(line, &format!("{dest} = {v};"));
                    }
                    VarType::Text => {
                        let cap = self.capacity;
                        let v = self.str_expr(value)?;
                        let v = match op {
                            AssignOp::Set => v,
                            AssignOp::Add => format!("{dest} + {v}"),
                            _ => {
                                return Err(self.error(
                                    pos,
                                    format!("`{name}` is a string: only `=` and `+=` apply to it"),
                                ))
                            }
                        };
                        // A string can outgrow the sandbox before `cap()` cuts it; Rhai gives that error no
                        // position, so `at()` records the line (as for loops and calls).
                        self.emit(line, &format!("at({line}.0); {dest} = cap({v}, {cap}.0);"));
                    }
                    VarType::Array => {
                        let v = self.num_expr(value)?;
                        let q = rhai_str(name);
                        let v = if op == AssignOp::Set {
                            v
                        } else {
                            arith(op_of(op), &format!("arr_value({q})"), &v)
                        };
                        self.emit(line, &format!("arr_push({q}, {v});"));
                    }
                }
            }
            Target::Element { name, index } => {
                match self.vars.get(name).copied() {
                    Some((VarType::Array, _)) => {}
                    Some(_) => {
                        return Err(self.error(
                            pos,
                            format!("`{name}` is not an array (`M:{name}=0 n` in `>D`)"),
                        ))
                    }
                    None => return Err(self.unknown_target(pos, name)),
                }
                let i = self.num_expr(index)?;
                let v = self.num_expr(value)?;
                let q = rhai_str(name);
                let v = if op == AssignOp::Set {
                    v
                } else {
                    arith(op_of(op), &format!("arr_get({q}, {i})"), &v)
                };
                self.emit(line, &format!("arr_set({q}, {i}, {v});"));
            }
        }
        Ok(())
    }

    fn unknown_target(&mut self, pos: Pos, name: &str) -> Skip {
        self.warn(
            pos,
            format!("`{name}` is not declared in `>D`: Tasmota skips this assignment"),
        );
        Skip
    }

    fn json_in_scope(&self) -> bool {
        matches!(
            self.section,
            Some(SectionKind::Teleperiod) | Some(SectionKind::Event)
        )
    }

    fn sub_call(&mut self, pos: Pos, name: &str, args: &[Expr]) -> Result<String, Skip> {
        let Some(params) = self.subs.get(name).cloned() else {
            return Err(self.error(pos, format!("there is no subroutine `#{name}`")));
        };
        let mut parts = Vec::new();
        for (p, a) in params.iter().zip(args) {
            match self.vars.get(p).copied() {
                Some((VarType::Text, _)) => {
                    let v = self.str_expr(a)?;
                    parts.push(format!("{} = cap({v}, {}.0);", var_ref(p), self.capacity));
                }
                Some((VarType::Number, _)) => {
                    let v = self.num_expr(a)?;
                    parts.push(format!("{} = {v};", var_ref(p)));
                }
                _ => self.warn(
                    pos,
                    format!("the parameter `{p}` of `#{name}` is not declared in `>D`: Tasmota passes arguments through global variables, so this one is lost"),
                ),
            }
        }
        if args.len() != params.len() {
            self.warn(
                pos,
                format!(
                    "`#{name}` takes {} argument(s), {} given",
                    params.len(),
                    args.len()
                ),
            );
        }
        // `at()` records the calling line: a runaway recursion is reported there.
        parts.push(format!("at({}.0);", pos.line));
        Ok(format!("{{ {} this.{}() }}", parts.join(" "), sub_fn(name)))
    }

    /// A condition chain, in source order without precedence; `&`/`|` evaluate both sides (Tasmota
    /// evaluates every condition, which matters for `chg[]`).
    fn cond_chain(&mut self, list: &[(Logic, Cond)]) -> Result<String, Skip> {
        let mut acc = String::new();
        for (logic, c) in list {
            let c = self.cond(c)?;
            acc = match logic {
                Logic::First => c,
                Logic::And => format!("({acc} & {c})"),
                Logic::Or => format!("({acc} | {c})"),
            };
        }
        Ok(acc)
    }

    fn cond(&mut self, c: &Cond) -> Result<String, Skip> {
        match c {
            Cond::Group(list) => self.cond_chain(list),
            Cond::Bare(e) => {
                self.warn(
                    e.pos,
                    "a condition without a comparison (`==`, `<`, ...) is always false in Tasmota"
                        .into(),
                );
                Ok("false".into())
            }
            Cond::Compare { left, op, right } => {
                self.in_condition = true;
                let sides = self.expr(left).and_then(|l| Ok((l, self.expr(right)?)));
                self.in_condition = false;
                let ((l, lt), (r, rt)) = sides?;
                let o = match op {
                    CmpOp::Eq => "==",
                    CmpOp::Ne => "!=",
                    CmpOp::Ge => ">=",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::Lt => "<",
                };
                match (lt, rt) {
                    (Ty::Num, Ty::Num) => Ok(format!("({l} {o} {r})")),
                    (Ty::Str, Ty::Str) if matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                        Ok(format!("({l} {o} {r})"))
                    }
                    (Ty::Str, Ty::Str) => {
                        self.warn(left.pos, format!("strings compare only with `==` and `!=`: `{o}` is always false in Tasmota"));
                        Ok("false".into())
                    }
                    _ => {
                        self.warn(left.pos, "comparing a string with a number is always false in Tasmota (convert with `s()`)".into());
                        Ok("false".into())
                    }
                }
            }
        }
    }

    fn num_expr(&mut self, e: &Expr) -> Result<String, Skip> {
        let (v, ty) = self.expr(e)?;
        Ok(match ty {
            Ty::Num => v,
            Ty::Str => format!("num_of({v})"),
        })
    }

    fn str_expr(&mut self, e: &Expr) -> Result<String, Skip> {
        // A subroutine may return a string: take its value as it is.
        if let (Value::SubCall { name, args }, true) = (&e.first.value, e.rest.is_empty()) {
            return Ok(format!("str_of({})", self.sub_call(e.pos, name, args)?));
        }
        let (v, ty) = self.expr(e)?;
        Ok(match ty {
            Ty::Str => v,
            // A number into a string: 6 decimals, as Tasmota formats it.
            Ty::Num => format!("str_of({v})"),
        })
    }

    /// An expression, strictly left to right; its type is its first operand's.
    fn expr(&mut self, e: &Expr) -> Result<(String, Ty), Skip> {
        let (mut acc, ty) = self.operand(&e.first)?;
        for (op, o) in &e.rest {
            let (v, oty) = self.operand(o)?;
            acc = match ty {
                Ty::Num => {
                    let v = if oty == Ty::Str {
                        self.warn(
                            o.pos,
                            "a string in a number expression: Tasmota stops the calculation here"
                                .into(),
                        );
                        return Err(Skip);
                    } else {
                        v
                    };
                    arith(*op, &acc, &v)
                }
                Ty::Str => {
                    if *op != BinOp::Add {
                        return Err(self.error(o.pos, "only `+` applies to strings".into()));
                    }
                    if oty == Ty::Num {
                        self.warn(o.pos, "a number in a string expression: Tasmota stops the text here (write `s(x)`)".into());
                        return Err(Skip);
                    }
                    format!("{acc} + {v}")
                }
            };
        }
        Ok((acc, ty))
    }

    fn operand(&mut self, o: &Operand) -> Result<(String, Ty), Skip> {
        let (v, ty) = self.value(o.pos, &o.value)?;
        if o.negate {
            if ty == Ty::Str {
                return Err(self.error(o.pos, "`-` before a string".into()));
            }
            return Ok((format!("(-{v})"), ty));
        }
        Ok((v, ty))
    }

    fn value(&mut self, pos: Pos, v: &Value) -> Result<(String, Ty), Skip> {
        Ok(match v {
            Value::Number(n) => (number_literal(n), Ty::Num),
            Value::Text(t) => (rhai_str(t), Ty::Str),
            Value::Paren(e) => {
                // Every number step is already a call (`r32(a + b)`), so brackets are only needed
                // around a string sum.
                let (v, ty) = self.expr(e)?;
                if e.rest.is_empty() || ty == Ty::Num {
                    (v, ty)
                } else {
                    (format!("({v})"), ty)
                }
            }
            Value::Name(n) => self.name(pos, n)?,
            Value::Index { name, index } => self.index(pos, name, index)?,
            Value::Call { name, args } => self.call(pos, name, args)?,
            Value::SubCall { name, args } => (
                format!("num_of({})", self.sub_call(pos, name, args)?),
                Ty::Num,
            ),
            Value::JsonPath(path) => {
                if !self.json_in_scope() {
                    return Err(self.error(
                        pos,
                        format!(
                            "`{path}` reads the JSON of `>T`/`>E`; there is none in this section"
                        ),
                    ));
                }
                (format!("num_of(tele({}))", rhai_str(path)), Ty::Num)
            }
        })
    }

    fn name(&mut self, pos: Pos, n: &str) -> Result<(String, Ty), Skip> {
        if let Some((ty, _)) = self.vars.get(n).copied() {
            return Ok(match ty {
                VarType::Number => (var_ref(n), Ty::Num),
                VarType::Text => (var_ref(n), Ty::Str),
                VarType::Array => (format!("arr_value({})", rhai_str(n)), Ty::Num),
            });
        }
        if NUMBER_BUILTINS.contains(&n) {
            return Ok((format!("{n}()"), Ty::Num));
        }
        match n {
            "tstamp" | "topic" => return Ok((format!("{n}()"), Ty::Str)),
            "smlj" => return Ok(("smlj()".into(), Ty::Num)),
            _ => {}
        }
        if ESP_ONLY_FUNCTIONS.contains(&n) {
            self.warn(
                pos,
                format!("`{n}` exists only on the ESP; it reads 0 here"),
            );
            return Ok(("0.0".into(), Ty::Num));
        }
        if self.in_condition {
            self.warn(
                pos,
                format!("`{n}` is not declared in `>D`: Tasmota reads 0 for it in a condition"),
            );
            return Ok(("0.0".into(), Ty::Num));
        }
        self.warn(
            pos,
            format!("`{n}` is not declared in `>D`: Tasmota skips a statement that reads it"),
        );
        Err(Skip)
    }

    fn index(&mut self, pos: Pos, name: &str, index: &Expr) -> Result<(String, Ty), Skip> {
        if let Some((ty, _)) = self.vars.get(name).copied() {
            if ty != VarType::Array {
                return Err(self.error(
                    pos,
                    format!("`{name}` is not an array (`M:{name}=0 n` in `>D`)"),
                ));
            }
            let i = self.num_expr(index)?;
            return Ok((format!("arr_get({}, {i})", rhai_str(name)), Ty::Num));
        }
        match name {
            "sml" => Ok((format!("sml_value({})", self.num_expr(index)?), Ty::Num)),
            "smls" => Ok((format!("sml_text({})", self.num_expr(index)?), Ty::Str)),
            "smlv" => Ok((format!("sml_valid({})", self.num_expr(index)?), Ty::Num)),
            "is" => Ok((format!("is_get({})", self.num_expr(index)?), Ty::Str)),
            "chg" => {
                let var = match (&index.first.value, index.rest.is_empty()) {
                    (Value::Name(v), true) if self.vars.get(v).map(|x| x.0) == Some(VarType::Number) => v.clone(),
                    _ => {
                        return Err(self.error(
                            pos,
                            "`chg[...]` takes the name of a number declared in `>D`".into(),
                        ))
                    }
                };
                self.chg_vars.insert(var.clone());
                Ok((format!("this.chg({})", rhai_str(&var)), Ty::Num))
            }
            _ if ESP_ONLY_FUNCTIONS.contains(&name) => {
                self.warn(pos, format!("`{name}[]` exists only on the ESP; it reads 0 here"));
                Ok(("0.0".into(), Ty::Num))
            }
            _ => Err(self.error(
                pos,
                format!("`{name}[...]`: no array `{name}` is declared in `>D` and it is no built-in the translation knows"),
            )),
        }
    }

    fn call(&mut self, pos: Pos, name: &str, args: &[Arg]) -> Result<(String, Ty), Skip> {
        if ESP_ONLY_FUNCTIONS.contains(&name) {
            self.warn(
                pos,
                format!("`{name}()` exists only on the ESP; no effect here (reads 0)"),
            );
            return Ok(("0.0".into(), Ty::Num));
        }
        let mut nums = Vec::new();
        let plain = |t: &mut Self, a: &Arg| -> Result<(String, Ty), Skip> {
            match a {
                Arg::Expr(e) => t.expr(e),
                _ => Err(t.error(
                    pos,
                    format!("`{name}()`: unexpected `<`, `>` or number format here"),
                )),
            }
        };
        let want = |t: &mut Self, n: usize| -> Result<(), Skip> {
            if args.len() != n {
                return Err(t.error(
                    pos,
                    format!("`{name}()` takes {n} argument(s), {} given", args.len()),
                ));
            }
            Ok(())
        };
        let num_fn = |t: &mut Self, f: &str| -> Result<(String, Ty), Skip> {
            want(t, 1)?;
            let (v, ty) = plain(t, &args[0])?;
            let v = if ty == Ty::Str {
                format!("num_of({v})")
            } else {
                v
            };
            Ok((format!("{f}({v})"), Ty::Num))
        };
        match name {
            "int" => num_fn(self, "floor32"),
            "floor" => num_fn(self, "floor32"),
            "ceil" => num_fn(self, "ceil32"),
            "round" => num_fn(self, "round32"),
            "abs" => num_fn(self, "abs32"),
            "sqrt" => num_fn(self, "sqrt32"),
            "rnd" => num_fn(self, "rnd"),
            "hn" => Ok((num_fn(self, "hn")?.0, Ty::Str)),
            "hx" => Ok((num_fn(self, "hx")?.0, Ty::Str)),
            "pow" => {
                want(self, 2)?;
                for a in args {
                    let (v, _) = plain(self, a)?;
                    nums.push(v);
                }
                Ok((format!("pow32({}, {})", nums[0], nums[1]), Ty::Num))
            }
            "hd" | "sl" => {
                want(self, 1)?;
                let (v, ty) = plain(self, &args[0])?;
                if ty != Ty::Str {
                    return Err(self.error(pos, format!("`{name}()` takes a string")));
                }
                Ok((format!("{name}({v})"), Ty::Num))
            }
            "s" => {
                want(self, 1)?;
                match &args[0] {
                    Arg::Formatted { spec, value } => {
                        let v = self.num_expr(value)?;
                        let (width, decimals) = match spec.split_once('.') {
                            Some((w, d)) => (w.to_string(), d.to_string()),
                            None => ("0".to_string(), spec.clone()),
                        };
                        Ok((format!("fmt_width({v}, {width}.0, {decimals}.0)"), Ty::Str))
                    }
                    a => {
                        let (v, ty) = plain(self, a)?;
                        if ty == Ty::Str {
                            return Ok((v, Ty::Str));
                        }
                        Ok((format!("fmt({v}, -1.0)"), Ty::Str))
                    }
                }
            }
            "st" | "sb" => {
                want(self, 3)?;
                let (s, ty) = plain(self, &args[0])?;
                if ty != Ty::Str {
                    return Err(self.error(pos, format!("`{name}()` takes a string first")));
                }
                let (b, bty) = plain(self, &args[1])?;
                let b = if name == "st" && bty == Ty::Num {
                    return Err(self.error(
                        pos,
                        "`st()` takes the delimiter as a string (`st(s \",\" 2)`)".into(),
                    ));
                } else {
                    b
                };
                let (c, _) = plain(self, &args[2])?;
                Ok((format!("{name}({s}, {b}, {c})"), Ty::Str))
            }
            "ins" => {
                want(self, 2)?;
                let (a, _) = plain(self, &args[0])?;
                let (b, _) = plain(self, &args[1])?;
                Ok((format!("ins({a}, {b})"), Ty::Num))
            }
            "is" => {
                want(self, 2)?;
                let (_, _) = plain(self, &args[0])?;
                let (b, ty) = plain(self, &args[1])?;
                if ty != Ty::Str {
                    return Err(
                        self.error(pos, "`is()` takes the `|`-separated strings second".into())
                    );
                }
                Ok((format!("is_set({b})"), Ty::Num))
            }
            "mp" => {
                if args.is_empty() {
                    return Err(self.error(pos, "`mp()` needs a value".into()));
                }
                let (x, _) = plain(self, &args[0])?;
                let mut rules = Vec::new();
                let mut it = args[1..].iter();
                while let Some(a) = it.next() {
                    let Arg::Range { below, value } = a else {
                        return Err(self.error(
                            pos,
                            "`mp(x <a r >b r)`: expected `<bound` or `>bound`".into(),
                        ));
                    };
                    let bound = self.num_expr(value)?;
                    let Some(Arg::Expr(r)) = it.next() else {
                        return Err(
                            self.error(pos, "`mp()`: a bound needs the value to give".into())
                        );
                    };
                    let r = self.num_expr(r)?;
                    rules.push(format!(
                        "{}, {bound}, {r}",
                        if *below { "-1.0" } else { "1.0" }
                    ));
                }
                Ok((format!("mp({x}, [{}])", rules.join(", ")), Ty::Num))
            }
            "sml" => self.sml_call(pos, args),
            _ => Err(self.error(
                pos,
                format!("`{name}()` is no function the translation to Rhai knows"),
            )),
        }
    }

    /// `sml(m 0 baud)`, `sml(m 1 "hex")`, `sml(-m 1 "2400:8E1")`, `sml(m 2)`, `sml(m 3 svar)`.
    fn sml_call(&mut self, pos: Pos, args: &[Arg]) -> Result<(String, Ty), Skip> {
        let exprs: Vec<&Expr> = args
            .iter()
            .filter_map(|a| match a {
                Arg::Expr(e) => Some(e),
                _ => None,
            })
            .collect();
        if exprs.len() != args.len() || !(2..=3).contains(&exprs.len()) {
            return Err(self.error(pos, "`sml()` takes `meter function [argument]`".into()));
        }
        let code = match (&exprs[1].first.value, exprs[1].rest.is_empty()) {
            (Value::Number(n), true) => n.parse::<u32>().ok(),
            _ => None,
        };
        let negative_meter = exprs[0].first.negate && exprs[0].rest.is_empty();
        let meter = if negative_meter {
            let mut m = exprs[0].clone();
            m.first.negate = false;
            self.num_expr(&m)?
        } else {
            self.num_expr(exprs[0])?
        };
        let arg = |t: &mut Self| -> Result<(String, Ty), Skip> {
            match exprs.get(2) {
                Some(e) => t.expr(e),
                None => Err(t.error(pos, "`sml()`: this function needs a third argument".into())),
            }
        };
        match code {
            Some(0) => {
                let b = arg(self)?;
                Ok((format!("sml_baud({meter}, {})", b.0), Ty::Num))
            }
            Some(1) => {
                let (s, ty) = arg(self)?;
                if ty != Ty::Str {
                    return Err(self.error(pos, "`sml(m 1 ...)` sends a hex string".into()));
                }
                if negative_meter {
                    Ok((format!("sml_mode({meter}, {s})"), Ty::Num))
                } else {
                    Ok((format!("sml_send({meter}, {s})"), Ty::Num))
                }
            }
            Some(2) => Ok((format!("sml_read({meter})"), Ty::Str)),
            Some(3) => {
                let (s, ty) = arg(self)?;
                if ty != Ty::Str {
                    return Err(self.error(pos, "`sml(m 3 ...)` queues a string".into()));
                }
                Ok((format!("sml_queue({meter}, {s})"), Ty::Num))
            }
            _ => Err(self.error(
                pos,
                "`sml(m f ...)`: the function must be 0 (baud), 1 (send), 2 (read) or 3 (queue)"
                    .into(),
            )),
        }
    }

    /// A `%var%` template as a Rhai string expression.
    fn template(&mut self, t: &Template) -> Result<String, Skip> {
        let mut parts = Vec::new();
        for p in &t.pieces {
            match p {
                Piece::Text(s) => parts.push(rhai_str(s)),
                Piece::Value { decimals, value } => {
                    let known = match &value.first.value {
                        Value::Name(n) => {
                            self.vars.contains_key(n)
                                || NUMBER_BUILTINS.contains(&n.as_str())
                                || matches!(n.as_str(), "tstamp" | "topic")
                        }
                        _ => true,
                    };
                    if !known {
                        // Tasmota inserts `???` for an unknown name.
                        self.warn(
                            value.pos,
                            "this `%name%` is not declared in `>D`: Tasmota inserts `???`".into(),
                        );
                        parts.push(rhai_str("???"));
                        continue;
                    }
                    let (v, ty) = self.expr(value)?;
                    parts.push(match ty {
                        Ty::Str => v,
                        Ty::Num => {
                            format!("fmt({v}, {}.0)", decimals.map(|d| d as i32).unwrap_or(-1))
                        }
                    });
                }
            }
        }
        if parts.is_empty() {
            return Ok("\"\"".into());
        }
        if parts.len() == 1 && parts[0].starts_with('"') {
            return Ok(parts.remove(0));
        }
        if parts[0].starts_with('"') {
            return Ok(parts.join(" + "));
        }
        // `"" + ...` makes the sum a string when the first piece is a value.
        Ok(format!("\"\" + {}", parts.join(" + ")))
    }

    /// `sml check` warnings for commands that do nothing off the ESP (checked on the literal text).
    fn check_command(&mut self, pos: Pos, t: &Template) {
        let Some(Piece::Text(text)) = t.pieces.first() else {
            return;
        };
        let word = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if KNOWN_COMMANDS.contains(&word.as_str()) {
            if word == "sensor53" {
                let arg = text.split_whitespace().nth(1).unwrap_or("");
                if !(arg == "r" || arg.starts_with('d') || arg.starts_with('c')) {
                    self.warn(
                        pos,
                        format!(
                            "`sensor53 {arg}` only has an effect on the ESP (LED, pins); ignored"
                        ),
                    );
                }
            }
            return;
        }
        self.warn(
            pos,
            format!(
                "`{}`: a Tasmota command with no meaning off the ESP; logged and ignored",
                text.trim()
            ),
        );
    }
}

/// The Rhai function of a subroutine.
pub fn sub_fn(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("sub_{clean}")
}

/// `this.name`, or `this["name"]` for names Rhai would not read as a property.
fn var_ref(name: &str) -> String {
    const RESERVED: &[&str] = &[
        "fn",
        "let",
        "const",
        "if",
        "else",
        "while",
        "loop",
        "for",
        "in",
        "do",
        "until",
        "break",
        "continue",
        "return",
        "throw",
        "try",
        "catch",
        "switch",
        "true",
        "false",
        "this",
        "import",
        "export",
        "as",
        "global",
        "private",
        "is",
        "print",
        "debug",
        "type_of",
        "eval",
        "Fn",
        "call",
        "curry",
        "is_def_fn",
        "is_def_var",
        "is_shared",
        "var",
        "static",
        "new",
        "use",
        "with",
        "module",
        "package",
        "super",
        "thread",
        "spawn",
        "go",
        "sync",
        "async",
        "await",
        "yield",
        "default",
        "void",
        "null",
        "nil",
        "public",
        "protected",
        "match",
        "case",
        "shared",
        "goto",
        "exit",
        "self",
        "Self",
        "macro",
        "include",
    ];
    let simple = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if simple && !RESERVED.contains(&name) {
        format!("this.{name}")
    } else {
        format!("this[{}]", rhai_str(name))
    }
}

/// A Rhai string literal.
pub fn rhai_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A number as Tasmota holds it: the f32 nearest to what was written, emitted exactly as an f64 literal.
fn number_literal(text: &str) -> String {
    let v: f32 = if let Some(h) = text.strip_prefix("0x") {
        u32::from_str_radix(h, 16).unwrap_or(0) as f32
    } else if text.starts_with('.') {
        format!("0{text}").parse().unwrap_or(0.0)
    } else {
        text.trim_end_matches('.').parse().unwrap_or(0.0)
    };
    float_literal(v as f64)
}

/// An f64 in Rhai syntax (always with a `.`, never bare exponent forms Rhai would misread).
pub fn float_literal(v: f64) -> String {
    let s = format!("{v:?}");
    if s.contains('e') && !s.contains('.') {
        let (m, e) = s.split_once('e').unwrap();
        return format!("{m}.0e{e}");
    }
    s
}

fn op_of(op: AssignOp) -> BinOp {
    match op {
        AssignOp::Add | AssignOp::Set => BinOp::Add,
        AssignOp::Sub => BinOp::Sub,
        AssignOp::Mul => BinOp::Mul,
        AssignOp::Div => BinOp::Div,
        AssignOp::Mod => BinOp::Mod,
        AssignOp::And => BinOp::And,
        AssignOp::Or => BinOp::Or,
        AssignOp::Xor => BinOp::Xor,
        AssignOp::Shl => BinOp::Shl,
        AssignOp::Shr => BinOp::Shr,
    }
}

/// One arithmetic step on numbers, rounded to single precision.
fn arith(op: BinOp, a: &str, b: &str) -> String {
    match op {
        BinOp::Add => format!("r32({a} + {b})"),
        BinOp::Sub => format!("r32({a} - {b})"),
        BinOp::Mul => format!("r32({a} * {b})"),
        BinOp::Div => format!("div32({a}, {b})"),
        BinOp::Mod => format!("mod32({a}, {b})"),
        BinOp::And => format!("band({a}, {b})"),
        BinOp::Or => format!("bor({a}, {b})"),
        BinOp::Xor => format!("bxor({a}, {b})"),
        BinOp::Shl => format!("shl({a}, {b})"),
        BinOp::Shr => format!("shr({a}, {b})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_hold_the_single_precision_value() {
        assert_eq!(number_literal("0.1"), "0.10000000149011612");
        assert_eq!(number_literal("16777217"), "16777216.0");
        assert_eq!(number_literal("0x1F"), "31.0");
    }

    #[test]
    fn names_rhai_reserves_are_indexed() {
        assert_eq!(var_ref("cnt"), "this.cnt");
        assert_eq!(var_ref("switch"), "this[\"switch\"]");
        assert_eq!(var_ref("Zähler"), "this[\"Zähler\"]");
    }
}
