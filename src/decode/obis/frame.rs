/*!
Framing of OBIS text telegrams: finds where a telegram starts and ends and checks it, without knowing
any metric line. Bytes in, [`Frame`]s out through a callback that borrows the framer's buffer, so a
telegram is never copied.

What counts as a telegram (the choices, also in the README):
- **Start**: `/` (DSMR header, IEC 62056-21 identification line) or STX (an IEC readout whose
  identification line was not captured). While hunting, a `/` anywhere starts a telegram (fast resync
  after noise), except inside a line that already holds a `(`: there it is a date separator.
  Inside a telegram a `/` outside brackets (OBIS codes never hold one) abandons the unfinished
  telegram ([`DecodeError::Truncated`]) and starts the next.
- **Request echoes**: a header line `/?...` or `/#...` is the sign-on we (or a script) sent, echoed by
  a half-duplex optical head: dropped as discarded bytes, not an error.
- **End**: a line starting with `!`. What follows up to the line end is the DSMR CRC (1 to 4 hex
  digits: some meters drop leading zeros), checked over `/` .. `!`; nothing there means no CRC
  (DSMR 2.2/3, IEC readouts, EasyMeter). A telegram that had STX then expects ETX and the BCC, checked
  when present (a meter that omits them is accepted).
- **Bit 7**: cleared before any decision (Tasmota's 7E1-on-8N1 emulation). The CRC is accepted over the
  7-bit bytes (what a 7E1 meter computed) or, when a byte had bit 7 set, over the bytes as received
  (8-bit links whose telegrams carry non-ASCII bytes).
- **Meters without any header** (line-by-line meters such as a Kamstrup Multical answering `/#1`):
  until a telegram header or STX has been seen on this stream, lines outside telegrams are collected as a
  headerless block, published when a `!` line without CRC, a telegram start, a silence or the end of the
  input closes it. A block closed by `!CRC` is the tail of a telegram whose start was missed: dropped.
  Once a framed telegram was seen, bytes outside telegrams are garbage.
- **Checksum required once seen**: after a telegram whose CRC (or BCC) verified, a telegram without
  one is rejected ([`DecodeError::MissingCrc`]): a stripped, cut or forged telegram, or an empty
  `/\r\n!\r\n`, must not publish as fresh ([`MissingChecksum`] can relax this).
- **Bounds**: a telegram longer than [`MAX_TELEGRAM`] bytes is rejected ([`DecodeError::TooLong`]) and
  the rest of its line skipped, but a `/` outside brackets (or STX) there starts the next telegram, as
  inside a telegram: a good telegram right after an overlong one is not lost. A headerless block is
  closed at that size. Skipped bytes are reported as one `Discarded` per run (at the next telegram
  start, or every [`MAX_TELEGRAM`] bytes of a long run), so the report does not depend on how the
  bytes were chunked.
*/

use crate::decode::obis::check::{bcc, crc16_arc, crc16_arc_7bit};
use crate::decode::DecodeError;
use crate::hex;

/// Longest telegram accepted (the largest real DSMR telegrams are ~3 KiB; IEC readouts with a
/// 15-month history ~10 KiB).
pub const MAX_TELEGRAM: usize = 64 * 1024;

/// Longest text between `!` and the line end: 4 CRC digits, CR, a few spaces.
const MAX_TRAILER: usize = 8;

const STX: u8 = 0x02;
const ETX: u8 = 0x03;

/// What to do with a telegram that carries no checksum (no CRC after `!`, no ETX/BCC after a readout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingChecksum {
    /// Accept it until a checksum has verified on this stream; reject it from then on (default).
    #[default]
    RejectOnceSeen,
    /// Always accept it (a meter that sends CRCs only on some telegrams).
    Accept,
}

/// What the framer found.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    /// A complete telegram that passed its checks: its text from the start up to (not including) the
    /// `!` line, bit 7 cleared.
    Telegram(&'a [u8]),
    /// Lines from a meter that sends no telegram header, bit 7 cleared.
    Headerless(&'a [u8]),
    /// Bytes skipped while looking for a telegram start.
    Discarded(usize),
    /// A telegram found and rejected.
    Rejected(DecodeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside a telegram.
    Hunting,
    /// Inside a telegram, before its `!` line.
    Body,
    /// After `!`: CRC digits up to the line end.
    Trailer,
    /// After the `!` line of a telegram that had STX: ETX expected.
    AwaitEtx,
    /// ETX seen: the BCC is the next byte.
    AwaitBcc,
    /// After an overlong telegram: the rest of its line is skipped, but a `/` outside brackets or
    /// STX starts the next telegram (`in_bracket` says where the cut fell).
    Skipping,
}

/// The first line of `rest` in one pass (the hot loop of the decoder): its length through its `\n`
/// (or all of `rest`), whether a byte had bit 7 set, and whether it holds a `/` (bit 7 cleared).
fn scan_line(rest: &[u8]) -> (usize, bool, bool) {
    let mut bits = 0u8;
    let mut slash = false;
    for (j, &c) in rest.iter().enumerate() {
        bits |= c;
        match c & 0x7f {
            b'\n' => return (j + 1, bits & 0x80 != 0, slash),
            b'/' => slash = true,
            _ => {}
        }
    }
    (rest.len(), bits & 0x80 != 0, slash)
}

/// The streaming telegram finder of one meter.
#[derive(Debug)]
pub struct Framer {
    state: State,
    /// Body..AwaitBcc: the telegram as received. Hunting: the headerless block (complete lines and the
    /// current partial one), empty once a framed telegram was seen.
    buf: Vec<u8>,
    /// Index in `buf` where the current line starts (Body, headerless Hunting).
    line_start: usize,
    /// Hunting: the current line holds a `(`, so a `/` in it is not a telegram start.
    line_has_paren: bool,
    /// Body: the current line is inside a `( )` bracket.
    in_bracket: bool,
    /// Some byte of the current telegram had bit 7 set.
    high_bits: bool,
    /// Index of STX in `buf`, when the telegram has one.
    stx: Option<usize>,
    /// Index of the `!` in `buf` (Trailer onwards).
    bang: usize,
    /// The first line of the telegram is still coming (to recognise request echoes).
    in_header: bool,
    /// A telegram header (not an echo) or STX was seen on this stream: the meter frames its telegrams,
    /// so lines outside telegrams are garbage from now on.
    framed_seen: bool,
    /// A CRC or BCC verified on this stream: the meter sends checksums.
    checksum_seen: bool,
    missing_checksum: MissingChecksum,
    /// Skipped bytes not reported yet.
    skipped: usize,
    limit: usize,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::with_limit(MAX_TELEGRAM)
    }
}

impl Framer {
    /// A framer with another size bound (tests use small ones).
    pub fn with_limit(limit: usize) -> Self {
        Framer {
            state: State::Hunting,
            buf: Vec::with_capacity(4096),
            line_start: 0,
            line_has_paren: false,
            in_bracket: false,
            high_bits: false,
            stx: None,
            bang: 0,
            in_header: false,
            framed_seen: false,
            checksum_seen: false,
            missing_checksum: MissingChecksum::default(),
            skipped: 0,
            limit: limit.max(16),
        }
    }

    /// Choose what happens to telegrams without a checksum.
    pub fn set_missing_checksum(&mut self, rule: MissingChecksum) {
        self.missing_checksum = rule;
    }

    /// Bytes held that a silence would complete (a `!` line without line end, a readout waiting for
    /// ETX, a headerless block), or the rest of an overlong telegram that a silence ends.
    pub fn has_pending(&self) -> bool {
        match self.state {
            State::Trailer | State::AwaitEtx | State::Skipping => true,
            State::Hunting => !self.buf.is_empty(),
            State::Body | State::AwaitBcc => false,
        }
    }

    /// Bytes held allocated: at most about twice the telegram limit, whatever arrived.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Take bytes; report what they complete through `out`.
    pub fn push(&mut self, input: &[u8], out: &mut impl FnMut(Frame<'_>)) {
        let mut i = 0;
        while i < input.len() {
            i += match self.state {
                State::Hunting => self.hunt(&input[i..], out),
                State::Body => self.body(&input[i..], out),
                State::Trailer => self.trailer(input[i], out),
                State::AwaitEtx => self.await_etx(input[i], out),
                State::AwaitBcc => self.await_bcc(input[i], out),
                State::Skipping => self.skip_rest(input[i], out),
            };
        }
    }

    /// The line went quiet: complete what only lacked its line end, publish a headerless block.
    pub fn handle_silence(&mut self, out: &mut impl FnMut(Frame<'_>)) {
        match self.state {
            State::Trailer => self.finish_trailer(out),
            State::AwaitEtx => self.emit_unchecked(out),
            State::Hunting => self.flush_headerless(out),
            // The overlong telegram is over: the next `/` starts one, wherever its line was cut.
            State::Skipping => self.reset(),
            State::Body | State::AwaitBcc => {}
        }
    }

    /// The input ended: complete what can be, reject an unfinished telegram, report skipped bytes.
    pub fn handle_end(&mut self, out: &mut impl FnMut(Frame<'_>)) {
        self.handle_silence(out);
        match self.state {
            State::Body | State::AwaitBcc => {
                let why = if self.state == State::Body {
                    "input ended before '!'"
                } else {
                    "input ended before the BCC"
                };
                out(Frame::Rejected(DecodeError::Truncated {
                    bytes: self.buf.len(),
                    why,
                }));
                self.reset();
            }
            State::Hunting | State::Trailer | State::AwaitEtx | State::Skipping => {}
        }
        self.report_skipped(out);
    }

    fn reset(&mut self) {
        self.state = State::Hunting;
        self.buf.clear();
        self.line_start = 0;
        self.line_has_paren = false;
        self.in_bracket = false;
        self.high_bits = false;
        self.stx = None;
    }

    fn skip(&mut self, n: usize, out: &mut impl FnMut(Frame<'_>)) {
        self.skipped += n;
        if self.skipped >= self.limit {
            self.report_skipped(out);
        }
    }

    fn report_skipped(&mut self, out: &mut impl FnMut(Frame<'_>)) {
        if self.skipped > 0 {
            out(Frame::Discarded(self.skipped));
            self.skipped = 0;
        }
    }

    /// Outside a telegram: one byte at a time (garbage and headerless lines are rare and short).
    fn hunt(&mut self, input: &[u8], out: &mut impl FnMut(Frame<'_>)) -> usize {
        let raw = input[0];
        let b = raw & 0x7f;
        if (b == b'/' && !self.line_has_paren) || b == STX {
            self.flush_headerless(out);
            self.report_skipped(out);
            self.start_telegram(raw);
            return 1;
        }
        if self.framed_seen {
            self.skip(1, out);
            match b {
                b'\n' => self.line_has_paren = false,
                b'(' => self.line_has_paren = true,
                _ => {}
            }
            return 1;
        }
        // A meter without headers, so far: keep the line.
        self.buf.push(raw);
        match b {
            b'(' => self.line_has_paren = true,
            b'\n' => {
                self.line_has_paren = false;
                let line = &self.buf[self.line_start..];
                if line.first().map(|c| c & 0x7f) == Some(b'!') {
                    let has_crc = line[1..].iter().any(|c| (c & 0x7f).is_ascii_hexdigit());
                    if has_crc {
                        // The tail of a telegram whose start we missed: its CRC cannot be checked.
                        let n = self.buf.len();
                        self.buf.clear();
                        self.skip(n, out);
                    } else {
                        self.flush_headerless(out);
                    }
                }
                self.line_start = self.buf.len();
            }
            _ => {}
        }
        if self.buf.len() >= self.limit {
            self.flush_headerless(out);
        }
        1
    }

    /// Publish (or drop, when empty) the headerless block.
    fn flush_headerless(&mut self, out: &mut impl FnMut(Frame<'_>)) {
        if self.state != State::Hunting || self.buf.is_empty() {
            return;
        }
        self.report_skipped(out);
        for b in &mut self.buf {
            *b &= 0x7f;
        }
        out(Frame::Headerless(&self.buf));
        self.buf.clear();
        self.line_start = 0;
    }

    fn start_telegram(&mut self, raw: u8) {
        self.reset();
        self.state = State::Body;
        self.buf.push(raw);
        self.high_bits = raw & 0x80 != 0;
        if raw & 0x7f == STX {
            self.stx = Some(0);
            self.in_header = false;
            self.framed_seen = true;
        } else {
            self.in_header = true;
        }
    }

    /// Inside a telegram: whole lines at a time.
    fn body(&mut self, input: &[u8], out: &mut impl FnMut(Frame<'_>)) -> usize {
        let mut i = 0;
        while i < input.len() {
            if self.line_start == self.buf.len() {
                // First byte of a line: the end, or STX of a readout after its identification line.
                let raw = input[i];
                match raw & 0x7f {
                    b'!' => {
                        if self.buf.len() >= self.limit {
                            return i + self.too_long(out);
                        }
                        self.bang = self.buf.len();
                        self.buf.push(raw);
                        self.high_bits |= raw & 0x80 != 0;
                        self.state = State::Trailer;
                        return i + 1;
                    }
                    STX if self.stx.is_none() => self.stx = Some(self.buf.len()),
                    _ => {}
                }
            }
            if self.line_start == self.buf.len() && !self.in_header {
                if let Some(n) = self.bulk_lines(&input[i..]) {
                    i += n;
                    continue;
                }
            }
            let (n, high_bits, has_slash) = scan_line(&input[i..]);
            let line = &input[i..i + n];
            if !self.in_header {
                if let Some(k) = self.restart_at(line, has_slash) {
                    // A new telegram starts before this one ended (bytes were lost).
                    if self.buf.len() + k > self.limit {
                        let take = self.limit - self.buf.len();
                        self.buf.extend_from_slice(&line[..take]);
                        return i + take + self.too_long(out);
                    }
                    self.buf.extend_from_slice(&line[..k]);
                    let bytes = self.buf.len();
                    out(Frame::Rejected(DecodeError::Truncated {
                        bytes,
                        why: "a new telegram started before '!'",
                    }));
                    self.start_telegram(line[k]);
                    return i + k + 1;
                }
            }
            if self.buf.len() + n > self.limit {
                let take = self.limit - self.buf.len();
                self.buf.extend_from_slice(&line[..take]);
                return i + take + self.too_long(out);
            }
            self.high_bits |= high_bits;
            self.buf.extend_from_slice(line);
            i += n;
            if line.last().map(|c| c & 0x7f) == Some(b'\n') {
                self.line_start = self.buf.len();
                self.in_bracket = false;
                if self.in_header {
                    self.in_header = false;
                    if matches!(self.buf.get(1).map(|c| c & 0x7f), Some(b'?' | b'#')) {
                        // Our own sign-on (`/?!`, `/#1`) echoed back, not a meter's identification.
                        let n = self.buf.len();
                        self.reset();
                        self.skip(n, out);
                        return i;
                    }
                    self.framed_seen = true;
                }
            }
        }
        i
    }

    /// The fast path for what most meters send (8N1, no `/` and no STX in the body): the whole lines
    /// up to the `!` line, or up to the last complete line of this chunk, appended at once. `None`
    /// when a line needs the line-by-line path (bit 7 set, a `/`, STX, over the size limit). Both
    /// paths leave the framer in the same state, so chunking never changes the result.
    fn bulk_lines(&mut self, rest: &[u8]) -> Option<usize> {
        let mut end = None;
        for p in memchr::memchr_iter(b'\n', rest) {
            end = Some(p + 1);
            if rest.get(p + 1) == Some(&b'!') {
                break;
            }
        }
        let lines = &rest[..end?];
        if self.buf.len() + lines.len() > self.limit
            || !lines.is_ascii()
            || memchr::memchr2(b'/', STX, lines).is_some()
        {
            return None;
        }
        self.buf.extend_from_slice(lines);
        self.line_start = self.buf.len();
        self.in_bracket = false;
        Some(lines.len())
    }

    /// Where a `/` outside brackets (a telegram start: OBIS codes never hold one, values may) sits in
    /// this piece of a line, if any; keeps track of whether the line is inside a bracket.
    fn restart_at(&mut self, line: &[u8], has_slash: bool) -> Option<usize> {
        if has_slash {
            for (k, &c) in line.iter().enumerate() {
                match c & 0x7f {
                    b'(' => self.in_bracket = true,
                    b')' => self.in_bracket = false,
                    b'/' if !self.in_bracket => return Some(k),
                    _ => {}
                }
            }
        } else if line.last().map(|c| c & 0x7f) != Some(b'\n') {
            // A line continued in the next chunk: only its last bracket matters.
            if let Some(p) = line.iter().rposition(|&c| matches!(c & 0x7f, b'(' | b')')) {
                self.in_bracket = line[p] & 0x7f == b'(';
            }
        }
        None
    }

    fn too_long(&mut self, out: &mut impl FnMut(Frame<'_>)) -> usize {
        // Where the cut falls decides whether a `/` later in this line is a value's or the next
        // telegram's start.
        let line = &self.buf[self.line_start.min(self.buf.len())..];
        let in_bracket = line
            .iter()
            .rposition(|&c| matches!(c & 0x7f, b'(' | b')'))
            .is_some_and(|p| line[p] & 0x7f == b'(');
        out(Frame::Rejected(DecodeError::TooLong { limit: self.limit }));
        self.reset();
        self.state = State::Skipping;
        self.in_bracket = in_bracket;
        0
    }

    /// The rest of an overlong telegram's line: skipped up to its end, unless the next telegram
    /// starts in it (bytes were lost, or a meter sent garbage without line ends).
    fn skip_rest(&mut self, raw: u8, out: &mut impl FnMut(Frame<'_>)) -> usize {
        match raw & 0x7f {
            b'/' if !self.in_bracket => {
                // The hunt starts the telegram at this byte.
                self.reset();
                return 0;
            }
            STX => {
                self.reset();
                return 0;
            }
            b'\n' => self.reset(),
            b'(' => self.in_bracket = true,
            b')' => self.in_bracket = false,
            _ => {}
        }
        self.skip(1, out);
        1
    }

    fn trailer(&mut self, raw: u8, out: &mut impl FnMut(Frame<'_>)) -> usize {
        match raw & 0x7f {
            b'\n' => {
                self.buf.push(raw);
                self.finish_trailer(out);
                1
            }
            // The next telegram right after `!`, without a line end: complete this one, then start.
            b'/' => {
                self.finish_trailer(out);
                0
            }
            c if c.is_ascii_hexdigit() || c == b'\r' || c == b' ' => {
                self.buf.push(raw);
                self.high_bits |= raw & 0x80 != 0;
                if self.buf.len() - self.bang > MAX_TRAILER {
                    self.reject_malformed("more than 4 CRC digits after '!'", out);
                }
                1
            }
            _ => {
                self.reject_malformed("unexpected byte after '!'", out);
                1
            }
        }
    }

    fn reject_malformed(&mut self, why: &str, out: &mut impl FnMut(Frame<'_>)) {
        out(Frame::Rejected(DecodeError::Malformed {
            offset: self.buf.len(),
            why: why.to_string(),
        }));
        self.reset();
    }

    /// The `!` line is complete: check the CRC, or wait for ETX, or accept.
    fn finish_trailer(&mut self, out: &mut impl FnMut(Frame<'_>)) {
        let mut digits = 0usize;
        let mut crc = 0u16;
        let mut gap = false;
        for &c in &self.buf[self.bang + 1..] {
            let c = c & 0x7f;
            match hex::nibble(c) {
                Some(d) if !gap => {
                    digits += 1;
                    crc = (crc << 4) | u16::from(d);
                }
                Some(_) => return self.reject_malformed("space inside the CRC", out),
                None => gap |= digits > 0,
            }
        }
        if digits > 4 {
            return self.reject_malformed("more than 4 CRC digits after '!'", out);
        }
        if digits == 0 {
            if self.stx.is_some() {
                self.state = State::AwaitEtx;
            } else {
                self.emit_unchecked(out);
            }
            return;
        }
        let body = &self.buf[..=self.bang];
        let computed = if self.high_bits {
            crc16_arc_7bit(body)
        } else {
            crc16_arc(body)
        };
        if computed == crc || (self.high_bits && crc16_arc(body) == crc) {
            self.checksum_seen = true;
            self.emit_telegram(out);
        } else {
            out(Frame::Rejected(DecodeError::BadCrc {
                expected: crc,
                computed,
            }));
            self.reset();
        }
    }

    fn await_etx(&mut self, raw: u8, out: &mut impl FnMut(Frame<'_>)) -> usize {
        if raw & 0x7f == ETX {
            self.buf.push(raw);
            self.state = State::AwaitBcc;
            1
        } else {
            // No ETX/BCC after the `!` line: a meter without them (accepted unchecked).
            self.emit_unchecked(out);
            0
        }
    }

    fn await_bcc(&mut self, raw: u8, out: &mut impl FnMut(Frame<'_>)) -> usize {
        let start = self.stx.map_or(0, |s| s + 1);
        let computed = bcc(&self.buf[start..]) & 0x7f;
        let got = raw & 0x7f;
        if computed == got {
            self.checksum_seen = true;
            self.emit_telegram(out);
        } else {
            out(Frame::Rejected(DecodeError::BadCrc {
                expected: u16::from(got),
                computed: u16::from(computed),
            }));
            self.reset();
        }
        1
    }

    /// A complete telegram without a checksum: accepted from a meter that never sent one.
    fn emit_unchecked(&mut self, out: &mut impl FnMut(Frame<'_>)) {
        if self.checksum_seen && self.missing_checksum == MissingChecksum::RejectOnceSeen {
            out(Frame::Rejected(DecodeError::MissingCrc {
                bytes: self.buf.len(),
            }));
            self.reset();
        } else {
            self.emit_telegram(out);
        }
    }

    fn emit_telegram(&mut self, out: &mut impl FnMut(Frame<'_>)) {
        let text = &mut self.buf[..self.bang];
        if self.high_bits {
            for b in text.iter_mut() {
                *b &= 0x7f;
            }
        }
        out(Frame::Telegram(text));
        self.reset();
    }
}
