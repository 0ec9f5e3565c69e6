/*!
Kamstrup KMP reply framing, apart from what the reply means: a frame starts at `40`, ends at `0D`,
and carries `1B`-stuffed bytes (`1B`, byte ^ `FF`) so neither marker can appear inside. After
unstuffing, the CRC-16/XMODEM over the whole frame, its own two CRC bytes included, must be 0 (the
CRC is sent high byte first). This is what Tasmota checks before it reads a reply; a frame that
fails it is one rejection and gives no value.

The bytes a reply hands on are the ones between the markers, unstuffed, CRC still attached: the
metric lines' masks count from the first byte after `40` (the destination `3F`), as Tasmota's do.
*/

use crate::decode::DecodeError;

const CRC16_XMODEM: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);

pub const START: u8 = 0x40;
pub const STOP: u8 = 0x0D;
pub const ESCAPE: u8 = 0x1B;

/// The longest frame read (Tasmota's receive buffer is smaller still): a meter that never sends
/// `0D` costs this much memory, then one rejection.
pub const MAX_FRAME: usize = 512;

/// What the framer reports, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame<'a> {
    /// A whole reply, unstuffed and CRC-checked: destination, CID, data, the two CRC bytes.
    Reply(&'a [u8]),
    /// A frame found and rejected (bad CRC, cut short, a dangling escape, too long).
    Rejected(DecodeError),
    /// Bytes outside any frame (noise, a meter at another baud rate, our own echoed request).
    Discarded(usize),
}

/// CRC-16/XMODEM of `bytes`: 0 over a frame with its CRC attached.
pub fn crc16(bytes: &[u8]) -> u16 {
    CRC16_XMODEM.checksum(bytes)
}

/// Finds KMP replies in a byte stream.
#[derive(Debug, Default)]
pub struct Framer {
    /// Inside a frame: the bytes after `40`, unstuffed so far.
    buf: Option<Vec<u8>>,
    /// The last byte was `1B`: the next one is stuffed.
    escaped: bool,
    /// Stuffed bytes seen in this frame, for the offsets in errors (wire offset = unstuffed + this).
    stuffed: usize,
    too_long: bool,
}

impl Framer {
    /// Bytes of a frame not yet complete.
    pub fn pending(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.len() + 1)
    }

    pub fn push(&mut self, bytes: &[u8], sink: &mut dyn FnMut(Frame<'_>)) {
        let mut outside = 0usize;
        for &b in bytes {
            let Some(buf) = self.buf.as_mut() else {
                if b == START {
                    if outside > 0 {
                        sink(Frame::Discarded(outside));
                        outside = 0;
                    }
                    self.start();
                } else {
                    outside += 1;
                }
                continue;
            };
            match b {
                START => {
                    // A new frame before this one ended: the rest of it will not come.
                    self.flush("a new frame started before the stop byte", sink);
                    self.start();
                }
                STOP => self.finish(sink),
                ESCAPE if !self.escaped => self.escaped = true,
                _ => {
                    let b = if self.escaped {
                        self.stuffed += 1;
                        b ^ 0xFF
                    } else {
                        b
                    };
                    self.escaped = false;
                    if buf.len() < MAX_FRAME {
                        buf.push(b);
                    } else {
                        self.too_long = true;
                    }
                }
            }
        }
        if outside > 0 {
            sink(Frame::Discarded(outside));
        }
    }

    /// End a partial frame as truncated (silence, the end of a capture, the next request).
    pub fn flush(&mut self, why: &'static str, sink: &mut dyn FnMut(Frame<'_>)) {
        if let Some(buf) = self.buf.take() {
            self.escaped = false;
            sink(Frame::Rejected(DecodeError::Truncated {
                bytes: buf.len() + 1 + self.stuffed,
                why,
            }));
        }
    }

    fn start(&mut self) {
        self.buf = Some(Vec::with_capacity(64));
        self.escaped = false;
        self.stuffed = 0;
        self.too_long = false;
    }

    fn finish(&mut self, sink: &mut dyn FnMut(Frame<'_>)) {
        let Some(buf) = self.buf.take() else {
            return;
        };
        let wire_len = buf.len() + self.stuffed + 2;
        if self.too_long {
            sink(Frame::Rejected(DecodeError::TooLong { limit: MAX_FRAME }));
        } else if self.escaped {
            sink(Frame::Rejected(DecodeError::Malformed {
                offset: wire_len - 2,
                why: "the escape byte 1B comes right before the stop byte".into(),
            }));
        } else if buf.len() < 4 {
            // Destination, CID and the two CRC bytes at least.
            sink(Frame::Rejected(DecodeError::Truncated {
                bytes: wire_len,
                why: "a KMP frame has at least a destination, a CID and a CRC",
            }));
        } else if crc16(&buf) != 0 {
            let (body, crc) = buf.split_at(buf.len() - 2);
            sink(Frame::Rejected(DecodeError::BadCrc {
                expected: u16::from_be_bytes([crc[0], crc[1]]),
                computed: crc16(body),
            }));
        } else {
            sink(Frame::Reply(&buf));
        }
        self.escaped = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bytes: &[u8]) -> Vec<Frame<'static>> {
        let mut f = Framer::default();
        let mut out = Vec::new();
        f.push(bytes, &mut |fr| {
            out.push(match fr {
                Frame::Reply(b) => Frame::Reply(Vec::leak(b.to_vec())),
                Frame::Rejected(e) => Frame::Rejected(e),
                Frame::Discarded(n) => Frame::Discarded(n),
            })
        });
        out
    }

    #[test]
    fn the_kmp_document_example_reply_is_read() {
        // GetSerialNo reply from the KMP protocol document (as PyKMP quotes it).
        let wire = [0x40, 0x3F, 0x02, 0x01, 0x23, 0x45, 0x67, 0xE9, 0x56, 0x0D];
        assert_eq!(
            frames(&wire),
            vec![Frame::Reply(&[
                0x3F, 0x02, 0x01, 0x23, 0x45, 0x67, 0xE9, 0x56
            ])]
        );
    }

    #[test]
    fn stuffed_bytes_are_unstuffed_before_the_crc_check() {
        let body = [
            0x3F, 0x10, 0x00, 0x01, 0x1E, 0x04, 0x00, 0x40, 0x0D, 0x06, 0x1B,
        ];
        let framed = super::super::request::frame(&body);
        // The request framer stuffs the same way a meter does; only the start byte differs.
        let mut wire = framed.clone();
        wire[0] = START;
        let crc = crc16(&body).to_be_bytes();
        let mut want = body.to_vec();
        want.extend_from_slice(&crc);
        assert_eq!(frames(&wire), vec![Frame::Reply(Vec::leak(want))]);
    }

    #[test]
    fn a_bad_crc_is_rejected_with_both_crcs() {
        let wire = [0x40, 0x3F, 0x02, 0x01, 0x23, 0x45, 0x68, 0xE9, 0x56, 0x0D];
        assert!(matches!(
            frames(&wire)[..],
            [Frame::Rejected(DecodeError::BadCrc {
                expected: 0xE956,
                ..
            })]
        ));
    }

    #[test]
    fn noise_before_a_frame_is_discarded_and_a_restart_truncates_the_partial_frame() {
        let mut wire = vec![0x11, 0x22, 0x40, 0x3F, 0x02];
        wire.extend_from_slice(&[0x40, 0x3F, 0x02, 0x01, 0x23, 0x45, 0x67, 0xE9, 0x56, 0x0D]);
        let got = frames(&wire);
        assert_eq!(got[0], Frame::Discarded(2));
        assert!(matches!(
            got[1],
            Frame::Rejected(DecodeError::Truncated { bytes: 3, .. })
        ));
        assert!(matches!(got[2], Frame::Reply(_)));
    }

    #[test]
    fn a_frame_too_short_for_a_crc_or_with_a_dangling_escape_is_rejected() {
        assert!(matches!(
            frames(&[0x40, 0x3F, 0x0D])[..],
            [Frame::Rejected(DecodeError::Truncated { .. })]
        ));
        assert!(matches!(
            frames(&[0x40, 0x3F, 0x02, 0x01, 0x02, 0x1B, 0x0D])[..],
            [Frame::Rejected(DecodeError::Malformed { .. })]
        ));
    }

    #[test]
    fn a_frame_without_a_stop_byte_is_cut_at_the_limit() {
        let mut wire = vec![0x40];
        wire.extend(std::iter::repeat_n(0x55, MAX_FRAME + 10));
        wire.push(0x0D);
        assert_eq!(
            frames(&wire),
            vec![Frame::Rejected(DecodeError::TooLong { limit: MAX_FRAME })]
        );
    }
}
