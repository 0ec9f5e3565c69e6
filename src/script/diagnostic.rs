/*!
Diagnostics for scripts: `path:line:col: error: message`, the source line, and a caret under the
column, the way compilers print them so editors can jump to the place.
*/

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Severity {
    Error,
    Warning,
    /// Information: something accepted and deliberately without effect off the ESP.
    Note,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// 1-based line and column (column counted in characters).
    pub line: u32,
    pub col: u32,
    pub message: String,
    /// The source line as written (without line end), for the caret display.
    pub source_line: String,
}

impl Diagnostic {
    /// Render with the file path: `path:line:col: error: message`, source line, caret.
    pub fn render(&self, path: &str) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        let mut out = format!(
            "{path}:{}:{}: {sev}: {}\n",
            self.line,
            self.col,
            printable(&self.message)
        );
        if !self.source_line.is_empty() || self.col > 1 {
            out.push_str(&format!("{}\n", printable(&self.source_line)));
            let pad: String = self
                .source_line
                .chars()
                .take(self.col.saturating_sub(1) as usize)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!("{pad}^\n"));
        }
        out
    }
}

/// Text from a script as it may be printed: a control character would act on the terminal instead
/// of showing, so each becomes a stand-in of the same width (the caret still lines up).
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}
