/*!
The `k` decoder: Kamstrup KMP (Multical heat meters, OMNIPOWER electricity meters) replies in,
readings out, and the meter's requests out on their schedule.

KMP is polled: Tasmota sends the definition line's blocks in turn, one per `txperiod` tick, framed
by [`request::frame`], and reads whatever frame arrives as the reply to the block sent last; a
metric line with `iN:` only reads the reply to block N. This decoder does the same and checks more
before a value is published: the frame's CRC ([`frame`]), that the reply comes from the
destination asked and answers the CID asked, and, for `GetRegister` (CID `10`), that every register
it carries was asked for by that block. A reply to another request, a reply with nobody asking and
a request left unanswered until the next one goes out are each counted ([`KamstrupStats`]) and
publish nothing.

Without requests (a meter asked by the script's own `sml(m 1 "...")` calls) every reply with a good
CRC is read as the reply to block 0, as Tasmota's block index stays 0 then. A decoder that has sent
nothing reads a capture (`sml decode`): each reply answers the next block in turn that it fits.

Values: `kstr` reads a register record (`crate::decode::bytes`). Unlike Tasmota it applies a
negative exponent too (a temperature `6523` with exponent -2 reads `65.23`, where Tasmota reads
`6523` and scripts divide by 100 with `@i0:100`): such a script publishes values 10^n too small
here, and its divisor must be taken out. A text line (`@#`) shows the value as Tasmota shows a
Kamstrup date `YYMMDD`: `DD.MM.YY`. A line without `iN:` is read from every reply (Tasmota reads
`99` there, a leftover of its eBus reader).
*/

pub mod frame;
pub mod request;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::decode::request::RequestSchedule;
use crate::decode::{DecodeError, DecodeEvent, DecodeStats, Decoder, Reading, Telegram, Value};
use crate::script::model::{BytePattern, Decoding, Meter, MeterIndex, Metric, ValueSpec};

use frame::{Frame, Framer};

/// A quiet line for this long ends a partial frame (the rest will not come).
pub const SILENCE: Duration = Duration::from_millis(500);

/// The KMP command id of `GetRegister`, whose replies carry the registers asked for.
pub const GET_REGISTER: u8 = 0x10;

pub use crate::decode::MAX_QUEUED_EVENTS;

/// What only a polling master can tell wrong, beyond [`DecodeStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KamstrupStats {
    pub requests: u64,
    /// Replies from another destination, to another CID, or with registers not asked for.
    pub wrong_request: u64,
    /// Replies while no request was waiting for one.
    pub unsolicited: u64,
    /// Requests with no reply before the next request went out.
    pub no_reply: u64,
}

/// The request a reply is waited for: its block number and its bytes before framing.
#[derive(Debug, Clone)]
struct Outstanding {
    block: usize,
    request: Vec<u8>,
}

pub struct KamstrupDecoder {
    meter: MeterIndex,
    framer: Framer,
    metrics: Vec<Metric<BytePattern>>,
    requests: RequestSchedule,
    /// The request blocks before framing (destination, CID, data), to check what a reply answers.
    blocks: Vec<Vec<u8>>,
    outstanding: Option<Outstanding>,
    /// False while the decoder has sent nothing: it reads a capture, whose replies answer the
    /// blocks in turn.
    transmitted: bool,
    replay_next: usize,
    events: VecDeque<DecodeEvent>,
    stats: DecodeStats,
    kamstrup: KamstrupStats,
    last_byte_at: Option<Instant>,
}

impl KamstrupDecoder {
    pub fn new(meter: &Meter) -> Self {
        let metrics = match &meter.decoding {
            Decoding::Kamstrup(m) => m.clone(),
            _ => Vec::new(),
        };
        KamstrupDecoder {
            meter: meter.index,
            framer: Framer::default(),
            metrics,
            requests: RequestSchedule::new(meter),
            blocks: meter
                .requests
                .blocks
                .iter()
                .map(|b| b.bytes.clone())
                .collect(),
            outstanding: None,
            transmitted: false,
            replay_next: 0,
            events: VecDeque::new(),
            stats: DecodeStats::default(),
            kamstrup: KamstrupStats::default(),
            last_byte_at: None,
        }
    }

    pub fn kamstrup_stats(&self) -> KamstrupStats {
        self.kamstrup
    }

    /// Run the framer with a sink that turns frames into events.
    fn with_frames(&mut self, f: impl FnOnce(&mut Framer, &mut dyn FnMut(Frame<'_>))) {
        let KamstrupDecoder {
            meter,
            framer,
            metrics,
            blocks,
            outstanding,
            transmitted,
            replay_next,
            events,
            stats,
            kamstrup,
            ..
        } = self;
        let mut sink = |frame: Frame<'_>| {
            let event = match frame {
                Frame::Reply(bytes) => {
                    let body = &bytes[..bytes.len() - 2];
                    if !blocks.is_empty() && !*transmitted {
                        *outstanding = replayed_request(blocks, replay_next, body, kamstrup);
                    }
                    reply(
                        *meter,
                        metrics,
                        blocks.is_empty(),
                        outstanding,
                        body,
                        bytes,
                        stats,
                        kamstrup,
                    )
                }
                Frame::Discarded(n) => {
                    stats.bytes_skipped += n as u64;
                    DecodeEvent::Discarded { bytes: n }
                }
                Frame::Rejected(e) => {
                    stats.count_rejection(&e);
                    DecodeEvent::Error(e)
                }
            };
            crate::decode::queue_event(events, event);
        };
        f(framer, &mut sink);
    }

    fn flush(&mut self, why: &'static str) {
        self.with_frames(|f, sink| f.flush(why, sink));
    }
}

/// Why a checked frame is not the reply to `request`, if it is not.
fn mismatch(request: &[u8], body: &[u8]) -> Option<String> {
    let (Some(&dest), Some(&cid)) = (request.first(), request.get(1)) else {
        return None;
    };
    if body.first() != Some(&dest) {
        return Some(format!(
            "reply from destination {:02X} while {dest:02X} was asked",
            body[0]
        ));
    }
    if body.get(1) != Some(&cid) {
        return Some(format!(
            "reply to CID {:02X} while {cid:02X} was asked",
            body.get(1).copied().unwrap_or(0)
        ));
    }
    if cid != GET_REGISTER {
        return None;
    }
    let asked: Vec<u16> = request
        .get(3..)
        .unwrap_or(&[])
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let mut at = 2;
    while at < body.len() {
        let Some(head) = body.get(at..at + 5) else {
            return Some(format!("register record at byte {at} is cut short"));
        };
        let id = u16::from_be_bytes([head[0], head[1]]);
        if !asked.contains(&id) {
            return Some(format!(
                "reply carries register {id:04X}, which the request did not ask for"
            ));
        }
        at += 5 + usize::from(head[3]);
    }
    if at > body.len() {
        return Some("the last register record is cut short".into());
    }
    None
}

/// One checked reply: matched to the request waiting for it, then read by the metric lines.
#[allow(clippy::too_many_arguments)]
fn reply(
    meter: MeterIndex,
    metrics: &[Metric<BytePattern>],
    listen_only: bool,
    outstanding: &mut Option<Outstanding>,
    body: &[u8],
    frame: &[u8],
    stats: &mut DecodeStats,
    kamstrup: &mut KamstrupStats,
) -> DecodeEvent {
    let reject = |stats: &mut DecodeStats, why: String| {
        stats.rejected += 1;
        DecodeEvent::Error(DecodeError::Malformed { offset: 0, why })
    };
    let block = if listen_only {
        // Tasmota's block index stays 0 when the meter has no request blocks.
        0
    } else {
        let Some(asked) = outstanding.as_ref() else {
            kamstrup.unsolicited += 1;
            return reject(
                stats,
                "reply with no request waiting (late or unsolicited)".into(),
            );
        };
        if let Some(why) = mismatch(&asked.request, body) {
            kamstrup.wrong_request += 1;
            return reject(
                stats,
                format!("{why} (block {}): a reply to another request", asked.block),
            );
        }
        match outstanding.take() {
            Some(o) => o.block,
            None => 0,
        }
    };
    stats.telegrams += 1;
    let mut readings = Vec::new();
    for m in metrics {
        if m.pattern.block.is_some_and(|b| usize::from(b) != block) {
            continue;
        }
        match crate::decode::bytes::read(&m.pattern, frame) {
            Ok(raw) => readings.push(Reading {
                entry: m.output.entry,
                value: match m.value {
                    ValueSpec::Text { .. } => Value::Text(date_text(raw)),
                    ValueSpec::Number { .. } => Value::Number(crate::decode::scale(raw, &m.value)),
                },
            }),
            Err(why) => {
                if m.pattern.block.is_some() {
                    tracing::debug!(
                        meter,
                        line = m.output.line,
                        "Kamstrup reply to block {block} not read: {why}"
                    );
                }
            }
        }
    }
    DecodeEvent::Telegram(Telegram { readings })
}

/// A Kamstrup date register (`YYMMDD`, e.g. 220901) as Tasmota shows it: `DD.MM.YY`.
pub fn date_text(value: f64) -> String {
    let date = value.abs() as u64;
    let (year, month, day) = (date / 10000 % 100, date / 100 % 100, date % 100);
    format!("{day:02}.{month:02}.{year:02}")
}

/// In a capture (nothing was sent), the request a reply answers: the next block in turn it fits,
/// blocks passed over counting as unanswered; if none fits, the next block, so the reply is
/// refused saying what was expected.
fn replayed_request(
    blocks: &[Vec<u8>],
    next: &mut usize,
    body: &[u8],
    kamstrup: &mut KamstrupStats,
) -> Option<Outstanding> {
    let n = blocks.len();
    for k in 0..n {
        let i = (*next + k) % n;
        if mismatch(&blocks[i], body).is_none() {
            kamstrup.no_reply += k as u64;
            *next = (i + 1) % n;
            return Some(Outstanding {
                block: i,
                request: blocks[i].clone(),
            });
        }
    }
    Some(Outstanding {
        block: *next,
        request: blocks.get(*next)?.clone(),
    })
}

/// Log a count at its 1st, 10th, 100th, ... occurrence, so a dead meter does not flood the log.
fn rate_limited(count: u64) -> bool {
    let mut n = count;
    while n >= 10 && n % 10 == 0 {
        n /= 10;
    }
    n == 1
}

impl Decoder for KamstrupDecoder {
    fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.stats.bytes_in += bytes.len() as u64;
        self.last_byte_at = Some(now);
        self.with_frames(|f, sink| f.push(bytes, sink));
    }

    fn poll_event(&mut self) -> Option<DecodeEvent> {
        self.events.pop_front()
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let (block, wire) = self.requests.poll_transmit(now)?;
        self.transmitted = true;
        // A new request ends the wait for the last one's reply.
        self.flush("the next request went out before the reply was complete");
        if let Some(missed) = self.outstanding.take() {
            self.kamstrup.no_reply += 1;
            if rate_limited(self.kamstrup.no_reply) {
                tracing::warn!(
                    meter = self.meter,
                    "the Kamstrup meter did not answer request block {} before the next request \
                     ({} unanswered so far)",
                    missed.block,
                    self.kamstrup.no_reply
                );
            }
        }
        self.kamstrup.requests += 1;
        self.outstanding = self.blocks.get(block).map(|request| Outstanding {
            block,
            request: request.clone(),
        });
        Some(wire)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let silence = self
            .last_byte_at
            .filter(|_| self.framer.pending() > 0)
            .map(|t| t + SILENCE);
        match (silence, self.requests.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let quiet = self.last_byte_at.is_some_and(|t| now >= t + SILENCE);
        if quiet && self.framer.pending() > 0 {
            self.flush("the line went quiet in the middle of a frame");
        }
    }

    fn handle_end(&mut self) {
        self.flush("the input ended in the middle of a frame");
    }

    fn stats(&self) -> DecodeStats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
