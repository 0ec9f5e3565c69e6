/*!
`>D` lines: the variables a script declares, with their initial values, for `%name%` substitution
in `>M` lines and for the hooks.
*/

use super::{is_code, Sink};
use crate::script::ast::*;
use crate::script::diagnostic::Severity;
use crate::script::model::*;
use crate::script::parse;
use crate::script::substitute::Variables;

pub(super) fn lower_declarations(
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
                let len = text.chars().count();
                if len > cap {
                    // Tasmota copies the initializer whole (strcpy into spare room); only later
                    // assignments are cut. A VBus header of 22 characters relies on it.
                    sink.at(
                        Severity::Note,
                        l.line,
                        decl.value.at,
                        format!("the initial value has {len} characters, more than the string capacity {cap} (`>D {cap}`): Tasmota keeps an initial value whole and cuts only later assignments, and so does sml"),
                    );
                }
                Literal::Text(text)
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

/// A literal as a user would write it, for messages.
fn literal_text(l: &Literal) -> String {
    match l {
        Literal::Number(n) => format!("the number {n}"),
        Literal::Text(t) => format!("the text \"{t}\""),
    }
}
