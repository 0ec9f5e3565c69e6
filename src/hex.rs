/*!
Hex text, the one place for it: request telegrams in scripts, `sml decode --hex` captures, SML octet
strings published as text and `#x` ids. Every decoder and the front end use these, so a digit is read
the same way everywhere and errors name the same offset.
*/

use std::fmt::Write;

/// The value of one hex digit.
pub fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Why hex text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// `offset` counts bytes of the text as given (whitespace included), from 0.
    #[error("'{found}' at offset {offset} is not a hex digit")]
    NotHex { offset: usize, found: char },
    #[error("odd number of hex digits ({digits})")]
    OddLength { digits: usize },
}

/// Hex pairs to bytes; ASCII whitespace between digits is skipped (captures are often wrapped).
pub fn decode(text: &[u8]) -> Result<Vec<u8>, HexError> {
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut high: Option<u8> = None;
    let mut digits = 0;
    for (offset, &c) in text.iter().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        let v = nibble(c).ok_or(HexError::NotHex {
            offset,
            found: char::from(c),
        })?;
        digits += 1;
        match high.take() {
            None => high = Some(v),
            Some(h) => out.push(h << 4 | v),
        }
    }
    if high.is_some() {
        return Err(HexError::OddLength { digits });
    }
    Ok(out)
}

/// Bytes as lower-case hex pairs, no separator (`0a1b`).
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Bytes as upper-case hex pairs, no separator (`0A1B`): as Tasmota scripts write patterns and
/// as meter documentation prints addresses.
pub fn encode_upper(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_decode_with_whitespace_between_them() {
        assert_eq!(decode(b"0a 1B\nff").unwrap(), vec![0x0a, 0x1b, 0xff]);
        assert_eq!(encode(&[0x0a, 0x1b, 0xff]), "0a1bff");
        assert_eq!(encode_upper(&[0x0a, 0x1b, 0xff]), "0A1BFF");
    }

    #[test]
    fn a_bad_digit_is_named_with_its_offset() {
        assert_eq!(
            decode(b"0a 1g"),
            Err(HexError::NotHex {
                offset: 4,
                found: 'g'
            })
        );
        assert_eq!(decode(b"abc"), Err(HexError::OddLength { digits: 3 }));
    }
}
