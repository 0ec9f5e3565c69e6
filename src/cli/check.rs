/*!
`sml check FILE...`: compile each script and print every diagnostic as `path:line:col: severity:
message`, the source line and a caret: first the `>D`/`>M` checks, then the script sections'
(`>B`, `>S`, `>F`, ...: syntax the translation to Rhai does not know is an error, ESP-only commands
are warnings, see [`crate::hooks::check`]). Exit 0 when every file compiles (warnings allowed), 1 when
any file has an error. A file that cannot be read counts as an error for that file, not a crash.
Diagnostics and the summary go to stderr, as compilers print them, so they stay together and in
order when both streams reach a terminal or a log.

`--shard K/N` also prints, on stdout, which meters a host started with `sml run --shard K/N` runs
(a shard that keeps none of a file's meters is an error for that file).
*/

use std::path::PathBuf;
use std::process::ExitCode;

use crate::script::{self, CompileOptions, Define};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Script files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print only errors, not warnings and notes.
    #[arg(long, short)]
    pub quiet: bool,
    /// A variable of the host script a meter file is pasted into, for `%NAME%` in `>M` lines
    /// (repeatable). `rxpin`, `txpin` and `smlf` are supplied when a script uses them undeclared.
    #[arg(long = "define", short = 'D', value_name = "NAME=VALUE")]
    pub defines: Vec<Define>,
    /// Say which meters `sml run --shard K/N` would run on this host.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<crate::runner::shard::Shard>,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let options = CompileOptions {
        defines: args.defines.clone(),
    };
    let mut failed = 0usize;
    for path in &args.files {
        let bytes = match script::read_script(path) {
            Ok(b) => b,
            Err(e) => {
                // The error names the file already.
                eprintln!("error: {e}");
                failed += 1;
                continue;
            }
        };
        let shown = path.display().to_string();
        let compiled = script::compile_with(&bytes, &options);
        let mut diagnostics = compiled.diagnostics.clone();
        // The sections are checked only once the script itself compiled: they read its variables.
        if let Some(script) = &compiled.script {
            let text = String::from_utf8_lossy(&bytes);
            diagnostics.extend(crate::hooks::check::check_with_source(script, &text));
        }
        for d in &diagnostics {
            if args.quiet && d.severity != script::Severity::Error {
                continue;
            }
            eprint!("{}", d.render(&shown));
        }
        if diagnostics
            .iter()
            .any(|d| d.severity == script::Severity::Error)
        {
            failed += 1;
            continue;
        }
        if let (Some(shard), Some(s)) = (args.shard, &compiled.script) {
            match shard.kept(s) {
                Ok(kept) => {
                    let kept: Vec<String> = kept.iter().map(u16::to_string).collect();
                    println!(
                        "{shown}: --shard {shard} runs meter(s) {} of {}",
                        kept.join(", "),
                        s.meters.len()
                    );
                }
                Err(e) => {
                    eprintln!("{shown}: error: {e}");
                    failed += 1;
                }
            }
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
