/*!
The script front end: bytes of a Tasmota script in, a [`model::Script`] out, or diagnostics.

Staged like pest's own meta grammar: the pest grammar (`grammar/tasmota.pest`) splits the file into
sections and lines; each `>M` line is `%var%`-substituted and parsed with its own rule, so one broken
line gives one error and the rest is still checked; lowering turns pairs into the typed model and
collects every problem it finds.
*/

pub mod diagnostic;
pub mod model;

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

/// Compile a script from its raw bytes.
pub fn compile(_source: &[u8]) -> Compiled {
    todo!("front end: issue 2")
}
