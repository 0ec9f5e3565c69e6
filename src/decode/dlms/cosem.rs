/*!
The COSEM data walker: A-XDR encoded `Data` (IEC 62056-6-2) as a DLMS push carries it, parsed into a
tree so it can be listed (`sml decode --explain`), checked for plausibility after decryption, and
searched for OBIS codes with their values (the capture compatibility test).

Every length is checked against the bytes left, nesting is bounded, and an error says at which byte
it stopped: push telegrams come from the wire and, after a wrong key, are random bytes.
*/

/// A-XDR type tags of `Data` (IEC 62056-6-2 clause 4.1.5).
pub mod tag {
    pub const NULL: u8 = 0x00;
    pub const ARRAY: u8 = 0x01;
    pub const STRUCTURE: u8 = 0x02;
    pub const BOOLEAN: u8 = 0x03;
    pub const BIT_STRING: u8 = 0x04;
    pub const I32: u8 = 0x05;
    pub const U32: u8 = 0x06;
    pub const OCTET_STRING: u8 = 0x09;
    pub const VISIBLE_STRING: u8 = 0x0A;
    pub const UTF8_STRING: u8 = 0x0C;
    pub const BCD: u8 = 0x0D;
    pub const I8: u8 = 0x0F;
    pub const I16: u8 = 0x10;
    pub const U8: u8 = 0x11;
    pub const U16: u8 = 0x12;
    pub const I64: u8 = 0x14;
    pub const U64: u8 = 0x15;
    pub const ENUM: u8 = 0x16;
    pub const F32: u8 = 0x17;
    pub const F64: u8 = 0x18;
    pub const DATE_TIME: u8 = 0x19;
    pub const DATE: u8 = 0x1A;
    pub const TIME: u8 = 0x1B;
}

/// Structures nested deeper than this are not from a meter.
pub const MAX_DEPTH: usize = 16;

/// One COSEM `Data` value.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Null,
    Array(Vec<Item>),
    Structure(Vec<Item>),
    Boolean(bool),
    BitString {
        bits: usize,
        bytes: Vec<u8>,
    },
    Integer(i64),
    Unsigned(u64),
    Enum(u8),
    Float(f64),
    OctetString(Vec<u8>),
    VisibleString(Vec<u8>),
    Utf8String(Vec<u8>),
    Bcd(u8),
    /// date-time (12 bytes), date (5) or time (4), kept as sent.
    DateTime(Vec<u8>),
}

/// A value and the byte offset of its type tag in the buffer it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub offset: usize,
    pub data: Data,
}

/// Why the bytes are no COSEM `Data`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("COSEM data at byte {offset}: {why}")]
pub struct CosemError {
    pub offset: usize,
    pub why: String,
}

fn err(offset: usize, why: impl Into<String>) -> CosemError {
    CosemError {
        offset,
        why: why.into(),
    }
}

/// A BER/A-XDR length at `at`: the length and the bytes it took.
pub fn length(buf: &[u8], at: usize) -> Result<(usize, usize), CosemError> {
    let first = *buf.get(at).ok_or_else(|| err(at, "length missing"))?;
    match first {
        0..=0x7f => Ok((usize::from(first), 1)),
        0x81 => Ok((
            usize::from(*buf.get(at + 1).ok_or_else(|| err(at, "length cut"))?),
            2,
        )),
        0x82 => {
            let b = buf
                .get(at + 1..at + 3)
                .ok_or_else(|| err(at, "length cut"))?;
            Ok((usize::from(u16::from_be_bytes([b[0], b[1]])), 3))
        }
        _ => Err(err(at, format!("length form {first:02X} not supported"))),
    }
}

/// Parse one `Data` at `at`; returns it and the offset after it.
pub fn parse(buf: &[u8], at: usize) -> Result<(Item, usize), CosemError> {
    parse_at(buf, at, 0)
}

/// Parse values from `at` to the end of `buf` (a notification body may hold more than one).
pub fn parse_all(buf: &[u8], mut at: usize) -> Result<Vec<Item>, CosemError> {
    let mut items = Vec::new();
    while at < buf.len() {
        let (item, next) = parse(buf, at)?;
        items.push(item);
        at = next;
    }
    Ok(items)
}

fn fixed<'a>(buf: &'a [u8], at: usize, n: usize, what: &str) -> Result<&'a [u8], CosemError> {
    buf.get(at..at + n).ok_or_else(|| {
        err(
            at,
            format!(
                "{what} needs {n} bytes, {} left",
                buf.len().saturating_sub(at)
            ),
        )
    })
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<(Item, usize), CosemError> {
    if depth > MAX_DEPTH {
        return Err(err(at, "nested deeper than 16 levels"));
    }
    let t = *buf.get(at).ok_or_else(|| err(at, "value missing"))?;
    let p = at + 1;
    let item = |data| Item { offset: at, data };
    let int = |n: usize, what: &str| -> Result<&[u8], CosemError> { fixed(buf, p, n, what) };
    Ok(match t {
        tag::NULL => (item(Data::Null), p),
        tag::ARRAY | tag::STRUCTURE => {
            let (count, used) = length(buf, p)?;
            let mut at = p + used;
            // Every element takes at least one byte: a count past the end is garbage.
            if count > buf.len().saturating_sub(at) {
                return Err(err(
                    p,
                    format!(
                        "{count} elements announced, {} bytes left",
                        buf.len().saturating_sub(at)
                    ),
                ));
            }
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                let (i, next) = parse_at(buf, at, depth + 1)?;
                items.push(i);
                at = next;
            }
            let data = if t == tag::ARRAY {
                Data::Array(items)
            } else {
                Data::Structure(items)
            };
            (item(data), at)
        }
        tag::BOOLEAN => (item(Data::Boolean(int(1, "boolean")?[0] != 0)), p + 1),
        tag::BIT_STRING => {
            let (bits, used) = length(buf, p)?;
            let n = bits.div_ceil(8);
            let bytes = fixed(buf, p + used, n, "bit-string")?.to_vec();
            (item(Data::BitString { bits, bytes }), p + used + n)
        }
        tag::I32 => {
            let b = int(4, "double-long")?;
            (
                item(Data::Integer(i64::from(i32::from_be_bytes([
                    b[0], b[1], b[2], b[3],
                ])))),
                p + 4,
            )
        }
        tag::U32 => {
            let b = int(4, "double-long-unsigned")?;
            (
                item(Data::Unsigned(u64::from(u32::from_be_bytes([
                    b[0], b[1], b[2], b[3],
                ])))),
                p + 4,
            )
        }
        tag::OCTET_STRING | tag::VISIBLE_STRING | tag::UTF8_STRING => {
            let (n, used) = length(buf, p)?;
            let bytes = fixed(buf, p + used, n, "string")?.to_vec();
            let data = match t {
                tag::OCTET_STRING => Data::OctetString(bytes),
                tag::VISIBLE_STRING => Data::VisibleString(bytes),
                _ => Data::Utf8String(bytes),
            };
            (item(data), p + used + n)
        }
        tag::BCD => (item(Data::Bcd(int(1, "bcd")?[0])), p + 1),
        tag::I8 => (
            item(Data::Integer(i64::from(int(1, "integer")?[0] as i8))),
            p + 1,
        ),
        tag::I16 => {
            let b = int(2, "long")?;
            (
                item(Data::Integer(i64::from(i16::from_be_bytes([b[0], b[1]])))),
                p + 2,
            )
        }
        tag::U8 => (
            item(Data::Unsigned(u64::from(int(1, "unsigned")?[0]))),
            p + 1,
        ),
        tag::U16 => {
            let b = int(2, "long-unsigned")?;
            (
                item(Data::Unsigned(u64::from(u16::from_be_bytes([b[0], b[1]])))),
                p + 2,
            )
        }
        tag::I64 | tag::U64 => {
            let b: [u8; 8] = int(8, "long64")?.try_into().unwrap_or([0; 8]);
            let data = if t == tag::I64 {
                Data::Integer(i64::from_be_bytes(b))
            } else {
                Data::Unsigned(u64::from_be_bytes(b))
            };
            (item(data), p + 8)
        }
        tag::ENUM => (item(Data::Enum(int(1, "enum")?[0])), p + 1),
        tag::F32 => {
            let b = int(4, "float32")?;
            (
                item(Data::Float(f64::from(f32::from_be_bytes([
                    b[0], b[1], b[2], b[3],
                ])))),
                p + 4,
            )
        }
        tag::F64 => {
            let b: [u8; 8] = int(8, "float64")?.try_into().unwrap_or([0; 8]);
            (item(Data::Float(f64::from_be_bytes(b))), p + 8)
        }
        tag::DATE_TIME | tag::DATE | tag::TIME => {
            let n = match t {
                tag::DATE_TIME => 12,
                tag::DATE => 5,
                _ => 4,
            };
            (item(Data::DateTime(int(n, "date/time")?.to_vec())), p + n)
        }
        other => return Err(err(at, format!("unknown type tag {other:02X}"))),
    })
}

impl Data {
    /// The value as a number, for the integer, enum and float types.
    pub fn number(&self) -> Option<f64> {
        match self {
            Data::Integer(v) => Some(*v as f64),
            Data::Unsigned(v) => Some(*v as f64),
            Data::Enum(v) => Some(f64::from(*v)),
            Data::Float(v) if v.is_finite() => Some(*v),
            _ => None,
        }
    }

    /// An OBIS code: an octet string of exactly 6 bytes.
    pub fn obis(&self) -> Option<[u8; 6]> {
        match self {
            Data::OctetString(b) => b.as_slice().try_into().ok(),
            _ => None,
        }
    }
}

/// `A-B:C.D.E*F` as OBIS codes are written.
pub fn obis_text(o: &[u8; 6]) -> String {
    format!("{}-{}:{}.{}.{}*{}", o[0], o[1], o[2], o[3], o[4], o[5])
}

/// A COSEM date-time as `YYYY-MM-DD hh:mm:ss` (unspecified fields as sent), or `None` when the
/// bytes are no date-time.
pub fn date_time_text(b: &[u8]) -> Option<String> {
    if b.len() != 12 {
        return None;
    }
    let year = u16::from_be_bytes([b[0], b[1]]);
    let (month, day, hour, min, sec) = (b[2], b[3], b[5], b[6], b[7]);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02} {hour:02}:{min:02}:{sec:02}"
    ))
}

/// A value found next to an OBIS code, with the scaler and unit when the telegram gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct ObisValue {
    pub obis: [u8; 6],
    pub value: Data,
    /// From a `{scaler, unit}` structure right after the value (class 3 register attribute 3).
    pub scaler: Option<i8>,
    pub unit: Option<u8>,
}

impl ObisValue {
    /// The number with its scaler applied.
    pub fn scaled(&self) -> Option<f64> {
        let v = self.value.number()?;
        Some(match self.scaler {
            Some(s) => v * 10f64.powi(i32::from(s)),
            None => v,
        })
    }
}

/// OBIS codes and the values after them, in telegram order. Two layouts occur: a flat list
/// (`obis, value, obis, value ...`, Kamstrup) and one structure per register
/// (`{obis, value[, {scaler, unit}]}`, Aidon, Kaifa long lists, Iskra).
pub fn obis_values(items: &[Item]) -> Vec<ObisValue> {
    let mut out = Vec::new();
    for i in items {
        collect(i, &mut out);
    }
    out
}

fn collect(item: &Item, out: &mut Vec<ObisValue>) {
    let elements = match &item.data {
        Data::Array(e) | Data::Structure(e) => e,
        _ => return,
    };
    let mut k = 0;
    while k < elements.len() {
        if let Some(obis) = elements[k].data.obis() {
            if let Some(value) = elements.get(k + 1) {
                if !matches!(value.data, Data::Array(_) | Data::Structure(_)) {
                    let (scaler, unit) = elements
                        .get(k + 2)
                        .and_then(|su| scaler_unit(&su.data))
                        .map_or((None, None), |(s, u)| (Some(s), Some(u)));
                    out.push(ObisValue {
                        obis,
                        value: value.data.clone(),
                        scaler,
                        unit,
                    });
                    k += if scaler.is_some() { 3 } else { 2 };
                    continue;
                }
            }
        }
        collect(&elements[k], out);
        k += 1;
    }
}

/// `{integer scaler, enum unit}`.
fn scaler_unit(d: &Data) -> Option<(i8, u8)> {
    match d {
        Data::Structure(su) if su.len() == 2 => match (&su[0].data, &su[1].data) {
            (Data::Integer(s), Data::Enum(u)) => Some((i8::try_from(*s).ok()?, *u)),
            _ => None,
        },
        _ => None,
    }
}

/// The unit names of the DLMS unit enumeration that meters send (IEC 62056-6-2 table 4).
pub fn unit_name(u: u8) -> Option<&'static str> {
    Some(match u {
        27 => "W",
        28 => "VA",
        29 => "var",
        30 => "Wh",
        31 => "VAh",
        32 => "varh",
        33 => "A",
        35 => "V",
        44 => "Hz",
        255 => "",
        _ => return None,
    })
}
