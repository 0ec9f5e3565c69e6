//! A PZEM-004T (v1) simulator: the meter's side of the line, for the `pzem_*` tests. Its core is
//! sans-IO (a 7-byte request in, the 7-byte reply out), and a thin adapter puts it on a
//! pseudo-terminal for the end-to-end tests. The checksum is written here independently of the
//! decoder's. Included with `#[path]` by the tests that use it; as a test target of its own it only
//! checks itself.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The sum of the first six bytes, modulo 256.
pub fn checksum(frame: &[u8]) -> u8 {
    (frame[..6].iter().map(|&b| u32::from(b)).sum::<u32>() % 256) as u8
}

/// What the meter measures, in the units its replies carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Pzem {
    pub volts: u16,
    pub volt_tenths: u8,
    pub amps: u16,
    pub amp_hundredths: u8,
    pub watts: u16,
    /// 24 bits.
    pub watt_hours: u32,
}

impl Default for Pzem {
    fn default() -> Self {
        Pzem {
            volts: 230,
            volt_tenths: 2,
            amps: 17,
            amp_hundredths: 32,
            watts: 2200,
            watt_hours: 99_999,
        }
    }
}

impl Pzem {
    /// The reply to a request (command, address `C0 A8 01 01`, data, checksum), or `None` for a
    /// request with a bad checksum or another address (the meter stays silent).
    pub fn answer(&self, request: &[u8]) -> Option<Vec<u8>> {
        if request.len() != 7 || checksum(request) != request[6] {
            return None;
        }
        if request[1..5] != [0xC0, 0xA8, 0x01, 0x01] {
            return None;
        }
        let [_, v1, v2] = [0, (self.volts >> 8) as u8, self.volts as u8];
        let data: [u8; 5] = match request[0] {
            0xB0 => [v1, v2, self.volt_tenths, 0, 0],
            0xB1 => [
                (self.amps >> 8) as u8,
                self.amps as u8,
                self.amp_hundredths,
                0,
                0,
            ],
            0xB2 => [(self.watts >> 8) as u8, self.watts as u8, 0, 0, 0],
            0xB3 => {
                let e = self.watt_hours.to_be_bytes();
                [e[1], e[2], e[3], 0, 0]
            }
            // Set address, set alarm: acknowledged with zeros.
            0xB4 | 0xB5 => [0; 5],
            _ => return None,
        };
        let mut reply = vec![request[0] - 0x10];
        reply.extend_from_slice(&data);
        reply.push(checksum(&reply));
        Some(reply)
    }

    /// The replies to voltage, current, power and energy, as a capture of one round.
    pub fn round(&self) -> Vec<u8> {
        [0xB0u8, 0xB1, 0xB2, 0xB3]
            .iter()
            .flat_map(|&c| {
                let mut r = vec![c, 0xC0, 0xA8, 0x01, 0x01, 0x00];
                r.push(checksum(&r));
                self.answer(&r).unwrap()
            })
            .collect()
    }
}

/// Serve requests on the master side of a pty until `stop`; `mangle(n, reply)` may change or drop
/// the n-th reply (tests of bad input).
pub fn serve_pty(
    mut port: serialport::TTYPort,
    sim: Pzem,
    stop: Arc<AtomicBool>,
    mangle: impl Fn(usize, Vec<u8>) -> Option<Vec<u8>> + Send + 'static,
) -> std::thread::JoinHandle<usize> {
    use serialport::SerialPort;
    std::thread::spawn(move || {
        port.set_timeout(Duration::from_millis(50)).unwrap();
        let mut buf = Vec::new();
        let mut answered = 0;
        let mut chunk = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            match port.read(&mut chunk) {
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(_) => break,
            }
            while buf.len() >= 7 {
                let request: Vec<u8> = buf[..7].to_vec();
                match sim.answer(&request) {
                    Some(reply) => {
                        buf.drain(..7);
                        if let Some(bytes) = mangle(answered, reply) {
                            port.write_all(&bytes).unwrap();
                        }
                        answered += 1;
                    }
                    // Not a request: drop one byte and look again.
                    None => {
                        buf.remove(0);
                    }
                }
            }
        }
        answered
    })
}

#[test]
fn the_simulator_answers_as_the_datasheet_shows() {
    let sim = Pzem::default();
    // The PZEM-004T v1 datasheet's request and reply for the voltage: 230.2 V.
    assert_eq!(
        sim.answer(&[0xB0, 0xC0, 0xA8, 0x01, 0x01, 0x00, 0x1A]),
        Some(vec![0xA0, 0x00, 0xE6, 0x02, 0x00, 0x00, 0x88])
    );
    assert_eq!(
        sim.answer(&[0xB0, 0xC0, 0xA8, 0x01, 0x01, 0x00, 0x1B]),
        None
    );
    assert_eq!(
        &sim.round()[21..],
        &[0xA3, 0x01, 0x86, 0x9F, 0x00, 0x00, 0xC9]
    );
}
