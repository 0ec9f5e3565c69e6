/*!
`sml check` for script sections: what the translation to Rhai found, as the same [`Diagnostic`]s the
`>M` checks give, so the lead's `sml check` can append them and print them with a caret.

Syntax the translation does not know is an error; ESP-only commands and functions, and constructs
Tasmota accepts but reads in a surprising way, are warnings, each given once (at its first line) so a
script full of `wcs` lines does not drown the rest.
*/

use std::collections::BTreeSet;

use super::translate::translate;
use crate::script::model::Script;
use crate::script::{Diagnostic, Severity};

/// Diagnostics of a compiled script's sections. Columns count within the line as the front end keeps
/// it (leading blanks removed); [`check_with_source`] puts them back where the user wrote them.
pub fn check(script: &Script) -> Vec<Diagnostic> {
    let translation = translate(script);
    let mut out = once(translation.diagnostics);
    if !out.iter().any(|d| d.severity == Severity::Error) {
        // The translation is only as good as the Rhai it gives: compile it, as `sml run` will.
        if let Err(mut errors) = super::Hooks::new(script) {
            out.append(&mut errors);
        }
    }
    out.sort_by_key(|d| (d.line, d.col));
    out
}

/// Like [`check`], with columns and source lines as they are in `source` (the script's text).
pub fn check_with_source(script: &Script, source: &str) -> Vec<Diagnostic> {
    let lines: Vec<&str> = source
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut out = check(script);
    for d in &mut out {
        let Some(original) = lines.get((d.line as usize).wrapping_sub(1)) else {
            continue;
        };
        let indent = original.chars().take_while(|c| c.is_whitespace()).count() as u32;
        if original.trim() == d.source_line.trim() || d.source_line.is_empty() {
            d.col += indent;
            d.source_line = original.to_string();
        }
    }
    out
}

/// Errors all; each warning text once, at its first line.
fn once(diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut seen = BTreeSet::new();
    diagnostics
        .into_iter()
        .filter(|d| d.severity == Severity::Error || seen.insert(d.message.clone()))
        .collect()
}
