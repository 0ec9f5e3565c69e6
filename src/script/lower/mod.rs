/*!
Lowering: the syntax tree of a file to the typed model, checking everything on the way and
collecting every problem (as pest's validator does) instead of stopping at the first. `>M` lines are
substituted and parsed one by one here, so a broken line costs one diagnostic and its neighbours are
still checked. Where Tasmota silently ignores or mangles something, sml does what Tasmota does and
says so with a warning.

One file per concern: this one walks the sections; `declarations` reads `>D`; `meter` collects the
`>M` section and its `+` definition lines; `metric` the value lines; `options` the `=so` lines;
`requests` the hex request blocks of a definition line.
*/

mod declarations;
mod meter;
mod metric;
mod options;
mod requests;

use super::ast::*;
use super::diagnostic::{Diagnostic, Severity};
use super::model::*;
use super::substitute::{substitute, MappedText, Variables};
use declarations::lower_declarations;
use meter::MeterLowering;

/// The meter type letters Tasmota knows.
const METER_TYPES: &str = "o s e v m M k C c r R p";

/// Collects diagnostics with their positions resolved to line, column and source text.
struct Sink<'a> {
    lines: &'a [&'a str],
    diagnostics: Vec<Diagnostic>,
}

impl Sink<'_> {
    fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    fn has_errors(&self) -> bool {
        self.error_count() > 0
    }

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

/// Variables of the host script a meter file is pasted into (ottelo's meter files use them). Pins
/// mean nothing off the ESP and `smlf` is a flag field, so sml supplies them when a script uses them
/// without declaring them: (name, value, what it is).
const HOST_DEFAULTS: [(&str, f64, &str); 3] = [
    (
        "rxpin",
        -1.0,
        "the receive pin, which means nothing off the ESP",
    ),
    (
        "txpin",
        -1.0,
        "the transmit pin, which means nothing off the ESP",
    ),
    ("smlf", 0.0, "the meter's flag field"),
];

/// Lower a parsed file. `lines` are all source lines, for diagnostics; `defines` are the
/// The `>M` section (the `i`th section) to meters, with the host variables `%name%` may use.
fn lower_meters(
    file: &FileAst<'_>,
    i: usize,
    defines: &[(String, Literal)],
    vars: &Variables,
    script: &Script,
    sink: &mut Sink<'_>,
) -> Vec<Meter> {
    let section = &file.sections[i];
    // Tasmota ends `>M` at `#`, at the next `>` section, or at the end of the text.
    match file.sections.get(i + 1) {
        Some(next) if next.marker == Marker::End => {}
        Some(next) => sink.at(
            Severity::Note,
            next.head.line,
            0,
            format!(
                "the `>M` section ends here, at `{}`, without a `#` line: Tasmota ends it at the next section too, and so does sml",
                next.head.text.trim()
            ),
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
            sink.at(
                Severity::Note,
                last,
                len,
                "the `>M` section ends at the end of the file, without a `#` line: Tasmota accepts that, and so does sml",
            )
        }
    }
    let mut vars = vars.clone();
    apply_defines(defines, script, &mut vars, sink);
    supply_host_variables(section, &mut vars, sink);
    let meters = MeterLowering::new(&vars, sink).run(section);
    if meters.is_empty() && !sink.has_errors() {
        sink.error(
            section.head.line,
            0,
            "the `>M` section defines no meter (no `+1,...` line): sml has nothing to read",
        );
    }
    meters
}

/// The kind of a section sml keeps for the hooks (every marker but `>D`, `>M` and `#`).
fn script_section_kind(section: &SectionAst<'_>, sink: &mut Sink<'_>) -> SectionKind {
    match &section.marker {
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
        Marker::End | Marker::Declarations | Marker::Meters => {
            SectionKind::Other(section.head.text.trim().to_string())
        }
    }
}

/// `--define NAME=VALUE` host variables.
pub fn lower(
    file: &FileAst<'_>,
    lines: &[&str],
    defines: &[(String, Literal)],
) -> (Option<Script>, Vec<Diagnostic>) {
    let mut sink = Sink {
        lines,
        diagnostics: Vec::new(),
    };
    let script = lower_file(file, defines, &mut sink);
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

fn lower_file(file: &FileAst<'_>, defines: &[(String, Literal)], sink: &mut Sink<'_>) -> Script {
    let mut script = Script {
        string_capacity: 19,
        declarations: Vec::new(),
        sections: Vec::new(),
        meters: Vec::new(),
    };
    let has_code = file.preamble.iter().any(|l| is_code(l.text))
        || file
            .sections
            .iter()
            .any(|s| s.marker != Marker::End || s.body.iter().any(|l| is_code(l.text)));
    if !has_code {
        // `sml run` cannot run it either: say so once, instead of a warning about `>D`.
        sink.error(
            1,
            0,
            "the script is empty: sml needs a `>M` section with at least one meter",
        );
        return script;
    }

    match file.sections.first() {
        Some(s) if s.marker == Marker::Declarations && s.head.line == 1 => {}
        Some(s) if s.marker == Marker::Declarations => sink.warn(
            s.head.line,
            0,
            "Tasmota only runs a script whose first line is `>D`; sml runs it anyway",
        ),
        // ottelo's meter files start at `>M`: they are pasted into a host script's `>M` section.
        Some(s) if s.marker == Marker::Meters => sink.at(
            Severity::Note,
            s.head.line,
            0,
            "the script starts at `>M`, without `>D`: a meter file to paste into a host script (Tasmota runs a script only from `>D`); sml runs it as it is",
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
            _ => script_section_kind(section, sink),
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

    let Some(i) = meters_section else {
        // `sml run` refuses a script without meters, so `sml check` does too.
        sink.error(
            1,
            0,
            "the script has no `>M` section: sml reads meters, and this script defines none",
        );
        return script;
    };
    script.meters = lower_meters(file, i, defines, &vars, &script, sink);
    script
}

/// `--define NAME=VALUE`: a host variable; it replaces a `>D` declaration of the same name.
fn apply_defines(
    defines: &[(String, Literal)],
    script: &Script,
    vars: &mut Variables,
    sink: &mut Sink<'_>,
) {
    for (name, value) in defines {
        if let Some(d) = script.declarations.iter().find(|d| &d.name == name) {
            sink.warn(
                d.line,
                0,
                format!(
                    "`--define {name}={}` replaces `{name}` declared here, in `>M` lines",
                    literal_value(value)
                ),
            );
        }
        vars.insert(name.clone(), value.clone());
    }
}

/// Supply `rxpin`, `txpin` and `smlf` to a meter file pasted from a host script, with a note at the
/// first use of each, quoting it as written.
fn supply_host_variables(section: &SectionAst<'_>, vars: &mut Variables, sink: &mut Sink<'_>) {
    for l in section.body.iter().filter(|l| is_code(l.text)) {
        let (_, unknown) = substitute(l.text, l.line, vars);
        for u in unknown {
            let Some((name, value, what)) = HOST_DEFAULTS.iter().find(|(n, ..)| *n == u.name)
            else {
                continue;
            };
            if vars.contains_key(*name) {
                continue;
            }
            vars.insert(name.to_string(), Literal::Number(*value));
            sink.at(
                Severity::Note,
                l.line,
                u.at,
                format!(
                    "`{}` is not declared: it comes from the host script this meter file is pasted into ({what}); sml uses `{name}={value}` (`--define {name}=VALUE` to choose)",
                    u.written
                ),
            );
        }
    }
}

/// A define's value as the user would write it after `=`.
fn literal_value(l: &Literal) -> String {
    match l {
        Literal::Number(n) => n.to_string(),
        Literal::Text(t) => t.clone(),
    }
}
