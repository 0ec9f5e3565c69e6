//! The EN 13757-3 record walker: the fixed header after CI, then DIF (DIFE...) VIF (VIFE...) data,
//! record by record, each with its byte offset in the frame. Values are scaled to the unit named,
//! as libmbus normalises them (Energy in Wh, Volume in m^3), so captures can be compared with it.

use std::fmt::Write as _;

/// The fixed data header of a variable-data response (CI 72/76: 12 bytes; CI 7A: 4).
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// The identification number (8 BCD digits, most significant first), as printed on the
    /// meter; hex digits kept as sent.
    pub id: Option<String>,
    /// The three-letter manufacturer code (FLAG id).
    pub manufacturer: Option<String>,
    pub version: Option<u8>,
    pub medium: Option<u8>,
    pub access: u8,
    pub status: u8,
}

/// How a record's data field is coded (the low nibble of its DIF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataField {
    None,
    Int(u8),
    Real32,
    Bcd(u8),
    Variable,
    /// Selection for readout (DIF x8): no data.
    Selection,
}

impl DataField {
    /// The Tasmota mask that reads this field from the record's data offset, if one does.
    /// M-Bus integers are little endian and signed; Tasmota's `ssSSssSS` swaps the bytes of each
    /// word, a trailing `s` then swaps the words: a full little-endian read.
    pub fn tasmota_mask(self) -> Option<&'static str> {
        Some(match self {
            DataField::Int(1) => "ss",
            DataField::Int(2) => "ssSS",
            DataField::Int(4) => "ssSSssSSs",
            DataField::Bcd(2) => "bcd2",
            DataField::Bcd(4) => "bcd4",
            DataField::Bcd(6) => "bcd6",
            DataField::Bcd(8) => "bcd8",
            DataField::Bcd(12) => "bcd12",
            _ => return None,
        })
    }
}

/// A record's value, scaled to its unit.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordValue {
    Number(f64),
    Text(String),
    /// A date or date-time (type G / F), as `YYYY-MM-DD[ hh:mm]`.
    Time(String),
    None,
}

/// One data record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Byte offset of the DIF in the frame.
    pub offset: usize,
    /// Byte offset of the data, and its length.
    pub data_offset: usize,
    pub data_len: usize,
    /// DIF, DIFEs, VIF and VIFEs as sent: a metric line's pattern.
    pub head: Vec<u8>,
    pub field: DataField,
    /// 0 instantaneous, 1 maximum, 2 minimum, 3 value during error state.
    pub function: u8,
    pub storage: u64,
    pub tariff: u32,
    pub subunit: u32,
    pub quantity: &'static str,
    pub unit: &'static str,
    /// The power of ten the raw number was multiplied by.
    pub exponent: i32,
    /// What the raw number was multiplied by (10^exponent, or seconds per minute/hour/day).
    pub scale: f64,
    pub value: RecordValue,
}

impl Record {
    pub fn function_name(&self) -> &'static str {
        [
            "Instantaneous value",
            "Maximum value",
            "Minimum value",
            "Value during error state",
        ][usize::from(self.function & 3)]
    }

    /// A ready Tasmota metric line for meter `meter` reading this record, if a mask reads its
    /// data: the pattern is the record's DIF..VIFE bytes, then the data mask; the divisor undoes
    /// the VIF's power of ten so the value comes out in `unit`.
    pub fn tasmota_line(&self, meter: u8, name: &str) -> Option<String> {
        if self.head.is_empty() || matches!(self.value, RecordValue::Time(_)) {
            // A fixed-structure counter has no DIF/VIF to anchor on; a date is no number.
            return None;
        }
        let mask = self.field.tasmota_mask()?;
        let mut line = format!("{meter},{}", crate::hex::encode_upper(&self.head));
        // Tasmota divides by the number after `@`: the inverse of the record's scale.
        let divisor = 1.0 / self.scale;
        let precision = if self.exponent < 0 {
            self.exponent.unsigned_abs()
        } else {
            0
        };
        let unit = self.unit.replace(',', " ");
        let _ = write!(
            line,
            "{mask}@{divisor},{},{unit},{name},{}",
            self.quantity.replace(',', " "),
            precision.min(9)
        );
        Some(line)
    }
}

/// Everything the walker read from one frame's user data.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Records {
    pub ci: u8,
    pub header: Option<Header>,
    pub records: Vec<Record>,
    /// Manufacturer-specific data after DIF 0F/1F: its offset and length.
    pub manufacturer_data: Option<(usize, usize)>,
    /// The data ended with DIF 1F: the meter has more records in its next telegram.
    pub more_records_follow: bool,
    /// Where and why the walk stopped early (a record running past the end, an unknown CI).
    pub error: Option<(usize, String)>,
}

/// Walk the records of a checked long frame (`68 L L 68 C A CI ... CS 16`).
pub fn records(frame: &[u8]) -> Records {
    let mut out = Records::default();
    if frame.len() < 9 {
        out.error = Some((0, "shorter than a long frame with C, A and CI".into()));
        return out;
    }
    let end = frame.len() - 2; // before CS and stop
    let ci = frame[6];
    out.ci = ci;
    let mut at = 7;
    match ci {
        0x72 | 0x76 => {
            let Some(h) = frame.get(at..at + 12).filter(|_| at + 12 <= end) else {
                out.error = Some((at, "fixed header (12 bytes) runs past the frame".into()));
                return out;
            };
            out.header = Some(Header {
                id: Some(hex_le(&h[0..4])),
                manufacturer: Some(manufacturer(u16::from_le_bytes([h[4], h[5]]))),
                version: Some(h[6]),
                medium: Some(h[7]),
                access: h[8],
                status: h[9],
            });
            at += 12;
        }
        0x7A => {
            let Some(h) = frame.get(at..at + 4).filter(|_| at + 4 <= end) else {
                out.error = Some((at, "short header (4 bytes) runs past the frame".into()));
                return out;
            };
            out.header = Some(Header {
                id: None,
                manufacturer: None,
                version: None,
                medium: None,
                access: h[0],
                status: h[1],
            });
            at += 4;
        }
        0x78 => {}
        0x73 | 0x77 => {
            fixed(frame, end, &mut out);
            return out;
        }
        other => {
            out.error = Some((6, format!("CI {other:02X} is no variable-data response")));
            return out;
        }
    }
    while at < end {
        match record(frame, at, end) {
            Ok(Step::Record(r)) => {
                at = r.data_offset + r.data_len;
                out.records.push(r);
            }
            Ok(Step::Filler) => at += 1,
            Ok(Step::Manufacturer) => {
                out.more_records_follow = frame[at] == 0x1F;
                out.manufacturer_data = Some((at + 1, end - at - 1));
                break;
            }
            Err(why) => {
                out.error = Some((at, why));
                break;
            }
        }
    }
    out
}

/// The fixed data structure (CI 73/77): id, access, status, medium and units, two counters (BCD
/// unless status bit 7 says binary).
fn fixed(frame: &[u8], end: usize, out: &mut Records) {
    let at = 7;
    let Some(h) = frame.get(at..at + 16).filter(|_| at + 16 <= end) else {
        out.error = Some((
            at,
            "fixed data structure (16 bytes) runs past the frame".into(),
        ));
        return;
    };
    out.header = Some(Header {
        id: Some(hex_le(&h[0..4])),
        manufacturer: None,
        version: None,
        medium: Some((h[6] >> 6) | ((h[7] >> 4) & 0x0c)),
        access: h[4],
        status: h[5],
    });
    let binary = h[5] & 0x80 != 0;
    for (i, unit_byte) in [h[6], h[7]].into_iter().enumerate() {
        let offset = at + 8 + 4 * i;
        let d = &frame[offset..offset + 4];
        let (field, value) = if binary {
            let v = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
            (DataField::Int(4), RecordValue::Number(f64::from(v)))
        } else {
            (
                DataField::Bcd(8),
                bcd(d).map_or_else(
                    || RecordValue::Text(hex_le(d)),
                    |v| RecordValue::Number(v as f64),
                ),
            )
        };
        let unit = match unit_byte & 0x3f {
            0x05 => "kWh",
            0x06 => "MWh",
            0x0E => "GJ",
            0x29 => "l",
            0x2A => "m^3",
            _ => "",
        };
        out.records.push(Record {
            offset,
            data_offset: offset,
            data_len: 4,
            head: Vec::new(),
            field,
            function: 0,
            storage: 0,
            tariff: 0,
            subunit: 0,
            quantity: "Counter",
            unit,
            exponent: 0,
            scale: 1.0,
            value,
        });
    }
}

enum Step {
    Record(Record),
    Filler,
    Manufacturer,
}

fn record(frame: &[u8], start: usize, end: usize) -> Result<Step, String> {
    let byte = |i: usize| -> Result<u8, String> {
        if i < end {
            Ok(frame[i])
        } else {
            Err(format!(
                "record at byte {start} runs past the frame at byte {i}"
            ))
        }
    };
    let dif = byte(start)?;
    match dif {
        0x2F => return Ok(Step::Filler),
        0x0F | 0x1F => return Ok(Step::Manufacturer),
        _ => {}
    }
    let mut at = start + 1;
    let mut storage = u64::from((dif >> 6) & 1);
    let (mut tariff, mut subunit) = (0u32, 0u32);
    let mut ext = dif & 0x80 != 0;
    let mut n = 0u32;
    while ext {
        let dife = byte(at)?;
        at += 1;
        if n < 10 {
            storage |= u64::from(dife & 0x0f) << (1 + 4 * n);
            tariff |= u32::from((dife >> 4) & 3) << (2 * n);
            subunit |= u32::from((dife >> 6) & 1) << n;
        }
        n += 1;
        ext = dife & 0x80 != 0;
    }
    let vif = byte(at)?;
    at += 1;
    let (quantity, unit, exponent, is_time) = if vif & 0x7f == 0x7C {
        // Plain-text VIF: a length, then the unit's ASCII, last character first.
        let len = usize::from(byte(at)?);
        let text: String = (0..len)
            .map(|i| byte(at + 1 + i).map(char::from))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .rev()
            .collect();
        at += 1 + len;
        let _ = text;
        ("Plain text unit", "", 0, false)
    } else {
        let vife0 = if vif == 0xFB || vif == 0xFD {
            Some(byte(at)?)
        } else {
            None
        };
        describe(vif, vife0)
    };
    // VIFEs (including the table byte after FB/FD) follow while bit 7 is set.
    let mut ext = vif & 0x80 != 0;
    let mut exponent = exponent;
    let mut first_vife = true;
    while ext {
        let vife = byte(at)?;
        at += 1;
        // Orthogonal VIFE "multiplicative correction 10^(nnn-6)" (0111 0nnn) after a primary VIF.
        if (!first_vife || (vif != 0xFB && vif != 0xFD)) && vife & 0x78 == 0x70 {
            exponent += i32::from(vife & 7) - 6;
        }
        first_vife = false;
        ext = vife & 0x80 != 0;
    }
    let field = match dif & 0x0f {
        0x0 => DataField::None,
        0x1 => DataField::Int(1),
        0x2 => DataField::Int(2),
        0x3 => DataField::Int(3),
        0x4 => DataField::Int(4),
        0x5 => DataField::Real32,
        0x6 => DataField::Int(6),
        0x7 => DataField::Int(8),
        0x8 => DataField::Selection,
        0x9 => DataField::Bcd(2),
        0xA => DataField::Bcd(4),
        0xB => DataField::Bcd(6),
        0xC => DataField::Bcd(8),
        0xD => DataField::Variable,
        0xE => DataField::Bcd(12),
        _ => return Err(format!("special DIF {dif:02X} at byte {start}")),
    };
    let (data_offset, data_len, raw) = match field {
        DataField::None | DataField::Selection => (at, 0, RecordValue::None),
        DataField::Int(n) => {
            let d = slice(frame, at, usize::from(n), end, start)?;
            let mut v: i64 = 0;
            for (i, b) in d.iter().enumerate() {
                v |= i64::from(*b) << (8 * i);
            }
            let bits = 8 * u32::from(n);
            if bits < 64 && v & (1 << (bits - 1)) != 0 {
                v -= 1 << bits;
            }
            (at, usize::from(n), RecordValue::Number(v as f64))
        }
        DataField::Real32 => {
            let d = slice(frame, at, 4, end, start)?;
            let v = f32::from_le_bytes([d[0], d[1], d[2], d[3]]);
            (at, 4, RecordValue::Number(f64::from(v)))
        }
        DataField::Bcd(digits) => {
            let n = usize::from(digits / 2);
            let d = slice(frame, at, n, end, start)?;
            let v = match bcd(d) {
                Some(v) => RecordValue::Number(v as f64),
                None => RecordValue::Text(hex_le(d)),
            };
            (at, n, v)
        }
        DataField::Variable => {
            let lvar = byte(at)?;
            let (len, value) = match lvar {
                0x00..=0xBF => {
                    let d = slice(frame, at + 1, usize::from(lvar), end, start)?;
                    let s: String = d.iter().rev().map(|b| char::from(*b)).collect();
                    (usize::from(lvar), RecordValue::Text(s))
                }
                0xC0..=0xDF => {
                    let n = usize::from(lvar & 0x0f);
                    let d = slice(frame, at + 1, n, end, start)?;
                    let sign = if lvar >= 0xD0 { -1.0 } else { 1.0 };
                    let v = bcd(d).map_or_else(
                        || RecordValue::Text(hex_le(d)),
                        |v| RecordValue::Number(sign * v as f64),
                    );
                    (n, v)
                }
                0xE0..=0xEF => {
                    let n = usize::from(lvar & 0x0f);
                    let d = slice(frame, at + 1, n, end, start)?;
                    (n, RecordValue::Text(hex_le(d)))
                }
                0xF0..=0xFA => {
                    let n = 4 * usize::from(lvar - 0xEC);
                    let d = slice(frame, at + 1, n, end, start)?;
                    (n, RecordValue::Text(hex_le(d)))
                }
                _ => {
                    return Err(format!(
                        "variable length {lvar:02X} at byte {at} is reserved"
                    ))
                }
            };
            (at + 1, len, value)
        }
    };
    // Durations are normalised to seconds (as libmbus does); everything else by its power of ten.
    let (unit, scale) = match (quantity, unit) {
        (q, u) if q.ends_with(" time") || q.ends_with(" Duration") => {
            let per = match u {
                "min" => 60.0,
                "h" => 3600.0,
                "days" => 86400.0,
                _ => 1.0,
            };
            ("s", per)
        }
        (_, u) => (u, 10f64.powi(exponent)),
    };
    let value = match raw {
        RecordValue::Number(v) if is_time => {
            RecordValue::Time(time_point(&frame[data_offset..data_offset + data_len], v))
        }
        RecordValue::Number(v) => RecordValue::Number(v * scale),
        other => other,
    };
    Ok(Step::Record(Record {
        offset: start,
        data_offset,
        data_len,
        head: frame[start..at].to_vec(),
        field,
        function: (dif >> 4) & 3,
        storage,
        tariff,
        subunit,
        quantity,
        unit,
        exponent,
        scale,
        value,
    }))
}

fn slice(frame: &[u8], at: usize, n: usize, end: usize, start: usize) -> Result<&[u8], String> {
    if at + n <= end {
        Ok(&frame[at..at + n])
    } else {
        Err(format!(
            "record at byte {start} needs {n} data bytes at byte {at}, the frame ends at byte {end}"
        ))
    }
}

/// BCD, least significant byte first; a top nibble F marks a negative number (EN 13757-3 annex).
fn bcd(d: &[u8]) -> Option<i64> {
    let mut v: i64 = 0;
    let mut negative = false;
    for (i, b) in d.iter().enumerate().rev() {
        for (j, nibble) in [b >> 4, b & 0x0f].into_iter().enumerate() {
            if i == d.len() - 1 && j == 0 && nibble == 0x0F {
                negative = true;
                continue;
            }
            if nibble > 9 {
                return None;
            }
            // Variable-length BCD has up to 30 digits: past i64, no number (found by fuzzing).
            v = v.checked_mul(10)?.checked_add(i64::from(nibble))?;
        }
    }
    Some(if negative { -v } else { v })
}

fn hex_le(d: &[u8]) -> String {
    d.iter().rev().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02X}");
        s
    })
}

/// The manufacturer code: three letters of five bits each, `A` = 1.
fn manufacturer(code: u16) -> String {
    (0..3)
        .rev()
        .map(|i| char::from(b'@' + ((code >> (5 * i)) & 0x1f) as u8))
        .collect()
}

/// Type G (date, 2 bytes) or F (date and time, 4 bytes).
fn time_point(d: &[u8], _raw: f64) -> String {
    match d.len() {
        2 => {
            let day = d[0] & 0x1f;
            let month = d[1] & 0x0f;
            let year = ((d[0] & 0xe0) >> 5) | ((d[1] & 0xf0) >> 1);
            format!("{:04}-{month:02}-{day:02}", 2000 + u32::from(year))
        }
        4 => {
            let min = d[0] & 0x3f;
            let hour = d[1] & 0x1f;
            let day = d[2] & 0x1f;
            let month = d[3] & 0x0f;
            let year = ((d[2] & 0xe0) >> 5) | ((d[3] & 0xf0) >> 1);
            format!(
                "{:04}-{month:02}-{day:02} {hour:02}:{min:02}",
                2000 + u32::from(year)
            )
        }
        _ => hex_le(d),
    }
}

/// Quantity, unit and power of ten of a VIF (with the table byte after FB/FD), and whether the
/// data is a time point. The names are libmbus's, so captures compare with its output.
fn describe(vif: u8, table: Option<u8>) -> (&'static str, &'static str, i32, bool) {
    let n = i32::from(vif & 0x07);
    let nn = i32::from(vif & 0x03);
    match (vif & 0x7f, table) {
        (0x7D, Some(t)) => {
            let t = t & 0x7f;
            let m = i32::from(t & 0x0f);
            match t {
                0x08 => ("Access Number (transmission count)", "", 0, false),
                0x09 => ("Medium (as in fixed header)", "", 0, false),
                0x0A => ("Manufacturer (as in fixed header)", "", 0, false),
                0x0B => ("Parameter set identification", "", 0, false),
                0x0C => ("Model / Version", "", 0, false),
                0x0D => ("Hardware version", "", 0, false),
                0x0E => ("Firmware version", "", 0, false),
                0x0F => ("Software version", "", 0, false),
                0x10 => ("Customer location", "", 0, false),
                0x11 => ("Customer", "", 0, false),
                0x16 => ("Password", "", 0, false),
                0x17 => ("Error flags", "", 0, false),
                0x1A => ("Digital Output", "", 0, false),
                0x1B => ("Digital Input", "", 0, false),
                0x1C => ("Baudrate", "Baud", 0, false),
                0x40..=0x4F => ("Voltage", "V", m - 9, false),
                0x50..=0x5F => ("Current", "A", m - 12, false),
                0x3A => ("Dimensionless", "", 0, false),
                _ => ("Extension table FD", "", 0, false),
            }
        }
        (0x7B, Some(t)) => {
            let t = t & 0x7f;
            let e = i32::from(t & 1);
            match t {
                0x00 | 0x01 => ("Energy", "MWh", e - 1, false),
                0x08 | 0x09 => ("Energy", "GJ", e - 1, false),
                0x10 | 0x11 => ("Volume", "m^3", e + 2, false),
                0x18 | 0x19 => ("Mass", "t", e + 2, false),
                0x58..=0x5B => ("Flow temperature", "°F", i32::from(t & 3) - 3, false),
                0x5C..=0x5F => ("Return temperature", "°F", i32::from(t & 3) - 3, false),
                0x1A..=0x1B => ("Relative humidity", "%", e - 1, false),
                _ => ("Extension table FB", "", 0, false),
            }
        }
        (0x7E, _) => ("Any VIF", "", 0, false),
        (0x7F, _) => ("Manufacturer specific", "", 0, false),
        (v, _) => match v {
            0x00..=0x07 => ("Energy", "Wh", n - 3, false),
            0x08..=0x0F => ("Energy", "J", n, false),
            0x10..=0x17 => ("Volume", "m^3", n - 6, false),
            0x18..=0x1F => ("Mass", "kg", n - 3, false),
            0x20..=0x23 => ("On time", duration(nn), 0, false),
            0x24..=0x27 => ("Operating time", duration(nn), 0, false),
            0x28..=0x2F => ("Power", "W", n - 3, false),
            0x30..=0x37 => ("Power", "J/h", n, false),
            0x38..=0x3F => ("Volume flow", "m^3/h", n - 6, false),
            0x40..=0x47 => ("Volume flow", "m^3/min", n - 7, false),
            0x48..=0x4F => ("Volume flow", "m^3/s", n - 9, false),
            0x50..=0x57 => ("Mass flow", "kg/h", n - 3, false),
            0x58..=0x5B => ("Flow temperature", "°C", nn - 3, false),
            0x5C..=0x5F => ("Return temperature", "°C", nn - 3, false),
            0x60..=0x63 => ("Temperature difference", "K", nn - 3, false),
            0x64..=0x67 => ("External temperature", "°C", nn - 3, false),
            0x68..=0x6B => ("Pressure", "bar", nn - 3, false),
            0x6C => ("Time point (date)", "", 0, true),
            0x6D => ("Time point (date & time)", "", 0, true),
            0x6E => ("H.C.A.", "Units for H.C.A.", 0, false),
            0x70..=0x73 => ("Averaging Duration", duration(nn), 0, false),
            0x74..=0x77 => ("Actuality Duration", duration(nn), 0, false),
            0x78 => ("Fabrication No", "", 0, false),
            0x79 => ("(Enhanced) Identification", "", 0, false),
            0x7A => ("Bus Address", "", 0, false),
            _ => ("Reserved", "", 0, false),
        },
    }
}

fn duration(nn: i32) -> &'static str {
    ["s", "min", "h", "days"][(nn & 3) as usize]
}
