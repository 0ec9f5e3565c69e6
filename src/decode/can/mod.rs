/*!
The `C` decoder: CAN frames in, readings out, and the meter's request frames out on their schedule.

CAN is not a byte stream, so the link hands frames over in one documented byte layout, the one
Tasmota builds in its receive buffer before matching (`SML_CANBUS_Read`), which is also what a
script's metric masks are written against:

```text
[identifier: u32 big endian][dlc: u8, 0..=8][data: dlc bytes]
```

In the identifier, bit 31 marks an extended (29-bit) frame, as in Linux's `can_id` and in the
request blocks of a script (`908040FE08...` asks the extended id `0x108040FE`). The flag is not part
of what a metric line matches: Tasmota's ESP32 driver puts the bare identifier in the buffer, so the
Huawei script's `1081407f08...` matches the extended id `0x1081407F`. A request block is the same
layout, written to the link as it is ([`crate::link::can`] turns it into a frame).

Keeping frames as bytes lets the decoder keep the byte API every other decoder has (any chunking,
`sml decode` on a recording, one fuzz target), instead of a second trait method for one protocol.

Rejected, counted and never published: a length byte above 8 (the stream lost its alignment, so
bytes are dropped one at a time until a frame fits), a record cut short by the end of a recording
or by a silence. A frame that no metric line matches (another device's id, another register) is
normal on a shared bus: it is counted in [`CanStats::unmatched`], not warned about.
*/

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::decode::request::RequestSchedule;
use crate::decode::{
    bytes, queue_event, DecodeError, DecodeEvent, DecodeStats, Decoder, Reading, Telegram, Value,
};
use crate::script::model::{BytePattern, Decoding, Meter, Metric, ValueSpec};

/// Bit 31 of the identifier: an extended (29-bit) frame.
pub const EXTENDED_FLAG: u32 = 0x8000_0000;
/// The identifier bits a metric line sees.
pub const ID_MASK: u32 = 0x1FFF_FFFF;
/// Classic CAN carries at most 8 data bytes.
pub const MAX_DATA: usize = 8;
/// A part of a frame record left this long is not completed any more (the link hands over whole
/// records; a partial one is a broken bridge or recording).
pub const SILENCE: Duration = Duration::from_millis(500);

/// One CAN frame as the link delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanFrame {
    /// The identifier with [`EXTENDED_FLAG`] for a 29-bit one.
    pub id: u32,
    pub data: Vec<u8>,
}

impl CanFrame {
    /// The record the decoder reads (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.data.len());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.push(self.data.len() as u8);
        out.extend_from_slice(&self.data);
        out
    }

    /// A record (a script's request block) as a frame; `None` when it is not one.
    pub fn decode(record: &[u8]) -> Option<CanFrame> {
        let (head, data) = record.split_at_checked(5)?;
        let dlc = usize::from(head[4]);
        if dlc > MAX_DATA || data.len() != dlc {
            return None;
        }
        Some(CanFrame {
            id: u32::from_be_bytes([head[0], head[1], head[2], head[3]]),
            data: data.to_vec(),
        })
    }
}

/// What only a CAN listener can tell, beyond [`DecodeStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CanStats {
    /// Frames no metric line matched (other ids on the bus).
    pub unmatched: u64,
    /// Request frames sent.
    pub requests: u64,
}

pub struct CanDecoder {
    metrics: Vec<Metric<BytePattern>>,
    requests: RequestSchedule,
    /// Bytes of a record not complete yet.
    pending: Vec<u8>,
    /// Offset in the stream of `pending[0]`, for error messages.
    offset: u64,
    last_byte_at: Option<Instant>,
    /// Bytes are being dropped to find the next record (its rejection is already counted).
    resyncing: bool,
    events: VecDeque<DecodeEvent>,
    stats: DecodeStats,
    can: CanStats,
}

impl CanDecoder {
    pub fn new(meter: &Meter) -> Self {
        let metrics = match &meter.decoding {
            Decoding::Can(m) => m.clone(),
            _ => Vec::new(),
        };
        CanDecoder {
            metrics,
            requests: RequestSchedule::new(meter),
            pending: Vec::new(),
            offset: 0,
            last_byte_at: None,
            resyncing: false,
            events: VecDeque::new(),
            stats: DecodeStats::default(),
            can: CanStats::default(),
        }
    }

    pub fn can_stats(&self) -> CanStats {
        self.can
    }

    /// Take every complete record out of `pending`.
    fn frames(&mut self) {
        loop {
            if self.pending.len() < 5 {
                return;
            }
            let dlc = usize::from(self.pending[4]);
            if dlc > MAX_DATA {
                // One rejection per lost alignment, not one per byte dropped while finding it.
                if !self.resyncing {
                    self.resyncing = true;
                    self.reject(DecodeError::Malformed {
                        offset: (self.offset + 4) as usize,
                        why: format!("CAN length byte {dlc} is above {MAX_DATA}; resynchronising"),
                    });
                }
                // No sync marker: drop one byte and try the next alignment.
                self.pending.remove(0);
                self.offset += 1;
                self.stats.bytes_skipped += 1;
                queue_event(&mut self.events, DecodeEvent::Discarded { bytes: 1 });
                continue;
            }
            if self.pending.len() < 5 + dlc {
                return;
            }
            self.resyncing = false;
            let record: Vec<u8> = self.pending.drain(..5 + dlc).collect();
            self.offset += record.len() as u64;
            self.match_frame(&record);
        }
    }

    fn match_frame(&mut self, record: &[u8]) {
        self.stats.telegrams += 1;
        let mut seen = record.to_vec();
        // The lines match the bare identifier, as Tasmota's buffer holds it.
        let id = u32::from_be_bytes([seen[0], seen[1], seen[2], seen[3]]) & ID_MASK;
        seen[..4].copy_from_slice(&id.to_be_bytes());
        let mut readings = Vec::new();
        for m in &self.metrics {
            if matches!(m.value, ValueSpec::Text { .. }) {
                continue;
            }
            if let Ok(raw) = bytes::read(&m.pattern, &seen) {
                readings.push(Reading {
                    entry: m.output.entry,
                    value: Value::Number(crate::decode::scale(raw, &m.value)),
                });
            }
        }
        if readings.is_empty() {
            self.can.unmatched += 1;
        } else {
            queue_event(
                &mut self.events,
                DecodeEvent::Telegram(Telegram { readings }),
            );
        }
    }

    fn reject(&mut self, error: DecodeError) {
        self.stats.count_rejection(&error);
        tracing::debug!("CAN record rejected: {error}");
        queue_event(&mut self.events, DecodeEvent::Error(error));
    }

    fn drop_partial(&mut self, why: &'static str) {
        if self.pending.is_empty() {
            return;
        }
        let bytes = self.pending.len();
        self.offset += bytes as u64;
        self.pending.clear();
        self.reject(DecodeError::Truncated { bytes, why });
    }
}

impl Decoder for CanDecoder {
    fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.stats.bytes_in += bytes.len() as u64;
        self.last_byte_at = Some(now);
        self.pending.extend_from_slice(bytes);
        self.frames();
    }

    fn poll_event(&mut self) -> Option<DecodeEvent> {
        self.events.pop_front()
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let (_, frame) = self.requests.poll_transmit(now)?;
        self.can.requests += 1;
        Some(frame)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let silence = (!self.pending.is_empty())
            .then_some(self.last_byte_at)
            .flatten()
            .map(|t| t + SILENCE);
        match (silence, self.requests.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(at) = self.last_byte_at {
            if now >= at + SILENCE {
                self.drop_partial("the rest of the CAN frame record did not come");
            }
        }
    }

    fn handle_end(&mut self) {
        self.drop_partial("the recording ends inside a CAN frame record");
    }

    fn stats(&self) -> DecodeStats {
        self.stats
    }
}
