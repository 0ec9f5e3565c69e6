/*!
The `o` decoder: OBIS text telegrams (DSMR P1, IEC 62056-21 readouts) in, readings out.

Two halves, each tested alone: [`frame`] finds and checks telegrams (`/` .. `!CRC`, STX .. ETX BCC,
request echoes, resync, bounds) and [`matcher`] applies the meter's metric lines to a checked
telegram's lines. This module joins them behind the [`Decoder`] trait, keeps the statistics and sends
the meter's request telegrams on their schedule, or, for a meter whose definition asks for IEC
62056-21 mode C, runs the handshake ([`iec`]) and lets the framer read the readout.

Memory is bounded whatever arrives: one telegram buffer of at most [`frame::MAX_TELEGRAM`] bytes, and
an event queue that keeps at most [`MAX_QUEUED_EVENTS`] errors for a caller that does not poll
(telegrams are kept: at most one per 4 bytes of a `handle_bytes` call).
*/

pub mod check;
pub mod frame;
pub mod iec;
pub mod matcher;
pub mod request;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::decode::request::RequestSchedule;
use crate::decode::{DecodeEvent, DecodeStats, Decoder, Telegram};
use crate::script::model::{Decoding, Meter};

pub use frame::MissingChecksum;
use frame::{Frame, Framer};
use matcher::Matcher;

/// A quiet line for this long completes what waits only for its line end (a `!` at the very end of a
/// burst, a readout without ETX, the lines of a meter that sends no header).
pub const SILENCE: Duration = Duration::from_millis(500);

pub use crate::decode::MAX_QUEUED_EVENTS;

pub struct ObisDecoder {
    framer: Framer,
    matcher: Matcher,
    events: VecDeque<DecodeEvent>,
    stats: DecodeStats,
    requests: RequestSchedule,
    /// The mode C handshake, which then sends instead of `requests`.
    mode_c: Option<iec::ModeC>,
    last_byte_at: Option<Instant>,
}

impl ObisDecoder {
    pub fn new(meter: &Meter) -> Self {
        let metrics = match &meter.decoding {
            Decoding::Obis(m) => m.as_slice(),
            _ => &[],
        };
        // `=so2,N` replaces all flags; bit value 2 is OBIS line mode (on when `=so2` is absent).
        let line_mode = meter.options.so2_flags.is_none_or(|f| f & 2 != 0);
        let mode_c = iec::ModeC::for_meter(meter);
        let requests = match mode_c {
            Some(_) => RequestSchedule::from_wire(Vec::new(), 0),
            None => RequestSchedule::new(meter),
        };
        let mut decoder = ObisDecoder::with_framer(
            Matcher::new(metrics, line_mode),
            Framer::default(),
            requests,
        );
        decoder.mode_c = mode_c;
        decoder
    }

    /// Whether this meter runs the IEC 62056-21 mode C handshake.
    pub fn is_mode_c(&self) -> bool {
        self.mode_c.is_some()
    }

    fn with_framer(matcher: Matcher, framer: Framer, requests: RequestSchedule) -> Self {
        ObisDecoder {
            framer,
            matcher,
            events: VecDeque::new(),
            stats: DecodeStats::default(),
            requests,
            mode_c: None,
            last_byte_at: None,
        }
    }

    /// Matched lines whose value was no number (counted, never published as 0).
    pub fn unparsed_values(&self) -> u64 {
        self.stats.unparsed_values
    }

    /// What happens to telegrams without a CRC; by default they are rejected once a CRC has verified
    /// ([`MissingChecksum::RejectOnceSeen`]).
    pub fn with_missing_checksum(mut self, rule: MissingChecksum) -> Self {
        self.framer.set_missing_checksum(rule);
        self
    }

    /// Run the framer with a sink that turns frames into events.
    fn with_sink(&mut self, f: impl FnOnce(&mut Framer, &mut dyn FnMut(Frame<'_>))) {
        let ObisDecoder {
            framer,
            matcher,
            events,
            stats,
            mode_c,
            last_byte_at,
            ..
        } = self;
        let now = last_byte_at.unwrap_or_else(Instant::now);
        let mut sink = |frame: Frame<'_>| {
            let event = match frame {
                Frame::Telegram(text) => {
                    if let Some(m) = mode_c.as_mut() {
                        m.handle_telegram_end(now);
                    }
                    let mut readings = Vec::with_capacity(matcher.len());
                    stats.unparsed_values += matcher.match_text(text, &mut readings);
                    stats.telegrams += 1;
                    DecodeEvent::Telegram(Telegram { readings })
                }
                Frame::Headerless(text) => {
                    let mut readings = Vec::with_capacity(matcher.len());
                    stats.unparsed_values += matcher.match_text(text, &mut readings);
                    if readings.is_empty() {
                        stats.bytes_skipped += text.len() as u64;
                        DecodeEvent::Discarded { bytes: text.len() }
                    } else {
                        stats.telegrams += 1;
                        DecodeEvent::Telegram(Telegram { readings })
                    }
                }
                Frame::Discarded(bytes) => {
                    stats.bytes_skipped += bytes as u64;
                    DecodeEvent::Discarded { bytes }
                }
                Frame::Rejected(e) => {
                    if let Some(m) = mode_c.as_mut() {
                        m.handle_telegram_end(now);
                    }
                    stats.count_rejection(&e);
                    tracing::debug!("obis telegram rejected: {e}");
                    DecodeEvent::Error(e)
                }
            };
            crate::decode::queue_event(events, event);
        };
        f(framer, &mut sink);
    }
}

impl Decoder for ObisDecoder {
    fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.stats.bytes_in += bytes.len() as u64;
        self.last_byte_at = Some(now);
        if let Some(m) = self.mode_c.as_mut() {
            m.handle_bytes(now, bytes);
        }
        self.with_sink(|framer, sink| framer.push(bytes, &mut |f| sink(f)));
    }

    fn poll_event(&mut self) -> Option<DecodeEvent> {
        self.events.pop_front()
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some(m) = self.mode_c.as_mut() {
            return m.poll_transmit(now);
        }
        self.requests.poll_transmit(now).map(|(_, block)| block)
    }

    fn poll_framing(&mut self) -> Option<iec::FramingChange> {
        self.mode_c.as_mut()?.poll_framing()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let silence = self
            .last_byte_at
            .filter(|_| self.framer.has_pending())
            .map(|t| t + SILENCE);
        [
            silence,
            self.requests.poll_timeout(),
            self.mode_c.as_ref().and_then(|m| m.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        let quiet = self.last_byte_at.is_some_and(|t| now >= t + SILENCE);
        if quiet && self.framer.has_pending() {
            self.with_sink(|framer, sink| framer.handle_silence(&mut |f| sink(f)));
        }
        if let Some(m) = self.mode_c.as_mut() {
            m.handle_timeout(now);
            while let Some(e) = m.poll_error() {
                self.stats.count_rejection(&e);
                tracing::debug!("obis meter: {e}");
                crate::decode::queue_event(&mut self.events, DecodeEvent::Error(e));
            }
        }
    }

    fn handle_end(&mut self) {
        self.with_sink(|framer, sink| framer.handle_end(&mut |f| sink(f)));
    }

    fn stats(&self) -> DecodeStats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
