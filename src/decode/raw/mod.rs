/*!
The `r`/`R` decoder: raw binary meters whose metric lines are byte masks (`0C06bcd8@1`), mostly wired
M-Bus heat and water meters and a few inverters.

What Tasmota does (xsns_53_sml.ino, `sml_shift_in`/`SML_Decode`), and what a consumer sees:
- `r` keeps a sliding window of the last N bytes (N = `=so3,N`, default 48) and, on every byte,
  lays every metric line over the window's start. A line matches wherever its mask fits, so the
  value comes out as soon as the byte N after the pattern's start arrives. Here the same positions
  are tried, each once, with the N bytes from there; and when the line goes quiet the last
  positions are tried with the bytes there are, instead of waiting for the next telegram to push
  them through (Tasmota's "set `=so3,8` to get non-delayed decoding" advice is then not needed).
- `R` collects bytes until a silence of `=so6` ms (default 1000) and lays the lines over the start
  of what it collected.

Where Tasmota publishes garbage, this decoder does not:
- A window inside an M-Bus long frame (`68 L L 68 ... CS 16`) is only read once the whole frame has
  arrived with the right length, checksum and stop byte; a frame that fails is one
  [`DecodeError`] (counted, logged by the runner) and nothing inside it is read. Tasmota reads
  the bytes of a cut or corrupted frame like any other.
- On an M-Bus meter (one that has sent a good long frame, or whose script sends M-Bus requests or
  uses 8E1) bytes outside checked frames are skipped and counted, never read: a wrong baud rate's
  noise publishes nothing.
- When a line matches more than once in one frame, the match at a record's DIF (or in the frame
  header) wins over a match inside another record's data, else the first: Tasmota publishes the
  last match, which for a short mask like `0C06bcd8` can be digits of an unrelated record.
- An `R` burst longer than its buffer is rejected (Tasmota wraps around and reads the mix).

Encrypted meters (`=so4` key) are not decoded here: `decoder_for` hands them to `dlms`.
*/

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::decode::mbus::{self, FrameError};
use crate::decode::request::RequestSchedule;
use crate::decode::{
    queue_event, DecodeError, DecodeEvent, DecodeStats, Decoder, Reading, Telegram, Value,
};
use crate::script::model::{BytePattern, Decoding, Meter, MeterIndex, Metric, Parity};

/// Tasmota's window (`SML_BSIZ`) when the script sets no `=so3`.
pub const DEFAULT_WINDOW: usize = 48;
/// Tasmota's `R` block-sync silence (`SML_STIMEOUT`) when the script sets no `=so6`.
pub const DEFAULT_SILENCE: Duration = Duration::from_millis(1000);
/// The smallest `R` buffer: an M-Bus long frame always fits.
const MIN_BURST: usize = 261;

pub struct RawDecoder {
    meter: MeterIndex,
    /// `r` (sliding window) or `R` (bursts ended by silence).
    shift: bool,
    window: usize,
    silence: Duration,
    metrics: Vec<Metric<BytePattern>>,
    requests: RequestSchedule,
    /// Received bytes not yet read; `buf[start..]` is live.
    buf: Vec<u8>,
    start: usize,
    last_byte_at: Option<Instant>,
    /// Bytes at the front that belong to a frame that failed its check: never read.
    quarantine: usize,
    /// True once the meter is known to speak M-Bus: only checked frames are read.
    mbus: bool,
    /// `R`: the burst outgrew its buffer; its bytes are dropped until the next silence.
    overflowed: bool,
    /// `r` outside frames: readings collected since the last telegram went out.
    pending: Vec<Reading>,
    events: VecDeque<DecodeEvent>,
    stats: DecodeStats,
}

impl RawDecoder {
    pub fn new(meter: &Meter) -> Self {
        let (shift, metrics) = match &meter.decoding {
            Decoding::Raw { shift, metrics } => (*shift, metrics.clone()),
            _ => (true, Vec::new()),
        };
        let requests = RequestSchedule::new(meter);
        let mbus_requests = crate::decode::request::frame(meter)
            .iter()
            .any(|b| looks_like_mbus_request(b));
        RawDecoder {
            meter: meter.index,
            shift,
            window: window_of(meter),
            silence: meter
                .options
                .block_sync_ms
                .map_or(DEFAULT_SILENCE, |ms| Duration::from_millis(u64::from(ms))),
            metrics,
            requests,
            buf: Vec::new(),
            start: 0,
            last_byte_at: None,
            quarantine: 0,
            mbus: mbus_requests || meter.serial.parity == Parity::Even,
            overflowed: false,
            pending: Vec::new(),
            events: VecDeque::new(),
            stats: DecodeStats::default(),
        }
    }

    /// Whether this decoder reads only checked M-Bus frames.
    pub fn is_mbus(&self) -> bool {
        self.mbus
    }

    fn live(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 4096 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    fn discard(&mut self, n: usize) {
        self.stats.bytes_skipped += n as u64;
        queue_event(&mut self.events, DecodeEvent::Discarded { bytes: n });
        self.consume(n);
    }

    fn reject(&mut self, error: DecodeError) {
        self.stats.count_rejection(&error);
        tracing::debug!(meter = self.meter, "raw frame rejected: {error}");
        queue_event(&mut self.events, DecodeEvent::Error(error));
    }

    fn publish(&mut self, readings: Vec<Reading>) {
        if readings.is_empty() {
            return;
        }
        self.stats.telegrams += 1;
        queue_event(
            &mut self.events,
            DecodeEvent::Telegram(Telegram { readings }),
        );
    }

    fn flush_pending(&mut self) {
        let readings = std::mem::take(&mut self.pending);
        self.publish(readings);
    }

    /// A long frame at the front: read it if good, reject it if not. `None` while it is incomplete
    /// and more may come.
    fn take_frame(&mut self, total: usize, quiet: bool) -> Option<()> {
        let have = self.live().len();
        if have < total && !quiet {
            return None;
        }
        let checked = mbus::check_long_frame(&self.live()[..have.min(total)])
            .map(|frame| read_frame(&self.metrics, frame, self.window, self.shift));
        match checked {
            Ok(readings) => {
                self.mbus = true;
                self.quarantine = 0;
                self.flush_pending();
                self.consume(total);
                self.publish(readings);
            }
            Err(e) => {
                self.reject(frame_error(e));
                // Nothing inside is read; a good frame starting inside it still is.
                self.quarantine = have.min(total);
                self.discard(1);
                self.quarantine -= 1;
            }
        }
        Some(())
    }

    /// `r`: read every window position that has its N bytes (all of them when `quiet`).
    fn run_window(&mut self, quiet: bool) {
        loop {
            let live = self.live();
            let Some(&first) = live.first() else { break };
            if first == mbus::LONG_START {
                match mbus::long_header(live) {
                    None if !quiet => break,
                    Some(Ok(total)) => {
                        if self.take_frame(total, quiet).is_none() {
                            break;
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            if self.quarantine > 0 || self.mbus {
                self.quarantine = self.quarantine.saturating_sub(1);
                self.discard(1);
                continue;
            }
            if live.len() < self.window && !quiet {
                break;
            }
            let window = &live[..live.len().min(self.window)];
            for reading in read_at(&self.metrics, window) {
                if self.pending.iter().any(|r| r.entry == reading.entry) {
                    // The line matched again: the previous telegram is complete.
                    self.flush_pending();
                }
                self.pending.push(reading);
            }
            self.consume(1);
        }
        if quiet {
            self.flush_pending();
        }
    }

    fn burst_limit(&self) -> usize {
        self.window.max(MIN_BURST)
    }

    /// `R`: a burst past its buffer is rejected once; the rest of it, up to the next silence, is
    /// dropped (read from a cut point it would be garbage).
    fn check_burst_length(&mut self) {
        let len = self.live().len();
        if self.overflowed {
            // Counted, but no event: the TooLong error stands for the whole burst, however the
            // bytes were chunked.
            self.stats.bytes_skipped += len as u64;
            self.consume(len);
        } else if len > self.burst_limit() {
            self.reject(DecodeError::TooLong {
                limit: self.burst_limit(),
            });
            self.overflowed = true;
            self.stats.bytes_skipped += len as u64;
            self.consume(len);
        }
    }

    /// `R`: the burst since the last silence is one frame.
    fn end_burst(&mut self) {
        self.overflowed = false;
        let len = self.live().len();
        if len == 0 {
            return;
        }
        match mbus::long_header(self.live()) {
            Some(Ok(total)) => {
                let checked = mbus::check_long_frame(self.live())
                    .map(|frame| read_frame(&self.metrics, frame, self.window, false));
                match checked {
                    Ok(readings) => {
                        self.mbus = true;
                        self.publish(readings);
                        if len > total {
                            // An ACK or noise after the frame in the same burst.
                            self.consume(total);
                            self.discard(len - total);
                            return;
                        }
                    }
                    Err(e) => self.reject(frame_error(e)),
                }
                self.consume(self.live().len());
            }
            _ if self.mbus => self.discard(len),
            _ => {
                let readings = read_at(&self.metrics, self.live());
                self.consume(len);
                self.publish(readings);
            }
        }
    }
}

impl Decoder for RawDecoder {
    fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.stats.bytes_in += bytes.len() as u64;
        if !self.shift && self.last_byte_at.is_some_and(|t| now >= t + self.silence) {
            // The silence passed without a timeout call: the old burst ended then.
            self.end_burst();
        }
        self.last_byte_at = Some(now);
        self.buf.extend_from_slice(bytes);
        if self.shift {
            self.run_window(false);
        } else {
            self.check_burst_length();
        }
    }

    fn poll_event(&mut self) -> Option<DecodeEvent> {
        self.events.pop_front()
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.requests.poll_transmit(now).map(|(_, bytes)| bytes)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let waiting = !self.live().is_empty() || !self.pending.is_empty();
        let silence = self
            .last_byte_at
            .filter(|_| waiting)
            .map(|t| t + self.silence);
        match (silence, self.requests.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.last_byte_at.is_some_and(|t| now >= t + self.silence) {
            self.quiet();
        }
    }

    fn handle_end(&mut self) {
        self.quiet();
    }

    fn stats(&self) -> DecodeStats {
        self.stats
    }
}

impl RawDecoder {
    fn quiet(&mut self) {
        if self.shift {
            self.run_window(true);
        } else {
            self.end_burst();
        }
        self.quarantine = 0;
    }
}

/// `=so3,N`: the window (and serial buffer) size.
fn window_of(meter: &Meter) -> usize {
    meter
        .options
        .raw
        .iter()
        .find_map(|(_, text)| {
            let rest = text
                .trim()
                .strip_prefix('3')?
                .trim_start()
                .strip_prefix(',')?;
            let n: usize = rest.split(',').next()?.trim().parse().ok()?;
            Some(n)
        })
        .filter(|n| *n > 0)
        .map_or(DEFAULT_WINDOW, |n| n.min(4096))
}

/// An M-Bus short frame (`10 C A CS 16`) or long frame among the script's requests.
fn looks_like_mbus_request(b: &[u8]) -> bool {
    (b.len() == 5 && b[0] == 0x10 && b[4] == mbus::STOP)
        || (b.len() >= 9 && mbus::check_long_frame(b).is_ok())
}

fn frame_error(e: FrameError) -> DecodeError {
    match e {
        FrameError::BadChecksum {
            expected, computed, ..
        } => DecodeError::BadCrc {
            expected: u16::from(expected),
            computed: u16::from(computed),
        },
        FrameError::Truncated { have, .. } => DecodeError::Truncated {
            bytes: have,
            why: "M-Bus long frame cut short",
        },
        other => DecodeError::Malformed {
            offset: match other {
                FrameError::NoStop { offset, .. } => offset,
                _ => 1,
            },
            why: other.to_string(),
        },
    }
}

/// Every line's value laid over `window`'s start.
fn read_at(metrics: &[Metric<BytePattern>], window: &[u8]) -> Vec<Reading> {
    metrics
        .iter()
        .filter_map(|m| {
            let raw = crate::decode::bytes::read(&m.pattern, window).ok()?;
            Some(Reading {
                entry: m.output.entry,
                value: Value::Number(crate::decode::scale(raw, &m.value)),
            })
        })
        .collect()
}

/// The readings of a checked frame. `r`: every line at every offset (windows cut at the frame's
/// end), one value per line, a match at a record start or in the header winning. `R`: at the start.
fn read_frame(
    metrics: &[Metric<BytePattern>],
    frame: &[u8],
    window: usize,
    shift: bool,
) -> Vec<Reading> {
    if !shift {
        return read_at(metrics, frame);
    }
    let anchors: Vec<usize> = mbus::records(frame)
        .records
        .iter()
        .map(|r| r.offset)
        .collect();
    let header_end = 7;
    let mut best: Vec<Option<(bool, Reading)>> = vec![None; metrics.len()];
    for p in 0..frame.len() {
        let w = &frame[p..frame.len().min(p + window)];
        let anchored = p < header_end || anchors.binary_search(&p).is_ok();
        for (i, m) in metrics.iter().enumerate() {
            if best[i].as_ref().is_some_and(|(a, _)| *a || !anchored) {
                continue;
            }
            if let Ok(raw) = crate::decode::bytes::read(&m.pattern, w) {
                best[i] = Some((
                    anchored,
                    Reading {
                        entry: m.output.entry,
                        value: Value::Number(crate::decode::scale(raw, &m.value)),
                    },
                ));
            }
        }
    }
    best.into_iter().flatten().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests;
