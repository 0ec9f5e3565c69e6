//! A Modbus slave simulator: the meter's side of the line, for the `modbus_*` tests. Its core is
//! sans-IO (a request in, the reply out), so the corpus test can run hundreds of scripts on an
//! injected clock, and thin adapters put it on a pseudo-terminal (RTU) or a TCP listener (Modbus
//! TCP) for the end-to-end tests. Included with `#[path]` by the tests that use it; as a test
//! target of its own it only checks itself.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// CRC-16/MODBUS, written here independently of the decoder's, so a shared mistake cannot hide.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            let lsb = crc & 1;
            crc >>= 1;
            if lsb == 1 {
                crc ^= 0xA001;
            }
        }
    }
    crc
}

pub fn with_crc(mut frame: Vec<u8>) -> Vec<u8> {
    let c = crc16(&frame);
    frame.extend_from_slice(&c.to_le_bytes());
    frame
}

/// Slaves with 16-bit registers; a register not set reads as `default(slave, address)`.
#[derive(Clone)]
pub struct Simulator {
    pub registers: HashMap<(u8, u16), u16>,
    /// Slaves that answer; `None`: every slave address answers.
    pub slaves: Option<Vec<u8>>,
    pub default: fn(u8, u16) -> u16,
    /// Answer with exception 02 instead of data for these (slave, register) starts.
    pub exceptions: Vec<(u8, u16)>,
}

impl Default for Simulator {
    fn default() -> Self {
        Simulator {
            registers: HashMap::new(),
            slaves: None,
            default: |slave, addr| (u16::from(slave) << 8) ^ addr.wrapping_mul(7).wrapping_add(1),
            exceptions: Vec::new(),
        }
    }
}

impl Simulator {
    /// Put big-endian words (a float, a 32-bit value) at `addr`, `addr + 1`, ...
    pub fn set(&mut self, slave: u8, addr: u16, words: &[u16]) {
        for (i, w) in words.iter().enumerate() {
            self.registers.insert((slave, addr + i as u16), *w);
        }
    }

    pub fn set_f32(&mut self, slave: u8, addr: u16, v: f32) {
        let b = v.to_be_bytes();
        self.set(
            slave,
            addr,
            &[
                u16::from_be_bytes([b[0], b[1]]),
                u16::from_be_bytes([b[2], b[3]]),
            ],
        );
    }

    fn register(&self, slave: u8, addr: u16) -> u16 {
        self.registers
            .get(&(slave, addr))
            .copied()
            .unwrap_or_else(|| (self.default)(slave, addr))
    }

    /// The reply (unit id + PDU) to a request (unit id + PDU), `None` when the slave is silent.
    pub fn answer(&self, adu: &[u8]) -> Option<Vec<u8>> {
        let (&slave, &function) = (adu.first()?, adu.get(1)?);
        if let Some(s) = &self.slaves {
            if !s.contains(&slave) {
                return None;
            }
        }
        let word = |i: usize| adu.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let addr = word(2)?;
        if self.exceptions.contains(&(slave, addr)) {
            return Some(vec![slave, function | 0x80, 0x02]);
        }
        match function {
            0x03 | 0x04 => {
                let qty = word(4)?;
                if qty == 0 || qty > 125 {
                    return Some(vec![slave, function | 0x80, 0x03]);
                }
                let mut out = vec![slave, function, (qty * 2) as u8];
                for i in 0..qty {
                    out.extend_from_slice(
                        &self.register(slave, addr.wrapping_add(i)).to_be_bytes(),
                    );
                }
                Some(out)
            }
            0x01 | 0x02 => {
                let qty = word(4)?;
                let n = qty.div_ceil(8) as usize;
                let mut out = vec![slave, function, n as u8];
                out.extend((0..n).map(|i| (addr as usize + i) as u8 & 0x55));
                Some(out)
            }
            // Writes are echoed.
            0x05 | 0x06 => Some(adu.get(..6)?.to_vec()),
            _ => Some(vec![slave, function | 0x80, 0x01]),
        }
    }

    /// One RTU request frame (CRC checked) to its reply frame.
    pub fn answer_rtu(&self, frame: &[u8]) -> Option<Vec<u8>> {
        let (body, crc) = frame.split_at(frame.len().checked_sub(2)?);
        if crc16(body).to_le_bytes() != [crc[0], crc[1]] {
            return None;
        }
        self.answer(body).map(with_crc)
    }

    /// One Modbus TCP request (MBAP + unit id + PDU) to its reply.
    pub fn answer_tcp(&self, frame: &[u8]) -> Option<Vec<u8>> {
        let adu = frame.get(6..)?;
        let reply = self.answer(adu)?;
        let mut out = frame[..4].to_vec();
        out.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        out.extend(reply);
        Some(out)
    }
}

/// Length of an RTU request from its function code (the requests Tasmota scripts send).
pub fn rtu_request_len(head: &[u8]) -> Option<usize> {
    match *head.get(1)? {
        0x0f | 0x10 => head.get(6).map(|n| usize::from(*n) + 9),
        _ => Some(8),
    }
}

/// Serve RTU on the master side of a pty until `stop`; `mangle` may change each reply (tests of bad
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
        let mut buf = Vec::new();
        let mut answered = 0;
        let mut chunk = [0u8; 256];
        while !stop.load(Ordering::Relaxed) {
            match port.read(&mut chunk) {
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(_) => break,
            }
            while let Some(len) = rtu_request_len(&buf) {
                if buf.len() < len {
                    break;
                }
                let request: Vec<u8> = buf.drain(..len).collect();
                match sim.answer_rtu(&request) {
                    Some(reply) => {
                        if let Some(bytes) = mangle(answered, reply) {
                            port.write_all(&bytes).unwrap();
                        }
                        answered += 1;
                    }
                    // A frame that is not a request: drop one byte and look again.
                    None => buf = request[1..].iter().chain(buf.iter()).copied().collect(),
                }
            }
        }
        answered
    })
}

/// Serve Modbus TCP on `listener` (one connection at a time) until `stop`.
pub fn serve_tcp(
    listener: std::net::TcpListener,
    sim: Simulator,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let mut answered = 0;
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                match s.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue
                    }
                    Err(_) => break,
                }
                while buf.len() >= 6 {
                    let len = 6 + usize::from(u16::from_be_bytes([buf[4], buf[5]]));
                    if buf.len() < len {
                        break;
                    }
                    let request: Vec<u8> = buf.drain(..len).collect();
                    if let Some(reply) = sim.answer_tcp(&request) {
                        s.write_all(&reply).unwrap();
                        answered += 1;
                    }
                }
            }
        }
        answered
    })
}

#[test]
fn the_simulator_answers_a_read_with_the_registers_set() {
    let mut sim = Simulator::default();
    sim.set(1, 0, &[0x4366, 0x199a]);
    let request = with_crc(vec![1, 4, 0, 0, 0, 2]);
    assert_eq!(
        sim.answer_rtu(&request),
        Some(with_crc(vec![1, 4, 4, 0x43, 0x66, 0x19, 0x9a]))
    );
    // The CRC of the classic example request, from the Modbus specification.
    assert_eq!(&request[6..], &[0x71, 0xcb]);
}
