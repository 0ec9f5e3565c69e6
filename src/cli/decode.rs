/*!
`sml decode SCRIPT CAPTURE`: replay a capture's bytes through one meter of a script and print, for
each complete telegram, the SENSOR payload Tasmota would publish at that moment.
*/

use crate::script::model::MeterIndex;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::decode::{decoder_for, DecodeEvent};
use crate::engine::values::ValueTable;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Tasmota script (`>D ... >M ... #`).
    pub script: PathBuf,
    /// The recorded bytes of the meter (raw; with --hex, hex text).
    pub capture: PathBuf,
    /// Which meter of the script the bytes come from.
    #[arg(long, default_value_t = 1)]
    pub meter: MeterIndex,
    /// The capture is hex text (whitespace ignored), as in `.hex` files.
    #[arg(long)]
    pub hex: bool,
    /// Print telegrams decoded, CRC errors and bytes skipped to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Use this `Time` in every payload (`2024-03-04T11:25:20`) instead of the local clock, for
    /// reproducible output.
    #[arg(long, value_parser = parse_time)]
    pub time: Option<chrono::NaiveDateTime>,
    /// A variable of the host script a meter file is pasted into, for `%NAME%` (repeatable).
    #[arg(long = "define", short = 'D', value_name = "NAME=VALUE")]
    pub defines: Vec<crate::script::Define>,
}

fn parse_time(s: &str) -> Result<chrono::NaiveDateTime, String> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .map_err(|e| format!("{e} (expected 2024-03-04T11:25:20)"))
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let script_path = args.script.display().to_string();
    let source = crate::script::read_script(&args.script)?;
    let options = crate::script::CompileOptions {
        defines: args.defines.clone(),
    };
    let compiled = crate::script::compile_with(&source, &options);
    for d in &compiled.diagnostics {
        eprint!("{}", d.render(&script_path));
    }
    let Some(script) = compiled.script else {
        bail!("{script_path} does not compile");
    };
    let Some(meter) = script.meter(args.meter) else {
        bail!(
            "{script_path} defines no meter {} (it has {})",
            args.meter,
            script.meters.len()
        );
    };
    let mut decoder = decoder_for(meter)?;
    let raw = std::fs::read(&args.capture)
        .with_context(|| format!("reading {}", args.capture.display()))?;
    let bytes = if args.hex {
        parse_hex(&raw).with_context(|| format!("{} is not hex text", args.capture.display()))?
    } else {
        raw
    };

    let mut table = ValueTable::new(&script);
    let mut decoded = 0u64;
    let mut out = String::new();
    let mut drain =
        |decoder: &mut dyn crate::decode::Decoder, table: &mut ValueTable, out: &mut String| {
            while let Some(ev) = decoder.poll_event() {
                match ev {
                    DecodeEvent::Telegram(t) => {
                        decoded += 1;
                        table.handle_telegram(Instant::now(), args.meter, &t);
                        let time = args
                            .time
                            .unwrap_or_else(|| chrono::Local::now().naive_local());
                        match table.sensor_payload(Instant::now(), &time) {
                            Some(p) => {
                                out.push_str(&p.0);
                                out.push('\n');
                            }
                            None => tracing::debug!("telegram {decoded} matched no metric line"),
                        }
                    }
                    DecodeEvent::Discarded { bytes } => tracing::debug!("skipped {bytes} bytes"),
                    DecodeEvent::Error(e) => eprintln!("sml: telegram rejected: {e}"),
                }
            }
        };
    // Feed in chunks as a link would deliver them.
    for chunk in bytes.chunks(4096) {
        decoder.handle_bytes(Instant::now(), chunk);
        drain(decoder.as_mut(), &mut table, &mut out);
    }
    decoder.handle_end();
    drain(decoder.as_mut(), &mut table, &mut out);
    print!("{out}");

    let stats = decoder.stats();
    if args.stats {
        eprintln!(
            "telegrams decoded: {}, CRC errors: {}, rejected: {}, bytes skipped: {}, bytes read: {}",
            stats.telegrams, stats.crc_errors, stats.rejected, stats.bytes_skipped, stats.bytes_in
        );
    }
    if stats.telegrams == 0 {
        eprintln!(
            "sml: no complete telegram for meter {} in {} ({} bytes; {} CRC errors, {} rejected, {} bytes skipped)",
            args.meter,
            args.capture.display(),
            bytes.len(),
            stats.crc_errors,
            stats.rejected,
            stats.bytes_skipped
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Hex text to bytes: whitespace and `0x`-free pairs; an odd digit count is an error.
pub fn parse_hex(text: &[u8]) -> anyhow::Result<Vec<u8>> {
    let digits: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if digits.len() % 2 != 0 {
        bail!("odd number of hex digits ({})", digits.len());
    }
    digits
        .chunks(2)
        .enumerate()
        .map(|(i, p)| {
            let s = std::str::from_utf8(p)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok());
            s.with_context(|| format!("not a hex byte at digit {}", i * 2 + 1))
        })
        .collect()
}
