/*!
The `p` decoder: PZEM-004T (v1, the 7-byte protocol; v3 speaks Modbus, type `m`). The decoder sends
the script's request blocks in turn ([`request`] frames them: command, address `C0 A8 01 01`, a
data byte, checksum) and reads the 7-byte replies: reply code (the command minus 0x10: `B0`
voltage is answered by `A0`), five data bytes, checksum (the sum of the first six bytes).

Tasmota takes any 7 bytes as a reply and checks the checksum only for lines without `iN:` (for
`iN:` lines it checks a Modbus CRC, which a PZEM reply never has, so such lines never read). Here
every reply is checked before any line reads it: its checksum, that its first byte is a reply code,
and, when a request is waiting, that it answers that request. A reply names the command it answers,
so `iN:` lines read the reply to block N, also in a capture. A bad reply is counted, logged by the
runner and publishes nothing; the decoder then hunts byte by byte for the next reply.

Tasmota's PZEM value masks `vvvvvv`, `cccccc`, `pppp` and `eeeeee` are not in the script grammar
yet; lines use the shared byte-pattern reader's masks (`A2UUuu@1` for the power).
*/

pub mod request;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::decode::request::RequestSchedule;
use crate::decode::{DecodeError, DecodeEvent, DecodeStats, Decoder, Reading, Telegram, Value};
use crate::script::model::{BytePattern, Decoding, Meter, MeterIndex, Metric, ValueSpec};

/// Every PZEM-004T v1 reply is this long.
pub const REPLY_LEN: usize = 7;

/// A quiet line for this long ends a partial reply (the rest will not come).
pub const SILENCE: Duration = Duration::from_millis(500);

/// What only a PZEM master can tell wrong, beyond [`DecodeStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PzemStats {
    pub requests: u64,
    /// Requests with no reply before the next request went out.
    pub no_reply: u64,
    /// Replies to another command than the one asked, or with nobody asking.
    pub wrong_reply: u64,
}

/// The checksum of a PZEM frame: the sum of its first six bytes, modulo 256.
pub fn checksum(frame: &[u8]) -> u8 {
    frame
        .iter()
        .take(REPLY_LEN - 1)
        .fold(0u8, |acc, &b| acc.wrapping_add(b))
}

/// Whether `b` is a reply code (`A0`..`A5`: voltage, current, power, energy, address, alarm).
pub fn is_reply_code(b: u8) -> bool {
    (0xA0..=0xA5).contains(&b)
}

pub struct PzemDecoder {
    meter: MeterIndex,
    metrics: Vec<Metric<BytePattern>>,
    requests: RequestSchedule,
    /// The command byte of each request block.
    commands: Vec<u8>,
    /// The command of the request waiting for its reply.
    outstanding: Option<u8>,
    buf: Vec<u8>,
    events: VecDeque<DecodeEvent>,
    stats: DecodeStats,
    pzem: PzemStats,
    last_byte_at: Option<Instant>,
}

impl PzemDecoder {
    pub fn new(meter: &Meter) -> Self {
        let metrics = match &meter.decoding {
            Decoding::Pzem(m) => m.clone(),
            _ => Vec::new(),
        };
        let commands = crate::decode::request::frame(meter)
            .iter()
            .map(|b| b.first().copied().unwrap_or(0))
            .collect();
        PzemDecoder {
            meter: meter.index,
            metrics,
            requests: RequestSchedule::new(meter),
            commands,
            outstanding: None,
            buf: Vec::new(),
            events: VecDeque::new(),
            stats: DecodeStats::default(),
            pzem: PzemStats::default(),
            last_byte_at: None,
        }
    }

    pub fn pzem_stats(&self) -> PzemStats {
        self.pzem
    }

    fn queue(&mut self, event: DecodeEvent) {
        if let DecodeEvent::Error(e) = &event {
            self.stats.count_rejection(e);
            tracing::debug!(meter = self.meter, "PZEM reply rejected: {e}");
        }
        crate::decode::queue_event(&mut self.events, event);
    }

    /// Take every whole reply off the front of the buffer.
    fn frames(&mut self) {
        let mut skipped = 0usize;
        let mut at = 0usize;
        while self.buf.len() - at >= REPLY_LEN {
            if !is_reply_code(self.buf[at]) {
                // Not the start of a reply: a lost byte or noise; hunt for the next one.
                skipped += 1;
                at += 1;
                continue;
            }
            if skipped > 0 {
                self.stats.bytes_skipped += skipped as u64;
                self.queue(DecodeEvent::Discarded { bytes: skipped });
                skipped = 0;
            }
            let mut frame = [0u8; REPLY_LEN];
            frame.copy_from_slice(&self.buf[at..at + REPLY_LEN]);
            at += REPLY_LEN;
            let event = self.reply(&frame);
            self.queue(event);
        }
        if skipped > 0 {
            self.stats.bytes_skipped += skipped as u64;
            self.queue(DecodeEvent::Discarded { bytes: skipped });
        }
        self.buf.drain(..at);
    }

    /// One reply-sized frame: checked, matched to the request, read by the metric lines.
    fn reply(&mut self, frame: &[u8; REPLY_LEN]) -> DecodeEvent {
        let computed = checksum(frame);
        if computed != frame[6] {
            return DecodeEvent::Error(DecodeError::BadCrc {
                expected: u16::from(frame[6]),
                computed: u16::from(computed),
            });
        }
        let code = frame[0];
        let command = code + 0x10;
        let wrong = |why: String| DecodeEvent::Error(DecodeError::Malformed { offset: 0, why });
        // Once a request went out, every reply must answer the one waiting; before (a capture, or
        // a meter only listened to) replies are read as they come.
        if self.pzem.requests > 0 {
            match self.outstanding.take() {
                Some(asked) if asked == command => {}
                Some(asked) => {
                    self.pzem.wrong_reply += 1;
                    return wrong(format!(
                        "reply {code:02X} (to command {command:02X}) while {asked:02X} was asked"
                    ));
                }
                None => {
                    self.pzem.wrong_reply += 1;
                    return wrong(format!(
                        "reply {code:02X} with no request waiting (late or unsolicited)"
                    ));
                }
            }
        }
        self.stats.telegrams += 1;
        let block = self.commands.iter().position(|&c| c == command);
        let mut readings = Vec::new();
        for m in &self.metrics {
            if m.pattern
                .block
                .is_some_and(|b| Some(usize::from(b)) != block)
            {
                continue;
            }
            if matches!(m.value, ValueSpec::Text { .. }) {
                continue;
            }
            if let Ok(raw) = crate::decode::bytes::read(&m.pattern, frame) {
                readings.push(Reading {
                    entry: m.output.entry,
                    value: Value::Number(crate::decode::scale(raw, &m.value)),
                });
            }
        }
        DecodeEvent::Telegram(Telegram { readings })
    }

    /// A partial reply that will not be completed.
    fn flush(&mut self, why: &'static str) {
        if self.buf.is_empty() {
            return;
        }
        let bytes = self.buf.len();
        self.buf.clear();
        self.queue(DecodeEvent::Error(DecodeError::Truncated { bytes, why }));
    }
}

impl Decoder for PzemDecoder {
    fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.stats.bytes_in += bytes.len() as u64;
        self.last_byte_at = Some(now);
        self.buf.extend_from_slice(bytes);
        self.frames();
    }

    fn poll_event(&mut self) -> Option<DecodeEvent> {
        self.events.pop_front()
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let (_, bytes) = self.requests.poll_transmit(now)?;
        // A new request ends the wait for the last one's reply.
        self.flush("the next request went out before the reply was complete");
        if self.outstanding.take().is_some() {
            self.pzem.no_reply += 1;
        }
        self.pzem.requests += 1;
        self.outstanding = bytes.first().copied();
        Some(bytes)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let silence = self
            .last_byte_at
            .filter(|_| !self.buf.is_empty())
            .map(|t| t + SILENCE);
        match (silence, self.requests.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let quiet = self.last_byte_at.is_some_and(|t| now >= t + SILENCE);
        if quiet {
            self.flush("the line went quiet in the middle of a reply");
        }
    }

    fn handle_end(&mut self) {
        self.flush("the input ended in the middle of a reply");
    }

    fn stats(&self) -> DecodeStats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
