/*!
`sml check FILE...`: compile each script and print every diagnostic as `path:line:col: severity:
message`, the source line and a caret. Exit 0 when every file compiles (warnings allowed), 1 when
any file has an error. A file that cannot be read counts as an error for that file, not a crash.
*/

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::script;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Script files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print only errors, not warnings and notes.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let mut failed = 0usize;
    for path in &args.files {
        let shown = path.display().to_string();
        let bytes = match std::fs::read(path).with_context(|| format!("cannot read {shown}")) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{shown}: error: {e:#}");
                failed += 1;
                continue;
            }
        };
        let compiled = script::compile(&bytes);
        for d in &compiled.diagnostics {
            if args.quiet && d.severity != script::Severity::Error {
                continue;
            }
            print!("{}", d.render(&shown));
        }
        if compiled.has_errors() {
            failed += 1;
        }
    }
    if failed > 0 {
        let n = args.files.len();
        eprintln!("sml check: {failed} of {n} file(s) failed");
        Ok(ExitCode::from(1))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
