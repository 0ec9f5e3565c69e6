/*!
The `e` decoder: an eBus (Vaillant, Wolf and other heating systems) listened to, readings out.

The bus carries telegrams between SYN (`AA`) bytes; [`frame`] cuts and checks them (escapes,
CRC-8 of the master part and of the slave's answer, ACK/NAK and repeats). Every metric line is then
laid over the checked telegram with the shared byte-pattern reader ([`crate::decode::bytes`]),
offset 0 being QQ, as Tasmota lays it over its buffer: `xxxx0503xxuu` skips QQ ZZ, wants PB SB
`05 03` and reads the byte after NN. The slave's answer follows the master part in that buffer
(`... CRC ACK NN data CRC ACK`), so a line can read it at its offset, as on Tasmota.

Differences from Tasmota, each on the side of not publishing a wrong value:
- A telegram whose CRC fails is rejected and counted; Tasmota publishes it (its check is an
  assignment) and drops the rare good telegram whose CRC is 0.
- The buffer lines are read against is unescaped throughout; Tasmota unescapes the master part
  only, with a length taken before unescaping, so its offsets shift after an `A9` in the data.
- Telegrams shorter than 10 bytes (a broadcast with up to 3 data bytes) decode; Tasmota skips them.

The eBus is only listened to: this decoder sends nothing (Tasmota's `e` type sends nothing either).
*/

pub mod frame;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::decode::{DecodeEvent, DecodeStats, Decoder, Reading, Telegram, Value};
use crate::script::model::{BytePattern, Decoding, Meter, MeterIndex, Metric, ValueSpec};

use frame::{Frame, Framer, Kind};

/// A quiet line for this long ends a partial telegram (an idle eBus sends a SYN every few tens of
/// milliseconds, so silence means the link is gone).
pub const SILENCE: Duration = Duration::from_millis(500);

/// What only an eBus listener can count, beyond [`DecodeStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EbusStats {
    pub broadcasts: u64,
    pub master_master: u64,
    pub master_slave: u64,
    /// Master-slave telegrams the slave did not answer (their master part is still read).
    pub unanswered: u64,
    /// NAKs followed by a repeat.
    pub naks: u64,
}

pub struct EbusDecoder {
    meter: MeterIndex,
    metrics: Vec<Metric<BytePattern>>,
    framer: Framer,
    events: VecDeque<DecodeEvent>,
    stats: DecodeStats,
    ebus: EbusStats,
    last_byte_at: Option<Instant>,
}

impl EbusDecoder {
    pub fn new(meter: &Meter) -> Self {
        let metrics = match &meter.decoding {
            Decoding::Ebus(m) => m.clone(),
            _ => Vec::new(),
        };
        EbusDecoder {
            meter: meter.index,
            metrics,
            framer: Framer::default(),
            events: VecDeque::new(),
            stats: DecodeStats::default(),
            ebus: EbusStats::default(),
            last_byte_at: None,
        }
    }

    pub fn ebus_stats(&self) -> EbusStats {
        self.ebus
    }

    fn with_frames(&mut self, f: impl FnOnce(&mut Framer, &mut dyn FnMut(Frame))) {
        let EbusDecoder {
            meter,
            metrics,
            framer,
            events,
            stats,
            ebus,
            ..
        } = self;
        let mut sink = |frame: Frame| {
            let event = match frame {
                Frame::Telegram(t) => {
                    stats.telegrams += 1;
                    match t.kind {
                        Kind::Broadcast => ebus.broadcasts += 1,
                        Kind::MasterMaster => ebus.master_master += 1,
                        Kind::MasterSlave => ebus.master_slave += 1,
                    }
                    if t.unanswered && t.kind == Kind::MasterSlave {
                        ebus.unanswered += 1;
                    }
                    ebus.naks += u64::from(t.naks);
                    DecodeEvent::Telegram(read(*meter, metrics, &t.symbols))
                }
                Frame::Rejected(e) => {
                    stats.count_rejection(&e);
                    tracing::debug!(meter = *meter, "eBus telegram rejected: {e}");
                    DecodeEvent::Error(e)
                }
                Frame::Discarded(n) => {
                    stats.bytes_skipped += n as u64;
                    DecodeEvent::Discarded { bytes: n }
                }
            };
            crate::decode::queue_event(events, event);
        };
        f(framer, &mut sink);
    }
}

/// The readings of every number line whose mask fits the telegram.
fn read(meter: MeterIndex, metrics: &[Metric<BytePattern>], symbols: &[u8]) -> Telegram {
    let mut readings = Vec::new();
    for m in metrics {
        // Text lines (`@#`) read an SML value on Tasmota: nothing for eBus.
        if matches!(m.value, ValueSpec::Text { .. }) {
            continue;
        }
        match crate::decode::bytes::read(&m.pattern, symbols) {
            Ok(raw) => readings.push(Reading {
                entry: m.output.entry,
                value: Value::Number(crate::decode::scale(raw, &m.value)),
            }),
            // Most lines are for other telegrams: not an error.
            Err(why) => tracing::trace!(meter, line = m.output.line, "eBus line not read: {why}"),
        }
    }
    Telegram { readings }
}

impl Decoder for EbusDecoder {
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

/// A listing of every telegram in a capture, one line per part, for `sml decode --explain`:
/// `QQ ZZ PB SB NN data CRC` of the master part, the ACK, `NN data CRC` of the slave's answer,
/// and why a piece was rejected, with its byte offset.
pub fn explain(capture: &[u8]) -> crate::decode::Explained {
    let mut framer = Framer::default();
    let mut out = crate::decode::Explained::default();
    let mut sink = |frame: Frame| {
        match frame {
            Frame::Telegram(t) => {
                out.good += 1;
                explain_telegram(&mut out.text, &t)
            }
            Frame::Rejected(e) => {
                out.bad += 1;
                let _ = writeln!(out.text, "rejected: {e}");
            }
            Frame::Discarded(n) => {
                let _ = writeln!(out.text, "skipped {n} bytes (no telegram)");
            }
        };
    };
    framer.push(capture, &mut sink);
    framer.flush("the input ended in the middle of a telegram", &mut sink);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn explain_telegram(out: &mut String, t: &frame::Telegram) {
    let s = &t.symbols;
    let kind = match t.kind {
        Kind::Broadcast => "broadcast",
        Kind::MasterMaster => "master-master",
        Kind::MasterSlave => "master-slave",
    };
    let nn = usize::from(t.master.nn);
    let _ = writeln!(
        out,
        "telegram at byte {} ({kind}): QQ {:02X} ZZ {:02X} PB {:02X} SB {:02X} NN {:02X} data [{}] CRC {:02X} ok",
        t.offset,
        s[0],
        s[1],
        s[2],
        s[3],
        s[4],
        hex(&s[5..5 + nn]),
        t.master.crc
    );
    let after_master = 6 + nn;
    if let Some(ack) = s.get(after_master) {
        let _ = writeln!(out, "  ACK {ack:02X}");
    }
    if let Some(p) = t.slave {
        let n = usize::from(p.nn);
        let _ = writeln!(
            out,
            "  answer: NN {:02X} data [{}] CRC {:02X} ok",
            p.nn,
            hex(&s[p.start + 1..p.start + 1 + n]),
            p.crc
        );
        if let Some(ack) = s.get(p.start + 2 + n) {
            let _ = writeln!(out, "  ACK {ack:02X}");
        }
    } else if t.unanswered {
        let missing = match t.kind {
            Kind::MasterSlave => "no answer",
            _ => "no ACK",
        };
        let _ = writeln!(out, "  {missing}");
    }
    if t.naks > 0 {
        let _ = writeln!(out, "  {} NAK(s), refused part(s) repeated", t.naks);
    }
}

#[cfg(test)]
mod tests;
