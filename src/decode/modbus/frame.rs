/*!
Modbus reply framing, apart from what the reply means: RTU frames (length from the function code,
CRC-16/MODBUS checked) and Modbus TCP frames (MBAP header, no CRC).

RTU has no start marker, so a frame's length is worked out from its first bytes, as a master does:
an exception reply (function with bit 7 set) is 5 bytes; the read functions 1..4 (and 0x17) carry a
byte count and are `count + 5` bytes; the write echoes 5, 6, 15 and 16 are 8 bytes. Other functions
are read with a byte count, as Tasmota reads every reply. A frame whose CRC fails is dropped whole
(Tasmota empties its receiver too), so line noise costs one frame, not a byte-by-byte hunt that
could find a false frame inside a corrupted one.
*/

use crate::decode::DecodeError;

/// The longest RTU reply: address, function, byte count 255, 255 bytes, CRC.
pub const MAX_RTU_FRAME: usize = 260;

/// What the framers report, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame<'a> {
    /// A whole reply: unit id, function, data (RTU: CRC checked and still attached at the end).
    Reply(&'a [u8]),
    /// A Modbus TCP reply with its transaction id; the bytes are unit id, function, data.
    TcpReply { transaction: u16, adu: &'a [u8] },
    /// A frame found and rejected (bad CRC, impossible header, cut short).
    Rejected(DecodeError),
    /// Bytes dropped while looking for the next plausible MBAP header.
    Discarded(usize),
}

/// CRC-16/MODBUS (the `crc` crate's table, as the requests use): sent low byte first.
pub fn crc16(data: &[u8]) -> u16 {
    super::request::CRC16_MODBUS.checksum(data)
}

/// The whole length of an RTU reply from its first bytes, or `None` until enough have arrived.
pub fn rtu_len(head: &[u8]) -> Option<usize> {
    let function = *head.get(1)?;
    if function & 0x80 != 0 {
        return Some(5);
    }
    match function {
        0x05 | 0x06 | 0x0f | 0x10 => Some(8),
        _ => head.get(2).map(|n| usize::from(*n) + 5),
    }
}

/// Finds RTU replies in a byte stream.
#[derive(Debug, Default)]
pub struct RtuFramer {
    buf: Vec<u8>,
}

impl RtuFramer {
    /// Bytes of a frame not yet complete.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    pub fn push(&mut self, mut bytes: &[u8], sink: &mut dyn FnMut(Frame<'_>)) {
        while !bytes.is_empty() {
            let want = rtu_len(&self.buf).unwrap_or(3).min(MAX_RTU_FRAME);
            let take = (want - self.buf.len().min(want)).clamp(1, bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if let Some(len) = rtu_len(&self.buf) {
                if self.buf.len() >= len {
                    self.finish(len, sink);
                }
            }
        }
    }

    fn finish(&mut self, len: usize, sink: &mut dyn FnMut(Frame<'_>)) {
        let (body, crc) = self.buf[..len].split_at(len - 2);
        let expected = u16::from_le_bytes([crc[0], crc[1]]);
        let computed = crc16(body);
        if expected == computed {
            sink(Frame::Reply(&self.buf[..len]));
        } else {
            sink(Frame::Rejected(DecodeError::BadCrc { expected, computed }));
        }
        self.buf.drain(..len);
    }

    /// The line went quiet, a new request went out or the input ended: a partial frame is dead.
    pub fn flush(&mut self, why: &'static str, sink: &mut dyn FnMut(Frame<'_>)) {
        if !self.buf.is_empty() {
            sink(Frame::Rejected(DecodeError::Truncated {
                bytes: self.buf.len(),
                why,
            }));
            self.buf.clear();
        }
    }
}

/// The MBAP header: transaction id, protocol id (0), length of what follows (unit id + PDU).
pub const MBAP_LEN: usize = 6;

/// The MBAP header and request for Modbus TCP: `adu` is unit id + PDU.
pub fn mbap(transaction: u16, adu: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MBAP_LEN + adu.len());
    out.extend_from_slice(&transaction.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(adu.len() as u16).to_be_bytes());
    out.extend_from_slice(adu);
    out
}

/// Finds Modbus TCP replies in a stream. After an impossible header (protocol id not 0, a length
/// no reply has) it moves on a byte at a time to the next plausible header, reporting the header
/// once and the bytes passed over as discarded, so the same stream gives the same events however it
/// is chunked.
#[derive(Debug, Default)]
pub struct TcpFramer {
    buf: Vec<u8>,
    resyncing: bool,
}

impl TcpFramer {
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    pub fn push(&mut self, bytes: &[u8], sink: &mut dyn FnMut(Frame<'_>)) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        let mut skipped = 0;
        while self.buf.len() - start >= MBAP_LEN {
            let h = &self.buf[start..];
            let transaction = u16::from_be_bytes([h[0], h[1]]);
            let protocol = u16::from_be_bytes([h[2], h[3]]);
            let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            if protocol != 0 || !(2..=254).contains(&len) {
                if !self.resyncing {
                    self.resyncing = true;
                    sink(Frame::Rejected(DecodeError::Malformed {
                        offset: 0,
                        why: format!(
                            "MBAP header with protocol {protocol} and length {len} is not Modbus \
                             TCP; looking for the next header"
                        ),
                    }));
                }
                start += 1;
                skipped += 1;
                continue;
            }
            self.resyncing = false;
            if skipped > 0 {
                sink(Frame::Discarded(skipped));
                skipped = 0;
            }
            if h.len() < MBAP_LEN + len {
                break;
            }
            sink(Frame::TcpReply {
                transaction,
                adu: &h[MBAP_LEN..MBAP_LEN + len],
            });
            start += MBAP_LEN + len;
        }
        if skipped > 0 {
            sink(Frame::Discarded(skipped));
        }
        self.buf.drain(..start);
    }

    pub fn flush(&mut self, why: &'static str, sink: &mut dyn FnMut(Frame<'_>)) {
        if !self.buf.is_empty() {
            sink(Frame::Rejected(DecodeError::Truncated {
                bytes: self.buf.len(),
                why,
            }));
            self.buf.clear();
        }
        self.resyncing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framer: &mut RtuFramer, bytes: &[u8]) -> Vec<Result<Vec<u8>, DecodeError>> {
        let mut out = Vec::new();
        framer.push(bytes, &mut |f| match f {
            Frame::Reply(b) => out.push(Ok(b.to_vec())),
            Frame::Rejected(e) => out.push(Err(e)),
            Frame::TcpReply { .. } | Frame::Discarded(_) => unreachable!(),
        });
        out
    }

    #[test]
    fn the_crc_of_a_known_request_matches_the_modbus_spec() {
        // 01 04 00 00 00 02 -> CRC 71 CB (low byte first).
        assert_eq!(crc16(&[1, 4, 0, 0, 0, 2]).to_le_bytes(), [0x71, 0xcb]);
    }

    #[test]
    fn the_crc_equals_the_bitwise_definition_on_every_short_input() {
        fn bitwise(data: &[u8]) -> u16 {
            let mut crc: u16 = 0xFFFF;
            for &b in data {
                crc ^= u16::from(b);
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
        for a in 0..=255u8 {
            for b in [0u8, 1, 0x7f, 0x80, 0xff] {
                assert_eq!(crc16(&[a, b, a ^ b]), bitwise(&[a, b, a ^ b]));
            }
        }
        assert_eq!(
            crc16(b"123456789"),
            0x4B37,
            "the CRC catalogue's check value"
        );
    }

    #[test]
    fn a_read_reply_is_as_long_as_its_byte_count_says() {
        let reply = [0x01, 0x04, 0x04, 0x43, 0x60, 0x25, 0x88, 0xf4, 0xe8];
        let mut f = RtuFramer::default();
        assert_eq!(frames(&mut f, &reply), vec![Ok(reply.to_vec())]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn an_exception_reply_is_five_bytes() {
        let reply = [0x01, 0x84, 0x04, 0x42, 0xc3];
        assert_eq!(
            frames(&mut RtuFramer::default(), &reply),
            vec![Ok(reply.to_vec())]
        );
    }

    #[test]
    fn a_write_echo_is_eight_bytes() {
        let mut echo = vec![0x01, 0x06, 0x00, 0x01, 0x00, 0x01];
        echo.extend_from_slice(&crc16(&echo).to_le_bytes());
        assert_eq!(frames(&mut RtuFramer::default(), &echo), vec![Ok(echo)]);
    }

    #[test]
    fn a_bad_crc_drops_the_frame_and_the_next_one_is_read() {
        let good = [0x01, 0x04, 0x04, 0x43, 0x60, 0x25, 0x88, 0xf4, 0xe8];
        let mut bad = good;
        bad[4] ^= 1;
        let mut stream = bad.to_vec();
        stream.extend_from_slice(&good);
        let got = frames(&mut RtuFramer::default(), &stream);
        assert!(matches!(got[0], Err(DecodeError::BadCrc { .. })), "{got:?}");
        assert_eq!(got[1], Ok(good.to_vec()));
    }

    #[test]
    fn a_partial_frame_is_reported_as_truncated_when_flushed() {
        let mut f = RtuFramer::default();
        assert!(frames(&mut f, &[0x01, 0x04, 0x04, 0x43]).is_empty());
        let mut got = Vec::new();
        f.flush("silence", &mut |fr| got.push(format!("{fr:?}")));
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("Truncated { bytes: 4"), "{got:?}");
    }

    #[test]
    fn mbap_frames_split_anywhere_are_found_whole() {
        let mut stream = mbap(7, &[1, 4, 2, 0, 5]);
        stream.extend(mbap(8, &[1, 4, 2, 0, 6]));
        let mut f = TcpFramer::default();
        let mut got = Vec::new();
        for b in &stream {
            f.push(std::slice::from_ref(b), &mut |fr| {
                if let Frame::TcpReply { transaction, adu } = fr {
                    got.push((transaction, adu.to_vec()))
                }
            });
        }
        assert_eq!(
            got,
            vec![(7, vec![1, 4, 2, 0, 5]), (8, vec![1, 4, 2, 0, 6])]
        );
    }

    #[test]
    fn an_mbap_header_with_another_protocol_is_rejected_and_the_next_frame_found() {
        let mut f = TcpFramer::default();
        let mut stream = vec![0, 1, 0, 9, 0, 3];
        stream.extend(mbap(2, &[1, 4, 2, 0, 5]));
        let mut got = Vec::new();
        f.push(&stream, &mut |fr| got.push(format!("{fr:?}")));
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].contains("Malformed"), "{got:?}");
        assert_eq!(got[1], "Discarded(6)");
        assert!(got[2].contains("TcpReply { transaction: 2"), "{got:?}");
        assert_eq!(f.pending(), 0);
    }
}
