//! A raw (`r`/`R`) meter simulator: the meter's side of the line, built from the script's own
//! metric lines. Each line's mask is laid into a telegram with a value chosen per line; for an
//! M-Bus meter (8E1, M-Bus requests, or lines anchored on `68`) the record lines are strung into
//! one RSP_UD long frame with its length and checksum (written here, independently of the
//! decoder's), lines anchored on the frame start are laid over its head. The core is sans-IO
//! ([`Simulated::telegrams`]), so the corpus test runs every script on an injected clock, and a
//! thin adapter ([`serve_pty`]) puts it on a pseudo-terminal for the end-to-end test. Included
//! with `#[path]` by the tests that use it; as a test target of its own it only checks itself.
#![allow(dead_code)]

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sml::script::model::{ByteOp, BytePattern, Decoding, Extract, Meter, Parity, ValueSpec};

/// The telegrams a meter sends and the value each entry must publish.
#[derive(Debug, Clone)]
pub struct Simulated {
    pub telegrams: Vec<Vec<u8>>,
    /// (entry, published value), for every line the simulator could lay out.
    pub expected: Vec<(u16, f64)>,
    /// Lines it could not lay out, and why.
    pub skipped: Vec<(u16, String)>,
    pub mbus: bool,
}

/// Bytes with a flag per byte: set by a line (must not change) or free.
#[derive(Debug, Clone, Default)]
struct Canvas {
    bytes: Vec<u8>,
    set: Vec<bool>,
}

impl Canvas {
    fn put(&mut self, at: usize, b: u8) -> bool {
        if self.bytes.len() <= at {
            self.bytes.resize(at + 1, 0);
            self.set.resize(at + 1, false);
        }
        if self.set[at] && self.bytes[at] != b {
            return false;
        }
        self.bytes[at] = b;
        self.set[at] = true;
        true
    }

    fn reserve(&mut self, len: usize) {
        if self.bytes.len() < len {
            self.bytes.resize(len, 0);
            self.set.resize(len, false);
        }
    }

    /// Lay `pattern` at `at` with `raw` as its value; false (canvas unchanged) on a conflict.
    fn lay(&mut self, pattern: &BytePattern, at: usize, raw: f64) -> bool {
        let mut trial = self.clone();
        let mut p = at;
        for op in &pattern.ops {
            match op {
                ByteOp::Literal(b) => {
                    if !trial.put(p, *b) {
                        return false;
                    }
                    p += 1;
                }
                ByteOp::Skip(n) => {
                    p += usize::from(*n);
                    trial.reserve(p);
                }
                ByteOp::Find(needle) => {
                    for b in needle {
                        if !trial.put(p, *b) {
                            return false;
                        }
                        p += 1;
                    }
                }
                ByteOp::Extract(e) => {
                    let Some(bytes) = encode(*e, raw) else {
                        return false;
                    };
                    for b in bytes {
                        if !trial.put(p, b) {
                            return false;
                        }
                        p += 1;
                    }
                }
            }
        }
        *self = trial;
        true
    }
}

/// The bytes an extractor reads back as `v` (the inverse of `sml::decode::bytes`).
pub fn encode(e: Extract, v: f64) -> Option<Vec<u8>> {
    let word_le = |c: [u8; 4]| vec![c[1], c[0], c[3], c[2]];
    let u32_bytes = |x: u32, be: bool, swap: bool| {
        let x = if swap { x.rotate_left(16) } else { x };
        if be {
            x.to_be_bytes().to_vec()
        } else {
            word_le(x.to_be_bytes())
        }
    };
    Some(match e {
        Extract::U8 => vec![v as u8],
        Extract::I8 => vec![v as i8 as u8],
        Extract::U16 { big_endian } | Extract::I16 { big_endian } => {
            let x = v as i64 as u16;
            if big_endian {
                x.to_be_bytes().to_vec()
            } else {
                x.to_le_bytes().to_vec()
            }
        }
        Extract::U32 {
            big_endian,
            word_swap,
        }
        | Extract::I32 {
            big_endian,
            word_swap,
        } => u32_bytes(v as i64 as u32, big_endian, word_swap),
        Extract::U64 { big_endian } | Extract::I64 { big_endian } => {
            let x = v as i64 as u64;
            let mut b = u32_bytes((x >> 32) as u32, big_endian, false);
            b.extend(u32_bytes(x as u32, big_endian, false));
            b
        }
        Extract::F32 { big_endian } => {
            let c = (v as f32).to_be_bytes();
            if big_endian {
                c.to_vec()
            } else {
                vec![c[2], c[3], c[0], c[1]]
            }
        }
        Extract::F64 { big_endian } => {
            if big_endian {
                v.to_be_bytes().to_vec()
            } else {
                v.to_le_bytes().to_vec()
            }
        }
        Extract::Bcd(digits) => {
            let n = usize::from(digits.clamp(2, 12)).div_ceil(2);
            let mut x = v as u64;
            (0..n)
                .map(|_| {
                    let lo = (x % 10) as u8;
                    let hi = ((x / 10) % 10) as u8;
                    x /= 100;
                    (hi << 4) | lo
                })
                .collect()
        }
        Extract::Kamstrup => return None,
    })
}

/// The number of data bytes a DIF announces (fixed-length fields only).
fn dif_data_len(dif: u8) -> Option<usize> {
    Some(match dif & 0x0f {
        0x0 | 0x8 => 0,
        0x1 => 1,
        0x2 | 0x9 => 2,
        0x3 | 0xB => 3,
        0x4 | 0x5 | 0xA => 4,
        0x6 | 0xE => 6,
        0x7 => 8,
        0xC => 4,
        _ => return None,
    })
}

/// The raw value line `k` carries: small, positive, distinct, and fits every mask.
fn raw_for(k: usize, pattern: &BytePattern) -> f64 {
    let v = (11 + 7 * k) as f64;
    match pattern.bit {
        // `bx:` publishes one bit: set it.
        Some(bit) => f64::from(1u32 << (bit & 7)),
        None => v,
    }
}

fn published(raw: f64, pattern: &BytePattern, spec: &ValueSpec) -> f64 {
    let raw = match pattern.bit {
        Some(_) => 1.0,
        None => raw,
    };
    sml::decode::scale(raw, spec)
}

/// Is `meter` an M-Bus meter, as the decoder decides it?
fn is_mbus(meter: &Meter, lines: &[&BytePattern]) -> bool {
    meter.serial.parity == Parity::Even
        || meter
            .requests
            .blocks
            .iter()
            .any(|b| b.bytes.first() == Some(&0x10) || b.bytes.first() == Some(&0x68))
        || lines
            .iter()
            .any(|p| p.ops.first() == Some(&ByteOp::Literal(0x68)))
}

/// Build the telegrams of `meter` from its metric lines.
pub fn simulate(meter: &Meter) -> Simulated {
    let Decoding::Raw { metrics, .. } = &meter.decoding else {
        panic!("meter {} is not raw", meter.index);
    };
    let patterns: Vec<&BytePattern> = metrics.iter().map(|m| &m.pattern).collect();
    let mbus = is_mbus(meter, &patterns);
    let mut out = Simulated {
        telegrams: Vec::new(),
        expected: Vec::new(),
        skipped: Vec::new(),
        mbus,
    };
    if mbus {
        // Head: 68 L L 68 C A CI + fixed header; anchored lines are laid over it.
        let mut head = Canvas::default();
        for b in [
            0x68, 0, 0, 0x68, 0x08, 0x01, 0x72, 0x78, 0x56, 0x34, 0x12, 0x24, 0x40, 0x01, 0x04,
            0x2A, 0x00, 0x00, 0x00,
        ] {
            head.bytes.push(b);
            head.set.push(false);
        }
        // The two start bytes are the frame's; a line that wants another byte there is laid on
        // the second start byte instead (`68080072`: start, C, A, CI).
        head.set[0] = true;
        head.set[3] = true;
        let mut records = Vec::new();
        for (k, m) in metrics.iter().enumerate() {
            let raw = raw_for(k, &m.pattern);
            let anchored = m.pattern.ops.first() == Some(&ByteOp::Literal(0x68));
            if anchored {
                // On the first start byte when it fits `68 L L 68`, else on the second.
                let ok = head.lay(&m.pattern, 0, raw) || head.lay(&m.pattern, 3, raw);
                if ok {
                    out.expected
                        .push((m.output.entry, published(raw, &m.pattern, &m.value)));
                } else {
                    out.skipped
                        .push((m.output.entry, "conflicts with the frame head".into()));
                }
                continue;
            }
            let mut c = Canvas::default();
            if !c.lay(&m.pattern, 0, raw) {
                out.skipped
                    .push((m.output.entry, "mask cannot be laid".into()));
                continue;
            }
            // Pad the record's data to what its DIF announces, so the records stay aligned.
            let dif_at = c.bytes.iter().position(|b| *b != 0x00).unwrap_or(0);
            let prefix = m
                .pattern
                .ops
                .iter()
                .take_while(|o| matches!(o, ByteOp::Literal(_)))
                .count();
            if let Some(n) = c.bytes.get(dif_at).and_then(|d| dif_data_len(*d)) {
                c.reserve(prefix + n);
            }
            records.extend_from_slice(&c.bytes);
            out.expected
                .push((m.output.entry, published(raw, &m.pattern, &m.value)));
        }
        let mut frame = head.bytes.clone();
        frame.extend_from_slice(&records);
        // A length the head's lines fix (`68363668...`) is padded up to with idle fillers.
        let fixed_len = head.set[1].then(|| usize::from(head.bytes[1]));
        let len = match fixed_len {
            Some(l) if l + 4 >= frame.len() => {
                frame.resize(l + 4, 0x2F);
                l
            }
            Some(l) => {
                out.skipped
                    .push((0, format!("records overflow the fixed length {l}")));
                frame.len() - 4
            }
            None => frame.len() - 4,
        };
        frame[1] = len as u8;
        frame[2] = len as u8;
        let cs = frame[4..].iter().fold(0u8, |s, b| s.wrapping_add(*b));
        frame.extend_from_slice(&[cs, 0x16]);
        out.telegrams.push(frame);
    } else {
        // Plain raw: lines that fit together share a telegram, the others get their own.
        let mut canvases: Vec<Canvas> = Vec::new();
        for (k, m) in metrics.iter().enumerate() {
            let raw = raw_for(k, &m.pattern);
            if !canvases.iter_mut().any(|c| c.lay(&m.pattern, 0, raw)) {
                let mut c = Canvas::default();
                if !c.lay(&m.pattern, 0, raw) {
                    out.skipped
                        .push((m.output.entry, "mask cannot be laid".into()));
                    continue;
                }
                canvases.push(c);
            }
            out.expected
                .push((m.output.entry, published(raw, &m.pattern, &m.value)));
        }
        out.telegrams = canvases.into_iter().map(|c| c.bytes).collect();
    }
    out
}

/// Put `sim` on the master side of a pty: every `period`, send each telegram (a raw meter pushes;
/// an M-Bus meter's requests are read and dropped, its answer goes out on the same beat).
pub fn serve_pty(
    mut port: serialport::TTYPort,
    sim: Simulated,
    period: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::Read;
        let _ = serialport::SerialPort::set_timeout(&mut port, Duration::from_millis(20));
        let mut scratch = [0u8; 256];
        while !stop.load(Ordering::Relaxed) {
            for t in &sim.telegrams {
                if port.write_all(t).is_err() {
                    return;
                }
                let _ = port.flush();
            }
            let until = std::time::Instant::now() + period;
            while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                let _ = port.read(&mut scratch);
            }
        }
    })
}

#[test]
fn every_extractor_reads_back_what_encode_wrote() {
    use sml::script::model::Extract::*;
    for e in [
        U8,
        I8,
        U16 { big_endian: true },
        U16 { big_endian: false },
        I16 { big_endian: false },
        U32 {
            big_endian: false,
            word_swap: true,
        },
        U32 {
            big_endian: true,
            word_swap: false,
        },
        I32 {
            big_endian: false,
            word_swap: false,
        },
        U64 { big_endian: false },
        F32 { big_endian: false },
        F32 { big_endian: true },
        F64 { big_endian: true },
        Bcd(8),
        Bcd(5),
    ] {
        let pattern = BytePattern {
            ops: vec![ByteOp::Extract(e)],
            bit: None,
            block: None,
        };
        let bytes = encode(e, 81.0).unwrap();
        assert_eq!(
            sml::decode::bytes::read(&pattern, &bytes),
            Ok(81.0),
            "{e:?}"
        );
    }
}

#[test]
fn an_mbus_script_becomes_one_frame_with_a_good_checksum() {
    let c = sml::script::compile(
        b">D\n>M 1\n+1,3,rE1,0,2400,H\n1,0C06bcd8@1,E,kWh,e,0\n1,0360uuUU@1000,T,K,t,3\n#\n",
    );
    let sim = simulate(&c.script.unwrap().meters[0]);
    assert!(sim.mbus);
    assert_eq!(sim.telegrams.len(), 1);
    assert!(sml::decode::mbus::check_long_frame(&sim.telegrams[0]).is_ok());
    assert_eq!(sim.expected, vec![(1, 11.0), (2, 0.018)]);
}
