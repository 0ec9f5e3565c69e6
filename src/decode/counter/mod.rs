/*!
The `c` decoder: a pulse counter on a GPIO line (a gas or water meter's reed contact, an S0 output).
Edges in, the count and the pulse rate per minute out.

A line is not a byte stream either, so the link hands edges over in one documented byte layout,
nine bytes per edge:

```text
[level: u8, 0 or 1][timestamp: u64 big endian, nanoseconds on the link's monotonic clock]
```

The first record after a link opens is the line's level at that moment (no pulse); the GPIO link
uses the kernel's edge timestamps, so a busy host does not bend pulse widths. Keeping edges as bytes
keeps the one byte API of every decoder (any chunking, recordings, one fuzz target).

What Tasmota does (xsns_53_sml.ino, `SML_CounterIsr`/`SML_Counter_Poll`) and this decoder with it:
- a pulse is a falling edge (high to low; the contact closes to ground against a pull-up);
- param negative (`-50`): edges closer than 50 ms to the last accepted edge are contact bounce and
  ignored (Tasmota's interrupt mode);
- param positive (`10`): the ESP samples the pin every 10 ms and counts a fall once it has read low
  six times in a row after a high; here a fall counts once the line stayed low for 6 x param ms, and
  a rise before that is bounce;
- the rate is 60000 / (ms between the last two pulses), 0 until two pulses were seen, and back to 0
  when no pulse came for 5 s (`CNT_PULSE_TIMEOUT`). Tasmota zeroes it in interrupt mode only and
  keeps a poll-mode rate forever; here a rate is never older than 5 s in either mode, so a stopped
  meter does not go on publishing its last flow as fresh;
- the count is published at start, on every pulse and when the rate falls to 0.

The count itself is kept in the [`store`] (it outlives this decoder and a restart). Bounces and
broken records are each a rejected "telegram", counted, and publish nothing.
*/

pub mod store;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::decode::{
    queue_event, DecodeError, DecodeEvent, DecodeStats, Decoder, Reading, Telegram, Value,
};
use crate::script::model::{CounterField, Decoding, Meter, MeterIndex, Metric};

pub use store::CounterStore;

/// Bytes per edge record.
pub const RECORD: usize = 9;
/// No pulse for this long: the rate is 0 (Tasmota's `CNT_PULSE_TIMEOUT`).
pub const RATE_TIMEOUT: Duration = Duration::from_secs(5);
/// In poll mode (param > 0) a fall counts after this many polls read low.
pub const POLLS_LOW: u64 = 6;
/// A part of a record left this long is not completed any more.
pub const SILENCE: Duration = Duration::from_millis(500);

/// One edge as the link delivers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub high: bool,
    /// Nanoseconds on the link's monotonic clock.
    pub at_ns: u64,
}

impl Edge {
    pub fn encode(&self) -> [u8; RECORD] {
        let mut out = [0u8; RECORD];
        out[0] = u8::from(self.high);
        out[1..].copy_from_slice(&self.at_ns.to_be_bytes());
        out
    }
}

/// How edges are told from bounce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Debounce {
    /// Ignore edges this close to the last accepted one (param <= 0).
    Interrupt { ns: u64 },
    /// A fall counts after the line stayed low this long (param > 0: 6 polls).
    Poll { low_ns: u64 },
}

pub struct CounterDecoder<'s> {
    meter: MeterIndex,
    metrics: Vec<Metric<CounterField>>,
    debounce: Debounce,
    store: &'s CounterStore,
    level: Option<bool>,
    /// Timestamp of the last accepted edge (interrupt mode).
    last_edge_ns: Option<u64>,
    /// Poll mode: a fall waiting to have stayed low long enough (its timestamp, and when the record
    /// arrived, to confirm it on a timeout).
    pending_fall: Option<(u64, Instant)>,
    /// Timestamp of the last counted pulse, and when it was seen.
    last_pulse: Option<(u64, Instant)>,
    rate: f64,
    partial: Vec<u8>,
    /// Bytes are being dropped to find the next record (its rejection is already counted).
    resyncing: bool,
    offset: u64,
    last_byte_at: Option<Instant>,
    events: VecDeque<DecodeEvent>,
    stats: DecodeStats,
}

impl<'s> CounterDecoder<'s> {
    /// A decoder keeping its count in `store`.
    pub fn new(meter: &Meter, store: &'s CounterStore) -> Self {
        let (param, metrics) = match &meter.decoding {
            Decoding::Counter { param, metrics } => (*param, metrics.clone()),
            _ => (0, Vec::new()),
        };
        let ms = u64::from(param.unsigned_abs());
        let debounce = if param > 0 {
            Debounce::Poll {
                low_ns: POLLS_LOW * ms * 1_000_000,
            }
        } else {
            Debounce::Interrupt { ns: ms * 1_000_000 }
        };
        let mut decoder = CounterDecoder {
            meter: meter.index,
            metrics,
            debounce,
            store,
            level: None,
            last_edge_ns: None,
            pending_fall: None,
            last_pulse: None,
            rate: 0.0,
            partial: Vec::new(),
            resyncing: false,
            offset: 0,
            last_byte_at: None,
            events: VecDeque::new(),
            stats: DecodeStats::default(),
        };
        // The stored count at once, as Tasmota injects it at start: also after `sensor53 c1 v`,
        // whose new decoder may see no edge for a long time.
        decoder.publish();
        decoder
    }

    /// Publish the count and the rate.
    fn publish(&mut self) {
        let count = self.store.get(self.meter) as f64;
        let readings = self
            .metrics
            .iter()
            .map(|m| Reading {
                entry: m.output.entry,
                value: Value::Number(crate::decode::scale(
                    match m.pattern {
                        CounterField::Count => count,
                        CounterField::Rate => self.rate,
                    },
                    &m.value,
                )),
            })
            .collect();
        self.stats.telegrams += 1;
        queue_event(
            &mut self.events,
            DecodeEvent::Telegram(Telegram { readings }),
        );
    }

    fn reject(&mut self, error: DecodeError) {
        self.stats.count_rejection(&error);
        queue_event(&mut self.events, DecodeEvent::Error(error));
    }

    fn bounce(&mut self, offset: u64, gap_ns: u64, window_ms: u64) {
        self.reject(DecodeError::Malformed {
            offset: offset as usize,
            why: format!(
                "contact bounce: an edge {:.1} ms after the last, within the {window_ms} ms \
                 debounce; not counted",
                gap_ns as f64 / 1e6
            ),
        });
    }

    fn count_pulse(&mut self, at_ns: u64, now: Instant) {
        self.store.increment(self.meter, now);
        if let Some((last, _)) = self.last_pulse {
            let width_ms = at_ns.saturating_sub(last) as f64 / 1e6;
            // Two pulses with one timestamp cannot give a rate; keep the last one.
            if width_ms > 0.0 {
                self.rate = 60_000.0 / width_ms;
            }
        }
        self.last_pulse = Some((at_ns, now));
        self.publish();
    }

    fn handle_edge(&mut self, edge: Edge, offset: u64, now: Instant) {
        let Some(level) = self.level else {
            // The line's level at open: no pulse.
            self.level = Some(edge.high);
            self.last_edge_ns = Some(edge.at_ns);
            return;
        };
        if let Some(last) = self.last_edge_ns {
            if edge.at_ns < last {
                self.reject(DecodeError::Malformed {
                    offset: offset as usize,
                    why: format!(
                        "edge timestamp goes back {} ns; edge ignored",
                        last - edge.at_ns
                    ),
                });
                return;
            }
        }
        if edge.high == level {
            // A level repeated (a lost edge between): nothing happened that can be counted.
            self.last_edge_ns = Some(edge.at_ns);
            return;
        }
        match self.debounce {
            Debounce::Interrupt { ns } => {
                let gap = edge.at_ns - self.last_edge_ns.unwrap_or(0);
                if gap <= ns && self.last_edge_ns.is_some() {
                    // Tasmota drops the edge and keeps its idea of the level; so does this.
                    self.bounce(offset, gap, ns / 1_000_000);
                    return;
                }
                self.level = Some(edge.high);
                self.last_edge_ns = Some(edge.at_ns);
                if !edge.high {
                    self.count_pulse(edge.at_ns, now);
                }
            }
            Debounce::Poll { low_ns } => {
                self.level = Some(edge.high);
                self.last_edge_ns = Some(edge.at_ns);
                if !edge.high {
                    self.pending_fall = Some((edge.at_ns, now));
                } else if let Some((fall, _)) = self.pending_fall.take() {
                    let low = edge.at_ns - fall;
                    if low >= low_ns {
                        self.count_pulse(fall, now);
                    } else {
                        self.bounce(offset, low, low_ns / 1_000_000);
                    }
                }
            }
        }
    }
}

impl Decoder for CounterDecoder<'_> {
    fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.stats.bytes_in += bytes.len() as u64;
        self.last_byte_at = Some(now);
        self.partial.extend_from_slice(bytes);
        let mut at = 0;
        while self.partial.len() - at >= RECORD {
            let r = &self.partial[at..at + RECORD];
            if r[0] > 1 {
                // One rejection per lost alignment, not one per byte dropped while finding it.
                if !self.resyncing {
                    self.resyncing = true;
                    let why = format!(
                        "edge level byte {:02X} is neither 0 nor 1; resynchronising",
                        r[0]
                    );
                    self.reject(DecodeError::Malformed {
                        offset: (self.offset + at as u64) as usize,
                        why,
                    });
                }
                at += 1;
                self.stats.bytes_skipped += 1;
                continue;
            }
            let edge = Edge {
                high: r[0] == 1,
                at_ns: u64::from_be_bytes(r[1..].try_into().expect("eight bytes")),
            };
            self.resyncing = false;
            let offset = self.offset + at as u64;
            at += RECORD;
            self.handle_edge(edge, offset, now);
        }
        self.partial.drain(..at);
        self.offset += at as u64;
    }

    fn poll_event(&mut self) -> Option<DecodeEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let rate_zero = (self.rate != 0.0)
            .then_some(self.last_pulse)
            .flatten()
            .map(|(_, seen)| seen + RATE_TIMEOUT);
        let confirm = match (self.debounce, self.pending_fall) {
            (Debounce::Poll { low_ns }, Some((_, seen))) => {
                Some(seen + Duration::from_nanos(low_ns))
            }
            _ => None,
        };
        let silence = (!self.partial.is_empty())
            .then_some(self.last_byte_at)
            .flatten()
            .map(|t| t + SILENCE);
        [rate_zero, confirm, silence].into_iter().flatten().min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let (Debounce::Poll { low_ns }, Some((fall, seen))) = (self.debounce, self.pending_fall)
        {
            // Still low since the fall, by the host's clock: the pulse is real.
            if now >= seen + Duration::from_nanos(low_ns) && self.level == Some(false) {
                self.pending_fall = None;
                self.count_pulse(fall, now);
            }
        }
        if let Some((_, seen)) = self.last_pulse {
            if self.rate != 0.0 && now >= seen + RATE_TIMEOUT {
                self.rate = 0.0;
                self.publish();
                self.store.flush();
            }
        }
        if let Some(at) = self.last_byte_at {
            if !self.partial.is_empty() && now >= at + SILENCE {
                let bytes = self.partial.len();
                self.offset += bytes as u64;
                self.partial.clear();
                self.reject(DecodeError::Truncated {
                    bytes,
                    why: "the rest of the edge record did not come",
                });
            }
        }
    }

    fn handle_end(&mut self) {
        if !self.partial.is_empty() {
            let bytes = self.partial.len();
            self.partial.clear();
            self.reject(DecodeError::Truncated {
                bytes,
                why: "the recording ends inside an edge record",
            });
        }
    }

    fn stats(&self) -> DecodeStats {
        self.stats
    }
}

impl Drop for CounterDecoder<'_> {
    /// The link dropped, `sensor53 r`, or shutdown: the count is written if it changed.
    fn drop(&mut self) {
        self.store.flush();
    }
}
