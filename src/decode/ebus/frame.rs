/*!
eBus framing, apart from what a telegram means to a metric line: the byte stream is cut at SYN
(`AA`) bytes, escapes are undone, and each piece is checked as one telegram: master part
`QQ ZZ PB SB NN data CRC`, then for a master-master telegram the receiver's ACK, for a
master-slave telegram the slave's ACK and answer `NN data CRC` and the master's ACK. A NAK (`FF`)
is followed by one repeat of the refused part, as the eBus specification has it.

On the wire `A9` is sent as `A9 00` and `AA` as `A9 01`, so a SYN never occurs inside a telegram.
The CRC-8 (polynomial 0x9B) is computed over the bytes as they were sent, escapes included; that is
what the captures and eBus tools (ebusd, csowada/ebus) check. It is not the catalogue's CRC-8/LTE:
each byte is shifted into the register (`crc = T[crc] ^ byte`), so a small table function is used
instead of the `crc` crate.

Tasmota checks less: it only looks at pieces of 10 bytes or more, takes the master length from the
escaped buffer, and (an assignment where a comparison was meant) publishes a telegram whatever its
CRC says. Here every part is checked, short telegrams decode too, and a damaged part rejects the
whole telegram.
*/

use crate::decode::DecodeError;

/// The SYN byte between telegrams (also sent on an idle bus).
pub const SYN: u8 = 0xAA;
/// The escape byte: `A9 00` is `A9`, `A9 01` is `AA`.
pub const ESC: u8 = 0xA9;
/// ZZ of a broadcast telegram (no answer, no ACK).
pub const BROADCAST: u8 = 0xFE;
/// Positive acknowledge.
pub const ACK: u8 = 0x00;
/// Negative acknowledge: the refused part is sent once more.
pub const NAK: u8 = 0xFF;
/// The most data bytes a master or slave part carries (NN).
pub const MAX_DATA: usize = 16;
/// The most bytes between two SYNs of a well-formed telegram: master part, NAK and repeat, ACK,
/// slave part, NAK and repeat, ACK, every byte escaped.
pub const MAX_RAW: usize = 2 * (2 * (6 + MAX_DATA) + 2 * (2 + MAX_DATA) + 4);

/// `T[i]`: the register `i` shifted eight times through polynomial 0x9B.
const CRC_TABLE: [u8; 256] = crc_table();

const fn crc_table() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u8;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 0x80 != 0 {
                (c << 1) ^ 0x9B
            } else {
                c << 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// The eBus CRC-8 of bytes as sent on the wire (escapes included).
pub fn crc8(wire: &[u8]) -> u8 {
    wire.iter().fold(0u8, |crc, &b| crc_step(crc, b))
}

fn crc_step(crc: u8, byte: u8) -> u8 {
    CRC_TABLE[usize::from(crc)] ^ byte
}

/// The eBus CRC-8 of unescaped bytes: each is fed as it goes on the wire.
pub fn crc8_unescaped(symbols: &[u8]) -> u8 {
    symbols.iter().fold(0u8, |crc, &s| match s {
        ESC => crc_step(crc_step(crc, ESC), 0x00),
        SYN => crc_step(crc_step(crc, ESC), 0x01),
        b => crc_step(crc, b),
    })
}

/// Escape bytes for the wire (what a sender does; the tests' bus simulator uses it).
pub fn escape(symbols: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(symbols.len() + 2);
    for &s in symbols {
        match s {
            ESC => out.extend_from_slice(&[ESC, 0x00]),
            SYN => out.extend_from_slice(&[ESC, 0x01]),
            b => out.push(b),
        }
    }
    out
}

/// Whether `a` is one of the 25 master addresses (both nibbles 0, 1, 3, 7 or F).
pub fn is_master(a: u8) -> bool {
    let ok = |n: u8| matches!(n, 0x0 | 0x1 | 0x3 | 0x7 | 0xF);
    ok(a >> 4) && ok(a & 0x0f)
}

/// Who a telegram is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// ZZ = FE: no ACK, no answer.
    Broadcast,
    /// ZZ is a master address: the receiver ACKs, no answer.
    MasterMaster,
    /// ZZ is a slave address: the slave ACKs and answers, the master ACKs the answer.
    MasterSlave,
}

/// One part (master or slave) as found: where it starts in [`Telegram::symbols`], its data
/// length and its CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub start: usize,
    pub nn: u8,
    pub crc: u8,
}

/// A checked telegram, unescaped and with refused parts dropped:
/// `QQ ZZ PB SB NN data CRC [ACK] [NN data CRC [ACK]]`. Metric lines are read against `symbols`,
/// offset 0 being QQ, as Tasmota reads its buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telegram {
    pub kind: Kind,
    pub symbols: Vec<u8>,
    pub master: Part,
    pub slave: Option<Part>,
    /// The master part was sent but the slave did not answer (or the ACK was not heard).
    pub unanswered: bool,
    /// NAKs seen (each followed by a repeat).
    pub naks: u8,
    /// Byte offset of the telegram's first byte in the stream.
    pub offset: u64,
}

/// What the framer reports, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Telegram(Telegram),
    Rejected(DecodeError),
    /// Bytes dropped: a piece before the first SYN that is no telegram (joined mid-telegram), or
    /// bytes after an overlong piece until the next SYN.
    Discarded(usize),
}

/// Cuts a byte stream at SYNs and checks each piece.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    start: u64,
    /// Bytes seen so far.
    offset: u64,
    /// A SYN has been seen: the current piece starts at a telegram boundary.
    synced: bool,
    /// The current piece outgrew [`MAX_RAW`]: bytes are dropped until the next SYN.
    overflow: usize,
}

impl Framer {
    /// Bytes of a piece not yet ended by a SYN.
    pub fn pending(&self) -> usize {
        self.buf.len() + self.overflow
    }

    pub fn push(&mut self, bytes: &[u8], sink: &mut dyn FnMut(Frame)) {
        for &b in bytes {
            self.offset += 1;
            if b == SYN {
                self.end_piece(None, sink);
                self.synced = true;
                self.start = self.offset;
                continue;
            }
            if self.overflow > 0 {
                self.overflow += 1;
                continue;
            }
            if self.buf.len() == MAX_RAW {
                // Garbage or a bus without SYNs (a wrong baud rate): drop until the next SYN.
                let n = self.buf.len();
                self.buf.clear();
                sink(if self.synced {
                    Frame::Rejected(DecodeError::TooLong { limit: MAX_RAW })
                } else {
                    Frame::Discarded(n)
                });
                self.overflow = 1;
                continue;
            }
            self.buf.push(b);
        }
    }

    /// The line went quiet or the input ended: check what is buffered as if a SYN had come.
    pub fn flush(&mut self, why: &'static str, sink: &mut dyn FnMut(Frame)) {
        self.end_piece(Some(why), sink);
        self.start = self.offset;
    }

    fn end_piece(&mut self, flushed: Option<&'static str>, sink: &mut dyn FnMut(Frame)) {
        if self.overflow > 0 {
            sink(Frame::Discarded(self.overflow));
            self.overflow = 0;
        }
        if self.buf.is_empty() {
            return;
        }
        let raw = std::mem::take(&mut self.buf);
        match check(&raw, self.start) {
            Ok(t) => sink(Frame::Telegram(t)),
            // Before the first SYN the piece may be the tail of a telegram we joined late.
            Err(_) if !self.synced => sink(Frame::Discarded(raw.len())),
            Err(mut e) => {
                if let (Some(why), DecodeError::Truncated { why: w, .. }) = (flushed, &mut e) {
                    *w = why;
                }
                sink(Frame::Rejected(e))
            }
        }
    }
}

/// Undo escapes; each symbol's byte offset in `raw` is kept for messages.
fn unescape(raw: &[u8], base: u64) -> Result<(Vec<u8>, Vec<usize>), DecodeError> {
    let mut symbols = Vec::with_capacity(raw.len());
    let mut at = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        at.push(i);
        if raw[i] == ESC {
            match raw.get(i + 1) {
                Some(0x00) => symbols.push(ESC),
                Some(0x01) => symbols.push(SYN),
                Some(other) => {
                    return Err(DecodeError::Malformed {
                        offset: (base + i as u64) as usize,
                        why: format!("escape A9 followed by {other:02X}, not 00 or 01"),
                    })
                }
                None => {
                    return Err(DecodeError::Truncated {
                        bytes: raw.len(),
                        why: "the telegram ends in the middle of an escape",
                    })
                }
            }
            i += 2;
        } else {
            symbols.push(raw[i]);
            i += 1;
        }
    }
    Ok((symbols, at))
}

/// Check one piece between SYNs (raw, escaped) that starts at stream offset `base`.
pub fn check(raw: &[u8], base: u64) -> Result<Telegram, DecodeError> {
    let (s, at) = unescape(raw, base)?;
    let offset_of = |i: usize| (base + at.get(i).copied().unwrap_or(raw.len()) as u64) as usize;
    let malformed = |i: usize, why: String| DecodeError::Malformed {
        offset: offset_of(i),
        why,
    };
    let truncated = |why: &'static str| DecodeError::Truncated {
        bytes: raw.len(),
        why,
    };
    if s.len() < 6 {
        return Err(truncated(
            "a telegram has at least QQ ZZ PB SB NN CRC (a collision or a lone byte between SYNs)",
        ));
    }
    if !is_master(s[0]) {
        return Err(malformed(
            0,
            format!("QQ {:02X} is no master address", s[0]),
        ));
    }
    let zz = s[1];
    if zz == SYN || zz == ESC {
        return Err(malformed(1, format!("ZZ {zz:02X} is no address")));
    }
    let kind = if zz == BROADCAST {
        Kind::Broadcast
    } else if is_master(zz) {
        Kind::MasterMaster
    } else {
        Kind::MasterSlave
    };

    // A part at `i` (master: from QQ; slave: from NN): its data length, CRC and end.
    let part =
        |i: usize, head: usize, what: &'static str| -> Result<(Part, bool, usize), DecodeError> {
            let nn_at = i + head;
            let nn = *s.get(nn_at).ok_or_else(|| truncated(what))?;
            if usize::from(nn) > MAX_DATA {
                return Err(malformed(
                    nn_at,
                    format!("NN {nn} is more than the {MAX_DATA} data bytes eBus allows"),
                ));
            }
            let crc_at = nn_at + 1 + usize::from(nn);
            let crc = *s.get(crc_at).ok_or_else(|| truncated(what))?;
            let ok = crc8_unescaped(&s[i..crc_at]) == crc;
            Ok((Part { start: i, nn, crc }, ok, crc_at + 1))
        };
    let bad_crc = |i: usize, end: usize, crc: u8| DecodeError::BadCrc {
        expected: u16::from(crc),
        computed: u16::from(crc8_unescaped(&s[i..end - 1])),
    };

    let mut out = Vec::with_capacity(s.len());
    let mut naks = 0u8;
    let mut i = 0;
    let (master, mut i_end) = loop {
        let (m, ok, end) = part(i, 4, "the master part is cut short")?;
        let refused = s.get(end) == Some(&NAK) && kind != Kind::Broadcast;
        if refused && naks == 0 {
            // The receiver refused it: the master sends it once more.
            naks += 1;
            i = end + 1;
            continue;
        }
        if !ok {
            return Err(bad_crc(i, end, m.crc));
        }
        break (m, end);
    };
    out.extend_from_slice(&s[master.start..i_end]);
    let master = Part { start: 0, ..master };
    let mut slave = None;
    let mut unanswered = false;
    match kind {
        Kind::Broadcast => {}
        Kind::MasterMaster | Kind::MasterSlave => match s.get(i_end) {
            None => unanswered = true,
            Some(&ACK) => {
                out.push(ACK);
                i_end += 1;
                if kind == Kind::MasterSlave {
                    let mut j = i_end;
                    let (p, end) = loop {
                        let (p, ok, end) =
                            part(j, 0, "the slave acknowledged, but its answer is cut short")?;
                        if s.get(end) == Some(&NAK) && naks < 2 && j == i_end {
                            naks += 1;
                            j = end + 1;
                            continue;
                        }
                        if !ok {
                            return Err(bad_crc(j, end, p.crc));
                        }
                        break (p, end);
                    };
                    slave = Some(Part {
                        start: out.len(),
                        ..p
                    });
                    out.extend_from_slice(&s[j..end]);
                    i_end = end;
                    match s.get(i_end) {
                        None => {}
                        Some(&ACK) => {
                            out.push(ACK);
                            i_end += 1;
                        }
                        Some(&other) => {
                            return Err(malformed(
                                i_end,
                                format!("the master's ACK is {other:02X}, not 00"),
                            ))
                        }
                    }
                }
            }
            Some(&NAK) => {
                return Err(malformed(
                    i_end,
                    "the receiver refused the repeated master part too (a second NAK)".into(),
                ))
            }
            Some(&other) => {
                return Err(malformed(
                    i_end,
                    format!("the receiver's ACK is {other:02X}, not 00 or FF"),
                ))
            }
        },
    }
    if i_end < s.len() {
        return Err(malformed(
            i_end,
            format!(
                "{} bytes after the end of the telegram (a collision, or garbage before the SYN)",
                s.len() - i_end
            ),
        ));
    }
    Ok(Telegram {
        kind,
        symbols: out,
        master,
        slave,
        unanswered,
        naks,
        offset: base,
    })
}
