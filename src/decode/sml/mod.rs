/*!
The `s` decoder: SML 1.0x binary from German eHZ/EDL21 meters, driven by a meter's metric lines.

Three layers, each tested alone: [`frame`] finds transport frames and checks their CRC ([`crc`]),
[`message`] walks the SML elements of a frame once and yields its list entries, and this module
matches entries against the metric lines and shapes the values.

Where we differ from Tasmota (on purpose, see README "SML"):
- The CRC is always checked (Tasmota only with `=soC`). Without `=soC` we accept CRC-16/X-25 as SML
  specifies, and also X-25 sent high byte first and CRC-16/KERMIT (either byte order), which some
  meters (Holley) send; such frames are counted ([`SmlDecoder::crc_variant_frames`]) and logged once.
  With `=soC,<size>,<mode>` only that mode is accepted (15: Tasmota's auto-detect).
- The SML scaler is applied whatever its value (Tasmota applies only -4..+3 and ignores others, which
  publishes e.g. a `+4` scaled value 10,000 times too small).
- Integers of 5 to 7 bytes keep their sign (Tasmota publishes those negatives as large positives).
- A pattern `77 07 <6 bytes>` matches the list entry whose objName is those 6 bytes; the short form
  `<6 bytes>` (no `7707`) matches the same entries in every case (recent Tasmota only with flag 32).
  Any other pattern is compared with the frame's bytes as Tasmota does, and the fields after it are
  read as status, time, unit, scaler, value.
- A number line on an octet string publishes nothing (Tasmota publishes 0); booleans give 0 or 1
  (Tasmota: 999999). A `@#` line publishes the octet string as lower-case hex (`@#x`: as text), whole
  (Tasmota cuts it at 22 characters).
- `bx:` publishes bit x of the raw integer, before any scaler.
- `=so1` (sign from status): bit `bit1` is tested for status type `fc1` and `bit2` for `fc2`
  (Tasmota tests `bit1` for both). The sign is kept from frame to frame as in Tasmota.
*/

pub mod crc;
pub mod frame;
pub mod message;

use std::collections::VecDeque;
use std::time::Instant;

use crate::decode::{
    scale, DecodeError, DecodeEvent, DecodeStats, Decoder, Reading, Telegram, Value,
};
use crate::script::model::{Decoding, EntryNo, Meter, SignFromStatus, ValueSpec};

use self::crc::CrcVariant;
use self::frame::{CrcPolicy, FrameDecoder, FrameEvent};
use self::message::{Entry, SmlValue};

/// How a metric line's pattern is compared.
#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    /// `77 07 <obis>` or `<obis>`: the list entry with this 6-byte objName, compared as one number:
    /// `objName & mask == value` (wildcard bytes have a zero mask).
    ObjName { mask: u64, value: u64 },
    /// Anything else: these bytes anywhere in the frame data.
    Bytes(Vec<Option<u8>>),
}

impl Matcher {
    fn for_pattern(bytes: &[Option<u8>]) -> Matcher {
        let is = |b: Option<u8>, want: u8| b.is_none_or(|b| b == want);
        let obis = match bytes.len() {
            8 if is(bytes[0], 0x77) && is(bytes[1], 0x07) => &bytes[2..],
            6 => bytes,
            _ => return Matcher::Bytes(bytes.to_vec()),
        };
        let (mut mask, mut value) = (0u64, 0u64);
        for b in obis {
            mask = (mask << 8) | if b.is_some() { 0xff } else { 0 };
            value = (value << 8) | u64::from(b.unwrap_or(0));
        }
        Matcher::ObjName { mask, value }
    }
}

/// A 6-byte objName as the number [`Matcher::ObjName`] compares; other lengths never match.
fn obj_name_key(obj_name: &[u8]) -> Option<u64> {
    (obj_name.len() == 6).then(|| {
        obj_name
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    })
}

fn pattern_matches(pattern: &[Option<u8>], bytes: &[u8]) -> bool {
    pattern.len() == bytes.len()
        && pattern
            .iter()
            .zip(bytes)
            .all(|(p, b)| p.is_none_or(|p| p == *b))
}

/// A metric line, ready to compare.
#[derive(Debug, Clone)]
struct Line {
    matcher: Matcher,
    bit: Option<u8>,
    value: ValueSpec,
    entry: EntryNo,
}

/// Streaming decoder for one `s` meter. See the module documentation.
pub struct SmlDecoder {
    frames: FrameDecoder,
    matching: Matching,
}

impl SmlDecoder {
    pub fn new(meter: &Meter) -> Self {
        let metrics = match &meter.decoding {
            Decoding::Sml(m) => m.as_slice(),
            _ => &[],
        };
        let (mut entry_lines, mut byte_lines) = (Vec::new(), Vec::new());
        for m in metrics {
            let line = Line {
                matcher: Matcher::for_pattern(&m.pattern.bytes),
                bit: m.pattern.bit,
                value: m.value.clone(),
                entry: m.output.entry,
            };
            match line.matcher {
                Matcher::ObjName { .. } => entry_lines.push(line),
                Matcher::Bytes(_) => byte_lines.push(line),
            }
        }
        let crc_mode = meter.options.sml_crc.map(|m| m.0);
        SmlDecoder {
            frames: FrameDecoder::new(CrcPolicy::for_mode(crc_mode)),
            matching: Matching {
                entry_lines,
                byte_lines,
                sign_rule: meter.options.sign_from_status.clone(),
                negative: false,
                events: VecDeque::new(),
                stats: DecodeStats::default(),
            },
        }
    }

    /// Frames accepted with a CRC other than SML's X-25 low byte first (see the module docs).
    pub fn crc_variant_frames(&self) -> u64 {
        self.matching.stats.nonstandard_crc
    }
}

/// The decoder's state apart from the frame decoder, so frame events can borrow it while the frame
/// decoder lends them the frame's data.
struct Matching {
    entry_lines: Vec<Line>,
    byte_lines: Vec<Line>,
    sign_rule: Option<SignFromStatus>,
    negative: bool,
    events: VecDeque<DecodeEvent>,
    stats: DecodeStats,
}

impl Matching {
    fn handle_frame_event(&mut self, event: FrameEvent, payload: &[u8]) {
        match event {
            FrameEvent::Frame { crc } => {
                if crc != CrcVariant::SML {
                    if self.stats.nonstandard_crc == 0 {
                        tracing::warn!(
                            ?crc,
                            "SML frame verified only with a non-standard CRC; accepted"
                        );
                    }
                    self.stats.nonstandard_crc += 1;
                }
                let mut negative = self.negative;
                let found = readings(
                    payload,
                    &self.entry_lines,
                    &self.byte_lines,
                    self.sign_rule.as_ref(),
                    &mut negative,
                    &mut self.stats.unparsed_values,
                );
                match found {
                    Ok(readings) => {
                        self.negative = negative;
                        self.stats.telegrams += 1;
                        self.events
                            .push_back(DecodeEvent::Telegram(Telegram { readings }));
                    }
                    Err(e) => self.reject(e),
                }
            }
            FrameEvent::Discarded(n) => {
                self.stats.bytes_skipped += n as u64;
                self.events.push_back(DecodeEvent::Discarded { bytes: n });
            }
            FrameEvent::Rejected(e) => self.reject(e),
        }
    }

    fn reject(&mut self, error: DecodeError) {
        self.stats.count_rejection(&error);
        tracing::debug!(%error, "SML frame rejected");
        self.events.push_back(DecodeEvent::Error(error));
    }
}

impl Decoder for SmlDecoder {
    fn handle_bytes(&mut self, _now: Instant, bytes: &[u8]) {
        self.matching.stats.bytes_in += bytes.len() as u64;
        let matching = &mut self.matching;
        self.frames.push(bytes, &mut |event, payload| {
            matching.handle_frame_event(event, payload)
        });
    }

    fn poll_event(&mut self) -> Option<DecodeEvent> {
        self.matching.events.pop_front()
    }

    fn handle_end(&mut self) {
        if let Some(event) = self.frames.finish() {
            self.matching.handle_frame_event(event, &[]);
        }
    }

    fn stats(&self) -> DecodeStats {
        self.matching.stats
    }
}

/// The readings of one frame, in stream order; an error if the frame's elements are malformed.
/// `unparsed` counts matched lines whose entry held nothing they can publish.
fn readings(
    data: &[u8],
    entry_lines: &[Line],
    byte_lines: &[Line],
    sign_rule: Option<&SignFromStatus>,
    negative: &mut bool,
    unparsed: &mut u64,
) -> Result<Vec<Reading>, DecodeError> {
    let mut out = Vec::with_capacity(entry_lines.len() + byte_lines.len());
    message::for_each_entry(data, |entry| {
        let obis_bcde = entry.obj_name.get(1..5);
        if let Some(rule) = sign_rule {
            if obis_bcde == Some(&rule.status_obis[..]) {
                *negative = status_says_negative(rule, entry);
            }
        }
        let Some(key) = obj_name_key(entry.obj_name) else {
            return;
        };
        for line in entry_lines {
            let Matcher::ObjName { mask, value } = line.matcher else {
                continue;
            };
            if key & mask != value {
                continue;
            }
            let negate =
                *negative && sign_rule.is_some_and(|r| obis_bcde == Some(&r.value_obis[..]));
            match value_of(line, entry, negate) {
                Some(value) => out.push(Reading {
                    entry: line.entry,
                    value,
                }),
                None => *unparsed += 1,
            }
        }
    })?;
    for line in byte_lines {
        let Matcher::Bytes(pattern) = &line.matcher else {
            continue;
        };
        if pattern.is_empty() || pattern.len() > data.len() {
            continue;
        }
        let Some(at) = data
            .windows(pattern.len())
            .position(|w| pattern_matches(pattern, w))
        else {
            continue;
        };
        // A raw match whose following bytes do not parse publishes nothing; the frame itself is fine.
        let value = message::fields_after(data, at + pattern.len())
            .ok()
            .and_then(|entry| value_of(line, &entry, false));
        match value {
            Some(value) => out.push(Reading {
                entry: line.entry,
                value,
            }),
            None => *unparsed += 1,
        }
    }
    Ok(out)
}

fn status_says_negative(rule: &SignFromStatus, entry: &Entry) -> bool {
    let status = match entry.status.value {
        SmlValue::UInt(v) => v,
        SmlValue::Int(v) => v as u64,
        _ => return false,
    };
    let bit_set = |bit: u8| bit < 64 && status >> bit & 1 == 1;
    (entry.status.tl == rule.fc1 && bit_set(rule.bit1))
        || (entry.status.tl == rule.fc2 && bit_set(rule.bit2))
}

/// The value a line publishes for an entry, or `None` when the entry holds nothing it can publish.
fn value_of(line: &Line, entry: &Entry, negate: bool) -> Option<Value> {
    match line.value {
        ValueSpec::Text { hex_as_ascii } => match entry.value {
            SmlValue::Bytes(b) if hex_as_ascii => Some(Value::Text(ascii_text(b))),
            SmlValue::Bytes(b) => Some(Value::Text(crate::hex::encode(b))),
            SmlValue::Int(v) => Some(Value::Text(v.to_string())),
            SmlValue::UInt(v) => Some(Value::Text(v.to_string())),
            SmlValue::Bool(v) => Some(Value::Text(u8::from(v).to_string())),
            SmlValue::Absent | SmlValue::Other => None,
        },
        ValueSpec::Number { .. } => {
            let number = match (entry.value, line.bit) {
                (SmlValue::Int(v), Some(bit)) => f64::from((v >> bit.min(63)) as u8 & 1),
                (SmlValue::UInt(v), Some(bit)) => f64::from((v >> bit.min(63)) as u8 & 1),
                (SmlValue::Bool(v), Some(bit)) => f64::from(u8::from(v && bit == 0)),
                (SmlValue::Int(v), None) => apply_scaler(v as f64, entry.scaler),
                (SmlValue::UInt(v), None) => apply_scaler(v as f64, entry.scaler),
                (SmlValue::Bool(v), None) => f64::from(u8::from(v)),
                (SmlValue::Bytes(_) | SmlValue::Absent | SmlValue::Other, _) => return None,
            };
            let number = if negate { -number } else { number };
            Some(Value::Number(scale(number, &line.value)))
        }
    }
}

/// `raw * 10^scaler`; negative scalers divide, so `1234 * 10^-1` is the double nearest 123.4.
fn apply_scaler(raw: f64, scaler: i8) -> f64 {
    if scaler < 0 {
        raw / 10f64.powi(-i32::from(scaler))
    } else {
        raw * 10f64.powi(i32::from(scaler))
    }
}

/// `@#x`: the octet string as text, up to a NUL as in Tasmota's C string; other bytes that are not
/// printable ASCII become `?`.
fn ascii_text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::frame::encode;
    use super::*;
    use crate::script::model::{
        MeterOptions, MeterSource, Metric, Output, Parity, Precision, Requests, SerialSettings,
        SmlCrcMode, SmlPattern,
    };

    fn number(divisor: f64) -> ValueSpec {
        ValueSpec::Number {
            divisor,
            offset: 0.0,
        }
    }

    /// A meter with one metric line per `(pattern hex, bit, value spec)`; entries numbered from 1.
    fn meter(lines: &[(&str, Option<u8>, ValueSpec)], options: MeterOptions) -> Meter {
        let metrics = lines
            .iter()
            .enumerate()
            .map(|(i, (hex, bit, value))| Metric {
                pattern: SmlPattern {
                    bytes: (0..hex.len())
                        .step_by(2)
                        .map(|j| u8::from_str_radix(&hex[j..j + 2], 16).ok())
                        .collect(),
                    bit: *bit,
                },
                value: value.clone(),
                output: Output {
                    entry: i as EntryNo + 1,
                    line: i as u32 + 6,
                    label: String::new(),
                    unit: String::new(),
                    name: format!("v{}", i + 1),
                    precision: Precision::from_field(3),
                },
            })
            .collect();
        Meter {
            index: 1,
            line: 5,
            source: MeterSource::Pin(3),
            serial: SerialSettings {
                baud: 9600,
                data_bits: 8,
                parity: Parity::None,
                stop_bits: 1,
            },
            flags: 0,
            param: 9600,
            prefix: Some("SML".into()),
            tx: None,
            requests: Requests::default(),
            options,
            decoding: Decoding::Sml(metrics),
            derived: Vec::new(),
            html: Vec::new(),
        }
    }

    /// A list entry: objName, status, no time, unit, scaler, value (already TL-encoded), no signature.
    fn entry(obis: [u8; 6], status: &[u8], unit: u8, scaler: i8, value: &[u8]) -> Vec<u8> {
        let mut v = vec![0x77, 0x07];
        v.extend_from_slice(&obis);
        v.extend_from_slice(status);
        v.extend_from_slice(&[0x01, 0x62, unit, 0x52, scaler as u8]);
        v.extend_from_slice(value);
        v.push(0x01);
        v
    }

    /// A GetListResponse message (list of 6 around a list of 7 around the value list).
    fn frame_with(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut data = vec![
            0x76, 0x02, 0x01, 0x62, 0x00, 0x62, 0x00, 0x72, 0x63, 0x07, 0x01, 0x77, 0x01,
        ];
        data.extend_from_slice(&[
            0x0b, 0x0a, 0x01, 0x45, 0x4d, 0x48, 0x00, 0x00, 0x7f, 0x00, 0x01,
        ]); // server id
        data.extend_from_slice(&[0x01, 0x01, 0x70 | entries.len() as u8]);
        for e in entries {
            data.extend_from_slice(e);
        }
        data.extend_from_slice(&[0x01, 0x01, 0x63, 0x12, 0x34, 0x00]);
        encode(&data)
    }

    fn decode(meter: &Meter, bytes: &[u8]) -> (Vec<DecodeEvent>, DecodeStats) {
        let mut d = SmlDecoder::new(meter);
        d.handle_bytes(Instant::now(), bytes);
        d.handle_end();
        let events = std::iter::from_fn(|| d.poll_event()).collect();
        (events, d.stats())
    }

    fn values(events: &[DecodeEvent]) -> Vec<Vec<(EntryNo, Value)>> {
        events
            .iter()
            .filter_map(|e| match e {
                DecodeEvent::Telegram(t) => Some(
                    t.readings
                        .iter()
                        .map(|r| (r.entry, r.value.clone()))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    const IMPORT: [u8; 6] = [1, 0, 1, 8, 0, 0xff];
    const POWER: [u8; 6] = [1, 0, 16, 7, 0, 0xff];

    #[test]
    fn values_are_scaled_by_the_sml_scaler_then_the_line_divisor() {
        let m = meter(
            &[
                ("77070100010800ff", None, number(1000.0)),
                ("0100100700ff", None, number(1.0)),
            ],
            MeterOptions::default(),
        );
        let bytes = frame_with(&[
            entry(
                IMPORT,
                &[0x65, 0, 0, 1, 0x82],
                30,
                -1,
                &[0x56, 0x00, 0x08, 0xd0, 0x2d, 0x95],
            ),
            entry(POWER, &[0x01], 27, 2, &[0x55, 0xff, 0xff, 0xff, 0xfe]),
        ]);
        let (events, stats) = decode(&m, &bytes);
        assert_eq!(
            values(&events),
            vec![vec![
                (1, Value::Number(14786.0885)),
                (2, Value::Number(-200.0))
            ]]
        );
        assert_eq!(
            (stats.telegrams, stats.crc_errors, stats.rejected),
            (1, 0, 0)
        );
    }

    #[test]
    fn scalers_outside_tasmotas_range_are_applied() {
        let m = meter(
            &[("77070100010800ff", None, number(1.0))],
            MeterOptions::default(),
        );
        let bytes = frame_with(&[
            entry(IMPORT, &[0x01], 30, 5, &[0x62, 3]),
            entry(IMPORT, &[0x01], 30, -6, &[0x62, 3]),
        ]);
        assert_eq!(
            values(&decode(&m, &bytes).0),
            vec![vec![
                (1, Value::Number(300_000.0)),
                (1, Value::Number(0.000003))
            ]]
        );
    }

    #[test]
    fn wildcards_match_any_byte() {
        let m = meter(
            &[("7707010001xx00ff", None, number(1.0))],
            MeterOptions::default(),
        );
        let mut other = IMPORT;
        other[3] = 9;
        let bytes = frame_with(&[
            entry(IMPORT, &[0x01], 30, 0, &[0x62, 1]),
            entry(other, &[0x01], 30, 0, &[0x62, 2]),
        ]);
        assert_eq!(
            values(&decode(&m, &bytes).0),
            vec![vec![(1, Value::Number(1.0)), (1, Value::Number(2.0))]]
        );
    }

    #[test]
    fn text_lines_publish_hex_or_ascii() {
        let m = meter(
            &[
                (
                    "77070100000009ff",
                    None,
                    ValueSpec::Text {
                        hex_as_ascii: false,
                    },
                ),
                (
                    "77078181c78203ff",
                    None,
                    ValueSpec::Text { hex_as_ascii: true },
                ),
            ],
            MeterOptions::default(),
        );
        let bytes = frame_with(&[
            entry(
                [1, 0, 0, 0, 9, 0xff],
                &[0x01],
                0xff,
                0,
                &[
                    0x0b, 0x06, 0x45, 0x4d, 0x48, 0x01, 0xab, 0x00, 0x00, 0x7f, 0x00,
                ],
            ),
            entry(
                [0x81, 0x81, 0xc7, 0x82, 0x03, 0xff],
                &[0x01],
                0xff,
                0,
                &[0x04, b'E', b'M', b'H'],
            ),
        ]);
        assert_eq!(
            values(&decode(&m, &bytes).0),
            vec![vec![
                (1, Value::Text("06454d4801ab00007f00".into())),
                (2, Value::Text("EMH".into()))
            ]]
        );
    }

    #[test]
    fn a_number_line_on_an_octet_string_publishes_nothing() {
        let m = meter(
            &[("77070100000009ff", None, number(1.0))],
            MeterOptions::default(),
        );
        let bytes = frame_with(&[entry(
            [1, 0, 0, 0, 9, 0xff],
            &[0x01],
            0xff,
            0,
            &[0x03, 0x45, 0x4d],
        )]);
        assert_eq!(values(&decode(&m, &bytes).0), vec![vec![]]);
    }

    #[test]
    fn bit_lines_take_one_bit_of_the_raw_value() {
        let m = meter(
            &[
                ("77070100010800ff", Some(5), number(1.0)),
                ("77070100010800ff", Some(1), number(1.0)),
            ],
            MeterOptions::default(),
        );
        let bytes = frame_with(&[entry(IMPORT, &[0x01], 30, -1, &[0x62, 0x22])]);
        assert_eq!(
            values(&decode(&m, &bytes).0),
            vec![vec![(1, Value::Number(1.0)), (2, Value::Number(1.0))]]
        );
        let bytes = frame_with(&[entry(IMPORT, &[0x01], 30, -1, &[0x62, 0x01])]);
        assert_eq!(
            values(&decode(&m, &bytes).0),
            vec![vec![(1, Value::Number(0.0)), (2, Value::Number(0.0))]]
        );
    }

    #[test]
    fn raw_patterns_are_found_in_the_bytes_and_read_like_tasmota() {
        // `0100010800ff65` is not an OBIS form: compared with the bytes, then status.. follow it.
        let m = meter(&[("08000165", None, number(1.0))], MeterOptions::default());
        let bytes = frame_with(&[entry(
            [1, 0, 1, 8, 0, 1],
            &[0x65, 0, 0, 1, 0x82],
            30,
            0,
            &[0x62, 42],
        )]);
        // After the pattern the status bytes `00000182` are read as the next elements: Tasmota's result
        // on such a line is as meaningless as ours; what matters is that nothing panics or overreads.
        let (events, stats) = decode(&m, &bytes);
        assert_eq!(stats.telegrams, 1);
        assert_eq!(values(&events).len(), 1);
    }

    #[test]
    fn sign_from_status_negates_the_named_value() {
        let rule = SignFromStatus {
            status_obis: [0, 1, 8, 0],
            fc1: 0x65,
            bit1: 5,
            fc2: 0x63,
            bit2: 5,
            value_obis: [0, 16, 7, 0],
        };
        let options = MeterOptions {
            sign_from_status: Some(rule),
            ..MeterOptions::default()
        };
        let m = meter(&[("77070100100700ff", None, number(1.0))], options);
        let export = frame_with(&[
            entry(IMPORT, &[0x65, 0, 0, 1, 0xa2], 30, -1, &[0x62, 1]),
            entry(POWER, &[0x01], 27, 0, &[0x62, 120]),
        ]);
        let import = frame_with(&[
            entry(IMPORT, &[0x65, 0, 0, 1, 0x82], 30, -1, &[0x62, 1]),
            entry(POWER, &[0x01], 27, 0, &[0x62, 120]),
        ]);
        let power_only = frame_with(&[entry(POWER, &[0x01], 27, 0, &[0x62, 80])]);
        let mut bytes = export.clone();
        bytes.extend(&power_only); // the sign is kept from the last status
        bytes.extend(&import);
        assert_eq!(
            values(&decode(&m, &bytes).0),
            vec![
                vec![(1, Value::Number(-120.0))],
                vec![(1, Value::Number(-80.0))],
                vec![(1, Value::Number(120.0))]
            ]
        );
    }

    #[test]
    fn a_bad_crc_publishes_nothing_and_is_counted() {
        let m = meter(
            &[("77070100010800ff", None, number(1.0))],
            MeterOptions::default(),
        );
        let mut bytes = frame_with(&[entry(IMPORT, &[0x01], 30, 0, &[0x62, 7])]);
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        let (events, stats) = decode(&m, &bytes);
        assert!(
            matches!(
                events.as_slice(),
                [DecodeEvent::Error(DecodeError::BadCrc { .. })]
            ),
            "{events:?}"
        );
        assert_eq!((stats.telegrams, stats.crc_errors), (0, 1));
    }

    #[test]
    fn kermit_frames_are_accepted_and_counted_unless_soc_names_x25() {
        let m = meter(
            &[("77070100010800ff", None, number(1.0))],
            MeterOptions::default(),
        );
        let good = frame_with(&[entry(IMPORT, &[0x01], 30, 0, &[0x62, 7])]);
        let data = {
            let mut d = Vec::new();
            let mut f = FrameDecoder::new(CrcPolicy::Tolerant);
            f.push(&good, &mut |_, p| d = p.to_vec());
            d
        };
        let kermit = frame::encode_with(
            &data,
            crc::CrcVariant {
                algorithm: crc::Crc16::Kermit,
                low_byte_first: true,
            },
        );
        let mut d = SmlDecoder::new(&m);
        d.handle_bytes(Instant::now(), &kermit);
        assert!(matches!(d.poll_event(), Some(DecodeEvent::Telegram(_))));
        assert_eq!(d.crc_variant_frames(), 1);

        let strict = MeterOptions {
            sml_crc: Some(SmlCrcMode(0)),
            ..MeterOptions::default()
        };
        let (events, stats) = decode(
            &meter(&[("77070100010800ff", None, number(1.0))], strict),
            &kermit,
        );
        assert!(matches!(
            events.as_slice(),
            [DecodeEvent::Error(DecodeError::BadCrc { .. })]
        ));
        assert_eq!(stats.crc_errors, 1);
    }

    #[test]
    fn a_frame_with_lists_nested_a_thousand_deep_is_rejected() {
        let m = meter(
            &[("77070100010800ff", None, number(1.0))],
            MeterOptions::default(),
        );
        let mut data = entry(IMPORT, &[0x01], 30, 0, &[0x62, 7]);
        data.extend(vec![0x71; 1000]);
        data.push(0x01);
        let (events, stats) = decode(&m, &encode(&data));
        assert!(
            matches!(
                events.as_slice(),
                [DecodeEvent::Error(DecodeError::Malformed { .. })]
            ),
            "{events:?}"
        );
        assert_eq!((stats.telegrams, stats.rejected), (0, 1));
    }

    #[test]
    fn a_tl_length_past_the_end_rejects_the_whole_frame() {
        let m = meter(
            &[("77070100010800ff", None, number(1.0))],
            MeterOptions::default(),
        );
        let mut data = entry(IMPORT, &[0x01], 30, 0, &[0x62, 7]);
        data.extend_from_slice(&[0x8f, 0x0f, 0x01]);
        let (events, stats) = decode(&m, &encode(&data));
        assert!(
            matches!(events.as_slice(), [DecodeEvent::Error(_)]),
            "{events:?}"
        );
        assert_eq!((stats.telegrams, stats.rejected), (0, 1));
    }
}
