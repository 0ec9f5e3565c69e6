/*!
IEC 62056-21 mode C, natively: the sign-on handshake that community scripts otherwise write by hand
in `>F` (a counter, `sml(1 0 300)`, `sml(1 1 "2F3F210D0A")`, the ACK, `sml(1 0 9600)`).

Tasmota has no native mode C: an `o` meter's request blocks are sent one per period, in turn. So the
opt-in is the definition line Tasmota users already write for a mode C meter: an `o` meter at **300
baud** whose **first request block is `/?!` CR LF** (`2F3F210D0A`). Such a meter gets the whole
handshake; the speed of its readout is what a second block that is an ACK (`06 30 Z 30 0D 0A`,
e.g. `063035300D0A` for 9600) allows, or 300 baud without one. A definition at another speed, or
without the sign-on, is sent block by block as Tasmota does (and a `>F` handshake keeps working).

One cycle, every request period:
1. at 300 baud, send `/?!` CR LF (even parity in bit 7 as for every `o` request, unless `=so2` flag
   0x20);
2. the meter answers its identification line `/XXXZ...` CR LF, where `Z` is the fastest speed it
   offers (`0`..`6`: 300..19200 baud);
3. send the ACK `06 30 Z' 30 0D 0A` for `Z'` = the slower of the meter's `Z` and the script's, then
   switch the line to `Z'` once the ACK has left (a [`FramingChange`]: the link drains first);
4. the readout `STX ... ! CR LF ETX BCC` is framed and checked by the ordinary `o` framer (a bad BCC
   is rejected and counted there); its end, or a silence, ends the cycle and the line goes back to
   300 baud.

A meter that does not answer (asleep, wrong speed, head misaligned) is asked again after a delay that
doubles up to [`NO_ANSWER_BACKOFF_CAP`] ([`crate::backoff`]); each silence is one
[`DecodeError::NoAnswer`], counted in [`crate::decode::DecodeStats::unanswered`].

Sans-IO like the decoders: bytes and time in, transmits and framing changes out.
*/

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::backoff::{Backoff, Retry};
use crate::decode::obis::request::{even_parity, NO_PARITY_FLAG};
use crate::decode::DecodeError;
use crate::script::model::{Decoding, Meter, MeterSource};

/// The sign-on request, as the script writes it (`2F3F210D0A`).
pub const SIGN_ON: &[u8] = b"/?!\r\n";

/// The speed every mode C conversation starts at.
pub const START_BAUD: u32 = 300;

/// The meter must start its identification within 1.5 s (IEC 62056-21 t_r); at 300 baud its ~20
/// bytes take ~0.7 s more. Silence this long while waiting for it is no answer.
pub const IDENT_SILENCE: Duration = Duration::from_millis(2500);

/// Silence this long inside the readout ends the cycle (the standard's inter-character limit is
/// 1.5 s; a switched meter takes up to that long to start at the new speed).
pub const READOUT_SILENCE: Duration = Duration::from_millis(3000);

/// The longest wait between two sign-ons to a meter that keeps not answering.
pub const NO_ANSWER_BACKOFF_CAP: Duration = Duration::from_secs(300);

/// A change of the line's speed, to apply once what was sent before it has left the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingChange {
    pub baud: u32,
}

/// The speed a mode C baud character stands for (`0`..`6`); `None` for mode A/B characters.
pub fn baud_of(z: u8) -> Option<u32> {
    match z {
        b'0'..=b'6' => Some(300 << (z - b'0')),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the next sign-on, due at `next_at`.
    Idle,
    /// `/?!` sent; the identification line is being read.
    AwaitIdent,
    /// The identification line came; the ACK with this baud character is still to be sent.
    Acknowledge(u8),
    /// ACK sent (or none needed): the framer reads the readout.
    Readout,
}

/// The handshake of one mode C meter.
#[derive(Debug, Clone)]
pub struct ModeC {
    parity: bool,
    /// The fastest baud character the script allows (`0`: stay at 300).
    cap: u8,
    period: Duration,
    phase: Phase,
    next_at: Option<Instant>,
    /// When the current cycle's sign-on went out (the period counts from there).
    cycle_start: Option<Instant>,
    /// The last byte, or the last transmit, in the current phase: silences count from here.
    last_activity: Option<Instant>,
    /// The current line of the identification search (bit 7 cleared).
    line: Vec<u8>,
    /// The line's speed as this machine last set it.
    baud: u32,
    framing: Option<FramingChange>,
    retry: Retry,
    errors: VecDeque<DecodeError>,
}

impl ModeC {
    /// The handshake, when the meter's definition asks for it (see the module doc); `None` for any
    /// other meter.
    pub fn for_meter(meter: &Meter) -> Option<ModeC> {
        if !matches!(meter.decoding, Decoding::Obis(_))
            || matches!(meter.source, MeterSource::ModbusTcp { .. })
            || meter.serial.baud != START_BAUD
        {
            return None;
        }
        let blocks = &meter.requests.blocks;
        if blocks.first().map(|b| b.bytes.as_slice()) != Some(SIGN_ON) {
            return None;
        }
        let cap = match blocks.get(1).map(|b| b.bytes.as_slice()) {
            Some([0x06, b'0', z, b'0', b'\r', b'\n']) if baud_of(*z).is_some() => *z,
            _ => b'0',
        };
        let parity = meter
            .options
            .so2_flags
            .is_none_or(|f| f & NO_PARITY_FLAG == 0);
        let period = Duration::from_millis(u64::from(meter.requests.period_ms.max(100)));
        let mut mode_c = ModeC::new(cap, period, parity);
        // A handshake made afresh (`sensor53 r`, a reopened link) cannot know what speed the last
        // one left the line at: it sets 300 baud before its first sign-on.
        mode_c.framing = Some(FramingChange { baud: START_BAUD });
        Some(mode_c)
    }

    /// A handshake allowing baud character `cap`, a sign-on every `period`.
    pub fn new(cap: u8, period: Duration, parity: bool) -> ModeC {
        ModeC {
            parity,
            cap,
            period,
            phase: Phase::Idle,
            next_at: None,
            cycle_start: None,
            last_activity: None,
            line: Vec::new(),
            baud: START_BAUD,
            framing: None,
            retry: Backoff {
                first: period,
                cap: NO_ANSWER_BACKOFF_CAP.max(period),
            }
            .retry(),
            errors: VecDeque::new(),
        }
    }

    fn wire(&self, bytes: &[u8]) -> Vec<u8> {
        if self.parity {
            even_parity(bytes)
        } else {
            bytes.to_vec()
        }
    }

    /// Bytes from the meter, as they came (they also go to the framer, which reads the readout).
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if matches!(self.phase, Phase::AwaitIdent | Phase::Readout) {
            self.last_activity = Some(now);
        }
        if self.phase != Phase::AwaitIdent {
            return;
        }
        for &raw in bytes {
            let b = raw & 0x7f;
            if self.line.is_empty() && b != b'/' {
                continue; // noise before a line start
            }
            self.line.push(b);
            if b == b'\n' {
                self.identification_line(now);
                if self.phase != Phase::AwaitIdent {
                    return;
                }
            } else if self.line.len() > 128 {
                self.line.clear(); // no identification line is that long
            }
        }
    }

    fn identification_line(&mut self, now: Instant) {
        let line = std::mem::take(&mut self.line);
        // Our own sign-on echoed by a half-duplex head, or a line that is no identification
        // (`/`, three letters of the manufacturer, the baud character, something).
        if line.len() < 7 || !line[1..4].iter().all(u8::is_ascii_alphabetic) {
            return;
        }
        let z = line[4];
        self.last_activity = Some(now);
        self.retry.reset();
        self.phase = match baud_of(z) {
            Some(_) => Phase::Acknowledge(z.min(self.cap)),
            // Mode A/B: the meter sends its data unasked (mode B switching by itself is not done).
            None => {
                tracing::debug!(
                    "IEC identification {:?} is not mode C; reading on at {} baud",
                    String::from_utf8_lossy(&line),
                    self.baud
                );
                Phase::Readout
            }
        };
    }

    /// The framer finished a telegram (published or rejected): once the ACK is out, the cycle is
    /// over. Before, it is an older telegram (a readout cut short, rejected when this cycle's
    /// identification line starts the next one), which must not end this cycle.
    pub fn handle_telegram_end(&mut self, now: Instant) {
        if self.phase == Phase::Readout {
            self.end_cycle(now, false);
        }
    }

    fn end_cycle(&mut self, now: Instant, unanswered: bool) {
        self.phase = Phase::Idle;
        self.line.clear();
        self.last_activity = None;
        if self.baud != START_BAUD {
            self.baud = START_BAUD;
            self.framing = Some(FramingChange { baud: START_BAUD });
        }
        let start = self.cycle_start.unwrap_or(now);
        self.next_at = Some(if unanswered {
            now + self.retry.next_delay()
        } else {
            (start + self.period).max(now)
        });
    }

    /// Bytes to send now: the sign-on when due, the ACK once the identification came.
    /// Nothing while a speed change is still to be applied: the sign-on must leave at 300 baud.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.framing.is_some() {
            return None;
        }
        match self.phase {
            Phase::Idle if self.next_at.is_none_or(|t| now >= t) => {
                self.phase = Phase::AwaitIdent;
                self.cycle_start = Some(now);
                self.last_activity = Some(now);
                self.line.clear();
                Some(self.wire(SIGN_ON))
            }
            Phase::Acknowledge(z) => {
                self.phase = Phase::Readout;
                self.last_activity = Some(now);
                let baud = baud_of(z).unwrap_or(START_BAUD);
                if baud != self.baud {
                    self.baud = baud;
                    self.framing = Some(FramingChange { baud });
                }
                Some(self.wire(&[0x06, b'0', z, b'0', b'\r', b'\n']))
            }
            _ => None,
        }
    }

    /// A speed change to apply after what [`ModeC::poll_transmit`] gave has left the port.
    pub fn poll_framing(&mut self) -> Option<FramingChange> {
        self.framing.take()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Idle => self.next_at,
            Phase::AwaitIdent => self.last_activity.map(|t| t + IDENT_SILENCE),
            Phase::Readout => self.last_activity.map(|t| t + READOUT_SILENCE),
            // Due at once: the ACK goes out on the next `poll_transmit`.
            Phase::Acknowledge(_) => self.last_activity,
        }
    }

    /// Time passed: a silence ends the wait for the identification (no answer) or the readout.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(last) = self.last_activity else {
            return;
        };
        match self.phase {
            Phase::AwaitIdent if now >= last + IDENT_SILENCE => {
                let waited = self.cycle_start.map_or(IDENT_SILENCE, |s| now - s);
                self.errors.push_back(DecodeError::NoAnswer {
                    waited_ms: waited.as_millis() as u64,
                    what: "an IEC 62056-21 identification line after /?!",
                });
                self.end_cycle(now, true);
            }
            Phase::Readout if now >= last + READOUT_SILENCE => {
                // A readout cut short is the framer's to report (its silence ends the telegram);
                // here the cycle ends, so the next sign-on is not lost.
                self.end_cycle(now, false);
            }
            _ => {}
        }
    }

    /// A silence the machine counted: one [`DecodeError::NoAnswer`] per unanswered sign-on.
    pub fn poll_error(&mut self) -> Option<DecodeError> {
        self.errors.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn compile(script: &str) -> Meter {
        let compiled = crate::script::compile(script.as_bytes());
        assert!(!compiled.has_errors(), "{:#?}", compiled.diagnostics);
        compiled.script.unwrap().meters.remove(0)
    }

    fn meter(definition: &str) -> Meter {
        compile(&format!(
            ">D\n>B\n>M 1\n{definition}\n1,1-0:1.8.0(@1,E,kWh,e,3\n#\n"
        ))
    }

    #[test]
    fn a_300_baud_sign_on_definition_asks_for_mode_c_and_its_ack_block_sets_the_cap() {
        let m = ModeC::for_meter(&meter("+1,3,o,0,300,M,1,100,2F3F210D0A,063035300D0A")).unwrap();
        assert_eq!((m.cap, m.period), (b'5', PERIOD));
        let m = ModeC::for_meter(&meter("+1,3,o,0,300,M,1,100,2F3F210D0A")).unwrap();
        assert_eq!(m.cap, b'0');
    }

    #[test]
    fn other_definitions_are_sent_block_by_block_as_tasmota_does() {
        for d in [
            "+1,3,o,0,9600,M,1,30,2F3F210D0A,063035310D0A",
            "+1,3,o,0,300,M,1,100,2F3F300D0A",
            "+1,3,o,0,9600,M,1",
            "+1,3,o,0,300,M,1,100,063035300D0A,2F3F210D0A",
        ] {
            assert!(ModeC::for_meter(&meter(d)).is_none(), "{d}");
        }
    }

    #[test]
    fn a_full_cycle_acks_the_slower_speed_switches_and_comes_back_to_300() {
        let t0 = Instant::now();
        let mut m = ModeC::new(b'5', PERIOD, true);
        assert_eq!(m.poll_transmit(t0), Some(even_parity(SIGN_ON)));
        assert_eq!(m.poll_transmit(t0), None);
        // The meter offers 19200 (6); the script allows 9600 (5). Bit 7 is parity, ignored.
        m.handle_bytes(t0 + ms(300), &even_parity(b"/ISK6MT174-0001\r\n"));
        let ack = m.poll_transmit(t0 + ms(900)).unwrap();
        assert_eq!(ack, even_parity(&[0x06, b'0', b'5', b'0', b'\r', b'\n']));
        assert_eq!(m.poll_framing(), Some(FramingChange { baud: 9600 }));
        assert_eq!(m.poll_framing(), None);
        m.handle_telegram_end(t0 + ms(2000));
        assert_eq!(m.poll_framing(), Some(FramingChange { baud: 300 }));
        // The next sign-on comes a period after the last one.
        assert_eq!(m.poll_timeout(), Some(t0 + PERIOD));
        assert_eq!(m.poll_transmit(t0 + PERIOD - ms(1)), None);
        assert_eq!(m.poll_transmit(t0 + PERIOD), Some(even_parity(SIGN_ON)));
    }

    #[test]
    fn a_meter_slower_than_the_cap_gets_its_own_speed_and_cap_0_never_switches() {
        let t0 = Instant::now();
        let mut m = ModeC::new(b'5', PERIOD, false);
        m.poll_transmit(t0);
        m.handle_bytes(t0, b"/ABC3X\r\n");
        assert_eq!(m.poll_transmit(t0).unwrap()[2], b'3');
        assert_eq!(m.poll_framing(), Some(FramingChange { baud: 2400 }));

        let mut m = ModeC::new(b'0', PERIOD, false);
        m.poll_transmit(t0);
        m.handle_bytes(t0, b"/ABC5X\r\n");
        assert_eq!(m.poll_transmit(t0), Some(b"\x06000\r\n".to_vec()));
        assert_eq!(m.poll_framing(), None);
    }

    #[test]
    fn the_echo_of_the_sign_on_is_not_taken_for_the_identification() {
        let t0 = Instant::now();
        let mut m = ModeC::new(b'5', PERIOD, false);
        m.poll_transmit(t0);
        m.handle_bytes(t0, b"/?!\r\n");
        assert_eq!(m.poll_transmit(t0), None);
        m.handle_bytes(t0, b"\x00/LGZ5\\2ZMD\r");
        m.handle_bytes(t0, b"\n");
        assert_eq!(m.poll_transmit(t0).unwrap()[2], b'5');
    }

    #[test]
    fn a_silent_meter_is_counted_and_asked_again_later_and_later() {
        let t0 = Instant::now();
        let mut m = ModeC::new(b'5', Duration::from_secs(1), false);
        let mut now = t0;
        let mut gaps = Vec::new();
        for _ in 0..4 {
            let sent = now;
            assert!(m.poll_transmit(now).is_some());
            now = m.poll_timeout().unwrap();
            assert_eq!(now, sent + IDENT_SILENCE);
            m.handle_timeout(now);
            assert!(matches!(m.poll_error(), Some(DecodeError::NoAnswer { .. })));
            now = m.poll_timeout().unwrap();
            gaps.push(now - sent);
        }
        let s = |n| IDENT_SILENCE + Duration::from_secs(n);
        assert_eq!(gaps, [s(1), s(2), s(4), s(8)]);
        // An answer starts the delays again from the period.
        m.poll_transmit(now);
        m.handle_bytes(now, b"/ABC0X\r\n");
        assert_eq!(m.retry.peek(), Duration::from_secs(1));
    }

    #[test]
    fn a_sign_on_waits_for_the_switch_back_to_300_baud() {
        let t0 = Instant::now();
        let mut m = ModeC::new(b'5', ms(100), false);
        m.poll_transmit(t0);
        m.handle_bytes(t0, b"/ABC5X\r\n");
        m.poll_transmit(t0);
        assert!(m.poll_framing().is_some());
        // The readout never ends: a silence ends the cycle, and the sign-on waits for 300 baud.
        let late = t0 + READOUT_SILENCE;
        m.handle_timeout(late);
        assert!(
            m.poll_error().is_none(),
            "a readout cut short is the framer's"
        );
        assert_eq!(m.poll_transmit(late), None);
        assert_eq!(m.poll_framing(), Some(FramingChange { baud: 300 }));
        assert_eq!(m.poll_transmit(late), Some(SIGN_ON.to_vec()));
    }

    /// A readout `STX body ETX BCC`, with the BCC right or not.
    fn readout(body: &str, good_bcc: bool) -> Vec<u8> {
        let mut out = vec![0x02];
        out.extend_from_slice(body.as_bytes());
        out.push(0x03);
        let bcc = crate::decode::obis::check::bcc(&out[1..]);
        out.push(if good_bcc { bcc } else { bcc ^ 0x55 });
        out
    }

    /// The whole exchange through the `o` decoder: sign-on, identification, ACK, switch, readout.
    fn one_cycle(
        good_bcc: bool,
    ) -> (
        crate::decode::obis::ObisDecoder,
        Vec<crate::decode::DecodeEvent>,
    ) {
        use crate::decode::Decoder;
        let m = meter("+1,3,o,0,300,M,1,100,2F3F210D0A,063035300D0A");
        let mut d = crate::decode::obis::ObisDecoder::new(&m);
        assert!(d.is_mode_c());
        let t0 = Instant::now();
        assert_eq!(
            d.poll_transmit(t0),
            None,
            "not before the line is at 300 baud"
        );
        assert_eq!(d.poll_framing(), Some(FramingChange { baud: 300 }));
        assert_eq!(d.poll_transmit(t0), Some(even_parity(SIGN_ON)));
        d.handle_bytes(t0 + ms(10), &even_parity(b"/?!\r\n")); // the head's echo
        d.handle_bytes(t0 + ms(400), &even_parity(b"/ISK5MT174-0001\r\n"));
        assert_eq!(d.poll_transmit(t0 + ms(400)).unwrap()[2] & 0x7f, b'5');
        assert_eq!(d.poll_framing(), Some(FramingChange { baud: 9600 }));
        let data = readout("1-0:1.8.0(001234.567*kWh)\r\n!\r\n", good_bcc);
        d.handle_bytes(t0 + ms(1500), &even_parity(&data));
        let events = std::iter::from_fn(|| d.poll_event()).collect();
        assert_eq!(
            d.poll_framing(),
            Some(FramingChange { baud: 300 }),
            "back to 300 after the readout"
        );
        (d, events)
    }

    #[test]
    fn a_mode_c_readout_with_a_good_bcc_publishes_its_values() {
        use crate::decode::{DecodeEvent, Value};
        let (_, events) = one_cycle(true);
        let values: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                DecodeEvent::Telegram(t) => Some(t.readings[0].value.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(values, [Value::Number(1234.567)]);
    }

    #[test]
    fn a_mode_c_readout_with_a_bad_bcc_publishes_nothing_and_is_counted() {
        use crate::decode::{DecodeEvent, Decoder};
        let (d, events) = one_cycle(false);
        assert!(
            !events.iter().any(|e| matches!(e, DecodeEvent::Telegram(_))),
            "{events:?}"
        );
        assert_eq!(d.stats().crc_errors, 1);
    }

    #[test]
    fn a_silent_meter_is_one_no_answer_event_through_the_decoder() {
        use crate::decode::{DecodeError, DecodeEvent, Decoder};
        let m = meter("+1,3,o,0,300,M,1,100,2F3F210D0A");
        let mut d = crate::decode::obis::ObisDecoder::new(&m);
        let t0 = Instant::now();
        d.poll_framing();
        assert!(d.poll_transmit(t0).is_some());
        let deadline = d.poll_timeout().unwrap();
        d.handle_timeout(deadline);
        assert!(matches!(
            d.poll_event(),
            Some(DecodeEvent::Error(DecodeError::NoAnswer { .. }))
        ));
        assert_eq!((d.stats().unanswered, d.stats().rejections()), (1, 0));
    }

    #[test]
    fn a_cut_readout_rejected_when_the_next_identification_comes_does_not_end_the_new_cycle() {
        use crate::decode::{DecodeError, DecodeEvent, Decoder};
        let m = meter("+1,3,o,0,300,M,1,100,2F3F210D0A,063035300D0A");
        let mut d = crate::decode::obis::ObisDecoder::new(&m);
        let t0 = Instant::now();
        d.poll_framing();
        d.poll_transmit(t0);
        d.handle_bytes(t0, b"/ISK5MT174\r\n");
        d.poll_transmit(t0);
        d.poll_framing();
        // The readout stops half way; the cycle ends on the silence.
        d.handle_bytes(t0 + ms(500), b"\x021-0:1.8.0(0012.5*kWh)\r\n");
        d.handle_timeout(t0 + ms(500) + READOUT_SILENCE);
        assert_eq!(d.poll_framing(), Some(FramingChange { baud: 300 }));
        let next = t0 + PERIOD;
        assert!(d.poll_transmit(next).is_some());
        // The next identification rejects the cut readout, and must still be acknowledged.
        d.handle_bytes(next + ms(300), b"/ISK5MT174\r\n");
        let events: Vec<_> = std::iter::from_fn(|| d.poll_event()).collect();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, DecodeEvent::Error(DecodeError::Truncated { .. }))),
            "{events:?}"
        );
        assert_eq!(d.poll_transmit(next + ms(300)).map(|a| a[0]), Some(0x06));
    }

    #[test]
    fn a_mode_a_or_b_identification_gets_no_ack_and_its_data_ends_the_cycle() {
        let t0 = Instant::now();
        let mut m = ModeC::new(b'5', PERIOD, false);
        m.poll_transmit(t0);
        m.handle_bytes(t0, b"/ABCEX\r\n");
        assert_eq!(m.poll_transmit(t0), None, "no ACK");
        assert_eq!(m.poll_framing(), None, "no switch");
        m.handle_telegram_end(t0 + ms(500));
        assert_eq!(m.poll_timeout(), Some(t0 + PERIOD));
    }

    proptest::proptest! {
        /// Whatever the meter sends, in whatever chunks and with whatever pauses, the handshake
        /// never panics, never leaves the line at another speed when it signs on, and keeps asking.
        #[test]
        fn any_bytes_at_any_pace_keep_the_handshake_going(
            steps in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), 0u64..4000),
                1..40,
            ),
            ident in proptest::prelude::any::<bool>(),
        ) {
            use crate::decode::Decoder;
            let m = meter("+1,3,o,0,300,M,1,10,2F3F210D0A,063035300D0A");
            let mut d = crate::decode::obis::ObisDecoder::new(&m);
            let mut now = Instant::now();
            let mut baud = 9600; // unknown to a fresh handshake
            for (bytes, pause) in steps {
                while let Some(sent) = d.poll_transmit(now) {
                    if sent == even_parity(SIGN_ON) {
                        proptest::prop_assert_eq!(baud, 300);
                        if ident {
                            d.handle_bytes(now, &even_parity(b"/ABC5X\r\n"));
                        }
                    }
                    if let Some(f) = d.poll_framing() {
                        baud = f.baud;
                    }
                }
                if let Some(f) = d.poll_framing() {
                    baud = f.baud;
                    continue;
                }
                d.handle_bytes(now, &bytes);
                while d.poll_event().is_some() {}
                now += ms(pause);
                if d.poll_timeout().is_some_and(|t| t <= now) {
                    d.handle_timeout(now);
                }
            }
            // Driven as the meter task drives it, waiting out what it waits for, the handshake
            // always signs on again, at 300 baud.
            let mut signed_on_again = false;
            for _ in 0..10 {
                while let Some(sent) = d.poll_transmit(now) {
                    if sent == even_parity(SIGN_ON) {
                        proptest::prop_assert_eq!(baud, 300);
                        signed_on_again = true;
                    }
                }
                if let Some(f) = d.poll_framing() {
                    baud = f.baud;
                    continue;
                }
                if signed_on_again {
                    break;
                }
                if let Some(t) = d.poll_timeout() {
                    now = now.max(t);
                    d.handle_timeout(now);
                }
            }
            proptest::prop_assert!(signed_on_again);
        }
    }
}
