/*!
The command line: `sml check`, `sml decode`, `sml run`, `sml record`, `sml meters`, `sml dashboard`. Raw clap arguments live here; each
subcommand's module resolves them into a validated configuration and runs it. Errors surface as
`anyhow` only in this layer.
*/

pub mod check;
pub mod dashboard;
pub mod decode;
pub mod meters;
pub mod record;
pub mod run;

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sml",
    version,
    about = "Run Tasmota smart-meter scripts off the ESP",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check scripts: exit 0 when every file compiles, 1 with one diagnostic per problem.
    Check(check::Args),
    /// Replay a capture's bytes through a meter of a script and print a SENSOR JSON line per telegram.
    Decode(decode::Args),
    /// Run a script: read the meters, publish SENSOR JSON on MQTT (or stdout without a broker).
    ///
    /// Exits 0 when stopped or when every capture was read and published, 2 when the options are
    /// refused, 1 when the run fails (payloads not delivered, a link that failed for good).
    Run(Box<run::Args>),
    /// Print a Grafana dashboard (JSON) for what `sml run --influx` writes from a script.
    Dashboard(dashboard::Args),
    /// Record the raw bytes a meter sends to a file, for `sml decode` and `--port N=file:FILE`.
    ///
    /// Exits 0 when stopped (Ctrl-C, --duration) or when the source ended, 1 when the link
    /// failed or nothing arrived (the bytes read are kept), 2 when the options are refused.
    Record(record::Args),
    /// List the meters library (`meters/index.toml`): the names `sml run --meter-name` takes.
    Meters(meters::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(a) => check::execute(a),
        Command::Decode(a) => decode::execute(a),
        Command::Run(a) => run::execute(*a),
        Command::Dashboard(a) => dashboard::execute(a),
        Command::Record(a) => record::execute(a),
        Command::Meters(a) => meters::execute(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sml: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The script of `decode`, `record` and `run`: read (size-capped), compiled with the user's
/// `--define`s, its diagnostics on stderr (with journal priorities under systemd). The source comes
/// back too, for the script sections' own check. A script that does not compile is an error.
pub(crate) fn compile_script(
    path: &Path,
    defines: Vec<crate::script::Define>,
) -> anyhow::Result<(crate::script::model::Script, Vec<u8>)> {
    let shown = path.display().to_string();
    let source = crate::script::read_script(path)?;
    let compiled = crate::script::compile_with(&source, &crate::script::CompileOptions { defines });
    for d in &compiled.diagnostics {
        crate::service::eprint_diagnostic(d.severity, &d.render(&shown));
    }
    match compiled.script {
        Some(script) => Ok((script, source)),
        None => anyhow::bail!("{shown} does not compile"),
    }
}
