//! A Kamstrup KMP meter simulator: the meter's side of the line, for the `kamstrup_*` tests. Its
//! core is sans-IO (a framed request in, the framed reply out) so the corpus test can run every
//! script on an injected clock; [`serve_pty`] puts it on a pseudo-terminal for the end-to-end
//! tests. Its CRC and stuffing are written here independently of the decoder's, so a shared
//! mistake cannot hide. Included with `#[path]` by the tests that use it; as a test target of its
//! own it only checks itself.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// CRC-16/CCITT with initial value 0 (XMODEM), bit by bit.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A frame as a meter sends it: CRC high byte first, `40 0D 06 1B 80` stuffed, `start` ... `0D`.
pub fn framed(start: u8, body: &[u8]) -> Vec<u8> {
    let mut all = body.to_vec();
    all.extend_from_slice(&crc16(body).to_be_bytes());
    let mut out = vec![start];
    for b in all {
        if [0x40, 0x0D, 0x06, 0x1B, 0x80].contains(&b) {
            out.extend_from_slice(&[0x1B, !b]);
        } else {
            out.push(b);
        }
    }
    out.push(0x0D);
    out
}

/// The body of a framed request (`80` ... `0D`), unstuffed and CRC-checked, CRC removed.
pub fn unframe(wire: &[u8]) -> Option<Vec<u8>> {
    let inner = wire.strip_prefix(&[0x80])?.strip_suffix(&[0x0D])?;
    let mut out = Vec::new();
    let mut it = inner.iter();
    while let Some(&b) = it.next() {
        out.push(if b == 0x1B { !*it.next()? } else { b });
    }
    if out.len() < 4 || crc16(&out) != 0 {
        return None;
    }
    out.truncate(out.len() - 2);
    Some(out)
}

/// One register as the meter reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Register {
    pub unit: u8,
    /// Mantissa bytes (1..=4 here).
    pub len: u8,
    /// Sign/exponent byte: bits 0..5 the exponent, bit 6 negative exponent, bit 7 negative value.
    pub exp: u8,
    pub mantissa: u32,
}

impl Register {
    pub fn new(unit: u8, len: u8, exp: u8, mantissa: u32) -> Self {
        Register {
            unit,
            len,
            exp,
            mantissa,
        }
    }
}

/// A meter with registers; a register not set answers with 4 bytes of `default(id)`, exponent 0.
#[derive(Clone)]
pub struct Simulator {
    pub registers: HashMap<u16, Register>,
    pub default: fn(u16) -> u32,
}

impl Default for Simulator {
    fn default() -> Self {
        Simulator {
            registers: HashMap::new(),
            default: |id| u32::from(id) * 7 + 1,
        }
    }
}

impl Simulator {
    /// A MULTICAL 603 as the docs' script reads it: energy 4 bytes, temperatures and flow 2 bytes.
    pub fn multical() -> Self {
        let mut s = Simulator::default();
        s.registers.extend([
            (0x003C, Register::new(0x02, 4, 0x00, 123_456)), // heat energy E1, kWh
            (0x0056, Register::new(0x20, 2, 0x42, 6_523)),   // T1 flow, 65.23 C
            (0x0057, Register::new(0x20, 2, 0x42, 4_210)),   // T2 return, 42.10 C
            (0x0059, Register::new(0x20, 2, 0x42, 2_313)),   // T1-T2, 23.13 K
            (0x004A, Register::new(0x3F, 2, 0x00, 312)),     // flow, 312 l/h
            (0x0044, Register::new(0x29, 4, 0x42, 345_678)), // volume, 3456.78 m3
            (0x007B, Register::new(0x2F, 4, 0x00, 240_315)), // max flow date, 2024-03-15
        ]);
        s
    }

    /// An OMNIPOWER Kx7 as the emulator's script reads it: every register 4 bytes.
    pub fn omnipower() -> Self {
        let mut s = Simulator::default();
        s.registers.extend([
            (0x0001, Register::new(0x1E, 4, 0x00, 1_234_567)), // energy in, Wh
            (0x041E, Register::new(0x2D, 4, 0x41, 2_301)),     // voltage L1, 230.1 V
            (0x0434, Register::new(0x2A, 4, 0x42, 1_250)),     // current L1, 12.50 A
            (0x03FF, Register::new(0x1B, 4, 0x00, 2_875)),     // power in, W
        ]);
        s
    }

    pub fn register(&self, id: u16) -> Register {
        self.registers
            .get(&id)
            .copied()
            .unwrap_or_else(|| Register::new(0x16, 4, 0x00, (self.default)(id)))
    }

    /// The reply body to a request body (destination, CID, data), `None` for what a meter ignores.
    pub fn answer(&self, request: &[u8]) -> Option<Vec<u8>> {
        let (&dest, &cid) = (request.first()?, request.get(1)?);
        match cid {
            // GetRegister: count, then the register ids.
            0x10 => {
                let n = usize::from(*request.get(2)?);
                let ids = request.get(3..3 + 2 * n)?;
                let mut out = vec![dest, cid];
                for id in ids.chunks_exact(2) {
                    let id = u16::from_be_bytes([id[0], id[1]]);
                    let r = self.register(id);
                    out.extend_from_slice(&id.to_be_bytes());
                    out.extend_from_slice(&[r.unit, r.len, r.exp]);
                    out.extend_from_slice(&r.mantissa.to_be_bytes()[4 - usize::from(r.len)..]);
                }
                Some(out)
            }
            // GetSerialNo, as the KMP document's example.
            0x02 => Some(vec![dest, cid, 0x01, 0x23, 0x45, 0x67]),
            _ => None,
        }
    }

    /// A framed request to the framed reply.
    pub fn answer_wire(&self, wire: &[u8]) -> Option<Vec<u8>> {
        self.answer(&unframe(wire)?).map(|b| framed(0x40, &b))
    }
}

/// Serve KMP on the master side of a pty until `stop`; `mangle` may change each reply (tests of bad
/// input). Returns how many requests were answered.
pub fn serve_pty(
    mut port: serialport::TTYPort,
    sim: Simulator,
    stop: Arc<AtomicBool>,
    mangle: impl Fn(usize, Vec<u8>) -> Option<Vec<u8>> + Send + 'static,
) -> std::thread::JoinHandle<usize> {
    use serialport::SerialPort;
    std::thread::spawn(move || {
        port.set_timeout(Duration::from_millis(50)).unwrap();
        let mut buf: Vec<u8> = Vec::new();
        let mut answered = 0;
        let mut chunk = [0u8; 256];
        while !stop.load(Ordering::Relaxed) {
            match port.read(&mut chunk) {
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(_) => break,
            }
            // A request runs from 80 to 0D; anything before 80 is dropped.
            while let Some(end) = buf.iter().position(|&b| b == 0x0D) {
                let request: Vec<u8> = buf.drain(..=end).collect();
                let Some(start) = request.iter().position(|&b| b == 0x80) else {
                    continue;
                };
                if let Some(reply) = sim.answer_wire(&request[start..]) {
                    if let Some(bytes) = mangle(answered, reply) {
                        port.write_all(&bytes).unwrap();
                    }
                    answered += 1;
                }
            }
        }
        answered
    })
}

#[test]
fn the_simulator_answers_the_kmp_documents_get_serial_number_example() {
    // The request and reply of the KMP protocol document (as PyKMP's tests quote them).
    let sim = Simulator::default();
    let reply = sim.answer_wire(&framed(0x80, &[0x3F, 0x02])).unwrap();
    assert_eq!(
        reply,
        vec![0x40, 0x3F, 0x02, 0x01, 0x23, 0x45, 0x67, 0xE9, 0x56, 0x0D]
    );
    assert_eq!(crc16(b"123456789"), 0x31C3);
}

#[test]
fn the_simulator_stuffs_reserved_bytes_and_answers_registers_in_order() {
    let sim = Simulator::omnipower();
    let body = sim
        .answer(&[0x3F, 0x10, 0x02, 0x04, 0x1E, 0x00, 0x01])
        .unwrap();
    assert_eq!(
        body,
        vec![
            0x3F, 0x10, 0x04, 0x1E, 0x2D, 4, 0x41, 0, 0, 0x08, 0xFD, 0x00, 0x01, 0x1E, 4, 0, 0,
            0x12, 0xD6, 0x87
        ]
    );
    let wire = framed(0x40, &[0x0D, 0x40]);
    assert_eq!(&wire[1..5], &[0x1B, 0xF2, 0x1B, 0xBF]);
}
