/*!
Section lines to the statement tree: each line is read alone with `grammar/statements.pest` (one
broken line gives one error at its line and column, and the rest is still read), then the flat list of
line statements is folded into blocks (`if`/`then`/`else`/`endif`, `{`/`} else {`/`}`, `for`/`next`,
`switch`/`case`/`ends`), as Tasmota's executor nests them.

The only module that touches pest's `Pairs`; `unwrap()` on a pair's children is safe here because the
grammar guarantees them.
*/

use pest::iterators::Pair;
use pest::Parser;
use pest_derive::Parser;

use super::ast::*;
use crate::script::model::SourceLine;
use crate::script::{Diagnostic, Severity};

#[derive(Parser)]
#[grammar = "../grammar/statements.pest"]
struct StatementParser;

/// One line, before blocks are assembled.
#[derive(Debug, Clone)]
enum LineStmt {
    Simple(StmtKind),
    If {
        cond: Cond,
        brace: bool,
    },
    And(Cond),
    Or(Cond),
    Then,
    Else,
    Endif,
    OpenBrace,
    CloseBrace,
    CloseBraceElse,
    Switch(Expr),
    Case(Expr),
    Ends,
    For {
        var: String,
        from: Expr,
        to: Expr,
        step: Expr,
    },
    Next,
}

/// Parse the lines of one section into statements, with every diagnostic found.
pub fn parse_section(lines: &[SourceLine]) -> (Vec<Statement>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut flat: Vec<(Pos, LineStmt, &SourceLine)> = Vec::new();
    for l in lines {
        match parse_line(l, &mut diags) {
            Some(s) => flat.push((
                Pos {
                    line: l.line,
                    col: 1,
                },
                s,
                l,
            )),
            None => continue,
        }
    }
    let mut asm = Assembler {
        lines: flat,
        at: 0,
        diags: &mut diags,
    };
    let mut body = Vec::new();
    loop {
        let (mut more, _) = asm.block(&[]);
        body.append(&mut more);
        let Some((pos, _, src)) = asm.lines.get(asm.at) else {
            break;
        };
        // A closer with nothing open (`endif`, `}`, `next`, `ends` alone): Tasmota skips it, and the
        // statements after it still run.
        let (pos, text) = (*pos, src.text.clone());
        asm.warn(
            pos,
            &text,
            format!("`{}` closes nothing and is ignored", text.trim()),
        );
        asm.at += 1;
    }
    drop(asm);
    (body, diags)
}

/// A `>J` line: a `%var%` template, not a statement. `None` when it cannot be read (never, in practice:
/// any text is a template).
pub fn parse_template(text: &str, line: crate::script::model::LineNo) -> Option<Template> {
    let mut pairs = StatementParser::parse(Rule::template, text).ok()?;
    Some(Reader { line }.template(pairs.next()?))
}

fn diagnostic(severity: Severity, pos: Pos, source: &str, message: String) -> Diagnostic {
    Diagnostic {
        severity,
        line: pos.line,
        col: pos.col,
        message,
        source_line: source.to_string(),
    }
}

fn parse_line(l: &SourceLine, diags: &mut Vec<Diagnostic>) -> Option<LineStmt> {
    let pairs = match StatementParser::parse(Rule::line, &l.text) {
        Ok(p) => p,
        Err(e) => {
            let col = match e.line_col {
                pest::error::LineColLocation::Pos((_, c)) => c,
                pest::error::LineColLocation::Span((_, c), _) => c,
            };
            diags.push(diagnostic(
                Severity::Error,
                Pos {
                    line: l.line,
                    col: col as u32,
                },
                &l.text,
                format!(
                    "`{}`: the translation to Rhai does not know this statement",
                    l.text
                ),
            ));
            return None;
        }
    };
    let line = pairs.into_iter().next().unwrap();
    let mut inner = line.into_inner();
    let stmt = inner.next().unwrap();
    let rest = inner.next().unwrap();
    let reader = Reader { line: l.line };
    let parsed = reader.statement(stmt);
    let rest_text = rest.as_str();
    if !rest_text.trim().is_empty() {
        let col = rest.as_span().start() as u32 + 1;
        let message = match &parsed {
            LineStmt::Simple(StmtKind::Ignored { .. }) => None,
            LineStmt::Simple(StmtKind::Break) | LineStmt::Simple(StmtKind::Svars) => None,
            LineStmt::Simple(StmtKind::Assign { .. }) | LineStmt::Simple(StmtKind::Call(_)) => {
                Some(format!(
                    "`{}` after a blank is not part of the expression: Tasmota ignores it (write the expression without blanks)",
                    rest_text.trim()
                ))
            }
            LineStmt::If { .. } | LineStmt::And(_) | LineStmt::Or(_) => Some(format!(
                "`{}` after a blank is not part of the condition: Tasmota ignores it (write `if a==b`, or bracket `((a==1) and (b==2))`)",
                rest_text.trim()
            )),
            _ => Some(format!("`{}` is ignored, as Tasmota does", rest_text.trim())),
        };
        if let Some(m) = message {
            diags.push(diagnostic(
                Severity::Warning,
                Pos { line: l.line, col },
                &l.text,
                m,
            ));
        }
    }
    Some(parsed)
}

/// Turns pest pairs of one line into tree nodes.
struct Reader {
    line: u32,
}

impl Reader {
    fn pos(&self, p: &Pair<'_, Rule>) -> Pos {
        Pos {
            line: self.line,
            col: p.as_span().start() as u32 + 1,
        }
    }

    fn statement(&self, p: Pair<'_, Rule>) -> LineStmt {
        let rule = p.as_rule();
        let mut inner = p.clone().into_inner();
        match rule {
            Rule::command => {
                let prefix = inner.next().unwrap();
                let kind = match prefix.as_str() {
                    "->" => CommandKind::Silent,
                    "=>" => CommandKind::Logged,
                    _ => CommandKind::Recursive,
                };
                let template = self.template(inner.next().unwrap());
                // `=>print text` is `print text`.
                if let Some(Piece::Text(t)) = template.pieces.first() {
                    if let Some(rest) = t.strip_prefix("print") {
                        if rest.is_empty() || rest.starts_with(' ') {
                            let mut pieces = template.pieces.clone();
                            pieces[0] = Piece::Text(rest.trim_start().to_string());
                            return LineStmt::Simple(StmtKind::Print(Template { pieces }));
                        }
                    }
                }
                LineStmt::Simple(StmtKind::Command {
                    kind,
                    text: template,
                })
            }
            Rule::print_stmt => {
                LineStmt::Simple(StmtKind::Print(self.template(inner.next().unwrap())))
            }
            Rule::sub_call_stmt => {
                let (name, args) = self.sub_call(inner.next().unwrap());
                LineStmt::Simple(StmtKind::CallSub { name, args })
            }
            Rule::close_brace_else => LineStmt::CloseBraceElse,
            Rule::close_brace => LineStmt::CloseBrace,
            Rule::open_brace => LineStmt::OpenBrace,
            Rule::if_stmt => {
                let cond = self.condition(inner.next().unwrap());
                LineStmt::If {
                    cond,
                    brace: inner.next().is_some(),
                }
            }
            Rule::and_stmt => LineStmt::And(self.condition(inner.next().unwrap())),
            Rule::or_stmt => LineStmt::Or(self.condition(inner.next().unwrap())),
            Rule::then_stmt => LineStmt::Then,
            Rule::else_stmt => LineStmt::Else,
            Rule::endif_stmt => LineStmt::Endif,
            Rule::switch_stmt => LineStmt::Switch(self.expr(inner.next().unwrap())),
            Rule::case_stmt => LineStmt::Case(self.expr(inner.next().unwrap())),
            Rule::ends_stmt => LineStmt::Ends,
            Rule::for_stmt => LineStmt::For {
                var: inner.next().unwrap().as_str().to_string(),
                from: self.expr(inner.next().unwrap()),
                to: self.expr(inner.next().unwrap()),
                step: self.expr(inner.next().unwrap()),
            },
            Rule::next_stmt => LineStmt::Next,
            Rule::break_stmt => LineStmt::Simple(StmtKind::Break),
            Rule::return_stmt => {
                LineStmt::Simple(StmtKind::Return(inner.next().map(|e| self.expr(e))))
            }
            Rule::svars_stmt => LineStmt::Simple(StmtKind::Svars),
            Rule::delay_stmt => LineStmt::Simple(StmtKind::Delay(self.expr(inner.next().unwrap()))),
            Rule::dp_stmt => {
                let digits = inner.next().unwrap().as_str();
                let d = digits.as_bytes()[0] - b'0';
                LineStmt::Simple(StmtKind::Dp(d))
            }
            Rule::web_stmt => LineStmt::Simple(StmtKind::Web),
            Rule::assignment => {
                let target = inner.next().unwrap();
                let target = {
                    let t = target.into_inner().next().unwrap();
                    match t.as_rule() {
                        Rule::indexed => {
                            let mut i = t.into_inner();
                            let name = i.next().unwrap().as_str().to_string();
                            Target::Element {
                                name,
                                index: self.expr(i.next().unwrap()),
                            }
                        }
                        _ => Target::Var(t.as_str().to_string()),
                    }
                };
                let op = match inner.next().unwrap().as_str() {
                    "+=" => AssignOp::Add,
                    "-=" => AssignOp::Sub,
                    "*=" => AssignOp::Mul,
                    "/=" => AssignOp::Div,
                    "%=" => AssignOp::Mod,
                    "&=" => AssignOp::And,
                    "|=" => AssignOp::Or,
                    "^=" => AssignOp::Xor,
                    "<<=" => AssignOp::Shl,
                    ">>=" => AssignOp::Shr,
                    _ => AssignOp::Set,
                };
                let v = inner.next().unwrap();
                let value = match v.as_rule() {
                    Rule::sub_call => {
                        let pos = self.pos(&v);
                        let (name, args) = self.sub_call(v);
                        Expr {
                            pos,
                            first: Operand {
                                pos,
                                negate: false,
                                value: Value::SubCall { name, args },
                            },
                            rest: Vec::new(),
                        }
                    }
                    _ => self.expr(v),
                };
                LineStmt::Simple(StmtKind::Assign { target, op, value })
            }
            Rule::call_stmt => {
                let call = inner.next().unwrap();
                let pos = self.pos(&call);
                let value = self.call(call);
                LineStmt::Simple(StmtKind::Call(Expr {
                    pos,
                    first: Operand {
                        pos,
                        negate: false,
                        value,
                    },
                    rest: Vec::new(),
                }))
            }
            _ => LineStmt::Simple(StmtKind::Ignored {
                word: inner.next().map(|w| w.as_str()).unwrap_or("").to_string(),
            }),
        }
    }

    fn sub_call(&self, p: Pair<'_, Rule>) -> (String, Vec<Expr>) {
        let mut inner = p.into_inner();
        let name = inner.next().unwrap().as_str().to_string();
        let args = inner
            .next()
            .map(|a| {
                a.into_inner()
                    .map(|arg| match self.arg(arg) {
                        Arg::Expr(e)
                        | Arg::Formatted { value: e, .. }
                        | Arg::Range { value: e, .. } => e,
                    })
                    .collect()
            })
            .unwrap_or_default();
        (name, args)
    }

    fn condition(&self, p: Pair<'_, Rule>) -> Cond {
        let c = p.into_inner().next().unwrap();
        match c.as_rule() {
            Rule::cond_group => {
                let mut list = Vec::new();
                let mut logic = Logic::First;
                for part in c.into_inner() {
                    match part.as_rule() {
                        Rule::logic => {
                            logic = if part.as_str() == "and" {
                                Logic::And
                            } else {
                                Logic::Or
                            }
                        }
                        _ => list.push((logic, self.condition(part))),
                    }
                }
                Cond::Group(list)
            }
            Rule::comparison => {
                let mut i = c.into_inner();
                let left = self.expr(i.next().unwrap());
                let op = match i.next().unwrap().as_str() {
                    "==" => CmpOp::Eq,
                    "!=" => CmpOp::Ne,
                    ">=" => CmpOp::Ge,
                    "<=" => CmpOp::Le,
                    ">" => CmpOp::Gt,
                    _ => CmpOp::Lt,
                };
                let right = self.expr(i.next().unwrap());
                Cond::Compare { left, op, right }
            }
            _ => Cond::Bare(self.expr(c.into_inner().next().unwrap())),
        }
    }

    fn expr(&self, p: Pair<'_, Rule>) -> Expr {
        let pos = self.pos(&p);
        let mut inner = p.into_inner();
        let first = self.operand(inner.next().unwrap());
        let mut rest = Vec::new();
        while let Some(op) = inner.next() {
            let op = match op.as_str() {
                "<<" => BinOp::Shl,
                ">>" => BinOp::Shr,
                "+" => BinOp::Add,
                "-" => BinOp::Sub,
                "*" => BinOp::Mul,
                "/" => BinOp::Div,
                "%" => BinOp::Mod,
                "&" => BinOp::And,
                "|" => BinOp::Or,
                _ => BinOp::Xor,
            };
            rest.push((op, self.operand(inner.next().unwrap())));
        }
        Expr { pos, first, rest }
    }

    fn operand(&self, p: Pair<'_, Rule>) -> Operand {
        let pos = self.pos(&p);
        let mut negate = false;
        let mut value = None;
        for part in p.into_inner() {
            match part.as_rule() {
                Rule::neg => negate = true,
                _ => value = Some(self.value(part)),
            }
        }
        Operand {
            pos,
            negate,
            value: value.unwrap(),
        }
    }

    fn value(&self, p: Pair<'_, Rule>) -> Value {
        match p.as_rule() {
            Rule::number => Value::Number(p.as_str().to_string()),
            Rule::string => Value::Text(unescape(p.into_inner().next().unwrap().as_str())),
            Rule::paren => Value::Paren(Box::new(self.expr(p.into_inner().next().unwrap()))),
            Rule::sub_call => {
                let (name, args) = self.sub_call(p);
                Value::SubCall { name, args }
            }
            Rule::call => self.call(p),
            Rule::indexed => {
                let mut i = p.into_inner();
                let name = i.next().unwrap().as_str().to_string();
                Value::Index {
                    name,
                    index: Box::new(self.expr(i.next().unwrap())),
                }
            }
            Rule::json_path => Value::JsonPath(p.as_str().to_string()),
            _ => Value::Name(p.as_str().to_string()),
        }
    }

    fn call(&self, p: Pair<'_, Rule>) -> Value {
        let mut i = p.into_inner();
        let name = i.next().unwrap().as_str().to_string();
        let args = i
            .next()
            .map(|a| a.into_inner().map(|arg| self.arg(arg)).collect())
            .unwrap_or_default();
        Value::Call { name, args }
    }

    fn arg(&self, p: Pair<'_, Rule>) -> Arg {
        let a = p.into_inner().next().unwrap();
        match a.as_rule() {
            Rule::format_arg => {
                let mut i = a.into_inner();
                let spec = i.next().unwrap().as_str().to_string();
                Arg::Formatted {
                    spec,
                    value: self.expr(i.next().unwrap()),
                }
            }
            Rule::range_arg => {
                let mut i = a.into_inner();
                let below = i.next().unwrap().as_str() == "<";
                Arg::Range {
                    below,
                    value: self.expr(i.next().unwrap()),
                }
            }
            _ => Arg::Expr(self.expr(a)),
        }
    }

    fn template(&self, p: Pair<'_, Rule>) -> Template {
        let mut pieces: Vec<Piece> = Vec::new();
        let push_text = |pieces: &mut Vec<Piece>, t: &str| match pieces.last_mut() {
            Some(Piece::Text(s)) => s.push_str(t),
            _ => pieces.push(Piece::Text(t.to_string())),
        };
        for part in p.into_inner() {
            match part.as_rule() {
                Rule::percent => push_text(&mut pieces, "%"),
                Rule::substitution => {
                    let pos = self.pos(&part);
                    let mut decimals = None;
                    let mut value = None;
                    for s in part.into_inner() {
                        match s.as_rule() {
                            Rule::format_spec => {
                                decimals = s.as_str().split('.').next().and_then(|d| d.parse().ok())
                            }
                            _ => value = Some(self.value(s)),
                        }
                    }
                    pieces.push(Piece::Value {
                        decimals,
                        value: Expr {
                            pos,
                            first: Operand {
                                pos,
                                negate: false,
                                value: value.unwrap(),
                            },
                            rest: Vec::new(),
                        },
                    });
                }
                _ => push_text(&mut pieces, part.as_str()),
            }
        }
        Template { pieces }
    }
}

/// Backslash escapes in string literals, as Tasmota reads them.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Folds the flat line statements into blocks.
struct Assembler<'a, 'd> {
    lines: Vec<(Pos, LineStmt, &'a SourceLine)>,
    at: usize,
    diags: &'d mut Vec<Diagnostic>,
}

/// Which line ended a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closer {
    Else,
    Endif,
    CloseBrace,
    CloseBraceElse,
    Next,
    Case,
    Ends,
    /// End of the section.
    End,
}

impl Assembler<'_, '_> {
    fn warn(&mut self, pos: Pos, source: &str, message: String) {
        self.diags
            .push(diagnostic(Severity::Warning, pos, source, message));
    }

    fn error(&mut self, pos: Pos, source: &str, message: String) {
        self.diags
            .push(diagnostic(Severity::Error, pos, source, message));
    }

    /// Statements up to one of `closers` (consumed) or the end of the section.
    fn block(&mut self, closers: &[Closer]) -> (Vec<Statement>, Closer) {
        let mut out = Vec::new();
        while self.at < self.lines.len() {
            let (pos, stmt, src) = self.lines[self.at].clone();
            let closer = match &stmt {
                LineStmt::Else => Some(Closer::Else),
                LineStmt::Endif => Some(Closer::Endif),
                LineStmt::CloseBrace => Some(Closer::CloseBrace),
                LineStmt::CloseBraceElse => Some(Closer::CloseBraceElse),
                LineStmt::Next => Some(Closer::Next),
                LineStmt::Case(_) => Some(Closer::Case),
                LineStmt::Ends => Some(Closer::Ends),
                _ => None,
            };
            if let Some(c) = closer {
                if closers.contains(&c) {
                    if c != Closer::Case {
                        self.at += 1;
                    }
                    return (out, c);
                }
                return (out, Closer::End);
            }
            self.at += 1;
            match stmt {
                LineStmt::Simple(kind) => out.push(Statement { pos, kind }),
                LineStmt::If { cond, brace } => {
                    out.push(self.if_block(pos, src, cond, brace));
                }
                LineStmt::Switch(value) => out.push(self.switch_block(pos, src, value)),
                LineStmt::For {
                    var,
                    from,
                    to,
                    step,
                } => {
                    let (body, c) = self.block(&[Closer::Next]);
                    if c != Closer::Next {
                        self.warn(
                            pos,
                            &src.text,
                            "`for` without `next` before the end of the section: the loop ends there".into(),
                        );
                    }
                    out.push(Statement {
                        pos,
                        kind: StmtKind::For {
                            var,
                            from,
                            to,
                            step,
                            body,
                        },
                    });
                }
                LineStmt::And(_) | LineStmt::Or(_) | LineStmt::Then => {
                    self.error(
                        pos,
                        &src.text,
                        format!("`{}` without an `if` line before it", src.text.trim()),
                    );
                }
                LineStmt::OpenBrace => {
                    // A block that belongs to no `if`: its statements run.
                    let (mut body, _) = self.block(&[Closer::CloseBrace]);
                    out.append(&mut body);
                }
                _ => {}
            }
        }
        (out, Closer::End)
    }

    fn if_block(&mut self, pos: Pos, src: &SourceLine, first: Cond, brace: bool) -> Statement {
        let mut cond = vec![(Logic::First, first)];
        let mut brace = brace;
        if !brace {
            // Then-form: `and`/`or` lines, then `then` (or a `{` line for the brace form).
            loop {
                match self.lines.get(self.at).map(|l| l.1.clone()) {
                    Some(LineStmt::And(c)) => cond.push((Logic::And, c)),
                    Some(LineStmt::Or(c)) => cond.push((Logic::Or, c)),
                    Some(LineStmt::Then) => {
                        self.at += 1;
                        break;
                    }
                    Some(LineStmt::OpenBrace) => {
                        brace = true;
                        self.at += 1;
                        break;
                    }
                    _ => {
                        self.error(
                            pos,
                            &src.text,
                            "`if` without `then` or `{`: Tasmota would read the following lines as conditions".into(),
                        );
                        break;
                    }
                }
                self.at += 1;
            }
        }
        let (then, otherwise) = if brace {
            let (then, c) = self.block(&[Closer::CloseBrace, Closer::CloseBraceElse]);
            let otherwise = if c == Closer::CloseBraceElse {
                let (o, c2) = self.block(&[Closer::CloseBrace]);
                if c2 != Closer::CloseBrace {
                    self.unclosed(pos, src, "}");
                }
                o
            } else {
                if c != Closer::CloseBrace {
                    self.unclosed(pos, src, "}");
                }
                Vec::new()
            };
            (then, otherwise)
        } else {
            let (then, c) = self.block(&[Closer::Else, Closer::Endif]);
            let otherwise = if c == Closer::Else {
                let (o, c2) = self.block(&[Closer::Endif]);
                if c2 != Closer::Endif {
                    self.unclosed(pos, src, "endif");
                }
                o
            } else {
                if c != Closer::Endif {
                    self.unclosed(pos, src, "endif");
                }
                Vec::new()
            };
            (then, otherwise)
        };
        Statement {
            pos,
            kind: StmtKind::If {
                cond,
                then,
                otherwise,
            },
        }
    }

    fn unclosed(&mut self, pos: Pos, src: &SourceLine, closer: &str) {
        self.warn(
            pos,
            &src.text,
            format!("`if` without `{closer}` before the end of the section: the block ends there (Tasmota accepts it)"),
        );
    }

    fn switch_block(&mut self, pos: Pos, src: &SourceLine, value: Expr) -> Statement {
        let mut cases = Vec::new();
        // Lines between `switch` and the first `case` never run in Tasmota.
        let (skipped, mut c) = self.block(&[Closer::Case, Closer::Ends]);
        if !skipped.is_empty() {
            self.warn(
                skipped[0].pos,
                &src.text,
                "statements between `switch` and the first `case` never run".into(),
            );
        }
        while c == Closer::Case {
            let (case_pos, stmt, _) = self.lines[self.at].clone();
            self.at += 1;
            let LineStmt::Case(v) = stmt else {
                break;
            };
            let (body, next) = self.block(&[Closer::Case, Closer::Ends]);
            cases.push((case_pos, v, body));
            c = next;
        }
        if c != Closer::Ends {
            self.warn(
                pos,
                &src.text,
                "`switch` without `ends` before the end of the section: it ends there".into(),
            );
        }
        Statement {
            pos,
            kind: StmtKind::Switch { value, cases },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<SourceLine> {
        text.lines()
            .enumerate()
            .map(|(i, t)| SourceLine {
                line: i as u32 + 1,
                text: t.trim().to_string(),
            })
            .collect()
    }

    #[test]
    fn every_corpus_statement_shape_parses() {
        let src = r#"smlj|=1
cstr2="cnth"+s(1.0((((hours+20)*120)+(mins*2)+(int(secs/30)))%2880+1))+"/120"
pwroffset=mp(pwroffset <-200 -200 >200 200)
if ((chg[hr]>0) and (hr==0)) {
dcon[day]=sml[2]-dval
} else {
res=sml(1 1 "2F3F210D0A")
}
w_new=WAERME#w_total
mstr1+="\"b\":"+s(0c2p)+","
=#readmeter
print w_delta %0w_delta%
->sensor53 r"#;
        let (stmts, diags) = parse_section(&lines(src));
        assert!(diags.is_empty(), "{diags:#?}");
        assert_eq!(stmts.len(), 9);
    }

    #[test]
    fn a_blank_ends_the_expression_with_a_warning() {
        let (stmts, diags) = parse_section(&lines("a=b + c"));
        assert_eq!(stmts.len(), 1);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].severity, Severity::Warning);
        assert_eq!(diags[0].col, 4);
    }

    #[test]
    fn an_unknown_statement_is_an_error_at_its_line() {
        let (_, diags) = parse_section(&lines("x=1\n=(foo"));
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].severity, Severity::Error);
        assert_eq!(diags[0].line, 2);
    }
}
