/*!
The script front end: bytes of a Tasmota script in, a [`model::Script`] out, or diagnostics.

Staged like pest's own meta grammar: the pest grammar (`grammar/tasmota.pest`) splits the file into
sections and lines (`parse.rs` -> the spanned tree in `ast.rs`); each `>M` line is `%var%`-substituted
(`substitute.rs`) and parsed with its own rule, so one broken line gives one error and the rest is
still checked; lowering (`lower.rs`) turns the tree into the typed model, framing request telegrams
(`telegram.rs`) and collecting every problem it finds.
*/

mod ast;
pub mod diagnostic;
mod grammar;
mod lower;
pub mod model;
mod parse;
mod substitute;
pub mod telegram;

pub use diagnostic::{Diagnostic, Severity};
pub use model::Script;

/// The result of compiling one script: the model when there was no error, and every diagnostic.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub script: Option<Script>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// At most this many invalid-UTF-8 reports per file; a binary file would otherwise flood the output.
const MAX_ENCODING_ERRORS: usize = 10;

/// Compile a script from its raw bytes.
pub fn compile(source: &[u8]) -> Compiled {
    let mut diagnostics = encoding_errors(source);
    let text = String::from_utf8_lossy(source);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let file = match parse::parse_file(&text) {
        Ok(f) => f,
        Err((at, message)) => {
            // The file grammar accepts any text; this is a safety net, never a panic.
            let line = text[..at.min(text.len())].matches('\n').count();
            diagnostics.push(Diagnostic {
                severity: Severity::Error,
                line: line as u32 + 1,
                col: 1,
                message,
                source_line: lines.get(line).unwrap_or(&"").to_string(),
            });
            return Compiled {
                script: None,
                diagnostics,
            };
        }
    };
    let (script, mut more) = lower::lower(&file, &lines);
    let had_encoding_errors = !diagnostics.is_empty();
    diagnostics.append(&mut more);
    diagnostics.sort_by_key(|d| (d.line, d.col));
    Compiled {
        script: if had_encoding_errors { None } else { script },
        diagnostics,
    }
}

/// One error per line holding bytes that are not UTF-8, naming the line and the byte.
fn encoding_errors(source: &[u8]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut last_line = 0;
    while offset < source.len() {
        let Err(e) = std::str::from_utf8(&source[offset..]) else {
            break;
        };
        let bad = offset + e.valid_up_to();
        let line_start = source[..bad]
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(0);
        let line = source[..bad].iter().filter(|&&b| b == b'\n').count() as u32 + 1;
        let line_end = source[bad..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| bad + p)
            .unwrap_or(source.len());
        let shown = String::from_utf8_lossy(&source[line_start..line_end]);
        let shown = shown.strip_suffix('\r').unwrap_or(&shown).to_string();
        if line != last_line {
            if out.len() == MAX_ENCODING_ERRORS {
                break;
            }
            let col = String::from_utf8_lossy(&source[line_start..bad])
                .chars()
                .count() as u32
                + 1;
            out.push(Diagnostic {
                severity: Severity::Error,
                line,
                col,
                message: format!(
                    "byte 0x{:02X} (byte {} of the line, offset {bad} in the file) is not UTF-8: save the script as UTF-8",
                    source[bad],
                    bad - line_start + 1
                ),
                source_line: shown,
            });
            last_line = line;
        }
        offset = bad + e.error_len().unwrap_or(source.len() - bad).max(1);
    }
    out
}
