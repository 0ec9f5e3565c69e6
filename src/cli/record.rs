/*!
`sml record SCRIPT --port N=SOURCE --out FILE`: the raw bytes a meter sends, written to a file as
they arrive, the off-ESP form of Tasmota's `sensor53 d1`. The file is a capture: `sml decode SCRIPT
FILE` and `sml run SCRIPT --port N=file:FILE` read it back, so a value that looks wrong can be
looked at later, shared in a bug report, or turned into a test.

The script's meter line gives the link's framing (baud, parity) and, for a polled meter, the
requests: they are sent as `sml run` sends them (the decoder's `poll_transmit`), and only the
meter's answers are recorded. The bytes also go through the meter's decoder, only to count
telegrams and CRC errors for the progress line, shown on a terminal and never on a pipe.

Every read is flushed to the file at once, so Ctrl-C, SIGTERM, `--duration` or the source closing
leave every byte that was read. The file is created `0600` (a capture may hold a meter number and
the household's consumption), never through a symbolic link, and an existing file is kept unless
`--force`. A recording that got no byte is removed, so an empty file never passes for a capture.
*/

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::decode::{decoder_for, DecodeEvent, DecodeStats, Decoder};
use crate::link::{Binding, Link, ReplaySpeed, Source};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Tasmota script (`>D ... >M ... #`): its meter line gives baud, parity and requests.
    pub script: PathBuf,
    /// The meter to record and where its bytes come from: `1=/dev/ttyUSB0`, `1=tcp://host:2000`
    /// or `1=file:capture.txt`.
    #[arg(long = "port", value_name = "N=SOURCE")]
    pub port: Binding,
    /// The file to write the raw bytes to (created 0600; an existing file is refused).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Stop after this many seconds (default: until Ctrl-C or the source ends).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Overwrite --out if it exists (a regular file; a symbolic link is still refused).
    #[arg(long)]
    pub force: bool,
    /// A variable of the host script a meter file is pasted into, for `%NAME%` (repeatable).
    #[arg(long = "define", short = 'D', value_name = "NAME=VALUE")]
    pub defines: Vec<crate::script::Define>,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| *v > 0.0)
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("'{s}': expected a number of seconds above 0, such as 60 or 0.5"))
}

/// Bytes read from the link at a time.
const READ_SIZE: usize = 4096;

/// The progress line is redrawn at most this often (a 115200 baud meter reads many times a second).
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let script_path = args.script.display().to_string();
    let (script, _) = super::compile_script(&args.script, args.defines.clone())?;
    let binding = &args.port;
    let Some(meter) = script.meter(binding.meter) else {
        bail!(
            "--port {binding}: {script_path} defines no meter {} (it has {})",
            binding.meter,
            script.meters.len()
        );
    };
    let decoder = decoder_for(meter).with_context(|| format!("--port {binding}"))?;
    let file = create_out(&args.out, args.force)?;

    let progress = std::io::stderr()
        .is_terminal()
        .then(|| Progress::new(binding, &args.out));
    let mut recording = Recording {
        out: BufWriter::new(file),
        decoder,
        bytes: 0,
        progress,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let settings = meter.serial;
    let ending = rt.block_on(async {
        // A file source is copied, not replayed at the line's speed.
        // The link's error already names its cause; as a context chain it would print it twice.
        let link = match Link::open(&binding.source, &settings, ReplaySpeed::Max).await {
            Ok(link) => link,
            Err(e) => {
                // Nothing was recorded: no empty file is left behind to be mistaken for a capture.
                let _ = std::fs::remove_file(&args.out);
                return Err(anyhow!("--port {binding}: {e}"));
            }
        };
        anyhow::Ok(
            recording
                .run(link, args.duration, super::run::shutdown_signal(), binding)
                .await,
        )
    })?;
    recording.finish_progress();
    let flushed = recording
        .out
        .flush()
        .and_then(|()| recording.out.get_ref().sync_all());
    flushed.with_context(|| format!("--out {}: writing", args.out.display()))?;
    match ending {
        Ending::Stopped | Ending::SourceEnded if recording.bytes > 0 => Ok(ExitCode::SUCCESS),
        Ending::Stopped | Ending::SourceEnded => {
            // An empty file would pass for a capture of a silent meter: it is not kept.
            let _ = std::fs::remove_file(&args.out);
            eprintln!(
                "sml: nothing recorded: no byte arrived from --port {binding}; {} not written",
                args.out.display()
            );
            Ok(ExitCode::from(1))
        }
        Ending::Failed(why) => {
            // What was read before is in the file; say how much.
            eprintln!(
                "sml: error: --port {binding}: {why} ({} bytes recorded in {})",
                recording.bytes,
                args.out.display()
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// Create the recording 0600, never through a symbolic link; an existing file only with `force`.
fn create_out(path: &Path, force: bool) -> anyhow::Result<File> {
    let shown = path.display();
    let mut options = OpenOptions::new();
    options
        .write(true)
        .mode(0o600)
        // O_NONBLOCK: a FIFO put there would make the open wait for a reader; files ignore it.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    match options.open(path) {
        Ok(f) => {
            if !f.metadata()?.is_file() {
                bail!("--out {shown}: not a regular file");
            }
            Ok(f)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            bail!("--out {shown}: the file exists; choose another name or add --force to overwrite it")
        }
        // O_NOFOLLOW on a symbolic link fails with ELOOP.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            bail!("--out {shown}: is a symbolic link; sml does not write through one")
        }
        Err(e) => Err(e).with_context(|| format!("--out {shown}: cannot create it")),
    }
}

/// Why a recording ended.
#[derive(Debug, PartialEq)]
enum Ending {
    /// `--duration` passed, or Ctrl-C / SIGTERM.
    Stopped,
    /// The source ended: a capture's end, a bridge that closed the connection (it sent what it had).
    SourceEnded,
    /// The link failed (a serial adapter unplugged, a read error): what was read is kept.
    Failed(String),
}

/// One recording: the file, the decoder that counts telegrams, and the progress line.
struct Recording<W: Write> {
    out: BufWriter<W>,
    decoder: Box<dyn Decoder>,
    bytes: u64,
    progress: Option<Progress>,
}

impl<W: Write> Recording<W> {
    async fn run(
        &mut self,
        mut link: Link,
        duration: Option<Duration>,
        stop: impl std::future::Future<Output = ()>,
        binding: &Binding,
    ) -> Ending {
        tokio::pin!(stop);
        let until = duration.map(|d| tokio::time::Instant::now() + d);
        let mut buf = vec![0u8; READ_SIZE];
        // A capture cannot be asked: its answers are already in it.
        let can_ask = !matches!(binding.source, Source::Replay(_));
        loop {
            while let Some(request) = can_ask
                .then(|| self.decoder.poll_transmit(Instant::now()))
                .flatten()
            {
                tracing::debug!("sending {} request bytes", request.len());
                if let Err(e) = link.write_all(&request).await {
                    return Ending::Failed(format!("sending a request: {e}"));
                }
            }
            // A speed change the protocol needs (IEC 62056-21 mode C), after what was sent.
            if let Some(change) = can_ask.then(|| self.decoder.poll_framing()).flatten() {
                if let Err(e) = link.set_framing(change.baud, None).await {
                    return Ending::Failed(format!("setting {} baud: {e}", change.baud));
                }
                continue;
            }
            let deadline = self
                .decoder
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                read = link.read(&mut buf) => match read {
                    // A serial device reads nothing only when it went away (unplugged).
                    Ok(0) if matches!(binding.source, Source::Serial(_)) => {
                        return Ending::Failed("the device hung up (unplugged?)".into())
                    }
                    Ok(0) => return Ending::SourceEnded,
                    Ok(n) => {
                        if let Err(e) = self.handle_bytes(Instant::now(), &buf[..n]) {
                            return Ending::Failed(format!("writing the recording: {e}"));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Ending::Failed(format!("reading: {e}")),
                },
                _ = crate::timer::sleep_until_opt(deadline) => self.decoder.handle_timeout(Instant::now()),
                _ = crate::timer::sleep_until_opt(until) => return Ending::Stopped,
                _ = &mut stop => return Ending::Stopped,
            }
        }
    }

    /// Write what arrived and flush it at once (an interrupted recording keeps it), then count it.
    fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.out.flush()?;
        self.bytes += bytes.len() as u64;
        self.decoder.handle_bytes(now, bytes);
        // Only the counters matter here; the events are dropped.
        while let Some(ev) = self.decoder.poll_event() {
            if let DecodeEvent::Error(e) = ev {
                tracing::debug!("telegram rejected: {e}");
            }
        }
        let stats = self.decoder.stats();
        if let Some(p) = &mut self.progress {
            p.show(now, self.bytes, &stats, false);
        }
        Ok(())
    }

    fn finish_progress(&mut self) {
        let stats = self.decoder.stats();
        if let Some(p) = &mut self.progress {
            p.show(Instant::now(), self.bytes, &stats, true);
        }
    }
}

/// The line redrawn in place on a terminal.
struct Progress {
    head: String,
    shown_at: Option<Instant>,
}

impl Progress {
    fn new(binding: &Binding, out: &Path) -> Progress {
        Progress {
            head: format!("recording --port {binding} to {}", out.display()),
            shown_at: None,
        }
    }

    fn show(&mut self, now: Instant, bytes: u64, stats: &DecodeStats, last: bool) {
        if !last && self.shown_at.is_some_and(|t| now < t + PROGRESS_EVERY) {
            return;
        }
        self.shown_at = Some(now);
        let line = progress_line(&self.head, bytes, stats);
        // \r and "erase to the end of the line": the line is redrawn where it was.
        let end = if last { "\n" } else { "" };
        let mut err = io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K{end}");
        let _ = err.flush();
    }
}

fn progress_line(head: &str, bytes: u64, stats: &DecodeStats) -> String {
    format!(
        "{head}: {bytes} bytes, {} telegrams, {} CRC errors",
        stats.telegrams, stats.crc_errors
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_counts_bytes_telegrams_and_crc_errors() {
        let stats = DecodeStats {
            telegrams: 3,
            crc_errors: 1,
            ..Default::default()
        };
        assert_eq!(
            progress_line("recording --port 1=/dev/ttyUSB0 to m.bin", 2048, &stats),
            "recording --port 1=/dev/ttyUSB0 to m.bin: 2048 bytes, 3 telegrams, 1 CRC errors"
        );
    }

    #[test]
    fn seconds_must_be_a_positive_number() {
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_seconds("0").unwrap_err().starts_with("'0': expected"));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("ten").is_err());
    }

    #[test]
    fn an_existing_file_is_kept_without_force_and_a_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        std::fs::write(&path, b"old").unwrap();
        let e = create_out(&path, false).unwrap_err().to_string();
        assert!(e.contains("the file exists"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        drop(create_out(&path, true).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"");

        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for force in [false, true] {
            assert!(create_out(&link, force).is_err());
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[test]
    fn the_recording_is_created_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        drop(create_out(&path, false).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
