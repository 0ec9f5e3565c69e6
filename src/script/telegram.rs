/*!
Request telegrams: the hex text after `txperiod` turned into the bytes Tasmota puts on the wire.

Tasmota reads block N by skipping N commas from the start of the text and converting pairs of
characters until a comma or the end. So an odd-length block before a comma takes the comma as nibble
0 and runs on into the next block, and a lone final nibble is dropped. Then, per meter type: Modbus
appends the register count `0002` (unless the block starts with `r`) and the CRC-16/MODBUS (low byte
first); `o` sets even parity in bit 7 (7E1 emulated on 8N1) unless `=so2` has 0x20; Kamstrup appends
its CRC, stuffs reserved bytes and frames with 0x80 .. 0x0D.
*/

/// One block as Tasmota reads it from the text, before the protocol framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBlock {
    /// Started with `r` (Modbus: no register count).
    pub raw: bool,
    pub bytes: Vec<u8>,
}

/// A problem with the text: byte offset in the telegram text and message.
pub type TextIssue = (usize, String);

/// Read every block. Errors are characters that are not hex; warnings are Tasmota's odd-length quirks.
pub fn read_blocks(text: &str, modbus: bool) -> Result<(Vec<RawBlock>, Vec<TextIssue>), TextIssue> {
    let b = text.as_bytes();
    let mut warnings = Vec::new();
    let mut blocks = Vec::new();
    let mut start = 0;
    loop {
        let end = text[start..]
            .find(',')
            .map(|e| start + e)
            .unwrap_or(text.len());
        let mut i = start;
        let mut raw = false;
        if modbus && b.get(i) == Some(&b'r') {
            raw = true;
            i += 1;
        }
        let digits = &text[i..end];
        if let Some(bad) = digits.find(|c: char| !c.is_ascii_hexdigit()) {
            return Err((
                i + bad,
                format!(
                    "`{}` in a request telegram is not a hex digit",
                    &digits[bad..].chars().next().unwrap_or('?')
                ),
            ));
        }
        if digits.len() % 2 == 1 {
            let msg = if end == text.len() {
                format!("request telegram `{}` has an odd number of hex digits: Tasmota drops the last nibble, so this sends {} bytes", &text[start..end], digits.len() / 2)
            } else {
                "request telegram has an odd number of hex digits: Tasmota reads the comma as a 0 nibble and runs on into the next block; sml sends the same".to_string()
            };
            warnings.push((start, msg));
        }
        let mut bytes = Vec::new();
        let mut j = i;
        while j < b.len() && b[j] != b',' {
            if j + 1 >= b.len() {
                break; // lone final nibble: dropped
            }
            let hi = nibble(b[j]);
            let lo = if b[j + 1] == b',' {
                0
            } else {
                nibble(b[j + 1])
            };
            bytes.push(hi << 4 | lo);
            j += 2;
        }
        if bytes.is_empty() && !raw {
            warnings.push((start, "empty request telegram block".to_string()));
        }
        blocks.push(RawBlock { raw, bytes });
        if end == text.len() {
            break;
        }
        start = end + 1;
    }
    Ok((blocks, warnings))
}

fn nibble(c: u8) -> u8 {
    (c as char).to_digit(16).unwrap_or(0) as u8
}

/// Modbus RTU: register count `00 02` unless raw, then CRC-16/MODBUS low byte first.
pub fn modbus_rtu(block: &RawBlock) -> Vec<u8> {
    let mut out = modbus_tcp(block);
    let crc = crc16_modbus(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Modbus TCP: unit id + PDU (the register count added as for RTU), no CRC.
pub fn modbus_tcp(block: &RawBlock) -> Vec<u8> {
    let mut out = block.bytes.clone();
    if !block.raw {
        out.extend_from_slice(&[0x00, 0x02]);
    }
    out
}

/// CRC-16/MODBUS: reflected polynomial 0xA001, initial 0xFFFF.
pub fn crc16_modbus(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= b as u16;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// `o` meters: even parity in bit 7 of every byte (7E1 on an 8N1 line).
pub fn even_parity(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| {
            let d = b & 0x7F;
            if d.count_ones() % 2 == 1 {
                d | 0x80
            } else {
                d
            }
        })
        .collect()
}

/// Kamstrup KMP: CRC-16/CCITT (XMODEM) appended big endian, bytes 0x80 0x40 0x0D 0x06 0x1B stuffed
/// as 0x1B + inverted byte, framed by 0x80 and 0x0D.
pub fn kamstrup(bytes: &[u8]) -> Vec<u8> {
    let mut body = bytes.to_vec();
    body.extend_from_slice(&crc16_xmodem(bytes).to_be_bytes());
    let mut out = vec![0x80];
    for b in body {
        if matches!(b, 0x80 | 0x40 | 0x0D | 0x06 | 0x1B) {
            out.push(0x1B);
            out.push(b ^ 0xFF);
        } else {
            out.push(b);
        }
    }
    out.push(0x0D);
    out
}

/// CRC-16/XMODEM: polynomial 0x1021, initial 0.
pub fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(text: &str, modbus: bool) -> Vec<RawBlock> {
        read_blocks(text, modbus).unwrap().0
    }

    #[test]
    fn modbus_request_gets_register_count_and_crc_low_byte_first() {
        // 01 04 00 00 00 02 -> CRC 0x0B71, sent 71 CB? computed below from the standard check value
        let b = &blocks("01040000", true)[0];
        assert_eq!(
            modbus_rtu(b),
            vec![0x01, 0x04, 0x00, 0x00, 0x00, 0x02, 0x71, 0xCB]
        );
    }

    #[test]
    fn raw_modbus_block_is_sent_as_given_plus_crc() {
        let b = &blocks("01040000,r010400000012", true)[1];
        assert!(b.raw);
        let wire = modbus_rtu(b);
        assert_eq!(&wire[..6], &[0x01, 0x04, 0x00, 0x00, 0x00, 0x12]);
        assert_eq!(wire.len(), 8);
        assert_eq!(
            crc16_modbus(&wire),
            0,
            "a frame with its CRC appended checks to 0"
        );
    }

    #[test]
    fn crc_check_values() {
        assert_eq!(crc16_modbus(b"123456789"), 0x4B37);
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
    }

    #[test]
    fn odd_final_nibble_is_dropped_with_a_warning() {
        let (b, warnings) = read_blocks("2F3F210D0A,060000D0A", false).unwrap();
        assert_eq!(b[1].bytes, vec![0x06, 0x00, 0x00, 0xD0]);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].0, 11);
    }

    #[test]
    fn odd_block_before_a_comma_runs_into_the_next() {
        let b = blocks("06D,0A0B", false);
        assert_eq!(b[0].bytes, vec![0x06, 0xD0, 0x0A, 0x0B]);
        assert_eq!(b[1].bytes, vec![0x0A, 0x0B]);
    }

    #[test]
    fn obis_requests_get_even_parity() {
        // `/?!` CR LF: 2F has 5 ones -> 0xAF; 3F 6 ones -> 3F; 21 2 -> 21; 0D 3 -> 8D; 0A 2 -> 0A
        assert_eq!(
            even_parity(&[0x2F, 0x3F, 0x21, 0x0D, 0x0A]),
            vec![0xAF, 0x3F, 0x21, 0x8D, 0x0A]
        );
    }

    #[test]
    fn non_hex_is_an_error_at_its_offset() {
        let (at, _) = read_blocks("1040105016,105b106b16[,1", false).unwrap_err();
        assert_eq!(at, 21);
    }

    #[test]
    fn kamstrup_frame_is_stuffed_and_framed() {
        let f = kamstrup(&[0x3F, 0x10, 0x01, 0x00, 0x3C]);
        assert_eq!(f[0], 0x80);
        assert_eq!(*f.last().unwrap(), 0x0D);
        assert!(!f[1..f.len() - 1].iter().any(|b| matches!(b, 0x80 | 0x0D)));
    }
}
