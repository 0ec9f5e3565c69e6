/*!
The byte-pattern reader shared by every binary meter type (`m`/`M` Modbus, `r`/`R` raw, `k` Kamstrup,
`e` eBus, `C` CAN, `p` PZEM): a metric line's mask (`01 04 04 UUuuUUuu`) laid over one checked frame.

It knows no protocol: the protocol decoder finds and checks a frame, then asks this module what each
metric line reads from it. Kept apart so each binary decoder does not grow its own copy of the
extractors, and so the extractors are tested once, against Tasmota's byte orders:

- `uuUU`/`ssSS` are little endian; `u32`/`uuUUuuUU` and `u64` swap the two bytes of each 16-bit word
  (not a full little-endian read: Tasmota reads `cp[1] cp[0] cp[3] cp[2]`); a trailing `s` after a
  32-bit mask swaps the two words.
- `FFffFFff` is a big-endian float with its two words swapped (`cp[2] cp[3] cp[0] cp[1]`).
- `bcdN` reads N digits, least significant byte first, high nibble the tens of each byte (M-Bus
  order); a nibble above 9 is no number, so nothing is read (Tasmota would add it in as 10..15).
- `kstr` reads a Kamstrup register record without moving on. Its exponent is applied whatever its
  sign; Tasmota applies only a positive one, so its scripts divide by the negative one themselves
  (`@iN:100`) and must drop that divisor here.
- With several extractors on one line, the last one gives the value, as in Tasmota.
- A float that is NaN or infinite reads nothing (Tasmota would publish `nan`, which is no JSON).

Where Tasmota would read past the end of its buffer, a line here simply does not match.
*/

use crate::script::model::{ByteOp, BytePattern, Extract};

/// Why a metric line's mask read nothing from a frame. Not an error of the frame: most lines of a
/// Modbus meter are for the reply to another request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoMatch {
    #[error("byte {offset} is {found:02X}, the pattern wants {expected:02X}")]
    Literal {
        offset: usize,
        expected: u8,
        found: u8,
    },
    #[error("the pattern needs {needed} bytes, the frame has {len}")]
    Short { needed: usize, len: usize },
    #[error("`pm(...)` pattern not found after byte {from}")]
    NotFound { from: usize },
    #[error("BCD digit {nibble:X} at byte {offset} is not decimal")]
    BadBcd { offset: usize, nibble: u8 },
    #[error("the pattern has no value mask")]
    NoExtractor,
    /// A float mask read NaN or an infinity (a meter's "not available" marker, or noise).
    #[error("the float at byte {offset} is not a number")]
    NotFinite { offset: usize },
}

/// The number a metric line reads from `frame`, before the line's offset and divisor.
pub fn read(pattern: &BytePattern, frame: &[u8]) -> Result<f64, NoMatch> {
    let mut at = 0usize;
    let mut value = None;
    for op in &pattern.ops {
        match op {
            ByteOp::Literal(b) => {
                let found = *take(frame, at, 1)?.first().unwrap_or(&0);
                if found != *b {
                    return Err(NoMatch::Literal {
                        offset: at,
                        expected: *b,
                        found,
                    });
                }
                at += 1;
            }
            ByteOp::Skip(n) => at += usize::from(*n),
            ByteOp::Find(needle) => {
                let from = at.min(frame.len());
                let pos = memchr::memmem::find(&frame[from..], needle)
                    .ok_or(NoMatch::NotFound { from })?;
                at = from + pos + needle.len();
            }
            ByteOp::Extract(e) => {
                let (v, used) = extract(*e, frame, at)?;
                if !v.is_finite() {
                    return Err(NoMatch::NotFinite { offset: at });
                }
                value = Some(v);
                at += used;
            }
        }
    }
    let v = value.ok_or(NoMatch::NoExtractor)?;
    Ok(match pattern.bit {
        // `bx:` publishes one bit of the (integer) value.
        Some(bit) => f64::from(((v as i64 as u64) >> (bit & 63)) as u32 & 1),
        None => v,
    })
}

/// `len` bytes of `frame` from `at`, or why not.
fn take(frame: &[u8], at: usize, len: usize) -> Result<&[u8], NoMatch> {
    frame.get(at..at + len).ok_or(NoMatch::Short {
        needed: at + len,
        len: frame.len(),
    })
}

/// Bytes 0..4 as Tasmota's little-endian 32-bit masks read them: each word's two bytes swapped.
fn word_le(b: &[u8]) -> [u8; 4] {
    [b[1], b[0], b[3], b[2]]
}

fn swap_words(v: u32, swap: bool) -> u32 {
    if swap {
        v.rotate_left(16)
    } else {
        v
    }
}

/// The value of one extractor at `at`, and how many bytes it used.
fn extract(e: Extract, frame: &[u8], at: usize) -> Result<(f64, usize), NoMatch> {
    let bytes = |n| take(frame, at, n);
    Ok(match e {
        Extract::U8 => (f64::from(bytes(1)?[0]), 1),
        Extract::I8 => (f64::from(bytes(1)?[0] as i8), 1),
        Extract::U16 { big_endian } => (f64::from(u16_at(bytes(2)?, big_endian)), 2),
        Extract::I16 { big_endian } => (f64::from(u16_at(bytes(2)?, big_endian) as i16), 2),
        Extract::U32 {
            big_endian,
            word_swap,
        } => (
            f64::from(swap_words(u32_at(bytes(4)?, big_endian), word_swap)),
            4,
        ),
        Extract::I32 {
            big_endian,
            word_swap,
        } => (
            f64::from(swap_words(u32_at(bytes(4)?, big_endian), word_swap) as i32),
            4,
        ),
        Extract::U64 { big_endian } => (u64_at(bytes(8)?, big_endian) as f64, 8),
        Extract::I64 { big_endian } => (u64_at(bytes(8)?, big_endian) as i64 as f64, 8),
        Extract::F32 { big_endian } => {
            let b = bytes(4)?;
            let be = if big_endian {
                [b[0], b[1], b[2], b[3]]
            } else {
                [b[2], b[3], b[0], b[1]]
            };
            (f64::from(f32::from_be_bytes(be)), 4)
        }
        Extract::F64 { big_endian } => {
            let b: [u8; 8] = bytes(8)?.try_into().unwrap_or([0; 8]);
            let v = if big_endian {
                f64::from_be_bytes(b)
            } else {
                f64::from_le_bytes(b)
            };
            (v, 8)
        }
        Extract::Bcd(digits) => {
            // Tasmota clamps the digit count to 2..=12; one byte holds two digits.
            let digits = digits.clamp(2, 12);
            let n = usize::from(digits).div_ceil(2);
            let b = bytes(n)?;
            let mut v: u64 = 0;
            for (i, byte) in b.iter().enumerate().rev() {
                for nibble in [byte >> 4, byte & 0x0f] {
                    if nibble > 9 {
                        return Err(NoMatch::BadBcd {
                            offset: at + i,
                            nibble,
                        });
                    }
                    v = v * 10 + u64::from(nibble);
                }
            }
            (v as f64, n)
        }
        Extract::Kamstrup => (kamstrup(frame, at)?, 0),
    })
}

fn u16_at(b: &[u8], big_endian: bool) -> u16 {
    if big_endian {
        u16::from_be_bytes([b[0], b[1]])
    } else {
        u16::from_le_bytes([b[0], b[1]])
    }
}

fn u32_at(b: &[u8], big_endian: bool) -> u32 {
    let b = if big_endian {
        [b[0], b[1], b[2], b[3]]
    } else {
        word_le(b)
    };
    u32::from_be_bytes(b)
}

fn u64_at(b: &[u8], big_endian: bool) -> u64 {
    (u64::from(u32_at(&b[..4], big_endian)) << 32) | u64::from(u32_at(&b[4..8], big_endian))
}

/// A Kamstrup register record at `at`: `[unit] [len] [exp] [mantissa: len bytes, big endian]`.
/// Exponent bits 0..5 its size, bit 6 negative exponent, bit 7 negative value.
fn kamstrup(frame: &[u8], at: usize) -> Result<f64, NoMatch> {
    let head = take(frame, at, 3)?;
    let len = usize::from(head[1]);
    let exp = head[2];
    let mantissa = take(frame, at + 3, len)?
        .iter()
        .fold(0u64, |m, b| (m << 8) | u64::from(*b)) as f64;
    let power = 10f64.powi(i32::from(exp & 0x3f));
    // Bit 6: a negative exponent (Tasmota ignores it and reads the bare mantissa). Dividing keeps
    // 1234e-2 at 12.34, where multiplying by 0.01 would not.
    let magnitude = if exp & 0x40 != 0 {
        mantissa / power
    } else {
        mantissa * power
    };
    // Bit 7: a negative value.
    Ok(if exp & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    })
}

#[cfg(test)]
mod tests;
