/*!
RESOL VBus 1.0 framing, apart from what the values mean. A telegram starts at the sync byte `AA`
(no other byte on the bus has bit 7 set: the data bytes' top bits travel in a septet byte), then a
10-byte header: sync, destination and source (16 bits each, little endian), protocol version
`10`, command (16 bits), the number of data frames, and the header's checksum. Each data frame is
4 data bytes, the septet (their top bits) and a checksum. Checksums are VBus's 7-bit ones: `7F`
minus the sum of the bytes covered, masked to 7 bits.

Tasmota reads whatever lies between two `AA`s and checks a frame's checksum only when a metric line
reads it (a bad one reads 0). Here the header says how long the telegram is, so it is complete
without waiting for the next `AA`, and it is checked whole: a bad header or frame checksum rejects
the telegram, so a value is never read from a damaged one. Only protocol version 1.0 carries data
frames; telegrams of other versions (2.0 datagrams, 3.x) are counted as rejected, with the
version, and skipped.
*/

use crate::decode::DecodeError;

pub const SYNC: u8 = 0xAA;
pub const HEADER_LEN: usize = 10;
pub const FRAME_LEN: usize = 6;
/// The protocol version byte of VBus 1.0, the one with data frames.
pub const VERSION_1_0: u8 = 0x10;

/// What the framer reports, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame<'a> {
    /// A whole VBus 1.0 telegram, header and data frames, every checksum right.
    Telegram(&'a [u8]),
    Rejected(DecodeError),
    /// Bytes outside any telegram.
    Discarded(usize),
}

/// VBus's 7-bit checksum of `bytes`.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0x7Fu8, |c, b| c.wrapping_sub(*b)) & 0x7F
}

/// The 32-bit value of a data frame (4 bytes, septet), or `None` when its checksum is wrong.
pub fn septet_value(frame: &[u8]) -> Option<u32> {
    let f = frame.get(..FRAME_LEN)?;
    if checksum(&f[..5]) != f[5] {
        return None;
    }
    let septet = f[4];
    let byte = |i: usize| u32::from(f[i] | (((septet >> i) & 1) << 7));
    Some(byte(0) | byte(1) << 8 | byte(2) << 16 | byte(3) << 24)
}

/// Finds VBus 1.0 telegrams in a byte stream.
#[derive(Debug, Default)]
pub struct Framer {
    /// Inside a telegram: its bytes from `AA`.
    buf: Option<Vec<u8>>,
}

impl Framer {
    /// Bytes of a telegram not yet complete.
    pub fn pending(&self) -> usize {
        self.buf.as_ref().map_or(0, Vec::len)
    }

    pub fn push(&mut self, bytes: &[u8], sink: &mut dyn FnMut(Frame<'_>)) {
        let mut outside = 0usize;
        for &b in bytes {
            if b == SYNC {
                if outside > 0 {
                    sink(Frame::Discarded(outside));
                    outside = 0;
                }
                self.flush(
                    "the next telegram started before this one was complete",
                    sink,
                );
                self.buf = Some(vec![SYNC]);
                continue;
            }
            let Some(buf) = self.buf.as_mut() else {
                outside += 1;
                continue;
            };
            if b & 0x80 != 0 {
                // Not VBus: a meter at another baud rate, or noise.
                let offset = buf.len();
                self.buf = None;
                sink(Frame::Rejected(DecodeError::Malformed {
                    offset,
                    why: format!("byte {b:02X} has bit 7 set, which VBus never sends after AA"),
                }));
                continue;
            }
            buf.push(b);
            if buf.len() == HEADER_LEN {
                if let Some(e) = check_header(buf) {
                    self.buf = None;
                    sink(Frame::Rejected(e));
                    continue;
                }
            }
            if buf.len() >= HEADER_LEN && buf.len() == telegram_len(buf) {
                if let Some(buf) = self.buf.take() {
                    match check_frames(&buf) {
                        Some(e) => sink(Frame::Rejected(e)),
                        None => sink(Frame::Telegram(&buf)),
                    }
                }
            }
        }
        if outside > 0 {
            sink(Frame::Discarded(outside));
        }
    }

    /// End a partial telegram as truncated (silence, the end of a capture, the next `AA`).
    pub fn flush(&mut self, why: &'static str, sink: &mut dyn FnMut(Frame<'_>)) {
        if let Some(buf) = self.buf.take() {
            sink(Frame::Rejected(DecodeError::Truncated {
                bytes: buf.len(),
                why,
            }));
        }
    }
}

/// The whole length of a telegram whose header is complete.
fn telegram_len(header: &[u8]) -> usize {
    HEADER_LEN + FRAME_LEN * usize::from(header[8])
}

fn check_header(h: &[u8]) -> Option<DecodeError> {
    let computed = checksum(&h[1..9]);
    if computed != h[9] {
        return Some(DecodeError::BadCrc {
            expected: u16::from(h[9]),
            computed: u16::from(computed),
        });
    }
    if h[5] != VERSION_1_0 {
        return Some(DecodeError::Malformed {
            offset: 5,
            why: format!(
                "VBus protocol version {}.{} from source {:04X}: only 1.0 telegrams carry data frames",
                h[5] >> 4,
                h[5] & 0x0f,
                u16::from_le_bytes([h[3], h[4]])
            ),
        });
    }
    None
}

fn check_frames(t: &[u8]) -> Option<DecodeError> {
    for f in t[HEADER_LEN..].chunks_exact(FRAME_LEN) {
        let computed = checksum(&f[..5]);
        if computed != f[5] {
            return Some(DecodeError::BadCrc {
                expected: u16::from(f[5]),
                computed: u16::from(computed),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_checksum_of_the_deltasol_bs_plus_header_is_right() {
        // The header the Tasmota docs' DeltaSol BS Plus script matches.
        let h = [0xAA, 0x10, 0x00, 0x21, 0x42, 0x10, 0x00, 0x01, 0x07, 0x74];
        assert_eq!(checksum(&h[1..9]), 0x74);
        assert_eq!(check_header(&h), None);
    }

    #[test]
    fn the_septet_restores_the_top_bits() {
        // 0x80 0x01 0xFF 0x7F: top bits of bytes 0 and 2 in the septet.
        let mut f = vec![0x00, 0x01, 0x7F, 0x7F, 0b0101];
        f.push(checksum(&f));
        assert_eq!(septet_value(&f), Some(0x7FFF_0180));
        f[5] ^= 1;
        assert_eq!(septet_value(&f), None);
    }
}
