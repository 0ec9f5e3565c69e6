/*!
`sml decode SCRIPT CAPTURE`: replay a capture's bytes through one meter of a script and print, for
each complete telegram, the SENSOR payload Tasmota would publish at that moment.

The capture is read and decoded in chunks, and each payload is written as soon as its telegram is
complete, so memory stays bounded whatever the capture holds: a multi-gigabyte recording, or an
endless device such as `/dev/zero` or a serial port (`-` reads standard input). A replay that
publishes nothing says on stderr what it found instead (telegrams framed, metric lines matched,
rejections) and exits 1, so a script that does not fit its meter is not mistaken for a quiet success.

`--rhai FILE` runs each payload through the user's `before_publish` (and each telegram through
`on_telegram`) as `sml run` does, to try a post-processing file on a capture. The script's own
sections (`>S`, `>T`...) are not run: a replay has no clock for them.
*/

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::decode::{decoder_for, DecodeEvent, DecodeStats, Decoder, RejectKind};
use crate::engine::values::ValueTable;
use crate::hex::{self, HexError};
use crate::hooks::user::UserRhai;
use crate::script::model::{EntryNo, MeterIndex};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Tasmota script (`>D ... >M ... #`).
    #[arg(required_unless_present = "explain")]
    pub script: Option<PathBuf>,
    /// The recorded bytes of the meter (raw; with --hex, hex text); `-` reads standard input.
    #[arg(required_unless_present = "explain")]
    pub capture: Option<PathBuf>,
    /// Which meter of the script the bytes come from.
    #[arg(long, default_value_t = 1)]
    pub meter: MeterIndex,
    /// The capture is hex text (whitespace ignored), as in `.hex` files.
    #[arg(long)]
    pub hex: bool,
    /// Print telegrams decoded, metric lines matched, CRC errors and bytes skipped to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Use this `Time` in every payload (`2024-03-04T11:25:20`) instead of the local clock, for
    /// reproducible output.
    #[arg(long, value_parser = parse_time)]
    pub time: Option<chrono::NaiveDateTime>,
    /// A variable of the host script a meter file is pasted into, for `%NAME%` (repeatable).
    #[arg(long = "define", short = 'D', value_name = "NAME=VALUE")]
    pub defines: Vec<crate::script::Define>,
    /// Your own post-processing in Rhai (`fn before_publish(payload)`, `fn on_telegram(meter,
    /// values)`), as `sml run --rhai`.
    #[arg(long, value_name = "FILE")]
    pub rhai: Option<PathBuf>,
    /// Instead of payloads, list what a capture holds, with byte offsets, for writing metric lines.
    /// `sml decode --explain CAPTURE`: wired M-Bus frames record by record, each with a ready `r`
    /// line. `sml decode SCRIPT CAPTURE --explain`: by the meter's type: DLMS push (`=so4`: the
    /// ciphering header, never a key, and the COSEM data; offset 0 is where the masks start),
    /// M-Bus (`r`/`R`), eBus (`e`: QQ ZZ PB SB NN data per telegram).
    #[arg(long)]
    pub explain: bool,
}

/// `--explain CAPTURE`: the M-Bus frames of a capture, record by record. Exits 1 when it holds none.
fn explain_mbus(path: &std::path::Path, is_hex: bool) -> anyhow::Result<ExitCode> {
    print_explained(&crate::decode::mbus::explain(&read_whole(path, is_hex)?))
}

/// A capture read whole for an explain listing (a listing is for a person: at most 16 MiB), `-`
/// being standard input, hex text decoded with `--hex`.
fn read_whole(path: &std::path::Path, is_hex: bool) -> anyhow::Result<Vec<u8>> {
    let name = path.display().to_string();
    let reader: Box<dyn Read> = if name == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("reading {name}"))?)
    };
    let mut bytes = Vec::new();
    reader
        .take(16 << 20)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {name}"))?;
    if is_hex {
        bytes = hex::decode(&bytes).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    }
    Ok(bytes)
}

/// An explain listing on stdout; exit 1 when it holds no good frame or telegram, so a script can
/// tell a capture of nothing from one it can write lines for.
fn print_explained(explained: &crate::decode::Explained) -> anyhow::Result<ExitCode> {
    print!("{}", explained.text);
    if !explained.text.ends_with('\n') {
        println!();
    }
    if explained.good == 0 {
        eprintln!(
            "sml: no good frame in the capture ({} rejected)",
            explained.bad
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_time(s: &str) -> Result<chrono::NaiveDateTime, String> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .map_err(|e| format!("{e} (expected 2024-03-04T11:25:20)"))
}

/// Bytes read from the capture at a time (and the most a hex chunk decodes to).
const CHUNK: usize = 64 * 1024;

/// Bytes given to the decoder at a time, as a link delivers them.
const FEED: usize = 4096;

/// Rejections of one kind printed before the rest are only counted (a capture of a broken link
/// would otherwise print one line per telegram).
const ERRORS_SHOWN_PER_KIND: u32 = 10;

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    if args.explain {
        // One argument: a capture alone, read as wired M-Bus (no script needed).
        if let (Some(capture), None) = (&args.script, &args.capture) {
            return explain_mbus(capture, args.hex);
        }
    }
    let (Some(script_arg), Some(capture_arg)) = (&args.script, &args.capture) else {
        bail!("sml decode needs a SCRIPT and a CAPTURE (or --explain CAPTURE)");
    };
    let script_path = script_arg.display().to_string();
    let (script, _) = super::compile_script(script_arg, args.defines.clone())?;
    let Some(meter) = script.meter(args.meter) else {
        bail!(
            "{script_path} defines no meter {} (it has {})",
            args.meter,
            script.meters.len()
        );
    };
    let user = match &args.rhai {
        Some(path) => Some(UserRhai::load(path)?),
        None => None,
    };
    if args.explain {
        return explain(meter, &args, capture_arg);
    }
    let mut decoder = decoder_for(meter)?;
    let capture_name = capture_arg.display().to_string();
    let capture: Box<dyn Read> = if capture_name == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(capture_arg).with_context(|| format!("reading {capture_name}"))?,
        )
    };

    let mut replay = Replay::new(
        ValueTable::new(&script),
        args.meter,
        args.time,
        std::io::stdout().lock(),
        std::io::stderr(),
    );
    replay.user = user;
    let result = replay.run(capture, args.hex, decoder.as_mut());
    let summary = replay.summary;
    let read_error = match result {
        Ok(()) => None,
        Err(ReplayError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            // `sml decode ... | head`: the reader has what it wanted.
            return Ok(ExitCode::SUCCESS);
        }
        Err(ReplayError::Output(e)) => return Err(e).context("writing the payloads"),
        Err(e) => Some(e),
    };

    let metric_lines = meter.decoding.metric_count();
    if args.stats {
        eprintln!("{}", summary.stats_line(metric_lines));
    }
    if let Some(e) = read_error {
        // What was decoded before the bad part was printed; the error says where it is.
        bail!("{capture_name}: {e}");
    }
    if summary.payloads == 0 {
        eprintln!(
            "sml: {}",
            summary.nothing_published(args.meter, metric_lines, &capture_name)
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--explain`: the whole capture (it is a listing for a person, so a capture of at most 16 MiB)
/// through the meter type's explainer.
fn explain(
    meter: &crate::script::model::Meter,
    args: &Args,
    capture: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    use crate::script::model::Decoding;
    let bytes = read_whole(capture, args.hex)?;
    let explained = match &meter.decoding {
        Decoding::Raw { .. } if crate::decode::dlms::wants(meter) => {
            crate::decode::dlms::explain_meter(meter, &bytes).unwrap_or_default()
        }
        Decoding::Raw { .. } => crate::decode::mbus::explain(&bytes),
        Decoding::Ebus(_) => crate::decode::ebus::explain(&bytes),
        other => bail!(
            "--explain lists DLMS push (`=so4`), M-Bus (`r`) and eBus (`e`) captures; meter {} is \
             type '{}'",
            meter.index,
            other.type_letter()
        ),
    };
    print_explained(&explained)
}

/// What a replay found, for the summary line and the exit code.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Payloads written (telegrams that gave at least one value).
    pub payloads: u64,
    /// Values read from telegrams, over all telegrams.
    pub values: u64,
    /// The metric lines that gave a value at least once.
    pub lines_matched: BTreeSet<EntryNo>,
    /// Bytes of the capture read (hex text: digits and whitespace as in the file).
    pub bytes_read: u64,
    /// The decoder's own counters at the end.
    pub stats: DecodeStats,
}

impl Summary {
    fn stats_line(&self, metric_lines: usize) -> String {
        let s = &self.stats;
        format!(
            "telegrams decoded: {}, metric lines matched: {} of {metric_lines}, values: {}, \
             payloads: {}, CRC errors: {}, without CRC: {}, rejected: {}, bytes skipped: {}, bytes read: {}",
            s.telegrams,
            self.lines_matched.len(),
            self.values,
            self.payloads,
            s.crc_errors,
            s.missing_crc,
            s.rejected,
            s.bytes_skipped,
            self.bytes_read
        )
    }

    /// Why nothing was published, in the words of a user who ran the replay.
    fn nothing_published(&self, meter: MeterIndex, metric_lines: usize, capture: &str) -> String {
        let s = &self.stats;
        let counters = format!(
            "{} bytes read, {} bytes skipped, {} CRC errors, {} without CRC, {} rejected",
            self.bytes_read, s.bytes_skipped, s.crc_errors, s.missing_crc, s.rejected
        );
        if s.telegrams == 0 {
            format!("nothing published: no complete telegram for meter {meter} in {capture} ({counters})")
        } else {
            format!(
                "nothing published: {} framed in {capture}, but none of meter {meter}'s {} matched a \
                 value in them ({counters}); compare the script's codes with the capture's",
                plural(s.telegrams, "telegram"),
                plural(metric_lines as u64, "metric line"),
            )
        }
    }
}

/// `1 telegram`, `2 telegrams`.
fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("{n} {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Why a replay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("read failed after {bytes} bytes: {source}")]
    Read {
        bytes: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: {source}")]
    Hex {
        line: u64,
        #[source]
        source: HexError,
    },
    #[error("writing a payload: {0}")]
    Output(std::io::Error),
}

/// One replay: the value table that shapes payloads, where they go, and what was found so far.
pub struct Replay<W: Write, E: Write> {
    pub table: ValueTable,
    /// The meter the capture is from.
    pub meter: MeterIndex,
    /// `Time` for every payload; `None`: the local clock.
    pub time: Option<chrono::NaiveDateTime>,
    pub out: W,
    /// Rejections, as they happen (the first few of each kind).
    pub errors: E,
    pub summary: Summary,
    /// Rejections printed so far, per kind.
    shown: std::collections::BTreeMap<RejectKind, u32>,
    /// `--rhai FILE`.
    pub user: Option<UserRhai>,
}

impl<W: Write, E: Write> Replay<W, E> {
    pub fn new(
        table: ValueTable,
        meter: MeterIndex,
        time: Option<chrono::NaiveDateTime>,
        out: W,
        errors: E,
    ) -> Self {
        Replay {
            table,
            meter,
            time,
            out,
            errors,
            summary: Summary::default(),
            shown: Default::default(),
            user: None,
        }
    }

    /// Read `capture` to its end in [`CHUNK`]s, feeding the decoder and writing payloads as it goes.
    pub fn run(
        &mut self,
        mut capture: impl Read,
        hex: bool,
        decoder: &mut dyn Decoder,
    ) -> Result<(), ReplayError> {
        let mut buf = vec![0u8; CHUNK];
        let mut hex_text = hex.then(HexStream::default);
        let mut decoded = Vec::new();
        let result = loop {
            let n = match capture.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    break Err(ReplayError::Read {
                        bytes: self.summary.bytes_read,
                        source,
                    })
                }
            };
            self.summary.bytes_read += n as u64;
            let bytes = match &mut hex_text {
                None => &buf[..n],
                Some(h) => {
                    decoded.clear();
                    if let Err(e) = h.push(&buf[..n], &mut decoded) {
                        // The bytes before the bad digit still count.
                        let from = decoder.stats().bytes_in;
                        decoder.handle_bytes(Instant::now(), &decoded);
                        self.drain(decoder, from)?;
                        break Err(e);
                    }
                    &decoded[..]
                }
            };
            // Fed in link-sized pieces, so a rejection can be placed within FEED bytes.
            for piece in bytes.chunks(FEED) {
                let from = decoder.stats().bytes_in;
                decoder.handle_bytes(Instant::now(), piece);
                self.drain(decoder, from)?;
            }
        };
        let result = result.and_then(|()| match &hex_text {
            Some(h) => h.finish(),
            None => Ok(()),
        });
        // What was complete before an error is still reported; a half telegram at the end is one.
        decoder.handle_end();
        let end = decoder.stats().bytes_in;
        self.drain(decoder, end)?;
        self.summary.stats = decoder.stats();
        self.report_hidden();
        self.out.flush().map_err(ReplayError::Output)?;
        result
    }

    /// Write the payloads of the telegrams completed by the bytes fed from meter byte `from` on.
    fn drain(&mut self, decoder: &mut dyn Decoder, from: u64) -> Result<(), ReplayError> {
        while let Some(ev) = decoder.poll_event() {
            match ev {
                DecodeEvent::Telegram(t) => {
                    self.summary.values += t.readings.len() as u64;
                    self.summary
                        .lines_matched
                        .extend(t.readings.iter().map(|r| r.entry));
                    if t.readings.is_empty() {
                        // A telegram without a matching value (an empty `/..!` frame): printing
                        // the table would repeat old values under a new `Time`.
                        continue;
                    }
                    // As `sml run --every-telegram`: what this telegram held, and the `=m`/`=d`
                    // lines computed from it.
                    let refreshed = self.table.handle_telegram(Instant::now(), self.meter, &t);
                    let time = self
                        .time
                        .unwrap_or_else(|| chrono::Local::now().naive_local());
                    let Some(p) = self.table.payload_for(&time, &refreshed) else {
                        continue;
                    };
                    let payload = match &mut self.user {
                        None => Some(p.0),
                        Some(user) => {
                            let meter = self.meter;
                            let mut report = |e: Option<String>| {
                                if let Some(e) = e {
                                    let _ = writeln!(self.errors, "sml: {e}");
                                }
                            };
                            report(user.on_telegram(meter, &p.0));
                            let (out, error) = user.before_publish(&p.0);
                            report(error);
                            out
                        }
                    };
                    if let Some(p) = payload {
                        self.summary.payloads += 1;
                        writeln!(self.out, "{p}").map_err(ReplayError::Output)?;
                    }
                }
                DecodeEvent::Discarded { bytes } => tracing::debug!("skipped {bytes} bytes"),
                DecodeEvent::Error(e) => {
                    let shown = self.shown.entry(e.kind()).or_default();
                    *shown += 1;
                    if *shown <= ERRORS_SHOWN_PER_KIND {
                        let to = decoder.stats().bytes_in;
                        // Stderr going away is no reason to stop decoding.
                        let _ = writeln!(
                            self.errors,
                            "sml: telegram rejected (found in meter bytes {from}..{to}): {e}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Say how many rejections of each kind were counted but not printed.
    fn report_hidden(&mut self) {
        for (kind, n) in &self.shown {
            if *n > ERRORS_SHOWN_PER_KIND {
                let _ = writeln!(
                    self.errors,
                    "sml: {} more '{}' rejections not shown",
                    n - ERRORS_SHOWN_PER_KIND,
                    kind.as_str()
                );
            }
        }
    }
}

/// Hex text decoded as it streams in, so a large `.hex` capture is never held whole. Digits are
/// read with [`hex::nibble`], as everywhere else; whitespace (line breaks included) is skipped.
#[derive(Debug, Default)]
struct HexStream {
    /// The first digit of a pair whose second digit is in the next chunk.
    high: Option<u8>,
    /// Bytes of text read so far, and the 1-based line they are on.
    offset: usize,
    line: u64,
    digits: usize,
}

impl HexStream {
    fn push(&mut self, text: &[u8], out: &mut Vec<u8>) -> Result<(), ReplayError> {
        for &c in text {
            let at = self.offset;
            self.offset += 1;
            if c == b'\n' {
                self.line += 1;
            }
            if c.is_ascii_whitespace() {
                continue;
            }
            let Some(v) = hex::nibble(c) else {
                return Err(ReplayError::Hex {
                    line: self.line + 1,
                    source: HexError::NotHex {
                        offset: at,
                        found: char::from(c),
                    },
                });
            };
            self.digits += 1;
            match self.high.take() {
                None => self.high = Some(v),
                Some(h) => out.push(h << 4 | v),
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), ReplayError> {
        match self.high {
            Some(_) => Err(ReplayError::Hex {
                line: self.line + 1,
                source: HexError::OddLength {
                    digits: self.digits,
                },
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    const SCRIPT: &str = ">D\n>B\n->sensor53 r\n>M 1\n+1,3,o,0,115200,P1\n\
1,1-0:1.8.0(@1,Import,kWh,import,3\n#\n";

    fn dsmr(value: &str) -> Vec<u8> {
        let mut t = format!("/ABC5\r\n\r\n1-0:1.8.0({value}*kWh)\r\n!").into_bytes();
        let crc = crate::decode::obis::check::crc16_arc(&t);
        t.extend_from_slice(format!("{crc:04X}\r\n").as_bytes());
        t
    }

    fn replay_of(
        capture: impl Read,
        hex: bool,
    ) -> (Result<(), ReplayError>, Summary, String, String) {
        let script = crate::script::compile(SCRIPT.as_bytes()).script.unwrap();
        let mut decoder = decoder_for(&script.meters[0]).unwrap();
        let time = parse_time("2024-03-04T11:25:20").unwrap();
        let mut replay = Replay::new(
            ValueTable::new(&script),
            1,
            Some(time),
            Vec::new(),
            Vec::new(),
        );
        let result = replay.run(capture, hex, decoder.as_mut());
        let out = String::from_utf8(replay.out).unwrap();
        let errors = String::from_utf8(replay.errors).unwrap();
        (result, replay.summary, out, errors)
    }

    /// A capture that gives `head`, then zeros until `stop` says so or `limit` bytes were given.
    struct Zeros {
        head: Vec<u8>,
        given: Rc<Cell<u64>>,
        stop: Rc<Cell<bool>>,
        limit: u64,
    }

    impl Read for Zeros {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.stop.get() || self.given.get() >= self.limit {
                return Ok(0);
            }
            let n = if self.head.is_empty() {
                buf.fill(0);
                buf.len()
            } else {
                let n = self.head.len().min(buf.len());
                buf[..n].copy_from_slice(&self.head[..n]);
                self.head.drain(..n);
                n
            };
            self.given.set(self.given.get() + n as u64);
            Ok(n)
        }
    }

    /// Records how far the capture had been read when the first payload was written.
    struct FirstWrite {
        given: Rc<Cell<u64>>,
        stop: Rc<Cell<bool>>,
        at: Option<u64>,
    }

    impl Write for FirstWrite {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.at.get_or_insert(self.given.get());
            self.stop.set(true);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_payload_is_written_while_the_capture_is_still_being_read() {
        // An endless capture (zeros after one telegram, capped at 256 MB so a regression fails
        // instead of hanging): the payload must come out after the first chunks, and the zeros
        // stop as soon as it does. Reading everything first would write it only at 256 MB.
        let given = Rc::new(Cell::new(0));
        let stop = Rc::new(Cell::new(false));
        let capture = Zeros {
            head: dsmr("1.5"),
            given: given.clone(),
            stop: stop.clone(),
            limit: 256 << 20,
        };
        let script = crate::script::compile(SCRIPT.as_bytes()).script.unwrap();
        let mut decoder = decoder_for(&script.meters[0]).unwrap();
        let out = FirstWrite {
            given: given.clone(),
            stop,
            at: None,
        };
        let mut replay = Replay::new(ValueTable::new(&script), 1, None, out, Vec::new());
        replay.run(capture, false, decoder.as_mut()).unwrap();
        let at = replay.out.at.expect("a payload was written");
        assert!(
            at <= 2 * CHUNK as u64,
            "first payload only after {at} bytes"
        );
        assert!(
            given.get() <= 4 * CHUNK as u64,
            "{} bytes read",
            given.get()
        );
        assert_eq!(replay.summary.payloads, 1);
    }

    #[test]
    fn a_hex_capture_split_anywhere_decodes_like_the_raw_bytes() {
        let raw = [dsmr("1.5"), dsmr("2.5")].concat();
        let (r, raw_summary, raw_out, _) = replay_of(&raw[..], false);
        r.unwrap();
        let text = crate::hex::encode(&raw);
        // Wrapped lines, and one read per 7 bytes of text (pairs split between reads).
        let wrapped: Vec<u8> = text
            .as_bytes()
            .chunks(60)
            .flat_map(|l| l.iter().copied().chain(*b"\r\n"))
            .collect();
        let (r, summary, out, _) =
            replay_of(std::io::BufReader::with_capacity(7, &wrapped[..]), true);
        r.unwrap();
        assert_eq!(out, raw_out);
        assert_eq!(out.lines().count(), 2);
        assert_eq!(summary.stats, raw_summary.stats);
    }

    #[test]
    fn a_bad_hex_digit_is_named_with_its_line_and_what_came_before_is_still_printed() {
        let mut text = crate::hex::encode(&dsmr("1.5")).into_bytes();
        text.extend_from_slice(b"\n0a\n0g");
        let (r, _, out, _) = replay_of(&text[..], true);
        let e = r.unwrap_err().to_string();
        assert!(e.starts_with("line 3: 'g' at offset"), "{e}");
        assert_eq!(out.lines().count(), 1);
        let (r, _, _, _) = replay_of(&b"0a1"[..], true);
        assert_eq!(
            r.unwrap_err().to_string(),
            "line 1: odd number of hex digits (3)"
        );
    }

    #[test]
    fn a_capture_that_matches_no_line_says_what_it_found() {
        let t = format!(
            "/ABC5\r\n\r\n1-0:2.8.0(1*kWh)\r\n!{:04X}\r\n",
            crate::decode::obis::check::crc16_arc(b"/ABC5\r\n\r\n1-0:2.8.0(1*kWh)\r\n!")
        );
        let (r, summary, out, _) = replay_of(t.as_bytes(), false);
        r.unwrap();
        assert_eq!(out, "");
        assert_eq!((summary.stats.telegrams, summary.payloads), (1, 0));
        assert_eq!(
            summary.nothing_published(1, 1, "p1.txt"),
            "nothing published: 1 telegram framed in p1.txt, but none of meter 1's 1 metric line \
             matched a value in them (34 bytes read, 0 bytes skipped, 0 CRC errors, 0 without CRC, \
             0 rejected); compare the script's codes with the capture's"
        );
    }

    #[test]
    fn rejections_past_ten_of_a_kind_are_counted_not_printed() {
        let mut bad = dsmr("1.5");
        let p = bad.iter().position(|&b| b == b'5').unwrap();
        bad[p] = b'6';
        let capture = bad.repeat(25);
        let (r, summary, _, errors) = replay_of(&capture[..], false);
        r.unwrap();
        assert_eq!(summary.stats.crc_errors, 25);
        assert_eq!(errors.lines().count(), 11, "{errors}");
        assert!(errors.contains("CRC mismatch"), "{errors}");
        assert!(
            errors.ends_with("sml: 15 more 'bad CRC' rejections not shown\n"),
            "{errors}"
        );
    }
}
