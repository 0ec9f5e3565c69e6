/*!
SML messages: the type-length (TL) encoding and the list entries that carry meter values.

Every SML element starts with a TL field: bit 7 = another TL byte follows, bits 6..4 the type
(0 octet string, 4 boolean, 5 signed, 6 unsigned, 7 list), bits 3..0 the length. With more TL bytes
the length nibbles are concatenated. For scalars the length counts the TL bytes too; for a list it is
the number of elements. `01` is an absent optional field, `00` ends a message.

Rather than modelling every message type, the parser walks the whole element tree once and reports
each list of 7 elements whose first element is an octet string and whose fifth is not a list: the
shape of an `SML_ListEntry` (`objName, status, valTime, unit, scaler, value, valueSignature`). That is
what Tasmota finds when it compares `77 07 <obis>` with the bytes, without its false matches inside
other fields (an octet string holding `7707...`, a GetListResponse whose clientId has 6 bytes).
Nesting is limited to [`MAX_DEPTH`] (real frames use 6), so a hostile frame cannot exhaust the stack.
*/

use crate::decode::DecodeError;

/// Deepest list nesting accepted; real frames nest 6 deep (message, body, response, list, entry, time).
pub const MAX_DEPTH: usize = 16;
/// Most TL bytes in one field (4 give 16 length bits: far beyond any frame we accept).
const MAX_TL_BYTES: usize = 4;

/// A scalar as the frame carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmlValue<'a> {
    /// `01` (or a zero-length string): the optional field is not set.
    Absent,
    Bytes(&'a [u8]),
    Bool(bool),
    Int(i64),
    UInt(u64),
    /// A list, or an integer wider than 8 bytes: not a value a metric line can publish.
    Other,
}

/// One element's TL byte (first byte) and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<'a> {
    pub tl: u8,
    pub value: SmlValue<'a>,
}

/// An `SML_ListEntry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The OBIS code, normally 6 bytes (`01 00 01 08 00 ff` = 1-0:1.8.0*255).
    pub obj_name: &'a [u8],
    pub status: Element<'a>,
    pub unit: SmlValue<'a>,
    /// Power of ten the value is multiplied by (0 when absent).
    pub scaler: i8,
    pub value: SmlValue<'a>,
}

/// Walk every element of `data` (a frame's payload), calling `on_entry` for each list entry in stream
/// order. An error means the frame is not well formed; entries already reported must then be dropped.
pub fn for_each_entry<'a>(
    data: &'a [u8],
    mut on_entry: impl FnMut(&Entry<'a>),
) -> Result<(), DecodeError> {
    let mut parser = Parser { data, pos: 0 };
    while parser.pos < data.len() {
        parser.element(0, &mut on_entry)?;
    }
    Ok(())
}

/// Read the elements Tasmota reads after a pattern found at `pos`: status, time, unit, scaler, value.
/// For patterns that are not an OBIS code (matched against raw bytes).
pub fn fields_after(data: &[u8], pos: usize) -> Result<Entry<'_>, DecodeError> {
    let mut parser = Parser { data, pos };
    let mut ignore = |_: &Entry| {};
    let status = parser.element(1, &mut ignore)?;
    parser.element(1, &mut ignore)?;
    let unit = parser.element(1, &mut ignore)?.value;
    let scaler = scaler_of(parser.element(1, &mut ignore)?.value);
    let value = parser.element(1, &mut ignore)?.value;
    Ok(Entry {
        obj_name: &data[..0],
        status,
        unit,
        scaler,
        value,
    })
}

fn scaler_of(v: SmlValue) -> i8 {
    match v {
        SmlValue::Int(s) => s.clamp(i64::from(i8::MIN), i64::from(i8::MAX)) as i8,
        SmlValue::UInt(s) => s.min(127) as i8,
        _ => 0,
    }
}

/// A decoded TL field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tl {
    EndOfMessage,
    /// A scalar of this type nibble (0, 4, 5, 6) with `len` data bytes after the TL.
    Scalar {
        kind: u8,
        len: usize,
    },
    List {
        count: usize,
    },
}

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn malformed(&self, offset: usize, why: impl Into<String>) -> DecodeError {
        DecodeError::Malformed {
            offset,
            why: why.into(),
        }
    }

    fn read_tl(&mut self) -> Result<Tl, DecodeError> {
        let start = self.pos;
        let Some(&first) = self.data.get(start) else {
            return Err(DecodeError::Truncated {
                bytes: self.data.len(),
                why: "an SML element is missing at the end of the frame",
            });
        };
        if first == 0x00 {
            self.pos += 1;
            return Ok(Tl::EndOfMessage);
        }
        let kind = (first >> 4) & 0x07;
        let mut len = usize::from(first & 0x0f);
        let mut more = first & 0x80 != 0;
        let mut tl_bytes = 1;
        while more {
            let Some(&b) = self.data.get(start + tl_bytes) else {
                return Err(DecodeError::Truncated {
                    bytes: self.data.len(),
                    why: "a TL field runs past the end of the frame",
                });
            };
            if b & 0x70 != 0 {
                return Err(self.malformed(
                    start + tl_bytes,
                    format!("TL continuation byte {b:02x} has type bits"),
                ));
            }
            tl_bytes += 1;
            if tl_bytes > MAX_TL_BYTES {
                return Err(self.malformed(start, "TL field longer than 4 bytes"));
            }
            len = (len << 4) | usize::from(b & 0x0f);
            more = b & 0x80 != 0;
        }
        self.pos = start + tl_bytes;
        match kind {
            7 => Ok(Tl::List { count: len }),
            0 | 4 | 5 | 6 => {
                // The length of a scalar counts its TL bytes.
                let Some(data_len) = len.checked_sub(tl_bytes) else {
                    return Err(self.malformed(
                        start,
                        format!("TL length {len} is shorter than the TL field itself"),
                    ));
                };
                if data_len > self.data.len() - self.pos {
                    return Err(DecodeError::Malformed {
                        offset: start,
                        why: format!(
                            "element of {data_len} bytes runs past the end of the frame ({} left)",
                            self.data.len() - self.pos
                        ),
                    });
                }
                Ok(Tl::Scalar {
                    kind,
                    len: data_len,
                })
            }
            _ => Err(self.malformed(start, format!("unknown SML type in TL byte {first:02x}"))),
        }
    }

    fn element(
        &mut self,
        depth: usize,
        on_entry: &mut impl FnMut(&Entry<'a>),
    ) -> Result<Element<'a>, DecodeError> {
        let start = self.pos;
        let tl_byte = self.data.get(start).copied().unwrap_or(0);
        let value = match self.read_tl()? {
            Tl::EndOfMessage => SmlValue::Absent,
            Tl::Scalar { kind, len } => {
                let bytes = &self.data[self.pos..self.pos + len];
                self.pos += len;
                scalar(kind, bytes)
            }
            Tl::List { count } => {
                if depth >= MAX_DEPTH {
                    return Err(
                        self.malformed(start, format!("lists nested deeper than {MAX_DEPTH}"))
                    );
                }
                self.list(count, depth + 1, on_entry)?;
                SmlValue::Other
            }
        };
        Ok(Element { tl: tl_byte, value })
    }

    fn list(
        &mut self,
        count: usize,
        depth: usize,
        on_entry: &mut impl FnMut(&Entry<'a>),
    ) -> Result<(), DecodeError> {
        if count != 7 {
            for _ in 0..count {
                self.element(depth, on_entry)?;
            }
            return Ok(());
        }
        let mut fields = [Element {
            tl: 0,
            value: SmlValue::Absent,
        }; 7];
        for field in fields.iter_mut() {
            *field = self.element(depth, on_entry)?;
        }
        // A GetListResponse is a list of 7 too, and its clientId may be a 6-byte octet string
        // (`ffffffffffff`); its fifth field, the value list, is a list where an entry has a scaler.
        let fifth_is_list = fields[4].tl & 0x70 == 0x70;
        if let (SmlValue::Bytes(obj_name), false) = (fields[0].value, fifth_is_list) {
            on_entry(&Entry {
                obj_name,
                status: fields[1],
                unit: fields[3].value,
                scaler: scaler_of(fields[4].value),
                value: fields[5].value,
            });
        }
        Ok(())
    }
}

/// A scalar's value from its type nibble and data bytes (big endian integers of 1 to 8 bytes).
fn scalar(kind: u8, bytes: &[u8]) -> SmlValue<'_> {
    match kind {
        0 if bytes.is_empty() => SmlValue::Absent,
        0 => SmlValue::Bytes(bytes),
        4 => match bytes.first() {
            Some(&b) => SmlValue::Bool(b != 0),
            None => SmlValue::Absent,
        },
        5 | 6 if bytes.is_empty() => SmlValue::Absent,
        5 | 6 if bytes.len() > 8 => SmlValue::Other,
        5 => {
            let raw = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
            // Sign-extend from the field's own width (5..7-byte negatives included).
            let shift = 64 - 8 * bytes.len() as u32;
            SmlValue::Int(((raw << shift) as i64) >> shift)
        }
        _ => SmlValue::UInt(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(data: &[u8]) -> Result<Vec<(Vec<u8>, SmlValue<'_>, i8)>, DecodeError> {
        let mut out = Vec::new();
        for_each_entry(data, |e| out.push((e.obj_name.to_vec(), e.value, e.scaler)))?;
        Ok(out)
    }

    /// `77 07 0100010800ff 65 00000182 01 62 1e 52 ff <value> 01`
    fn entry_with(value: &[u8]) -> Vec<u8> {
        let mut v = vec![
            0x77, 0x07, 0x01, 0x00, 0x01, 0x08, 0x00, 0xff, 0x65, 0, 0, 1, 0x82, 0x01, 0x62, 0x1e,
            0x52, 0xff,
        ];
        v.extend_from_slice(value);
        v.push(0x01);
        v
    }

    #[test]
    fn integers_of_every_width_are_read_with_their_sign() {
        let cases: &[(&[u8], SmlValue)] = &[
            (&[0x52, 0xff], SmlValue::Int(-1)),
            (&[0x62, 0xff], SmlValue::UInt(255)),
            (&[0x53, 0xff, 0x38], SmlValue::Int(-200)),
            (&[0x54, 0xff, 0xff, 0xfe], SmlValue::Int(-2)),
            (&[0x55, 0x80, 0, 0, 0], SmlValue::Int(i64::from(i32::MIN))),
            (&[0x56, 0xff, 0xff, 0xff, 0xff, 0xfe], SmlValue::Int(-2)),
            (
                &[0x56, 0x00, 0x08, 0xd0, 0x2d, 0x95],
                SmlValue::Int(0x08d02d95),
            ),
            (&[0x57, 0xff, 0, 0, 0, 0, 0], SmlValue::Int(-(1 << 40))),
            (
                &[0x58, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x85],
                SmlValue::Int(-123),
            ),
            (
                &[0x59, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                SmlValue::Int(-1),
            ),
            (
                &[0x69, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                SmlValue::UInt(u64::MAX),
            ),
            (
                &[0x66, 0x01, 0x02, 0x03, 0x04, 0x05],
                SmlValue::UInt(0x0102030405),
            ),
            (&[0x42, 0x01], SmlValue::Bool(true)),
            (&[0x04, b'a', b'b', b'c'], SmlValue::Bytes(b"abc")),
            (&[0x01], SmlValue::Absent),
        ];
        for (bytes, want) in cases {
            let data = entry_with(bytes);
            let got = entries(&data).unwrap();
            assert_eq!(got.len(), 1, "{bytes:02x?}");
            assert_eq!(got[0].1, *want, "{bytes:02x?}");
            assert_eq!(got[0].2, -1);
        }
    }

    #[test]
    fn a_multi_byte_tl_gives_long_octet_strings_and_long_lists() {
        // 0x83 0x02: octet string, length 0x32 = 50 including the 2 TL bytes.
        let mut data = vec![0x83, 0x02];
        data.extend([0xaa; 48]);
        let mut list = vec![0xf1, 0x01]; // a list of 0x11 = 17 elements
        list.extend([0x01; 16]);
        list.extend(entry_with(&[0x62, 5]));
        data.extend(list);
        let got = entries(&data).unwrap();
        assert_eq!(
            got,
            vec![(vec![1, 0, 1, 8, 0, 0xff], SmlValue::UInt(5), -1)]
        );
    }

    #[test]
    fn a_length_past_the_end_is_an_error() {
        assert!(matches!(
            entries(&[0x76, 0x0f, 0x01]),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            entries(&[0x83]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            entries(&[0x72, 0x01]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            entries(&[0x81, 0x00]),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            entries(&[0x32, 0x00]),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn lists_nested_a_thousand_deep_are_refused_without_recursion_trouble() {
        let mut data = vec![0x71; 1000];
        data.push(0x01);
        let err = entries(&data).unwrap_err();
        assert!(
            matches!(err, DecodeError::Malformed { ref why, .. } if why.contains("nested")),
            "{err}"
        );
        // 16 deep is still fine.
        let mut ok = vec![0x71; MAX_DEPTH];
        ok.push(0x01);
        assert!(entries(&ok).is_ok());
    }

    #[test]
    fn a_get_list_response_with_a_six_byte_client_id_is_not_an_entry() {
        // 77 07ffffffffffff 0b0a..(server id) 01 01 71<entry> 01 01
        let mut data = vec![
            0x77, 0x07, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0b, 0x0a, 1, 2, 3, 4, 5, 6, 7, 8, 9,
            0x01, 0x01, 0x71,
        ];
        data.extend(entry_with(&[0x62, 5]));
        data.extend_from_slice(&[0x01, 0x01]);
        assert_eq!(
            entries(&data).unwrap(),
            vec![(vec![1, 0, 1, 8, 0, 0xff], SmlValue::UInt(5), -1)]
        );
    }

    #[test]
    fn end_of_message_bytes_between_messages_are_skipped() {
        let mut data = vec![0x00, 0x00];
        data.extend(entry_with(&[0x62, 7]));
        data.push(0x00);
        assert_eq!(entries(&data).unwrap().len(), 1);
    }

    #[test]
    fn fields_after_a_raw_pattern_are_read_like_tasmota() {
        let data = entry_with(&[0x53, 0x01, 0x00]);
        let e = fields_after(&data, 8).unwrap();
        assert_eq!(
            (e.value, e.scaler, e.unit, e.status.tl),
            (SmlValue::Int(256), -1, SmlValue::UInt(30), 0x65)
        );
    }
}
