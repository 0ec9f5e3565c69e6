/*!
The SML transport layer (version 1): finding frames in a byte stream, undoing the escaping, checking
the CRC. Nothing here knows what an SML message is.

A frame on the wire:

```text
1b1b1b1b 01010101   start sequence
...                 data in 4-byte words; a data word 1b1b1b1b is sent twice
00..                0 to 3 padding bytes, so the data fills whole words
1b1b1b1b 1a PP CC CC end sequence: PP = number of padding bytes, CCCC = CRC-16 low byte first
```

Escape sequences are word-aligned, counted from the start sequence: this decoder reads the data as
words, so an escaped `1b1b1b1b` and an end sequence can never be confused with bytes that merely look
like one (sml-rs reads byte by byte and has to repair that case after the fact). A start sequence
that arrives off the word grid while a frame is open means bytes were lost: the open frame is
rejected and the new one is taken. Every state is bounded: a frame longer than [`MAX_FRAME_BYTES`]
is dropped (a start sequence that began just before the cut still starts the next frame), and
garbage is only counted.
*/

use super::crc::{Crc16, CrcVariant};
use crate::decode::DecodeError;

pub const START: [u8; 8] = [0x1b, 0x1b, 0x1b, 0x1b, 0x01, 0x01, 0x01, 0x01];
const ESCAPE: [u8; 4] = [0x1b; 4];
const RESTART: [u8; 4] = [0x01; 4];
/// Largest frame (on the wire) we hold; real meters send 200..1,000 bytes.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Garbage is reported at least this often, so a link that only sends noise still shows it.
pub const DISCARD_REPORT_BYTES: usize = 64 * 1024;

/// What the frame decoder found.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameEvent {
    /// A complete frame whose CRC verified with `crc`; its data (padding removed) goes with it.
    Frame { crc: CrcVariant },
    /// Bytes skipped while looking for a start sequence.
    Discarded(usize),
    /// A frame that was found but is not usable.
    Rejected(DecodeError),
}

/// Which CRCs a frame may carry.
#[derive(Debug, Clone, PartialEq)]
pub enum CrcPolicy {
    /// No `=soC`: CRC-16/X-25 as SML specifies; X-25 byte-swapped and KERMIT (either byte order),
    /// which some meters send, are accepted too and reported as the variant that verified.
    Tolerant,
    /// `=soC,..,0..11`: only this variant.
    Only(CrcVariant),
    /// `=soC,..,15`: Tasmota's auto-detect: any of the twelve variants until one has verified 4 frames in
    /// a row, then only that one, until 4 frames in a row fail.
    Auto {
        locked: Option<CrcVariant>,
        streak: Option<(CrcVariant, u8)>,
        failures: u8,
    },
}

impl CrcPolicy {
    /// The policy for a meter's `=soC` crc mode (`None`: no `=soC` line).
    pub fn for_mode(mode: Option<u8>) -> CrcPolicy {
        match mode {
            None => CrcPolicy::Tolerant,
            Some(m) => match CrcVariant::from_tasmota_mode(m) {
                Some(v) => CrcPolicy::Only(v),
                None => CrcPolicy::Auto {
                    locked: None,
                    streak: None,
                    failures: 0,
                },
            },
        }
    }

    /// The variant that verifies `data` against the `sent` bytes, if this policy allows one.
    fn check(&mut self, data: &[u8], sent: [u8; 2]) -> Option<CrcVariant> {
        const TOLERATED: [CrcVariant; 4] = [
            CrcVariant::SML,
            CrcVariant {
                algorithm: Crc16::X25,
                low_byte_first: false,
            },
            CrcVariant {
                algorithm: Crc16::Kermit,
                low_byte_first: true,
            },
            CrcVariant {
                algorithm: Crc16::Kermit,
                low_byte_first: false,
            },
        ];
        match self {
            CrcPolicy::Tolerant => TOLERATED.into_iter().find(|v| v.verifies(data, sent)),
            CrcPolicy::Only(v) => v.verifies(data, sent).then_some(*v),
            CrcPolicy::Auto {
                locked,
                streak,
                failures,
            } => {
                let found = match locked {
                    Some(v) => v.verifies(data, sent).then_some(*v),
                    None => (0..12)
                        .filter_map(CrcVariant::from_tasmota_mode)
                        .find(|v| v.verifies(data, sent)),
                };
                match found {
                    Some(v) => {
                        *failures = 0;
                        let n = match streak {
                            Some((s, n)) if *s == v => *n + 1,
                            _ => 1,
                        };
                        *streak = Some((v, n));
                        if n >= 4 {
                            *locked = Some(v);
                        }
                    }
                    None => {
                        *streak = None;
                        *failures += 1;
                        if *failures >= 4 {
                            *locked = None;
                            *failures = 0;
                        }
                    }
                }
                found
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the start sequence; `matched` bytes of it seen so far.
    Hunting { matched: u8 },
    /// Inside a frame: collecting a word; the previous word was the escape `1b1b1b1b`.
    InFrame { after_escape: bool },
}

/// Streaming transport decoder: push bytes, get [`FrameEvent`]s.
pub struct FrameDecoder {
    state: State,
    policy: CrcPolicy,
    /// The frame as it arrived, start sequence included (the CRC covers these bytes).
    raw: Vec<u8>,
    /// The unescaped data of the frame so far.
    payload: Vec<u8>,
    /// Bytes skipped while hunting and not reported yet.
    discarded: usize,
}

impl FrameDecoder {
    pub fn new(policy: CrcPolicy) -> FrameDecoder {
        FrameDecoder {
            state: State::Hunting { matched: 0 },
            policy,
            raw: Vec::with_capacity(1024),
            payload: Vec::with_capacity(1024),
            discarded: 0,
        }
    }

    /// Take bytes as they came; `sink` gets each event in stream order, with the frame's data for
    /// [`FrameEvent::Frame`] (empty for the others).
    pub fn push(&mut self, bytes: &[u8], sink: &mut impl FnMut(FrameEvent, &[u8])) {
        self.feed(bytes, sink, true);
    }

    fn feed(
        &mut self,
        mut bytes: &[u8],
        sink: &mut impl FnMut(FrameEvent, &[u8]),
        may_replay: bool,
    ) {
        while !bytes.is_empty() {
            let (used, event) = self.step(bytes);
            bytes = &bytes[used..];
            let Some(event) = event else { continue };
            let replay = match event {
                FrameEvent::Rejected(
                    DecodeError::BadCrc { .. } | DecodeError::Malformed { .. },
                ) if may_replay => self.hidden_start(),
                _ => None,
            };
            match event {
                FrameEvent::Frame { .. } => sink(event, &self.payload),
                _ => sink(event, &[]),
            }
            if let Some(replay) = replay {
                // Once only (`may_replay` false), so hostile input costs at most twice its length.
                self.state = State::Hunting { matched: 0 };
                self.discarded = 0;
                self.feed(&replay, sink, false);
            }
        }
    }

    /// After a rejected frame: the bytes from a start sequence inside it, if there is one. Lost bytes
    /// can put the next frame's start sequence right after an escape word, where it reads as
    /// escaped data; the frame then ends with the next frame's end sequence and fails its CRC.
    fn hidden_start(&self) -> Option<Vec<u8>> {
        let k = self
            .raw
            .get(1..)?
            .windows(START.len())
            .position(|w| w == START)?
            + 1;
        Some(self.raw[k..].to_vec())
    }

    /// Consume bytes until one event is ready; returns how many bytes were used and the event.
    fn step(&mut self, bytes: &[u8]) -> (usize, Option<FrameEvent>) {
        let mut used = 0;
        while used < bytes.len() {
            let event = match self.state {
                State::Hunting { .. } => {
                    // Fast path through garbage: skip ahead to the next 0x1b when nothing is matched.
                    if self.state == (State::Hunting { matched: 0 }) && bytes[used] != 0x1b {
                        let room = DISCARD_REPORT_BYTES - self.discarded;
                        let rest = &bytes[used..];
                        let run = rest
                            .iter()
                            .take(room)
                            .position(|&b| b == 0x1b)
                            .unwrap_or(rest.len().min(room));
                        used += run;
                        self.discarded += run;
                        if self.discarded >= DISCARD_REPORT_BYTES {
                            return (
                                used,
                                Some(FrameEvent::Discarded(std::mem::take(&mut self.discarded))),
                            );
                        }
                        continue;
                    }
                    let b = bytes[used];
                    used += 1;
                    self.hunt(b)
                }
                State::InFrame { after_escape } => {
                    if !after_escape {
                        let words = self.plain_words(&bytes[used..]);
                        if words > 0 {
                            let run = &bytes[used..used + 4 * words];
                            self.raw.extend_from_slice(run);
                            self.payload.extend_from_slice(run);
                            used += run.len();
                            continue;
                        }
                    }
                    let b = bytes[used];
                    used += 1;
                    self.in_frame(b, after_escape)
                }
            };
            if event.is_some() {
                return (used, event);
            }
        }
        (used, None)
    }

    /// The input ended: report the half frame or the garbage still held.
    pub fn finish(&mut self) -> Option<FrameEvent> {
        let state = std::mem::replace(&mut self.state, State::Hunting { matched: 0 });
        match state {
            State::InFrame { .. } => {
                let bytes = self.raw.len();
                self.discarded = 0;
                Some(FrameEvent::Rejected(DecodeError::Truncated {
                    bytes,
                    why: "input ended inside an SML frame",
                }))
            }
            State::Hunting { matched } => {
                let n = std::mem::take(&mut self.discarded) + usize::from(matched);
                (n > 0).then_some(FrameEvent::Discarded(n))
            }
        }
    }

    fn hunt(&mut self, b: u8) -> Option<FrameEvent> {
        let State::Hunting { matched } = self.state else {
            unreachable!("hunt is only called while hunting")
        };
        let matched = if b == START[usize::from(matched)] {
            matched + 1
        } else if b == 0x1b {
            // `b` may begin (or continue) a start sequence; drop what no longer fits.
            if matched == 4 {
                self.discarded += 1;
                4
            } else {
                self.discarded += usize::from(matched);
                1
            }
        } else {
            self.discarded += usize::from(matched) + 1;
            0
        };
        if usize::from(matched) == START.len() {
            self.begin_frame();
            let n = std::mem::take(&mut self.discarded);
            return (n > 0).then_some(FrameEvent::Discarded(n));
        }
        self.state = State::Hunting { matched };
        if self.discarded >= DISCARD_REPORT_BYTES {
            return Some(FrameEvent::Discarded(std::mem::take(&mut self.discarded)));
        }
        None
    }

    fn begin_frame(&mut self) {
        self.raw.clear();
        self.raw.extend_from_slice(&START);
        self.payload.clear();
        self.state = State::InFrame {
            after_escape: false,
        };
    }

    /// Fast path: how many whole data words at the start of `bytes` can be taken as they are. That is
    /// the case on the word grid, for words without `1b`, when the word before had no `1b` either (an
    /// off-grid start sequence needs `1b` bytes in the word it ends in or the one before).
    fn plain_words(&self, bytes: &[u8]) -> usize {
        let len = self.raw.len();
        if len % 4 != 0 || self.raw[len - 4..].contains(&0x1b) {
            return 0;
        }
        let room = (MAX_FRAME_BYTES.saturating_sub(len) / 4).min(bytes.len() / 4);
        let candidate = &bytes[..4 * room];
        candidate
            .iter()
            .position(|&b| b == 0x1b)
            .unwrap_or(candidate.len())
            / 4
    }

    /// Reject the open frame, then hunt through its last `n` bytes again: when bytes were lost, the
    /// next start sequence may already have begun there. Those bytes belong to the rejected frame,
    /// so they are not counted as discarded too.
    fn reject_and_rehunt(&mut self, n: usize, error: DecodeError) -> Option<FrameEvent> {
        self.state = State::Hunting { matched: 0 };
        let mut tail = [0u8; 8];
        let n = n.min(8);
        tail[..n].copy_from_slice(&self.raw[self.raw.len() - n..]);
        for &b in &tail[..n] {
            // `n` < 8 bytes can never complete a start sequence here, so no frame begins.
            let _ = self.hunt(b);
        }
        self.discarded = 0;
        Some(FrameEvent::Rejected(error))
    }

    fn in_frame(&mut self, b: u8, after_escape: bool) -> Option<FrameEvent> {
        self.raw.push(b);
        let len = self.raw.len();
        if len % 4 != 0 {
            // Off the word grid: only a start sequence matters here (bytes were lost before it).
            if b == 0x01 && self.raw.ends_with(&START) {
                let bytes = len - START.len();
                self.begin_frame();
                return Some(FrameEvent::Rejected(DecodeError::Truncated {
                    bytes,
                    why: "a start sequence came before the end sequence (bytes lost?)",
                }));
            }
            if len > MAX_FRAME_BYTES {
                return self.too_long();
            }
            return None;
        }
        let word: [u8; 4] = self.raw[len - 4..].try_into().expect("4 bytes");
        if !after_escape {
            if word == ESCAPE {
                self.state = State::InFrame { after_escape: true };
            } else {
                self.payload.extend_from_slice(&word);
            }
        } else if word == ESCAPE {
            self.payload.extend_from_slice(&ESCAPE);
            self.state = State::InFrame {
                after_escape: false,
            };
        } else if word == RESTART {
            let bytes = len - START.len();
            self.begin_frame();
            return Some(FrameEvent::Rejected(DecodeError::Truncated {
                bytes,
                why: "a start sequence came before the end sequence",
            }));
        } else if word[0] == 0x1a {
            return self.end_frame(word[1], [word[2], word[3]]);
        } else {
            let error = DecodeError::Malformed {
                offset: len - 8,
                why: format!(
                    "unknown escape sequence 1b1b1b1b {:02x}{:02x}{:02x}{:02x}",
                    word[0], word[1], word[2], word[3]
                ),
            };
            return self.reject_and_rehunt(8, error);
        }
        if len > MAX_FRAME_BYTES {
            return self.too_long();
        }
        None
    }

    /// Drop a frame that passed [`MAX_FRAME_BYTES`]. The next frame's start sequence may already
    /// have begun in its last 7 bytes (an escape word on the grid, or bytes off it): hunt through
    /// them again, or that frame would be lost too.
    fn too_long(&mut self) -> Option<FrameEvent> {
        self.reject_and_rehunt(
            START.len() - 1,
            DecodeError::TooLong {
                limit: MAX_FRAME_BYTES,
            },
        )
    }

    fn end_frame(&mut self, padding: u8, sent: [u8; 2]) -> Option<FrameEvent> {
        let covered = &self.raw[..self.raw.len() - 2];
        let Some(crc) = self.policy.check(covered, sent) else {
            let computed = Crc16::X25.checksum(covered);
            return self.reject_and_rehunt(
                3,
                DecodeError::BadCrc {
                    expected: u16::from_le_bytes(sent),
                    computed,
                },
            );
        };
        if padding > 3 || usize::from(padding) > self.payload.len() {
            let offset = self.raw.len() - 3;
            let error = DecodeError::Malformed {
                offset,
                why: format!("end sequence claims {padding} padding bytes"),
            };
            return self.reject_and_rehunt(3, error);
        }
        self.payload
            .truncate(self.payload.len() - usize::from(padding));
        self.state = State::Hunting { matched: 0 };
        Some(FrameEvent::Frame { crc })
    }
}

/// Build a transport frame around `data` (escaping, padding, X-25 CRC): for tests, fuzzing and fixtures.
pub fn encode(data: &[u8]) -> Vec<u8> {
    encode_with(data, CrcVariant::SML)
}

/// [`encode`] with another CRC variant (to test what meters get wrong).
pub fn encode_with(data: &[u8], crc: CrcVariant) -> Vec<u8> {
    let padding = (4 - data.len() % 4) % 4;
    let mut padded = data.to_vec();
    padded.resize(data.len() + padding, 0);
    let mut out = START.to_vec();
    for word in padded.chunks(4) {
        if word == ESCAPE {
            out.extend_from_slice(&ESCAPE);
        }
        out.extend_from_slice(word);
    }
    out.extend_from_slice(&ESCAPE);
    out.extend_from_slice(&[0x1a, padding as u8]);
    let value = crc.algorithm.checksum(&out);
    out.extend_from_slice(&if crc.low_byte_first {
        value.to_le_bytes()
    } else {
        value.to_be_bytes()
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(decoder: &mut FrameDecoder, bytes: &[u8]) -> Vec<(FrameEvent, Vec<u8>)> {
        let mut out = Vec::new();
        decoder.push(bytes, &mut |ev, payload| out.push((ev, payload.to_vec())));
        if let Some(ev) = decoder.finish() {
            out.push((ev, Vec::new()));
        }
        out
    }

    fn frames(bytes: &[u8]) -> Vec<(FrameEvent, Vec<u8>)> {
        run(&mut FrameDecoder::new(CrcPolicy::Tolerant), bytes)
    }

    #[test]
    fn a_frame_round_trips_with_padding_removed() {
        for len in 0..9 {
            let data: Vec<u8> = (1..=len).collect();
            let got = frames(&encode(&data));
            assert_eq!(
                got,
                vec![(
                    FrameEvent::Frame {
                        crc: CrcVariant::SML
                    },
                    data
                )]
            );
        }
    }

    #[test]
    fn an_escaped_escape_word_is_data() {
        let data = [
            0x76, 0x1b, 0x1b, 0x1b, 0x1b, 0x1b, 0x1b, 0x1b, 0x1b, 0x1a, 0x02, 0x02, 0x02, 0x00,
        ];
        // Words: 761b1b1b 1b1b1b1b 1b1a0202 0200...: only the second is an aligned escape word, and
        // the unaligned `1b1b1b1b 1a` after it is data, not an end sequence.
        let wire = encode(&data);
        assert_eq!(
            &wire[8..20],
            &[0x76, 0x1b, 0x1b, 0x1b, 0x1b, 0x1b, 0x1b, 0x1b, 0x1b, 0x1b, 0x1b, 0x1b]
        );
        assert_eq!(
            frames(&wire),
            vec![(
                FrameEvent::Frame {
                    crc: CrcVariant::SML
                },
                data.to_vec()
            )]
        );
    }

    #[test]
    fn data_ending_in_escape_bytes_before_the_end_sequence_is_kept() {
        // The case sml-rs repairs: data `..1b1b` right before `1b1b1b1b 1a..`.
        let data = [0x12, 0x34, 0x1b, 0x1b];
        assert_eq!(
            frames(&encode(&data)),
            vec![(
                FrameEvent::Frame {
                    crc: CrcVariant::SML
                },
                data.to_vec()
            )]
        );
    }

    #[test]
    fn garbage_before_a_frame_is_reported_then_the_frame() {
        let mut bytes = vec![0x01, 0x1b, 0x1b, 0x02, 0x1b, 0x1b, 0x1b, 0x1b, 0x01, 0x1b];
        bytes.extend(encode(&[0x76, 0x05]));
        let got = frames(&bytes);
        assert_eq!(got[0].0, FrameEvent::Discarded(10));
        assert_eq!(
            got[1].0,
            FrameEvent::Frame {
                crc: CrcVariant::SML
            }
        );
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn a_bad_crc_rejects_the_frame() {
        let mut wire = encode(&[0x76, 0x05, 0x01, 0x02]);
        wire[9] ^= 0x40;
        let got = frames(&wire);
        assert!(
            matches!(got[0].0, FrameEvent::Rejected(DecodeError::BadCrc { .. })),
            "{got:?}"
        );
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn swapped_and_kermit_crcs_are_tolerated_by_default_and_named() {
        for v in [
            CrcVariant {
                algorithm: Crc16::X25,
                low_byte_first: false,
            },
            CrcVariant {
                algorithm: Crc16::Kermit,
                low_byte_first: true,
            },
            CrcVariant {
                algorithm: Crc16::Kermit,
                low_byte_first: false,
            },
        ] {
            let got = frames(&encode_with(&[0x76, 0x05, 0x01], v));
            assert_eq!(got[0].0, FrameEvent::Frame { crc: v });
        }
    }

    #[test]
    fn a_fixed_soc_mode_accepts_only_its_variant() {
        let kermit = CrcVariant::from_tasmota_mode(2).unwrap();
        let mut d = FrameDecoder::new(CrcPolicy::for_mode(Some(2)));
        assert_eq!(
            run(&mut d, &encode_with(&[1, 2, 3], kermit))[0].0,
            FrameEvent::Frame { crc: kermit }
        );
        assert!(matches!(
            run(&mut d, &encode(&[1, 2, 3]))[0].0,
            FrameEvent::Rejected(DecodeError::BadCrc { .. })
        ));
    }

    #[test]
    fn auto_mode_locks_onto_a_variant_after_four_good_frames() {
        let modbus = CrcVariant::from_tasmota_mode(3).unwrap();
        let mut d = FrameDecoder::new(CrcPolicy::for_mode(Some(15)));
        assert_eq!(
            run(&mut d, &encode(&[1]))[0].0,
            FrameEvent::Frame {
                crc: CrcVariant::SML
            }
        );
        for _ in 0..4 {
            assert_eq!(
                run(&mut d, &encode_with(&[1, 2], modbus))[0].0,
                FrameEvent::Frame { crc: modbus }
            );
        }
        assert!(matches!(
            run(&mut d, &encode(&[1]))[0].0,
            FrameEvent::Rejected(DecodeError::BadCrc { .. })
        ));
    }

    #[test]
    fn a_frame_cut_anywhere_is_rejected_and_the_next_frame_still_decodes() {
        let good = encode(&[0x76, 0x05, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07]);
        for cut in 1..good.len() {
            let mut bytes = good[..cut].to_vec();
            bytes.extend_from_slice(&good);
            let got = frames(&bytes);
            let frames_ok = got
                .iter()
                .filter(|(e, _)| matches!(e, FrameEvent::Frame { .. }))
                .count();
            assert_eq!(frames_ok, 1, "cut at {cut}: {got:?}");
            assert!(
                matches!(got.last().unwrap().0, FrameEvent::Frame { .. }),
                "cut at {cut}: {got:?}"
            );
            if cut > START.len() {
                assert!(
                    matches!(got[0].0, FrameEvent::Rejected(_)),
                    "cut at {cut}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn an_unknown_escape_rejects_and_the_next_frame_still_decodes() {
        let mut bytes = START.to_vec();
        bytes.extend_from_slice(&[
            0x76, 0, 0, 0, 0x1b, 0x1b, 0x1b, 0x1b, 0x55, 0x55, 0x55, 0x55,
        ]);
        bytes.extend(encode(&[9]));
        let got = frames(&bytes);
        assert!(
            matches!(
                got[0].0,
                FrameEvent::Rejected(DecodeError::Malformed { .. })
            ),
            "{got:?}"
        );
        assert_eq!(
            got[1],
            (
                FrameEvent::Frame {
                    crc: CrcVariant::SML
                },
                vec![9]
            )
        );
    }

    #[test]
    fn a_frame_that_never_ends_is_dropped_at_the_cap() {
        let mut bytes = START.to_vec();
        bytes.resize(MAX_FRAME_BYTES + 100, 0x42);
        let got = frames(&bytes);
        assert_eq!(
            got[0].0,
            FrameEvent::Rejected(DecodeError::TooLong {
                limit: MAX_FRAME_BYTES
            })
        );
        let skipped: usize = got[1..]
            .iter()
            .map(|(e, _)| {
                if let FrameEvent::Discarded(n) = e {
                    *n
                } else {
                    0
                }
            })
            .sum();
        assert!(skipped > 0);
    }

    #[test]
    fn a_half_frame_at_the_end_of_input_is_truncated() {
        let wire = encode(&[1, 2, 3, 4, 5]);
        let got = frames(&wire[..wire.len() - 5]);
        assert!(matches!(
            got[0].0,
            FrameEvent::Rejected(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn noise_is_reported_in_bounded_chunks() {
        let noise: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let got = frames(&noise);
        let total: usize = got
            .iter()
            .map(|(e, _)| {
                if let FrameEvent::Discarded(n) = e {
                    *n
                } else {
                    0
                }
            })
            .sum();
        assert_eq!(total, noise.len());
        assert!(got
            .iter()
            .all(|(e, _)| matches!(e, FrameEvent::Discarded(n) if *n <= DISCARD_REPORT_BYTES)));
    }
}
