/*!
Wired M-Bus (EN 13757-2/-3): long frames (`68 L L 68 C A CI ... CS 16`) and the data records in them.

Tasmota has no M-Bus decoder: M-Bus meters run as `r` scripts whose metric lines match the raw
bytes of a record (`0C06bcd8` is "DIF 0C, VIF 06, 8 BCD digits"). This module serves that path
twice: the `r`/`R` decoder asks [`check_long_frame`] whether a window holds a good frame before any
value from it is published, and `sml decode --explain` walks the records ([`records`]) to print,
for a meter nobody has scripted yet, each record's offset, meaning, value and a ready metric line.

Written here rather than taken from the `m-bus-parser` crate (MIT, 0.x): the explain output needs
every record's byte offset and the exact Tasmota extractor for its data field, which that crate's
record type does not carry, and it splits into four crates (with a wireless layer) for what is
here a few hundred lines. Sans-IO, no allocation per byte, fuzzed (`fuzz/fuzz_targets/mbus.rs`).
*/

pub mod explain;
mod records;

pub use explain::explain;
pub use records::{records, DataField, Header, Record, RecordValue, Records};

/// Why bytes that start like a long frame are not a good one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("M-Bus frame needs {needed} bytes, {have} arrived")]
    Truncated { needed: usize, have: usize },
    #[error("M-Bus frame length bytes differ ({first:02X} {second:02X})")]
    LengthMismatch { first: u8, second: u8 },
    #[error("M-Bus frame length {len} is shorter than C, A and CI")]
    TooShort { len: u8 },
    #[error("M-Bus checksum at byte {offset}: frame says {expected:02X}, computed {computed:02X}")]
    BadChecksum {
        offset: usize,
        expected: u8,
        computed: u8,
    },
    #[error("M-Bus frame has {found:02X} at byte {offset} where the stop byte 16 belongs")]
    NoStop { offset: usize, found: u8 },
}

/// The start byte of a long (and control) frame.
pub const LONG_START: u8 = 0x68;
/// The stop byte of every frame.
pub const STOP: u8 = 0x16;

/// Does `bytes` start with a long-frame header `68 L L 68`? `None` while fewer than four bytes are
/// there to tell; `Some(total length)` when it does (the frame is L + 6 bytes).
pub fn long_header(bytes: &[u8]) -> Option<Result<usize, ()>> {
    if bytes.first() != Some(&LONG_START) {
        return Some(Err(()));
    }
    if bytes.len() < 4 {
        return None;
    }
    if bytes[1] == bytes[2] && bytes[3] == LONG_START && bytes[1] >= 3 {
        Some(Ok(usize::from(bytes[1]) + 6))
    } else {
        Some(Err(()))
    }
}

/// Check the long frame at the start of `bytes` (length, checksum over C..data, stop byte); the
/// frame's bytes when good.
pub fn check_long_frame(bytes: &[u8]) -> Result<&[u8], FrameError> {
    let have = bytes.len();
    if have < 4 {
        return Err(FrameError::Truncated { needed: 4, have });
    }
    if bytes[1] != bytes[2] {
        return Err(FrameError::LengthMismatch {
            first: bytes[1],
            second: bytes[2],
        });
    }
    let len = bytes[1];
    if len < 3 {
        return Err(FrameError::TooShort { len });
    }
    let total = usize::from(len) + 6;
    if have < total {
        return Err(FrameError::Truncated {
            needed: total,
            have,
        });
    }
    let user = &bytes[4..4 + usize::from(len)];
    let computed = user.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    let cs_at = 4 + usize::from(len);
    if bytes[cs_at] != computed {
        return Err(FrameError::BadChecksum {
            offset: cs_at,
            expected: bytes[cs_at],
            computed,
        });
    }
    if bytes[cs_at + 1] != STOP {
        return Err(FrameError::NoStop {
            offset: cs_at + 1,
            found: bytes[cs_at + 1],
        });
    }
    Ok(&bytes[..total])
}

/// Build a long frame around `c a ci` + `payload` (for simulators and tests).
pub fn long_frame(c: u8, a: u8, ci: u8, payload: &[u8]) -> Vec<u8> {
    let mut user = vec![c, a, ci];
    user.extend_from_slice(payload);
    let len = u8::try_from(user.len()).expect("an M-Bus long frame holds at most 255 bytes");
    let cs = user.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    let mut f = vec![LONG_START, len, len, LONG_START];
    f.extend_from_slice(&user);
    f.extend_from_slice(&[cs, STOP]);
    f
}

#[cfg(test)]
mod tests;
