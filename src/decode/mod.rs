/*!
Decoders: bytes from a meter in, values out. Sans-IO: no decoder reads a port, sleeps or knows MQTT.

The order of calls, for a link driver:
1. [`Decoder::handle_bytes`] with whatever the link delivered (any chunking: one byte or a megabyte);
2. [`Decoder::poll_event`] until `None`: complete telegrams, resyncs and errors in stream order;
3. [`Decoder::poll_transmit`] until `None`: request telegrams that are due (Modbus polls, `/?!`);
4. sleep until [`Decoder::poll_timeout`] or more bytes, then [`Decoder::handle_timeout`].

Framing (finding a telegram, checking its CRC) is kept apart from matching metric lines in each
protocol module, so each half is tested alone.

Nothing unchecked is published as fresh: a rejected telegram is one [`DecodeEvent::Error`], counted once
in [`DecodeStats`] under its [`RejectKind`], and gives no value. Decoders log rejections at debug level
only; the runner owns the warnings, rate-limited per meter and kind.
*/

pub mod bytes;
pub mod can;
pub mod counter;
pub mod dlms;
pub mod ebus;
pub mod kamstrup;
pub mod mbus;
pub mod modbus;
pub mod obis;
pub mod pzem;
pub mod raw;
pub mod request;
pub mod sml;
pub mod vbus;

use crate::script::model::MeterIndex;
use std::time::Instant;

use crate::script::model::{Decoding, EntryNo, Meter};

/// A value read from a telegram, already scaled (or a captured string).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Text(String),
}

/// One metric line's value from one telegram.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub entry: EntryNo,
    pub value: Value,
}

/// A complete, checked telegram and the values the meter's metric lines found in it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Telegram {
    pub readings: Vec<Reading>,
}

/// What a decoder reports, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeEvent {
    Telegram(Telegram),
    /// Bytes dropped while looking for the next telegram start (garbage, a lost sync).
    Discarded {
        bytes: usize,
    },
    /// A telegram that was found but rejected: nothing from it is published.
    Error(DecodeError),
}

/// Why a telegram was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("CRC mismatch: telegram says {expected:04X}, computed {computed:04X}")]
    BadCrc { expected: u16, computed: u16 },
    /// A telegram without a checksum from a meter that has sent checksummed ones: stripped, forged
    /// or cut, it cannot be told from a good one, so its values are not published.
    #[error("telegram of {bytes} bytes has no CRC, but this meter has been sending CRCs; dropped")]
    MissingCrc { bytes: usize },
    #[error("telegram truncated after {bytes} bytes: {why}")]
    Truncated { bytes: usize, why: &'static str },
    #[error("telegram longer than {limit} bytes without an end; dropped")]
    TooLong { limit: usize },
    #[error("malformed telegram at byte {offset}: {why}")]
    Malformed { offset: usize, why: String },
    /// A meter that must be asked did not answer (IEC 62056-21 mode C: no identification line).
    #[error("no answer: waited {waited_ms} ms for {what}")]
    NoAnswer { waited_ms: u64, what: &'static str },
}

impl DecodeError {
    /// What kind of rejection this is, for counting and for rate-limiting log lines.
    pub fn kind(&self) -> RejectKind {
        match self {
            DecodeError::BadCrc { .. } => RejectKind::BadCrc,
            DecodeError::MissingCrc { .. } => RejectKind::MissingCrc,
            DecodeError::Truncated { .. } => RejectKind::Truncated,
            DecodeError::TooLong { .. } => RejectKind::TooLong,
            DecodeError::Malformed { .. } => RejectKind::Malformed,
            DecodeError::NoAnswer { .. } => RejectKind::NoAnswer,
        }
    }
}

/// The kinds of [`DecodeError`], without their details: a small, stable key for a runner that logs
/// the first rejection of each kind per meter and interval and counts the rest (a broken link
/// rejects every telegram; one log line each would flood the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectKind {
    BadCrc,
    MissingCrc,
    Truncated,
    TooLong,
    Malformed,
    NoAnswer,
}

impl RejectKind {
    /// A short name for logs and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::BadCrc => "bad CRC",
            RejectKind::MissingCrc => "no CRC",
            RejectKind::Truncated => "truncated",
            RejectKind::TooLong => "too long",
            RejectKind::Malformed => "malformed",
            RejectKind::NoAnswer => "no answer",
        }
    }
}

/// Counters every decoder keeps; `sml decode --stats` prints them. Every rejected telegram is counted
/// in exactly one of `crc_errors`, `missing_crc` and `rejected` ([`DecodeStats::count_rejection`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeStats {
    pub telegrams: u64,
    pub crc_errors: u64,
    /// Telegrams without a CRC from a meter that has been sending CRCs.
    pub missing_crc: u64,
    /// Telegrams rejected for any other reason (truncated, too long, malformed).
    pub rejected: u64,
    pub bytes_skipped: u64,
    pub bytes_in: u64,
    /// Matched metric lines whose value could not be read (`(ON)` for a number line, an SML octet
    /// string for a number line): the telegram is published without them, never with a made-up 0.
    pub unparsed_values: u64,
    /// Frames accepted with a CRC variant other than the protocol's own (SML: X-25 byte-swapped or
    /// KERMIT, which some meters send).
    pub nonstandard_crc: u64,
    /// Requests the meter did not answer (IEC 62056-21 mode C sign-ons); not telegrams, so not in
    /// [`DecodeStats::rejections`].
    pub unanswered: u64,
}

impl DecodeStats {
    /// Count a rejected telegram under its kind.
    pub fn count_rejection(&mut self, error: &DecodeError) {
        match error.kind() {
            RejectKind::BadCrc => self.crc_errors += 1,
            RejectKind::MissingCrc => self.missing_crc += 1,
            RejectKind::Truncated | RejectKind::TooLong | RejectKind::Malformed => {
                self.rejected += 1
            }
            RejectKind::NoAnswer => self.unanswered += 1,
        }
    }

    /// Telegrams rejected for any reason.
    pub fn rejections(&self) -> u64 {
        self.crc_errors + self.missing_crc + self.rejected
    }
}

/// Queued events past which the oldest error is dropped (a caller that does not poll).
pub const MAX_QUEUED_EVENTS: usize = 1024;

/// Queue a decoder's event: consecutive discards merge into one; past [`MAX_QUEUED_EVENTS`] the
/// oldest error makes room (errors are also counted in the stats). Telegrams are never dropped: there
/// are at most as many as the bytes of one `handle_bytes` call allow.
pub(crate) fn queue_event(
    events: &mut std::collections::VecDeque<DecodeEvent>,
    event: DecodeEvent,
) {
    if let (DecodeEvent::Discarded { bytes }, Some(DecodeEvent::Discarded { bytes: last })) =
        (&event, events.back_mut())
    {
        *last += bytes;
        return;
    }
    if events.len() >= MAX_QUEUED_EVENTS {
        if let Some(p) = events
            .iter()
            .position(|e| matches!(e, DecodeEvent::Error(_)))
        {
            events.remove(p);
        }
    }
    events.push_back(event);
}

/// A streaming decoder for one meter.
pub trait Decoder: Send {
    /// Take bytes as the link delivered them.
    fn handle_bytes(&mut self, now: Instant, bytes: &[u8]);
    /// The next event, or `None` when the bytes so far hold no more.
    fn poll_event(&mut self) -> Option<DecodeEvent>;
    /// Bytes to send to the meter now, if any are due.
    fn poll_transmit(&mut self, _now: Instant) -> Option<Vec<u8>> {
        None
    }
    /// A change of the line's speed the protocol needs (IEC 62056-21 mode C: the baud its ACK
    /// asked for, then back to 300 baud), to apply after what [`Decoder::poll_transmit`] gave has
    /// left the port; call it after draining `poll_transmit`. Speed only: parity is the meter's.
    fn poll_framing(&mut self) -> Option<obis::iec::FramingChange> {
        None
    }
    /// `sml(m 3 svar)`: a one-off request from the script (a Modbus write, a single read). A
    /// decoder that schedules its own requests keeps it, sends it through
    /// [`Decoder::poll_transmit`] between its polls and matches the reply to it, not to a poll
    /// block (returns `None`); any other hands the bytes back to be sent now, as written (the
    /// default).
    fn queue_request(&mut self, request: &crate::script::model::RequestBlock) -> Option<Vec<u8>> {
        Some(request.bytes.clone())
    }
    /// When the decoder next wants [`Decoder::handle_timeout`] or [`Decoder::poll_transmit`].
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    /// Time has passed (a silence ended a frame, a request is due).
    fn handle_timeout(&mut self, _now: Instant) {}
    /// The input ended (end of a capture): report a truncated tail as an error event.
    fn handle_end(&mut self) {}
    fn stats(&self) -> DecodeStats;
}

/// Why no decoder could be built for a meter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsupportedMeter {
    #[error("meter {index}: type '{letter}' is parsed but not decoded yet")]
    NotYet { index: MeterIndex, letter: char },
}

/// The decoder for a compiled meter. Every type Tasmota knows has one; the `Result` stays for a type
/// a later Tasmota adds before sml decodes it.
pub fn decoder_for(meter: &Meter) -> Result<Box<dyn Decoder>, UnsupportedMeter> {
    match &meter.decoding {
        Decoding::Obis(_) => Ok(Box::new(obis::ObisDecoder::new(meter))),
        Decoding::Sml(_) => Ok(Box::new(sml::SmlDecoder::new(meter))),
        Decoding::Modbus(_) => Ok(Box::new(modbus::ModbusDecoder::new(meter))),
        Decoding::Kamstrup(_) => Ok(Box::new(kamstrup::KamstrupDecoder::new(meter))),
        Decoding::Vbus(_) => Ok(Box::new(vbus::VbusDecoder::new(meter))),
        Decoding::Ebus(_) => Ok(Box::new(ebus::EbusDecoder::new(meter))),
        Decoding::Pzem(_) => Ok(Box::new(pzem::PzemDecoder::new(meter))),
        // An `=so4` line (a key, or a placeholder where the key belongs) makes a raw meter a DLMS
        // push meter (Tasmota's decrypting HAN parser); without a usable key it says so and
        // publishes nothing rather than reading ciphertext as values.
        Decoding::Raw { .. } if dlms::wants(meter) => Ok(Box::new(dlms::DlmsDecoder::new(meter))),
        Decoding::Raw { .. } => Ok(Box::new(raw::RawDecoder::new(meter))),
        Decoding::Can(_) => Ok(Box::new(can::CanDecoder::new(meter))),
        Decoding::Counter { .. } => Ok(Box::new(counter::CounterDecoder::new(
            meter,
            counter::store::global(),
        ))),
    }
}

/// What an `sml decode --explain` listing found: the text for a person, and how many frames or
/// telegrams in it checked out and how many were rejected (none good: the command exits 1).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Explained {
    pub text: String,
    pub good: usize,
    pub bad: usize,
}

/// Apply a number line's offset and divisor, as Tasmota does: (raw + offset) / divisor.
pub fn scale(raw: f64, spec: &crate::script::model::ValueSpec) -> f64 {
    match spec {
        crate::script::model::ValueSpec::Number { divisor, offset } => {
            let v = raw + offset;
            if *divisor == 0.0 {
                v
            } else {
                v / divisor
            }
        }
        crate::script::model::ValueSpec::Text { .. } => raw,
    }
}
