/*!
The decoder for DLMS/COSEM push meters: `r`/`R` meters with an `=so4` key (Landis+Gyr E450,
Siemens IM350/IM351, Iskra AM550, Kaifa and Sagemcom meters on Austrian and Swiss HAN ports).

What Tasmota does with such a meter, and so what this decoder does: frame the push (HDLC or wired
M-Bus, segments joined, [`frame`]), join general-block-transfer blocks, decrypt the
general-glo-ciphering APDU with the `=so4` key, skip the data-notification header (invoke id and
date-time) and lay the metric lines' byte masks over what is left, the notification body, from its
first byte ([`apdu`]). So the community scripts' offsets (`0209090Cx13UUuuUUuu`: structure of 9,
the date-time octet string, 13 bytes on) work unchanged. `pm(1.8.0)` is Tasmota's OBIS search:
the decimal groups become bytes (`01 08 00`, and `FF` after exactly three groups), the value is the
COSEM number right after them.

Checked before anything is read, unlike on the ESP: the FCS and HCS of HDLC frames and the M-Bus
checksum, the GCM tag when `=so5` gives the authentication key, and in every case that the
plaintext is a data-notification whose COSEM data parse to the end. A wrong key is one
[`DecodeError`] naming the meter, counted, and no value; the keys themselves never appear in a
message ([`apdu::Keys`] does not even `Debug`-print them).

Deviations from Tasmota, each to avoid publishing a wrong value: a `pm(...)` that finds nothing
reads nothing (Tasmota keeps the previous value); signed COSEM integers read signed (Tasmota reads
`long` and `double-long` as unsigned); types Tasmota reads as 0 (`unsigned`, `enum`, floats) read
their value, other types nothing.
*/

pub mod apdu;
pub mod cosem;
pub mod frame;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::decode::{DecodeError, DecodeEvent, DecodeStats, Decoder, Reading, Telegram, Value};
use crate::script::model::{ByteOp, BytePattern, Decoding, Meter, MeterIndex, Metric, ValueSpec};

use apdu::{ApduError, Keys, Notification, Unwrapper};
use frame::{Framed, Framer};

/// A quiet line for this long ends a partial frame (Tasmota's `SML_STIMEOUT`); `=so6` overrides.
pub const SILENCE: Duration = Duration::from_millis(1000);

pub use crate::decode::MAX_QUEUED_EVENTS;

/// What only an encrypted meter can get wrong, beyond [`DecodeStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DlmsStats {
    /// Notifications decoded (decrypted where encrypted).
    pub notifications: u64,
    /// GCM tag mismatches (wrong key or authentication key).
    pub auth_failures: u64,
    /// Decryptions without a tag check whose plaintext was no DLMS data (a wrong key).
    pub implausible: u64,
    /// Encrypted telegrams while the meter has no usable `=so4` key.
    pub no_key: u64,
}

/// Whether a meter is decoded here, not by the plain raw decoder: a raw meter with an `=so4` line, a
/// key or a placeholder where the key belongs (its telegrams are ciphertext either way; without a
/// usable key they are counted as such, never read as values).
pub fn wants(meter: &Meter) -> bool {
    matches!(meter.decoding, Decoding::Raw { .. })
        && (meter.options.aes_key.is_some()
            || meter
                .options
                .raw
                .iter()
                .any(|(_, text)| text.trim_start().starts_with("4,")))
}

pub struct DlmsDecoder {
    meter: MeterIndex,
    keys: Option<Keys>,
    metrics: Vec<Metric<BytePattern>>,
    framer: Framer,
    unwrapper: Unwrapper,
    silence: Duration,
    last_byte_at: Option<Instant>,
    events: VecDeque<DecodeEvent>,
    stats: DecodeStats,
    dlms: DlmsStats,
}

impl DlmsDecoder {
    pub fn new(meter: &Meter) -> Self {
        let metrics = match &meter.decoding {
            Decoding::Raw { metrics, .. } => metrics.clone(),
            _ => Vec::new(),
        };
        DlmsDecoder {
            meter: meter.index,
            keys: keys_of(meter),
            metrics,
            framer: Framer::default(),
            unwrapper: Unwrapper::default(),
            silence: meter
                .options
                .block_sync_ms
                .filter(|ms| *ms > 0)
                .map_or(SILENCE, |ms| Duration::from_millis(u64::from(ms))),
            last_byte_at: None,
            events: VecDeque::new(),
            stats: DecodeStats::default(),
            dlms: DlmsStats::default(),
        }
    }

    pub fn dlms_stats(&self) -> DlmsStats {
        self.dlms
    }

    fn run(&mut self, f: impl FnOnce(&mut Framer, &mut dyn FnMut(Framed))) {
        let DlmsDecoder {
            meter,
            keys,
            metrics,
            framer,
            unwrapper,
            events,
            stats,
            dlms,
            ..
        } = self;
        let mut sink = |framed: Framed| {
            let event = match framed {
                Framed::Discarded(n) => {
                    stats.bytes_skipped += n as u64;
                    DecodeEvent::Discarded { bytes: n }
                }
                Framed::Rejected(e) => {
                    stats.count_rejection(&e);
                    DecodeEvent::Error(e)
                }
                Framed::Payload { bytes, .. } => match unwrapper.open(&bytes, keys.as_ref()) {
                    Ok(None) => return,
                    Ok(Some(n)) => {
                        stats.telegrams += 1;
                        dlms.notifications += 1;
                        DecodeEvent::Telegram(read_metrics(metrics, &n, stats))
                    }
                    Err(e) => {
                        let e = rejection(*meter, e, dlms);
                        stats.count_rejection(&e);
                        tracing::debug!(meter = %meter, "DLMS telegram rejected: {e}");
                        DecodeEvent::Error(e)
                    }
                },
            };
            crate::decode::queue_event(events, event);
        };
        f(framer, &mut sink);
    }
}

/// An APDU error as the one [`DecodeError`] the runner logs: decryption failures name the meter.
fn rejection(meter: MeterIndex, e: ApduError, dlms: &mut DlmsStats) -> DecodeError {
    match e {
        ApduError::Truncated { bytes, why } => DecodeError::Truncated { bytes, why },
        ApduError::Malformed { offset, why } => DecodeError::Malformed { offset, why },
        ApduError::NoKey { .. } => {
            dlms.no_key += 1;
            DecodeError::Malformed {
                offset: 0,
                why: format!("meter {meter}: {e}"),
            }
        }
        ApduError::AuthFailed => {
            dlms.auth_failures += 1;
            DecodeError::Malformed {
                offset: 0,
                why: format!("meter {meter}: decryption failed: {e}"),
            }
        }
        ApduError::Implausible { offset, .. } => {
            dlms.implausible += 1;
            DecodeError::Malformed {
                offset,
                why: format!("meter {meter}: decryption failed: {e}"),
            }
        }
    }
}

/// The metric lines over one notification's body, as Tasmota reads them.
fn read_metrics(
    metrics: &[Metric<BytePattern>],
    n: &Notification,
    stats: &mut DecodeStats,
) -> Telegram {
    let body = n.body();
    let mut readings = Vec::new();
    for m in metrics {
        let value = match read_line(&m.pattern, body) {
            Some(Found::Number(v)) if matches!(m.value, ValueSpec::Number { .. }) => {
                Value::Number(crate::decode::scale(v, &m.value))
            }
            Some(Found::Text(t)) if matches!(m.value, ValueSpec::Text { .. }) => Value::Text(t),
            Some(_) => {
                stats.unparsed_values += 1;
                continue;
            }
            None => continue,
        };
        readings.push(Reading {
            entry: m.output.entry,
            value,
        });
    }
    Telegram { readings }
}

enum Found {
    Number(f64),
    Text(String),
}

/// One line over the body: a plain byte mask through the shared reader, or a `pm(...)` search
/// whose value is the COSEM data after the pattern.
fn read_line(pattern: &BytePattern, body: &[u8]) -> Option<Found> {
    let ops = tasmota_ops(&pattern.ops);
    let auto = matches!(ops.last(), Some(ByteOp::Find(_)));
    if !auto {
        let p = BytePattern {
            ops,
            bit: pattern.bit,
            block: None,
        };
        return crate::decode::bytes::read(&p, body).ok().map(Found::Number);
    }
    let mut at = 0usize;
    for op in &ops {
        match op {
            ByteOp::Literal(b) => {
                if body.get(at) != Some(b) {
                    return None;
                }
                at += 1;
            }
            ByteOp::Skip(n) => at += usize::from(*n),
            ByteOp::Find(needle) => {
                let from = at.min(body.len());
                at = from + memchr::memmem::find(&body[from..], needle)? + needle.len();
            }
            ByteOp::Extract(_) => return None,
        }
    }
    let (item, _) = cosem::parse(body, at).ok()?;
    match &item.data {
        cosem::Data::OctetString(b)
        | cosem::Data::VisibleString(b)
        | cosem::Data::Utf8String(b) => Some(Found::Text(printable(b))),
        d => {
            let v = d.number()?;
            Some(Found::Number(match pattern.bit {
                Some(bit) => f64::from(((v as i64 as u64) >> (bit & 63)) as u32 & 1),
                None => v,
            }))
        }
    }
}

/// A meter id as text: the bytes when they are printable ASCII, else hex.
fn printable(b: &[u8]) -> String {
    if !b.is_empty() && b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        String::from_utf8_lossy(b).into_owned()
    } else {
        crate::hex::encode(b)
    }
}

/// Tasmota's `pm(A.B.C)` OBIS text to the bytes it searches for: each decimal group one byte (an
/// empty group is 0), and `FF` appended after exactly three groups. Hex `pm(h..)`/`pm(r..)`
/// needles stay as they are.
pub fn tasmota_ops(ops: &[ByteOp]) -> Vec<ByteOp> {
    ops.iter()
        .map(|op| match op {
            ByteOp::Find(needle) => {
                ByteOp::Find(obis_needle(needle).unwrap_or_else(|| needle.clone()))
            }
            other => other.clone(),
        })
        .collect()
}

fn obis_needle(text: &[u8]) -> Option<Vec<u8>> {
    if !text.contains(&b'.') || !text.iter().all(|c| c.is_ascii_digit() || *c == b'.') {
        return None;
    }
    let s = std::str::from_utf8(text).ok()?;
    let groups: Vec<&str> = s.split('.').collect();
    let mut out = Vec::with_capacity(groups.len() + 1);
    for g in &groups {
        // Tasmota's strtol wraps into a byte; a group over 255 is no OBIS code.
        out.push(if g.is_empty() {
            0
        } else {
            g.parse::<u8>().ok()?
        });
    }
    if groups.len() == 3 {
        out.push(0xFF);
    }
    Some(out)
}

impl Decoder for DlmsDecoder {
    fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.handle_timeout(now);
        self.stats.bytes_in += bytes.len() as u64;
        self.last_byte_at = Some(now);
        self.run(|framer, sink| framer.push(bytes, sink));
    }

    fn poll_event(&mut self) -> Option<DecodeEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (self.framer.pending() > 0)
            .then_some(self.last_byte_at)
            .flatten()
            .map(|t| t + self.silence)
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(last) = self.last_byte_at {
            if now.saturating_duration_since(last) >= self.silence && self.framer.pending() > 0 {
                self.run(|framer, sink| framer.flush("the line went quiet mid-frame", sink));
            }
        }
    }

    fn handle_end(&mut self) {
        self.run(|framer, sink| framer.flush("the input ended mid-frame", sink));
    }

    fn stats(&self) -> DecodeStats {
        self.stats
    }
}

/// `sml decode --explain` for a meter: the DLMS listing with the meter's keys, or `None` when the
/// meter is not decoded here.
pub fn explain_meter(meter: &Meter, bytes: &[u8]) -> Option<crate::decode::Explained> {
    wants(meter).then(|| explain(bytes, keys_of(meter).as_ref()))
}

fn keys_of(meter: &Meter) -> Option<Keys> {
    meter.options.aes_key.map(|k| Keys {
        encryption: k,
        authentication: meter.options.auth_key.clone(),
    })
}

/// `sml decode --explain` for DLMS: every frame, its security header (never a key) and the COSEM
/// data of each notification with byte offsets, offset 0 being where a `r` meter's masks start.
pub fn explain(bytes: &[u8], keys: Option<&Keys>) -> crate::decode::Explained {
    let mut out = crate::decode::Explained::default();
    let mut framer = Framer::default();
    let mut unwrapper = Unwrapper::default();
    let mut count = 0usize;
    let mut sink = |f: Framed| match f {
        Framed::Discarded(n) => {
            let _ = writeln!(out.text, "discarded {n} bytes before a frame start");
        }
        Framed::Rejected(e) => {
            out.bad += 1;
            let _ = writeln!(out.text, "rejected frame: {e}");
        }
        Framed::Payload { framing, bytes } => {
            count += 1;
            let _ = writeln!(
                out.text,
                "message {count}: {framing:?}, {} payload bytes",
                bytes.len()
            );
            match unwrapper.open(&bytes, keys) {
                Ok(None) => {
                    let _ = writeln!(out.text, "  general-block-transfer block held");
                }
                Err(e) => {
                    out.bad += 1;
                    let _ = writeln!(out.text, "  rejected: {e}");
                }
                Ok(Some(n)) => {
                    out.good += 1;
                    explain_notification(&mut out.text, &n)
                }
            }
        }
    };
    if matches!(bytes.first(), Some(0x7E) | Some(0x68)) {
        framer.push(bytes, &mut sink);
        framer.flush("the input ended mid-frame", &mut sink);
    } else {
        // A bare APDU (as peers log them), maybe behind its LLC header.
        let apdu = bytes.strip_prefix(&[0xE6, 0xE7, 0x00][..]).unwrap_or(bytes);
        sink(Framed::Payload {
            framing: frame::Framing::None,
            bytes: apdu.to_vec(),
        });
    }
    out
}

fn explain_notification(out: &mut String, n: &Notification) {
    if let Some(s) = &n.security {
        let _ = writeln!(
            out,
            "  ciphered: system title {} ({}), security byte {:02X} ({}{}), frame counter {}{}",
            crate::hex::encode(&s.system_title),
            printable(&s.system_title[..s.system_title.len().min(3)]),
            s.security,
            if s.security & 0x20 != 0 {
                "encrypted"
            } else {
                "plain"
            },
            if s.security & 0x10 != 0 {
                ", authenticated"
            } else {
                ""
            },
            s.frame_counter,
            if s.tag_checked { ", tag checked" } else { "" },
        );
    }
    let dt = n
        .date_time
        .as_deref()
        .and_then(cosem::date_time_text)
        .unwrap_or_else(|| "none".into());
    let _ = writeln!(
        out,
        "  data-notification: invoke id {:08X}, date-time {dt}; body at APDU byte {} (offset 0 below)",
        n.invoke_id, n.body
    );
    if let Ok(items) = cosem::parse_all(n.body(), 0) {
        for i in &items {
            explain_item(out, i, 2);
        }
        for v in cosem::obis_values(&items) {
            let unit = v.unit.and_then(cosem::unit_name).unwrap_or("");
            match v.scaled() {
                Some(x) => {
                    let _ = writeln!(out, "  {} = {x} {unit}", cosem::obis_text(&v.obis));
                }
                None => {
                    let _ = writeln!(
                        out,
                        "  {} = {}",
                        cosem::obis_text(&v.obis),
                        describe(&v.value)
                    );
                }
            }
        }
    }
}

fn describe(d: &cosem::Data) -> String {
    use cosem::Data;
    match d {
        Data::Null => "null".into(),
        Data::Array(e) => format!("array of {}", e.len()),
        Data::Structure(e) => format!("structure of {}", e.len()),
        Data::Boolean(b) => format!("boolean {b}"),
        Data::BitString { bits, bytes } => {
            format!("bit-string {bits} bits {}", crate::hex::encode(bytes))
        }
        Data::Integer(v) => format!("integer {v}"),
        Data::Unsigned(v) => format!("unsigned {v}"),
        Data::Enum(v) => format!("enum {v}"),
        Data::Float(v) => format!("float {v}"),
        Data::OctetString(b) => match (b.as_slice().try_into().ok(), cosem::date_time_text(b)) {
            (Some(o), _) => format!("octet-string OBIS {}", cosem::obis_text(&o)),
            (_, Some(t)) => format!("octet-string date-time {t}"),
            _ => format!("octet-string \"{}\"", printable(b)),
        },
        Data::VisibleString(b) | Data::Utf8String(b) => format!("string \"{}\"", printable(b)),
        Data::Bcd(v) => format!("bcd {v:02X}"),
        Data::DateTime(b) => match cosem::date_time_text(b) {
            Some(t) => format!("date-time {t}"),
            None => format!("date/time {}", crate::hex::encode(b)),
        },
    }
}

fn explain_item(out: &mut String, item: &cosem::Item, indent: usize) {
    let _ = writeln!(
        out,
        "{:>5}  {:indent$}{}",
        item.offset,
        "",
        describe(&item.data)
    );
    if let cosem::Data::Array(e) | cosem::Data::Structure(e) = &item.data {
        for i in e {
            explain_item(out, i, indent + 2);
        }
    }
}

#[cfg(test)]
mod tests;
