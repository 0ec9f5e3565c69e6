/*!
Link framing of DLMS push telegrams: HDLC (`7E A0.. .. HCS .. FCS 7E`, IEC 62056-46) and wired M-Bus
(`68 L L 68 C A CI STSAP DTSAP .. CS 16`, EN 13757-2), both as HAN/P1 ports send them.

The framer takes bytes in any chunking and gives the link payload of each checked frame, with
segments joined: HDLC frames with the segmentation bit (format `A8`) and M-Bus frames whose CI field
says "more follows" (bit 4 clear, sequence number in bits 0..3) are held until the last one. The LLC
header `E6 E7 00` (or `E6 E6 00`) of an HDLC payload is removed. A bad FCS, HCS or M-Bus checksum
rejects the frame (and drops any segments before it); bytes before a frame start are discarded.
*/

use crc::{Crc, CRC_16_IBM_SDLC};

use crate::decode::DecodeError;

/// CRC-16/X-25 (the HDLC FCS and HCS), sent low byte first.
const X25: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_SDLC);

/// Joined segments past this size are not a meter's push (the largest seen are ~1.5 KiB).
pub const MAX_MESSAGE: usize = 16 * 1024;

/// What the framer found.
#[derive(Debug, Clone, PartialEq)]
pub enum Framed {
    /// The link payload of a complete message (all segments joined, LLC removed).
    Payload { framing: Framing, bytes: Vec<u8> },
    /// A frame that was found but rejected.
    Rejected(DecodeError),
    /// Bytes dropped while looking for a frame start.
    Discarded(usize),
}

/// Which link layer carried a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Hdlc,
    MBus,
    /// A bare APDU (`--explain` of a capture without its link layer).
    None,
}

#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Segments of an unfinished message, and which link they came over.
    segments: Option<(Framing, Vec<u8>)>,
    /// The sequence number of the last M-Bus segment held.
    mbus_seq: u8,
}

enum Step {
    /// A frame (or garbage) of this many bytes was handled.
    Consumed(usize),
    /// More bytes are needed.
    NeedMore,
}

impl Framer {
    /// Take bytes; call `sink` for each payload, rejection and discard, in stream order.
    pub fn push(&mut self, bytes: &[u8], sink: &mut dyn FnMut(Framed)) {
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        let mut discarded = 0;
        while at < self.buf.len() {
            let step = self.step(at, sink, &mut discarded);
            match step {
                Step::Consumed(n) => at += n,
                Step::NeedMore => break,
            }
        }
        if discarded > 0 {
            sink(Framed::Discarded(discarded));
        }
        self.buf.drain(..at);
    }

    /// Bytes held for a frame not yet complete.
    pub fn pending(&self) -> usize {
        self.buf.len() + self.segments.as_ref().map_or(0, |(_, s)| s.len())
    }

    /// The input ended or went quiet: a partial frame or unfinished segments are truncated.
    pub fn flush(&mut self, why: &'static str, sink: &mut dyn FnMut(Framed)) {
        let held = self.pending();
        if held > 0 {
            sink(Framed::Rejected(DecodeError::Truncated {
                bytes: held,
                why,
            }));
        }
        self.buf.clear();
        self.segments = None;
    }

    fn step(&mut self, at: usize, sink: &mut dyn FnMut(Framed), discarded: &mut usize) -> Step {
        let b = &self.buf[at..];
        let flush_discard = |sink: &mut dyn FnMut(Framed), d: &mut usize| {
            if *d > 0 {
                sink(Framed::Discarded(*d));
                *d = 0;
            }
        };
        match b[0] {
            0x7E => {
                let Some(&format) = b.get(1) else {
                    return Step::NeedMore;
                };
                if format & 0xF0 != 0xA0 {
                    // A closing flag, a flag fill, or noise.
                    *discarded += 1;
                    return Step::Consumed(1);
                }
                let Some(&lo) = b.get(2) else {
                    return Step::NeedMore;
                };
                let len = (usize::from(format & 0x07) << 8) | usize::from(lo);
                let total = len + 2;
                if len < 7 {
                    *discarded += 1;
                    return Step::Consumed(1);
                }
                if b.len() < total {
                    return Step::NeedMore;
                }
                if b[total - 1] != 0x7E {
                    // Not a frame after all (or one with bytes lost): resync on the next flag.
                    *discarded += 1;
                    return Step::Consumed(1);
                }
                flush_discard(sink, discarded);
                let frame = b[..total].to_vec();
                self.hdlc(&frame, sink);
                Step::Consumed(total)
            }
            0x68 => {
                if b.len() < 4 {
                    return Step::NeedMore;
                }
                if b[3] != 0x68 || b[1] != b[2] || b[1] == 0 {
                    *discarded += 1;
                    return Step::Consumed(1);
                }
                let total = mbus_user_len(b[1]) + 6;
                if b.len() < total {
                    return Step::NeedMore;
                }
                if b[total - 1] != 0x16 {
                    *discarded += 1;
                    return Step::Consumed(1);
                }
                flush_discard(sink, discarded);
                let frame = b[..total].to_vec();
                self.mbus(&frame, sink);
                Step::Consumed(total)
            }
            _ => {
                // Skip to the next possible start in one go.
                let next = b[1..]
                    .iter()
                    .position(|&c| c == 0x7E || c == 0x68)
                    .map_or(b.len(), |p| p + 1);
                *discarded += next;
                Step::Consumed(next)
            }
        }
    }

    fn hdlc(&mut self, f: &[u8], sink: &mut dyn FnMut(Framed)) {
        let total = f.len();
        let fcs = u16::from_le_bytes([f[total - 3], f[total - 2]]);
        let computed = X25.checksum(&f[1..total - 3]);
        if fcs != computed {
            self.segments = None;
            return sink(Framed::Rejected(DecodeError::BadCrc {
                expected: fcs,
                computed,
            }));
        }
        // Destination and source addresses: each byte with bit 0 clear continues the address.
        let mut p = 3;
        for _ in 0..2 {
            while p < total - 3 && f[p] & 1 == 0 {
                p += 1;
            }
            p += 1;
        }
        let control = p;
        let info = control + 3;
        if info > total - 3 {
            // No information field (not a push): nothing to decode.
            return sink(Framed::Rejected(DecodeError::Malformed {
                offset: control,
                why: "HDLC frame without an information field".into(),
            }));
        }
        let hcs = u16::from_le_bytes([f[control + 1], f[control + 2]]);
        let computed = X25.checksum(&f[1..control + 1]);
        if hcs != computed {
            self.segments = None;
            return sink(Framed::Rejected(DecodeError::BadCrc {
                expected: hcs,
                computed,
            }));
        }
        let segmented = f[1] & 0x08 != 0;
        let mut data = &f[info..total - 3];
        let first = !matches!(self.segments, Some((Framing::Hdlc, _)));
        if first && data.len() >= 3 && data[0] == 0xE6 && (data[1] == 0xE7 || data[1] == 0xE6) {
            data = &data[3..];
        }
        self.join(Framing::Hdlc, data, !segmented, sink);
    }

    fn mbus(&mut self, f: &[u8], sink: &mut dyn FnMut(Framed)) {
        let total = f.len();
        let sum = f[4..total - 2].iter().fold(0u8, |s, b| s.wrapping_add(*b));
        if sum != f[total - 2] {
            self.segments = None;
            return sink(Framed::Rejected(DecodeError::BadCrc {
                expected: u16::from(f[total - 2]),
                computed: u16::from(sum),
            }));
        }
        // C, A, CI, then the transport's STSAP and DTSAP.
        if total < 11 {
            return sink(Framed::Rejected(DecodeError::Malformed {
                offset: 4,
                why: "M-Bus frame too short for a DLMS segment".into(),
            }));
        }
        let ci = f[6];
        let seq = ci & 0x0F;
        let last = ci & 0x10 != 0;
        let held = matches!(self.segments, Some((Framing::MBus, _)));
        if seq == 0 && held {
            // A new message starts: the one held never finished.
            let bytes = self.pending() - self.buf.len();
            self.segments = None;
            sink(Framed::Rejected(DecodeError::Truncated {
                bytes,
                why: "M-Bus segments: a new message began before the last segment",
            }));
        } else if seq != 0 && (!held || seq != self.mbus_seq.wrapping_add(1) & 0x0F) {
            self.segments = None;
            return sink(Framed::Rejected(DecodeError::Malformed {
                offset: 6,
                why: format!("M-Bus segment {seq} out of order (a segment was lost)"),
            }));
        }
        self.mbus_seq = seq;
        self.join(Framing::MBus, &f[9..total - 2], last, sink);
    }

    fn join(&mut self, framing: Framing, data: &[u8], last: bool, sink: &mut dyn FnMut(Framed)) {
        let mut bytes = match self.segments.take() {
            Some((f, s)) if f == framing => s,
            _ => Vec::new(),
        };
        bytes.extend_from_slice(data);
        if bytes.len() > MAX_MESSAGE {
            return sink(Framed::Rejected(DecodeError::TooLong {
                limit: MAX_MESSAGE,
            }));
        }
        if last {
            sink(Framed::Payload { framing, bytes });
        } else {
            self.segments = Some((framing, bytes));
        }
    }
}

/// The user-data length of an M-Bus long frame. Austrian Sagemcom T210-D meters send 257 bytes
/// with L = 0x01 (the length modulo 256), as Tasmota's parser knows: an L too small for a DLMS
/// segment's own header is taken as 256 more. The checksum still has to hold.
fn mbus_user_len(l: u8) -> usize {
    if l < 5 {
        usize::from(l) + 256
    } else {
        usize::from(l)
    }
}

/// One HDLC frame (format type 3, addresses as an IM350 pushes) carrying `info`, after an LLC
/// header when `with_llc`; `segmented` sets the S bit.
/// For tests, the simulator and fuzz seeds.
pub fn hdlc_frame(info: &[u8], segmented: bool, with_llc: bool) -> Vec<u8> {
    let mut body = vec![0xA0, 0x00, 0xCF, 0x00, 0x02, 0x23, 0x13];
    let hcs_at = body.len();
    body.extend_from_slice(&[0, 0]);
    if with_llc {
        body.extend_from_slice(&[0xE6, 0xE7, 0x00]);
    }
    body.extend_from_slice(info);
    let len = body.len() + 2;
    body[0] = 0xA0 | if segmented { 0x08 } else { 0 } | ((len >> 8) as u8 & 0x07);
    body[1] = len as u8;
    let hcs = X25.checksum(&body[..hcs_at]);
    body[hcs_at..hcs_at + 2].copy_from_slice(&hcs.to_le_bytes());
    let fcs = X25.checksum(&body);
    let mut out = vec![0x7E];
    out.extend_from_slice(&body);
    out.extend_from_slice(&fcs.to_le_bytes());
    out.push(0x7E);
    out
}

/// `payload` as wired M-Bus long frames of at most `max_segment` data bytes each, CI sequence
/// numbered with the last one flagged, as Kaifa and Sagemcom meters send it.
pub fn mbus_frames(payload: &[u8], max_segment: usize) -> Vec<u8> {
    let chunks: Vec<&[u8]> = payload.chunks(max_segment.clamp(1, 240)).collect();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let ci = (i as u8 & 0x0F) | if last { 0x10 } else { 0 };
        let mut user = vec![0x53, 0xFF, ci, 0x01, 0x67];
        user.extend_from_slice(chunk);
        let l = user.len() as u8;
        out.extend_from_slice(&[0x68, l, l, 0x68]);
        let cs = user.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        out.extend_from_slice(&user);
        out.extend_from_slice(&[cs, 0x16]);
    }
    out
}
