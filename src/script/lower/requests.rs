/*!
Request blocks: the hex text after `txperiod` read into bytes exactly as Tasmota reads it, before any
framing (Modbus CRC, IEC parity, Kamstrup stuffing are the decode layer's, `decode::request`).

Tasmota reads block N by skipping N commas from the start of the text and converting pairs of
characters until a comma or the end. So an odd-length block before a comma takes the comma as nibble
0 and runs on into the next block, and a lone final nibble is dropped. sml reads the same bytes and
warns; a character that is not hex is an error (Tasmota would send it as nibble 0).
*/

use crate::hex;
use crate::script::model::RequestBlock;

/// A problem with the text: byte offset in the request text and message.
pub(super) type TextIssue = (usize, String);

/// Read every block. Errors are characters that are not hex; warnings are Tasmota's odd-length quirks.
pub(super) fn read_blocks(
    text: &str,
    modbus: bool,
) -> Result<(Vec<RequestBlock>, Vec<TextIssue>), TextIssue> {
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
                format!("request telegram `{}` has an odd number of hex digits: Tasmota reads the comma after it as a 0 nibble and runs on into the next block; sml sends the same", &text[start..end])
            };
            warnings.push((start, msg));
        }
        let mut bytes = Vec::new();
        let mut j = i;
        while j < b.len() && b[j] != b',' {
            if j + 1 >= b.len() {
                break; // lone final nibble: dropped
            }
            // Digits were checked above; the only other character read here is a comma (nibble 0).
            let high = hex::nibble(b[j]).unwrap_or(0);
            let low = hex::nibble(b[j + 1]).unwrap_or(0);
            bytes.push(high << 4 | low);
            j += 2;
        }
        if bytes.is_empty() && !raw {
            warnings.push((start, "empty request telegram block".to_string()));
        }
        blocks.push(RequestBlock { raw, bytes });
        if end == text.len() {
            break;
        }
        start = end + 1;
    }
    Ok((blocks, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(text: &str, modbus: bool) -> Vec<RequestBlock> {
        read_blocks(text, modbus).unwrap().0
    }

    #[test]
    fn an_r_block_is_raw_and_keeps_its_bytes() {
        let b = blocks("01040000,r010400000012", true);
        assert_eq!(
            b,
            vec![
                RequestBlock {
                    raw: false,
                    bytes: vec![0x01, 0x04, 0x00, 0x00]
                },
                RequestBlock {
                    raw: true,
                    bytes: vec![0x01, 0x04, 0x00, 0x00, 0x00, 0x12]
                }
            ]
        );
    }

    #[test]
    fn an_odd_final_nibble_is_dropped_with_a_warning() {
        let (b, warnings) = read_blocks("2F3F210D0A,060000D0A", false).unwrap();
        assert_eq!(b[1].bytes, vec![0x06, 0x00, 0x00, 0xD0]);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].0, 11);
    }

    #[test]
    fn an_odd_block_before_a_comma_runs_into_the_next() {
        let b = blocks("06D,0A0B", false);
        assert_eq!(b[0].bytes, vec![0x06, 0xD0, 0x0A, 0x0B]);
        assert_eq!(b[1].bytes, vec![0x0A, 0x0B]);
    }

    #[test]
    fn non_hex_is_an_error_at_its_offset() {
        let (at, message) = read_blocks("1040105016,105b106b16[,1", false).unwrap_err();
        assert_eq!(at, 21);
        assert!(message.contains("`[`"), "{message}");
    }
}
