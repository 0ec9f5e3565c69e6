/*!
Lowering: the syntax tree of a file to the typed model, checking everything on the way and
collecting every problem (as pest's validator does) instead of stopping at the first. `>M` lines are
substituted and parsed one by one here, so a broken line costs one diagnostic and its neighbours are
still checked. Where Tasmota silently ignores or mangles something, sml does what Tasmota does and
says so with a warning.
*/

use crate::script::model::MeterIndex;
use std::collections::BTreeMap;

use super::ast::*;
use super::diagnostic::{Diagnostic, Severity};
use super::model::*;
use super::parse::{self, SyntaxError};
use super::substitute::{substitute, MappedText, Variables};
use super::telegram::{self, RawBlock};

/// The meter type letters Tasmota knows.
const METER_TYPES: &str = "o s e v m M k C c r R p";

/// Collects diagnostics with their positions resolved to line, column and source text.
struct Sink<'a> {
    lines: &'a [&'a str],
    diagnostics: Vec<Diagnostic>,
}

impl Sink<'_> {
    /// A diagnostic at byte `byte` of source line `line`.
    fn at(&mut self, severity: Severity, line: LineNo, byte: usize, message: impl Into<String>) {
        let source = self
            .lines
            .get(line.wrapping_sub(1) as usize)
            .copied()
            .unwrap_or("");
        let mut b = byte.min(source.len());
        while !source.is_char_boundary(b) {
            b -= 1;
        }
        let col = source[..b].chars().count() as u32 + 1;
        self.diagnostics.push(Diagnostic {
            severity,
            line,
            col,
            message: message.into(),
            source_line: source.to_string(),
        });
    }

    fn error(&mut self, line: LineNo, byte: usize, message: impl Into<String>) {
        self.at(Severity::Error, line, byte, message)
    }

    fn warn(&mut self, line: LineNo, byte: usize, message: impl Into<String>) {
        self.at(Severity::Warning, line, byte, message)
    }

    /// A diagnostic at byte `at` of a substituted `>M` text.
    fn in_text(
        &mut self,
        severity: Severity,
        text: &MappedText,
        at: usize,
        message: impl Into<String>,
    ) {
        let (line, byte) = text.origin(at);
        self.at(severity, line, byte as usize, message)
    }
}

/// Lower a parsed file. `lines` are all source lines, for diagnostics.
pub fn lower(file: &FileAst<'_>, lines: &[&str]) -> (Option<Script>, Vec<Diagnostic>) {
    let mut sink = Sink {
        lines,
        diagnostics: Vec::new(),
    };
    let script = lower_file(file, &mut sink);
    let failed = sink
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error);
    sink.diagnostics.sort_by_key(|d| (d.line, d.col));
    (if failed { None } else { Some(script) }, sink.diagnostics)
}

fn is_code(text: &str) -> bool {
    let t = text.trim_start();
    !t.is_empty() && !t.starts_with(';')
}

fn lower_file(file: &FileAst<'_>, sink: &mut Sink<'_>) -> Script {
    let mut script = Script {
        string_capacity: 19,
        declarations: Vec::new(),
        sections: Vec::new(),
        meters: Vec::new(),
    };

    match file.sections.first() {
        Some(s) if s.marker == Marker::Declarations && s.head.line == 1 => {}
        Some(s) if s.marker == Marker::Declarations => sink.warn(
            s.head.line,
            0,
            "Tasmota only runs a script whose first line is `>D`; sml runs it anyway",
        ),
        _ => sink.warn(
            1,
            0,
            "script has no `>D` section first: Tasmota would not run it; sml runs it anyway",
        ),
    }
    if let Some(l) = file.preamble.iter().find(|l| is_code(l.text)) {
        sink.warn(
            l.line,
            0,
            "text before the first section belongs to no section and is ignored",
        );
    }

    let mut vars = Variables::new();
    let mut seen: Vec<String> = Vec::new();
    let mut meters_section: Option<usize> = None;
    for (i, section) in file.sections.iter().enumerate() {
        let kind = match &section.marker {
            Marker::End => {
                if let Some(l) = section.body.iter().find(|l| is_code(l.text)) {
                    sink.warn(
                        l.line,
                        0,
                        "lines after `#` belong to no section and are ignored",
                    );
                }
                continue;
            }
            Marker::Declarations => {
                if seen.iter().any(|s| s == ">D") {
                    sink.warn(
                        section.head.line,
                        0,
                        "a second `>D` section: Tasmota uses only the first; ignored",
                    );
                    continue;
                }
                seen.push(">D".into());
                lower_declarations(section, &mut script, &mut vars, sink);
                continue;
            }
            Marker::Meters => {
                if meters_section.is_some() {
                    sink.warn(
                        section.head.line,
                        0,
                        "a second `>M` section: Tasmota uses only the first; ignored",
                    );
                } else {
                    meters_section = Some(i);
                }
                continue;
            }
            Marker::Subroutine { name, params } => SectionKind::Subroutine {
                name: name.to_string(),
                params: params.iter().map(|p| p.to_string()).collect(),
            },
            Marker::Boot => {
                let rest = section.rest.v;
                if rest.is_empty() {
                    SectionKind::Boot
                } else if rest.trim().is_empty() {
                    sink.warn(
                        section.head.line,
                        section.rest.at,
                        "`>B` followed by blanks: Tasmota never runs this section; sml runs it",
                    );
                    SectionKind::Boot
                } else {
                    SectionKind::Other(section.head.text.trim().to_string())
                }
            }
            Marker::BootSecond => SectionKind::BootSecond,
            Marker::EverySecond => SectionKind::EverySecond,
            Marker::Every100ms => SectionKind::Every100ms,
            Marker::Restart => SectionKind::Restart,
            Marker::Teleperiod => SectionKind::Teleperiod,
            Marker::Event => SectionKind::Event,
            Marker::Json => SectionKind::Json,
            Marker::WebStatus => SectionKind::WebStatus,
            Marker::Web
                if section
                    .rest
                    .v
                    .starts_with(|c: char| c.is_ascii_alphanumeric()) =>
            {
                SectionKind::Other(section.head.text.trim().to_string())
            }
            Marker::Web => SectionKind::Web,
            Marker::Global => SectionKind::Global,
            Marker::Other(_) => SectionKind::Other(section.head.text.trim().to_string()),
        };
        if !matches!(kind, SectionKind::Other(_) | SectionKind::Subroutine { .. }) {
            let key = format!("{kind:?}");
            if seen.contains(&key) {
                sink.warn(
                    section.head.line,
                    0,
                    format!(
                        "a second `{}` section: Tasmota uses only the first; ignored",
                        section.head.text.trim()
                    ),
                );
                continue;
            }
            seen.push(key);
        }
        let lines = section
            .body
            .iter()
            .filter(|l| is_code(l.text))
            .map(|l| SourceLine {
                line: l.line,
                text: l.text.trim().to_string(),
            })
            .collect();
        script.sections.push(Section {
            kind,
            line: section.head.line,
            lines,
        });
    }

    if let Some(i) = meters_section {
        let section = &file.sections[i];
        match file.sections.get(i + 1) {
            Some(next) if next.marker == Marker::End => {}
            Some(next) => sink.error(
                next.head.line,
                0,
                "the `>M` section must end with a line holding `#` before the next section",
            ),
            None => {
                let last = section
                    .body
                    .last()
                    .map(|l| l.line)
                    .unwrap_or(section.head.line);
                let len = sink
                    .lines
                    .get(last as usize - 1)
                    .map(|l| l.len())
                    .unwrap_or(0);
                sink.error(last, len, "missing `#` line at the end of the `>M` section")
            }
        }
        script.meters = MeterLowering::new(&vars, sink).run(section);
    }
    script
}

fn lower_declarations(
    section: &SectionAst<'_>,
    script: &mut Script,
    vars: &mut Variables,
    sink: &mut Sink<'_>,
) {
    let rest = section.rest.v.trim();
    if let Ok(n) = rest.parse::<u32>() {
        script.string_capacity = if (9..=254).contains(&n) {
            n as u16
        } else {
            254
        };
    }
    for l in &section.body {
        if !is_code(l.text) || !l.text.contains('=') {
            continue;
        }
        let decl = match parse::parse_declaration(l.text) {
            Ok(d) => d,
            Err((at, message)) => {
                sink.error(l.line, at, message);
                continue;
            }
        };
        let kinds = decl
            .kinds
            .iter()
            .map(|k| match k {
                'p' => VarKind::Permanent,
                't' => VarKind::Timer,
                'i' => VarKind::AutoIncrement,
                'g' => VarKind::Global,
                'I' => VarKind::Integer,
                'm' => VarKind::Median,
                _ => VarKind::MovingAverage,
            })
            .collect();
        let initial = match decl.value.v {
            LiteralAst::Text(raw) => {
                let text = unescape(raw);
                let cap = script.string_capacity as usize;
                if text.chars().count() > cap {
                    sink.warn(
                        l.line,
                        decl.value.at,
                        format!("string longer than the capacity {cap} (`>D {cap}`): Tasmota cuts it, and so does sml"),
                    );
                    Literal::Text(text.chars().take(cap).collect())
                } else {
                    Literal::Text(text)
                }
            }
            LiteralAst::Hex(h) => {
                Literal::Number(i64::from_str_radix(&h[2..], 16).unwrap_or(0) as f64)
            }
            LiteralAst::Decimal(d) => Literal::Number(d.parse().unwrap_or(0.0)),
        };
        let array_len = decl.array_len.and_then(|a| a.v.parse().ok());
        if !decl.trailing.v.trim().is_empty() && !decl.trailing.v.trim_start().starts_with(';') {
            sink.warn(
                l.line,
                decl.trailing.at,
                format!(
                    "`{}` after the value is ignored, as Tasmota does: `{}` is {}",
                    decl.trailing.v.trim(),
                    decl.name.v,
                    literal_text(&initial)
                ),
            );
        }
        vars.insert(decl.name.v.to_string(), initial.clone());
        script.declarations.push(Declaration {
            line: l.line,
            name: decl.name.v.to_string(),
            kinds,
            initial,
            array_len,
        });
    }
}

fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A meter while its lines are collected.
struct MeterBuilder {
    meter: Meter,
    /// The definition's request blocks, framed when all `=so` options are known.
    blocks: Vec<RawBlock>,
    /// The telegrams had an error: block numbers (`iN:`) cannot be checked.
    telegram_error: bool,
    tcp: bool,
}

struct MeterLowering<'s, 'a> {
    vars: &'s Variables,
    sink: &'s mut Sink<'a>,
    meters: BTreeMap<MeterIndex, MeterBuilder>,
    /// Meters whose definition failed: their lines are skipped without more errors.
    broken: Vec<MeterIndex>,
    entries: EntryNo,
}

/// Where a text's position `at` points, for a diagnostic.
type At = usize;

impl<'s, 'a> MeterLowering<'s, 'a> {
    fn new(vars: &'s Variables, sink: &'s mut Sink<'a>) -> Self {
        MeterLowering {
            vars,
            sink,
            meters: BTreeMap::new(),
            broken: Vec::new(),
            entries: 0,
        }
    }

    fn err(&mut self, t: &MappedText, at: At, msg: impl Into<String>) {
        self.sink.in_text(Severity::Error, t, at, msg)
    }

    fn warn(&mut self, t: &MappedText, at: At, msg: impl Into<String>) {
        self.sink.in_text(Severity::Warning, t, at, msg)
    }

    fn note(&mut self, t: &MappedText, at: At, msg: impl Into<String>) {
        self.sink.in_text(Severity::Note, t, at, msg)
    }

    fn run(mut self, section: &SectionAst<'_>) -> Vec<Meter> {
        let rest = section.rest.v;
        let declared: Option<usize> = match rest.trim().parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.sink.error(
                    section.head.line,
                    section.rest.at,
                    "`>M` needs the number of meters (`>M 1`)",
                );
                None
            }
        };

        // Substitute every line, then join definition lines that end in a comma inside their telegrams.
        let mut texts: Vec<MappedText> = Vec::new();
        let mut continuing = false;
        // Unknown `%name%`: one error at the first use, with the count; the lines are skipped.
        let mut unknown_uses: Vec<(String, LineNo, usize, usize)> = Vec::new();
        for l in section.body.iter().filter(|l| is_code(l.text)) {
            let text = l.text.trim_end();
            let (mapped, unknown) = substitute(text, l.line, self.vars);
            if !unknown.is_empty() {
                for u in unknown {
                    match unknown_uses.iter_mut().find(|(n, ..)| *n == u.name) {
                        Some(entry) => entry.3 += 1,
                        None => unknown_uses.push((u.name, l.line, u.at, 1)),
                    }
                }
                if let Some(i) = leading_index(text) {
                    self.broken.push(i);
                }
                continuing = false;
                continue;
            }
            if continuing {
                if let Some(prev) = texts.last_mut() {
                    prev.append(mapped);
                    continuing = continues(&prev.text);
                    continue;
                }
            }
            continuing = continues(&mapped.text);
            texts.push(mapped);
        }

        for (name, line, at, uses) in unknown_uses {
            let more = if uses > 1 {
                format!(" (used {uses} times; the lines using it are skipped)")
            } else {
                String::new()
            };
            self.sink.error(
                line,
                at,
                format!("`%{name}%` names no variable declared in `>D`{more}"),
            );
        }
        for t in texts
            .iter()
            .filter(|t| t.text.trim_start().starts_with('+'))
        {
            self.definition(t, declared);
        }
        if let Some(n) = declared {
            for i in 1..=n {
                if i <= u8::MAX as usize
                    && !self.meters.contains_key(&(i as MeterIndex))
                    && !self.broken.contains(&(i as MeterIndex))
                {
                    self.sink.error(
                        section.head.line,
                        section.rest.at,
                        format!("`>M {n}` declares {n} meter(s), but meter {i} has no `+{i},...` definition line"),
                    );
                }
            }
        }
        for t in texts
            .iter()
            .filter(|t| !t.text.trim_start().starts_with('+'))
        {
            self.metric_line(t);
        }
        let total = self.entries;
        let mut out = Vec::new();
        for (_, b) in std::mem::take(&mut self.meters) {
            out.push(self.finish(b, total));
        }
        out
    }

    fn definition(&mut self, t: &MappedText, declared: Option<usize>) {
        let def = match parse::parse_meter_def(&t.text) {
            Ok(d) => d,
            Err((at, message)) => {
                self.err(t, at, message);
                if let Some(i) = leading_index(&t.text) {
                    self.broken.push(i);
                }
                return;
            }
        };
        let index = match def.index.v.parse::<MeterIndex>() {
            Ok(i) if i >= 1 => i,
            _ => {
                self.err(
                    t,
                    def.index.at,
                    format!("meter number `{}` must be 1..255", def.index.v),
                );
                return;
            }
        };
        let mut ok = true;
        if let Some(n) = declared {
            if index as usize > n {
                self.err(
                    t,
                    def.index.at,
                    format!("meter {index} is defined, but `>M {n}` declares {n} meter(s)"),
                );
                ok = false;
            }
        }
        if self.meters.contains_key(&index) {
            self.err(t, def.index.at, format!("meter {index} is defined twice"));
            return;
        }
        let param: i32 = match def.param.v.parse() {
            Ok(p) => p,
            Err(_) => {
                self.err(
                    t,
                    def.param.at,
                    format!("parameter `{}` is out of range", def.param.v),
                );
                ok = false;
                0
            }
        };
        let letter = def.type_letter.v;
        let tcp = matches!(def.rx.v, RxAst::Tcp(_));
        let source = match def.rx.v {
            RxAst::Pin(p) => MeterSource::Pin(self.pin(t, def.rx.at, p)),
            RxAst::Tcp(host) => {
                if !matches!(letter, 'm' | 'M') {
                    self.err(
                        t,
                        def.rx.at,
                        "an `[address]` (Modbus TCP) needs meter type `m` or `M`",
                    );
                    ok = false;
                }
                match u16::try_from(param) {
                    Ok(port) => MeterSource::ModbusTcp {
                        host: host.to_string(),
                        port,
                    },
                    Err(_) => {
                        self.err(
                            t,
                            def.param.at,
                            format!("TCP port `{param}` is out of range"),
                        );
                        ok = false;
                        MeterSource::ModbusTcp {
                            host: host.to_string(),
                            port: 0,
                        }
                    }
                }
            }
        };
        let decoding = match letter {
            'o' => Decoding::Obis(Vec::new()),
            's' => Decoding::Sml(Vec::new()),
            'm' | 'M' => Decoding::Modbus(Vec::new()),
            'e' => Decoding::Ebus(Vec::new()),
            'k' => Decoding::Kamstrup(Vec::new()),
            'r' => Decoding::Raw {
                shift: true,
                metrics: Vec::new(),
            },
            'R' => Decoding::Raw {
                shift: false,
                metrics: Vec::new(),
            },
            'v' => Decoding::Vbus(Vec::new()),
            'C' => Decoding::Can(Vec::new()),
            'c' => Decoding::Counter {
                param,
                metrics: Vec::new(),
            },
            'p' => Decoding::Pzem(Vec::new()),
            other => {
                self.err(
                    t,
                    def.type_letter.at,
                    format!("unknown meter type `{other}` (known: {METER_TYPES})"),
                );
                self.broken.push(index);
                return;
            }
        };
        let serial_line = !tcp && !matches!(letter, 'c' | 'C');
        let baud = if serial_line {
            match u32::try_from(param) {
                Ok(b) if b > 0 => b,
                _ => {
                    self.err(
                        t,
                        def.param.at,
                        format!("baud rate `{param}` must be a positive number"),
                    );
                    ok = false;
                    0
                }
            }
        } else {
            0
        };
        let serial = SerialSettings {
            baud,
            data_bits: 8,
            parity: match def.parity {
                Some('E') => Parity::Even,
                Some('O') => Parity::Odd,
                Some(_) => Parity::None,
                None if letter == 'M' => Parity::Even,
                None => Parity::None,
            },
            stop_bits: if def.stop_bits == Some('2') { 2 } else { 1 },
        };
        let flags = match def.flag.v.split('.').next().unwrap_or("").parse::<u16>() {
            Ok(f) => f,
            Err(_) => {
                self.err(
                    t,
                    def.flag.at,
                    format!("flag `{}` is out of range", def.flag.v),
                );
                ok = false;
                0
            }
        };
        let mut prefix = def.prefix.map(|p| p.v.to_string()).unwrap_or_default();
        let mut keep_tx = true;
        if let Some(p) = def.prefix {
            let len = p.v.chars().count();
            if len > 8 && def.tx.is_some() {
                self.warn(
                    t,
                    p.at,
                    format!("prefix `{}` has {len} characters: Tasmota cuts it to 7 and stops reading the line, so the transmit pin, period and telegrams after it are ignored (as here)", p.v),
                );
                keep_tx = false;
            } else if len > 7 {
                self.warn(
                    t,
                    p.at,
                    format!("prefix `{}` is cut to 7 characters, as Tasmota does", p.v),
                );
            }
            prefix = p.v.chars().take(7).collect();
        }
        let prefix = if prefix == "*" { None } else { Some(prefix) };
        let mut tx = None;
        let mut requests = Requests::default();
        let mut blocks = Vec::new();
        if keep_tx {
            if let Some(txa) = &def.tx {
                let pin = self.pin(t, txa.pin.at, txa.pin.v);
                let driver_enable = txa.enable.as_ref().map(|(inverted, p)| DriverEnable {
                    pin: self.pin(t, p.at, p.v),
                    inverted: *inverted,
                });
                tx = Some(TxPin { pin, driver_enable });
            }
            if let Some(period) = def.tx_period {
                match period.v.parse::<u32>() {
                    Ok(p) => requests.period_ms = p.saturating_mul(100),
                    Err(_) => {
                        self.err(
                            t,
                            period.at,
                            format!("period `{}` is out of range", period.v),
                        );
                        ok = false;
                    }
                }
            }
            if let Some(tg) = def.telegrams {
                match telegram::read_blocks(tg.v, matches!(letter, 'm' | 'M')) {
                    Ok((b, warnings)) => {
                        for (at, w) in warnings {
                            self.warn(t, tg.at + at, w);
                        }
                        blocks = b;
                    }
                    Err((at, e)) => {
                        self.err(t, tg.at + at, e);
                        ok = false;
                    }
                }
            }
        }
        // With `ok == false` an error is already reported (so no model is produced), but the meter
        // is kept so its metric lines are still checked against its type.
        let _ = ok;
        let (line, _) = t.origin(0);
        self.meters.insert(
            index,
            MeterBuilder {
                meter: Meter {
                    index,
                    line,
                    source,
                    serial,
                    flags,
                    param,
                    prefix,
                    tx,
                    requests,
                    options: MeterOptions::default(),
                    decoding,
                    derived: Vec::new(),
                    html: Vec::new(),
                },
                blocks,
                telegram_error: !ok,
                tcp,
            },
        );
    }

    /// A pin number; `3.00` (a `%rxpin%` without decimals) reads as 3, as Tasmota's atoi does.
    fn pin(&mut self, t: &MappedText, at: At, text: &str) -> i32 {
        let int = text.split('.').next().unwrap_or("");
        match int.parse::<i32>() {
            Ok(p) => p,
            Err(_) => {
                self.err(t, at, format!("pin `{text}` is out of range"));
                0
            }
        }
    }

    fn metric_line(&mut self, t: &MappedText) {
        let line = match parse::parse_meter_line(&t.text) {
            Ok(l) => l,
            Err((at, message)) => {
                // Keep entry numbers of later lines right when a value line is broken.
                if t.text.contains('@') {
                    self.entries = self.entries.saturating_add(1);
                }
                self.err(t, at, message);
                return;
            }
        };
        let counts_entry = matches!(
            line.kind,
            MeterLineKind::Metric { .. }
                | MeterLineKind::Math { .. }
                | MeterLineKind::Difference { .. }
        );
        if counts_entry {
            self.entries = self.entries.saturating_add(1);
        }
        let entry = self.entries;
        let index = line.meter.v.parse::<MeterIndex>().ok();
        let Some(index) = index.filter(|i| self.meters.contains_key(i)) else {
            if !index.is_some_and(|i| self.broken.contains(&i)) {
                self.err(
                    t,
                    line.meter.at,
                    format!(
                        "meter {} is not defined by a `+{},...` line",
                        line.meter.v, line.meter.v
                    ),
                );
            }
            return;
        };
        let (src_line, _) = t.origin(line.meter.at);
        match line.kind {
            MeterLineKind::Html(html) => self.builder(index).meter.html.push(HtmlLine {
                line: src_line,
                html: html.to_string(),
            }),
            MeterLineKind::Option { name, args } => self.option(t, index, name, &args),
            MeterLineKind::Unknown(text) => self.warn(
                t,
                text.at,
                format!("unknown special line `{}`: ignored", text.v),
            ),
            MeterLineKind::Math {
                first,
                ops,
                value,
                fields,
            } => {
                let Some(output) = self.output(t, entry, src_line, &value, &fields) else {
                    return;
                };
                let Some(divisor) = self.divisor(t, &value) else {
                    return;
                };
                let first = self.operand(t, &first);
                if ops.len() > 8 {
                    self.warn(
                        t,
                        value.at,
                        "more than 8 operations: Tasmota stops after 8; sml computes all",
                    );
                }
                let ops = ops
                    .iter()
                    .map(|(op, o)| {
                        let op = match op {
                            '+' => MathOp::Add,
                            '-' => MathOp::Sub,
                            '*' => MathOp::Mul,
                            _ => MathOp::Div,
                        };
                        (op, self.operand(t, o))
                    })
                    .collect();
                self.builder(index).meter.derived.push(Derived {
                    kind: DerivedKind::Math { first, ops },
                    divisor,
                    output,
                });
            }
            MeterLineKind::Difference {
                entry: e,
                interval,
                value,
                fields,
            } => {
                let Some(output) = self.output(t, entry, src_line, &value, &fields) else {
                    return;
                };
                let Some(divisor) = self.divisor(t, &value) else {
                    return;
                };
                let entry_no = e.v.parse::<EntryNo>().unwrap_or(0);
                if entry_no == 0 {
                    self.warn(t, e.at, "`=d 0` refers to no entry: the value stays 0");
                }
                let interval_s = match interval {
                    Some(i) => i.v.parse().unwrap_or(u32::MAX),
                    None => {
                        if entry_no != 0 {
                            self.warn(t, e.at, "`=d` without an interval: the value stays 0");
                        }
                        0
                    }
                };
                let count = self
                    .meters
                    .values()
                    .flat_map(|b| &b.meter.derived)
                    .filter(|d| matches!(d.kind, DerivedKind::Difference { .. }))
                    .count();
                if count >= 10 {
                    self.warn(
                        t,
                        line.meter.at,
                        "more than 10 `=d` lines: Tasmota ignores the rest; sml computes them",
                    );
                }
                self.builder(index).meter.derived.push(Derived {
                    kind: DerivedKind::Difference {
                        entry: entry_no,
                        interval_s,
                    },
                    divisor,
                    output,
                });
            }
            MeterLineKind::Metric {
                decoder,
                value,
                fields,
            } => self.metric(t, index, entry, src_line, decoder, value, &fields),
        }
    }

    fn builder(&mut self, index: MeterIndex) -> &mut MeterBuilder {
        self.meters
            .get_mut(&index)
            .expect("meter checked by the caller")
    }

    fn operand(&mut self, t: &MappedText, o: &Sp<OperandAst<'_>>) -> Operand {
        match o.v {
            OperandAst::Entry(e) => {
                let n = e.parse::<EntryNo>().unwrap_or(0);
                if n == 0 {
                    self.warn(t, o.at, "entry 0 does not exist (entries count from 1)");
                }
                Operand::Entry(n)
            }
            OperandAst::Constant(c) => Operand::Constant(c.parse().unwrap_or(0.0)),
        }
    }

    /// The output fields `,label,unit,name,precision`.
    fn output(
        &mut self,
        t: &MappedText,
        entry: EntryNo,
        line: LineNo,
        value: &ValueSpecAst<'_>,
        fields: &[Sp<&str>],
    ) -> Option<Output> {
        if fields.len() < 4 {
            let at = fields
                .last()
                .map(|f| f.at + f.v.len())
                .unwrap_or(t.text.len());
            self.err(
                t,
                at,
                format!(
                    "expected `,label,unit,json name,precision` after the value; found {} field(s)",
                    fields.len()
                ),
            );
            return None;
        }
        let _ = value;
        let p = fields[3];
        let digits = p.v.trim_start();
        let lead = p.v.len() - digits.len();
        let n = digits.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            self.err(t, p.at, format!("precision `{}` is not a number", p.v));
            return None;
        }
        let after = digits[n..].trim();
        if !after.is_empty() && !after.starts_with(';') {
            self.warn(
                t,
                p.at + lead + n,
                format!("`{after}` after the precision is ignored, as Tasmota does"),
            );
        }
        if fields.len() > 4 && !after.starts_with(';') {
            self.warn(
                t,
                fields[4].at,
                "fields after the precision are ignored, as Tasmota does",
            );
        }
        let precision = Precision::from_field(digits[..n].parse().unwrap_or(u32::MAX));
        Some(Output {
            entry,
            line,
            label: fields[0].v.to_string(),
            unit: fields[1].v.to_string(),
            name: fields[2].v.to_string(),
            precision,
        })
    }

    /// The divisor of a value spec (`=m`/`=d` lines take only a number).
    fn divisor(&mut self, t: &MappedText, v: &ValueSpecAst<'_>) -> Option<f64> {
        match &v.kind {
            ValueKindAst::Number { scale, .. } => {
                self.ignored(t, v);
                Some(self.scale(t, *scale))
            }
            ValueKindAst::Text(_) => {
                self.err(t, v.at, "`=m`/`=d` lines need a number after `@`, not `#`");
                None
            }
        }
    }

    fn scale(&mut self, t: &MappedText, s: Sp<&str>) -> f64 {
        let v: f64 = s.v.parse().unwrap_or(f64::NAN);
        if v == 0.0 {
            self.warn(t, s.at, "scale 0 divides by zero: the value is infinite");
        }
        v
    }

    fn ignored(&mut self, t: &MappedText, v: &ValueSpecAst<'_>) {
        let ig = v.ignored;
        if !ig.v.is_empty() && ig.v != ")" {
            self.warn(
                t,
                ig.at,
                format!("`{}` after the scale is ignored, as Tasmota does", ig.v),
            );
        }
    }

    fn value_spec(&mut self, t: &MappedText, v: &ValueSpecAst<'_>, hex_ids: bool) -> ValueSpec {
        self.ignored(t, v);
        match &v.kind {
            ValueKindAst::Number { scale, offset } => ValueSpec::Number {
                divisor: self.scale(t, *scale),
                offset: offset.map(|o| o.v.parse().unwrap_or(0.0)).unwrap_or(0.0),
            },
            ValueKindAst::Text(flag) => ValueSpec::Text {
                hex_as_ascii: hex_ids && *flag == Some('x'),
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn metric(
        &mut self,
        t: &MappedText,
        index: MeterIndex,
        entry: EntryNo,
        line: LineNo,
        decoder: Sp<&str>,
        v: ValueSpecAst<'_>,
        fields: &[Sp<&str>],
    ) {
        let Some(output) = self.output(t, entry, line, &v, fields) else {
            return;
        };
        let letter = self.builder(index).meter.decoding.type_letter();
        let is_obis = matches!(letter, 'o' | 'c');
        // `@#x` shows a hex id as ASCII on every binary type, SML included; on OBIS text `x` is
        // just the capture's terminator.
        let value = self.value_spec(t, &v, !is_obis);
        let bit = match v.bit {
            Some(b) => match b.v.parse::<u8>() {
                Ok(n) if n < 64 => Some(n),
                _ => {
                    self.err(t, b.at, format!("bit `{}` is out of range", b.v));
                    return;
                }
            },
            None => None,
        };
        let block = match v.block {
            Some(b) => match b.v.parse::<u16>() {
                Ok(n) => {
                    let blocks = self.builder(index).blocks.len();
                    if n as usize >= blocks && !self.builder(index).telegram_error {
                        self.warn(t, b.at, format!("`i{n}:` names request block {n}, but the meter sends {blocks} block(s): the line never matches"));
                    }
                    Some(n)
                }
                Err(_) => {
                    self.err(t, b.at, format!("block `{}` is out of range", b.v));
                    return;
                }
            },
            None => None,
        };
        if !is_obis {
            if let Some(b) = v.bracket {
                self.warn(
                    t,
                    b.at,
                    "`(N:` selects an OBIS bracket; ignored on this meter type",
                );
            }
            if let Some((_, f)) = v.split {
                self.warn(
                    t,
                    f.at,
                    "`s<delim>N:` splits OBIS text lines; ignored on this meter type",
                );
            }
        } else if bit.is_some() || block.is_some() {
            self.warn(
                t,
                v.at,
                "`bN:`/`iN:` apply to binary meters; ignored on this meter type",
            );
        }
        let dec_err = |s: &mut Self, (at, msg): SyntaxError| s.err(t, decoder.at + at, msg);
        let flags = self.builder(index).meter.flags;
        match &mut self.builder(index).meter.decoding {
            Decoding::Obis(_) => {
                let bracket = match v.bracket {
                    Some(b) => match b.v.parse::<u8>() {
                        Ok(n) => n,
                        Err(_) => {
                            self.err(t, b.at, format!("bracket `{}` is out of range", b.v));
                            return;
                        }
                    },
                    None => 0,
                };
                let text_terminator = match v.kind {
                    ValueKindAst::Text(Some(c)) => Some(c),
                    _ => None,
                };
                let split = match v.split {
                    Some((d, n)) => match n.v.parse::<u8>() {
                        Ok(n) => Some((d, n)),
                        Err(_) => {
                            self.err(t, n.at, format!("field `{}` is out of range", n.v));
                            return;
                        }
                    },
                    None => None,
                };
                if decoder.v.starts_with('.') {
                    // The Logarex seed's `.8.1(` matched in Tasmota's old sliding-window mode only.
                    self.warn(
                        t,
                        decoder.at,
                        format!(
                            "`{}` matches no line in line mode (Tasmota's default): meter lines start with the whole code, e.g. `1{}`; it matches only in window mode (`=so2,1`)",
                            decoder.v, decoder.v
                        ),
                    );
                }
                let pattern = ObisPattern {
                    code: decoder.v.to_string(),
                    bracket,
                    text_terminator,
                    split,
                };
                if let Decoding::Obis(m) = &mut self.builder(index).meter.decoding {
                    m.push(Metric {
                        pattern,
                        value,
                        output,
                    });
                }
            }
            Decoding::Sml(_) => {
                let bytes = match parse::parse_sml_pattern(decoder.v) {
                    Ok(b) => b,
                    Err(e) => return dec_err(self, e),
                };
                if bytes.is_empty() {
                    self.err(
                        t,
                        decoder.at,
                        "an SML line needs the OBIS code as hex before `@`",
                    );
                    return;
                }
                if bytes.first() != Some(&Some(0x77)) && flags & 32 == 0 {
                    self.warn(t, decoder.at, "pattern does not start with `77`: recent Tasmota matches it only with flag 32; sml matches it anyway");
                }
                if let Decoding::Sml(m) = &mut self.builder(index).meter.decoding {
                    m.push(Metric {
                        pattern: SmlPattern { bytes, bit },
                        value,
                        output,
                    });
                }
            }
            Decoding::Vbus(_) => {
                let pattern = match parse::parse_vbus_pattern(decoder.v) {
                    Ok(p) => p,
                    Err(e) => return dec_err(self, e),
                };
                if let Decoding::Vbus(m) = &mut self.builder(index).meter.decoding {
                    m.push(Metric {
                        pattern,
                        value,
                        output,
                    });
                }
            }
            Decoding::Counter { .. } => {
                let pattern = if decoder.v.contains("1.8.0") {
                    CounterField::Count
                } else if decoder.v.contains("1.7.0") {
                    CounterField::Rate
                } else {
                    self.err(t, decoder.at, "a counter line reads `1-0:1.8.0*255` (count) or `1-0:1.7.0*255` (pulses per minute)");
                    return;
                };
                if let Decoding::Counter { metrics, .. } = &mut self.builder(index).meter.decoding {
                    metrics.push(Metric {
                        pattern,
                        value,
                        output,
                    });
                }
            }
            Decoding::Modbus(_)
            | Decoding::Ebus(_)
            | Decoding::Kamstrup(_)
            | Decoding::Raw { .. }
            | Decoding::Can(_)
            | Decoding::Pzem(_) => {
                let ops = match parse::parse_byte_pattern(decoder.v) {
                    Ok(o) => o,
                    Err(e) => return dec_err(self, e),
                };
                let metric = Metric {
                    pattern: BytePattern { ops, bit, block },
                    value,
                    output,
                };
                match &mut self.builder(index).meter.decoding {
                    Decoding::Modbus(m)
                    | Decoding::Ebus(m)
                    | Decoding::Kamstrup(m)
                    | Decoding::Can(m)
                    | Decoding::Pzem(m)
                    | Decoding::Raw { metrics: m, .. } => m.push(metric),
                    _ => {}
                }
            }
        }
    }

    fn option(&mut self, t: &MappedText, index: MeterIndex, name: Sp<&str>, args: &[Sp<&str>]) {
        let (line, _) = t.origin(name.at);
        let raw_text = t.text[name.at..].to_string();
        self.builder(index).meter.options.raw.push((line, raw_text));
        let arg = |i: usize| args.get(i).map(|a| a.v.trim()).unwrap_or("");
        let missing = |s: &mut Self, what: &str| {
            s.err(
                t,
                name.at + name.v.len(),
                format!("`=so{}` needs {what}", name.v),
            )
        };
        match name.v {
            "1" => {
                if args.len() < 6 {
                    return missing(self, "`,BCDE,fc1,bit1,fc2,bit2,BCDE2`");
                }
                let obis = |s: &str| -> Option<[u8; 4]> {
                    let v = u32::from_str_radix(s, 16).ok()?;
                    (s.len() == 8).then(|| v.to_be_bytes())
                };
                let hex = |s: &str| u8::from_str_radix(s, 16).ok();
                let dec = |s: &str| s.parse::<u8>().ok();
                match (obis(arg(0)), hex(arg(1)), dec(arg(2)), hex(arg(3)), dec(arg(4)), obis(arg(5))) {
                    (Some(status_obis), Some(fc1), Some(bit1), Some(fc2), Some(bit2), Some(value_obis)) => {
                        self.builder(index).meter.options.sign_from_status =
                            Some(SignFromStatus { status_obis, fc1, bit1, fc2, bit2, value_obis })
                    }
                    _ => self.err(t, args[0].at, "`=so1` takes 8-digit hex OBIS codes, hex type bytes and decimal bit numbers"),
                }
            }
            "2" => match u16::from_str_radix(arg(0), 16) {
                Ok(f) => self.builder(index).meter.options.so2_flags = Some(f),
                Err(_) => missing(self, "a hex flag value"),
            },
            "3" => self.note(
                t,
                name.at,
                "`=so3` sets ESP buffer sizes: no effect off the ESP",
            ),
            "4" => {
                let key = hex_bytes(arg(0));
                match key.as_deref().and_then(|k| <[u8; 16]>::try_from(k).ok()) {
                    Some(k) => self.builder(index).meter.options.aes_key = Some(k),
                    None => self.warn(
                        t,
                        args.first().map(|a| a.at).unwrap_or(name.at),
                        "`=so4` needs a 32-digit hex AES key; this one is not (a placeholder?): encrypted telegrams will not decrypt",
                    ),
                }
            }
            "5" => match hex_bytes(arg(0)) {
                Some(k) if !k.is_empty() => self.builder(index).meter.options.auth_key = Some(k),
                _ => self.warn(
                    t,
                    args.first().map(|a| a.at).unwrap_or(name.at),
                    "`=so5` needs a hex authentication key; ignored",
                ),
            },
            "6" => match arg(0).parse::<u32>() {
                Ok(ms) => self.builder(index).meter.options.block_sync_ms = Some(ms),
                Err(_) => missing(self, "a time in ms"),
            },
            "7" => self.note(
                t,
                name.at,
                "`=so7` selects an ESP UART: no effect off the ESP",
            ),
            "8" | "9" => {}
            "C" => match (arg(0).parse::<u32>(), arg(1).parse::<u8>()) {
                (Ok(_), Ok(mode)) if mode <= 11 || mode == 15 => {
                    self.builder(index).meter.options.sml_crc = Some(SmlCrcMode(mode))
                }
                (Ok(_), Ok(mode)) => self.err(
                    t,
                    args[1].at,
                    format!("CRC mode {mode} is unknown (0..11 or 15)"),
                ),
                _ => missing(self, "`,<bufsize>,<crcmode>`"),
            },
            other => self.warn(t, name.at, format!("unknown option `=so{other}`: ignored")),
        }
    }

    /// Frame the request blocks now that the options are known; check `=m` entry numbers.
    fn finish(&mut self, b: MeterBuilder, total: EntryNo) -> Meter {
        let mut meter = b.meter;
        let letter = meter.decoding.type_letter();
        let no_parity = meter.options.so2_flags.is_some_and(|f| f & 0x20 != 0);
        meter.requests.telegrams = b
            .blocks
            .iter()
            .map(|block| match letter {
                'm' if b.tcp => telegram::modbus_tcp(block),
                'm' => telegram::modbus_rtu(block),
                'o' if !no_parity => telegram::even_parity(&block.bytes),
                'k' => telegram::kamstrup(&block.bytes),
                _ => block.bytes.clone(),
            })
            .collect();
        for d in &meter.derived {
            let entries: Vec<EntryNo> = match &d.kind {
                DerivedKind::Math { first, ops } => std::iter::once(first)
                    .chain(ops.iter().map(|(_, o)| o))
                    .filter_map(|o| match o {
                        Operand::Entry(e) => Some(*e),
                        Operand::Constant(_) => None,
                    })
                    .collect(),
                DerivedKind::Difference { entry, .. } => vec![*entry],
            };
            if let Some(e) = entries.iter().find(|&&e| e > total) {
                let line = d.output.line;
                self.sink.warn(line, 0, format!("entry {e} does not exist: the script has {total} entries (Tasmota reads entry 1 instead)"));
            }
        }
        meter
    }
}

/// Does a `>M` definition line continue on the next line? Only when it ends with a comma inside
/// its telegrams (8 or more commas), so `+1,3,s,0,9600,` (empty prefix) is complete.
fn continues(text: &str) -> bool {
    let t = text.trim_end();
    t.trim_start().starts_with('+') && t.ends_with(',') && t.matches(',').count() >= 8
}

fn leading_index(text: &str) -> Option<MeterIndex> {
    let t = text.trim_start().strip_prefix('+')?;
    t.split(',').next()?.parse().ok()
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A literal as a user would write it, for messages.
fn literal_text(l: &Literal) -> String {
    match l {
        Literal::Number(n) => format!("the number {n}"),
        Literal::Text(t) => format!("the text \"{t}\""),
    }
}
