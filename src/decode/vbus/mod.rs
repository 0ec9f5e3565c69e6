/*!
The `v` decoder: RESOL VBus (DeltaSol solar and heating controllers) telegrams in, readings out.
The controller broadcasts; nothing is sent to it.

[`frame`] finds and checks telegrams; this module reads the metric lines from them as Tasmota
does. A line is `<header hex>v o<N> <u|s> <w|b|t>`: the header bytes (sync `AA` included) must
match the telegram's first bytes (a bus carries several devices' telegrams; a line reads only its
own), then `oN` picks data frame `N / 4` (each frame holds 4 bytes of the controller's payload),
and within it:
- `w`: a 16-bit word, the low one when `N % 4 == 0`, else the high one;
- `b`: byte `N % 4`;
- `t`: a word as `w`, minutes since midnight, published as text `hh:mm` on a `@#` line;
- `u`/`s`: unsigned or signed (two's complement of the word or byte).

`bx:` publishes bit x of the value. Tasmota reads 0 from a frame with a bad checksum; here a
damaged telegram is rejected whole and publishes nothing.
*/

pub mod frame;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::decode::{DecodeEvent, DecodeStats, Decoder, Reading, Telegram, Value};
use crate::script::model::{Decoding, Meter, MeterIndex, Metric, ValueSpec, VbusPattern};

use frame::{Frame, Framer, FRAME_LEN};

pub use crate::decode::MAX_QUEUED_EVENTS;

/// A quiet line for this long ends a partial telegram (controllers send theirs in one burst).
pub const SILENCE: Duration = Duration::from_millis(500);

pub struct VbusDecoder {
    meter: MeterIndex,
    framer: Framer,
    metrics: Vec<Metric<VbusPattern>>,
    events: VecDeque<DecodeEvent>,
    stats: DecodeStats,
    last_byte_at: Option<Instant>,
}

/// Why a line read nothing from a telegram (not an error of the telegram).
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoMatch {
    /// Another device's telegram, or another command.
    Header,
    /// The telegram has fewer data frames than the line's offset needs.
    Short { frame: usize, frames: usize },
}

/// The value a line reads from a checked telegram, before its offset and divisor.
fn read(pattern: &VbusPattern, telegram: &[u8]) -> Result<f64, NoMatch> {
    if !telegram.starts_with(&pattern.header) {
        return Err(NoMatch::Header);
    }
    let offset = usize::from(pattern.offset);
    let at = pattern.header.len() + (offset / 4) * FRAME_LEN;
    let frames = telegram.len().saturating_sub(frame::HEADER_LEN) / FRAME_LEN;
    let short = NoMatch::Short {
        frame: offset / 4,
        frames,
    };
    // A header shorter than 10 bytes shifts the frames: their checksums tell.
    let v = telegram
        .get(at..)
        .and_then(frame::septet_value)
        .ok_or(short)?;
    let value = if pattern.word {
        let w = if offset % 4 != 0 { v >> 16 } else { v } as u16;
        if pattern.signed {
            f64::from(w as i16)
        } else {
            f64::from(w)
        }
    } else {
        let b = (v >> (8 * (offset % 4))) as u8;
        if pattern.signed {
            f64::from(b as i8)
        } else {
            f64::from(b)
        }
    };
    Ok(match pattern.bit {
        Some(bit) => f64::from(((value as i64 as u64) >> (bit & 63)) as u32 & 1),
        None => value,
    })
}

/// Minutes since midnight as Tasmota prints a VBus time: `hh:mm`.
pub fn time_text(minutes: f64) -> String {
    let m = minutes as i64;
    format!("{:02}:{:02}", m / 60, m % 60)
}

impl VbusDecoder {
    pub fn new(meter: &Meter) -> Self {
        let metrics = match &meter.decoding {
            Decoding::Vbus(m) => m.clone(),
            _ => Vec::new(),
        };
        VbusDecoder {
            meter: meter.index,
            framer: Framer::default(),
            metrics,
            events: VecDeque::new(),
            stats: DecodeStats::default(),
            last_byte_at: None,
        }
    }

    fn with_frames(&mut self, f: impl FnOnce(&mut Framer, &mut dyn FnMut(Frame<'_>))) {
        let VbusDecoder {
            meter,
            framer,
            metrics,
            events,
            stats,
            ..
        } = self;
        let mut sink = |frame: Frame<'_>| {
            let event = match frame {
                Frame::Telegram(t) => {
                    stats.telegrams += 1;
                    DecodeEvent::Telegram(Telegram {
                        readings: readings(*meter, metrics, t),
                    })
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
}

fn readings(meter: MeterIndex, metrics: &[Metric<VbusPattern>], telegram: &[u8]) -> Vec<Reading> {
    let mut out = Vec::new();
    for m in metrics {
        match read(&m.pattern, telegram) {
            Ok(raw) => out.push(Reading {
                entry: m.output.entry,
                value: match m.value {
                    ValueSpec::Text { .. } if m.pattern.time => Value::Text(time_text(raw)),
                    ValueSpec::Text { .. } => Value::Text(format!("{raw}")),
                    ValueSpec::Number { .. } => Value::Number(crate::decode::scale(raw, &m.value)),
                },
            }),
            Err(NoMatch::Header) => {}
            Err(NoMatch::Short { frame, frames }) => tracing::debug!(
                meter,
                line = m.output.line,
                "VBus line reads data frame {frame}, the telegram has {frames}"
            ),
        }
    }
    out
}

impl Decoder for VbusDecoder {
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

    fn poll_timeout(&self) -> Option<Instant> {
        self.last_byte_at
            .filter(|_| self.framer.pending() > 0)
            .map(|t| t + SILENCE)
    }

    fn handle_timeout(&mut self, now: Instant) {
        let quiet = self.last_byte_at.is_some_and(|t| now >= t + SILENCE);
        if quiet && self.framer.pending() > 0 {
            self.with_frames(|f, sink| {
                f.flush("the line went quiet in the middle of a telegram", sink)
            });
        }
    }

    fn handle_end(&mut self) {
        self.with_frames(|f, sink| f.flush("the input ended in the middle of a telegram", sink));
    }

    fn stats(&self) -> DecodeStats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
