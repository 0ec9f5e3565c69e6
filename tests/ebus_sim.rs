//! An eBus simulator: the bus side of a Wolf CSZ heating system (the corpus' `e` script), for the
//! `ebus_*` tests. The heater broadcasts its state (`03 FE 05 03`), the solar module its
//! temperatures (`71 FE 50 17`), a controller asks the room unit (`70 51 50 14`, answered), with
//! SYN bytes between telegrams as a real bus has them. Its core is sans-IO (the byte stream of one
//! cycle, built from values), so the corpus test can feed a decoder directly; a thin adapter puts
//! it on a pseudo-terminal for the end-to-end tests. Escaping and the CRC are written here
//! independently of the decoder's, so a shared mistake cannot hide. Included with `#[path]` by the
//! tests that use it; as a test target of its own it only checks itself.
#![allow(dead_code)]

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const SYN: u8 = 0xAA;

/// The eBus CRC-8, bit by bit as the specification describes it (polynomial 0x9B), over the bytes
/// as they are sent.
pub fn crc8(wire: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &byte in wire {
        for bit in (0..8).rev() {
            let feedback = crc & 0x80 != 0;
            crc = (crc << 1) | ((byte >> bit) & 1);
            if feedback {
                crc ^= 0x9B;
            }
        }
    }
    crc
}

/// Bytes as they go on the wire: `A9` as `A9 00`, `AA` as `A9 01`.
pub fn escape(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|&b| match b {
            0xA9 => vec![0xA9, 0x00],
            0xAA => vec![0xA9, 0x01],
            b => vec![b],
        })
        .collect()
}

/// A part (`QQ ZZ PB SB NN data` or `NN data`) on the wire with its CRC.
pub fn part(head: &[u8], data: &[u8]) -> Vec<u8> {
    let mut p = head.to_vec();
    p.push(data.len() as u8);
    p.extend_from_slice(data);
    let mut wire = escape(&p);
    let crc = crc8(&wire);
    wire.extend(escape(&[crc]));
    wire
}

/// What the Wolf heating system reports. Temperatures in °C; the solar ones are sent in 1/16 °C
/// steps, one byte (as the Tasmota docs' script reads them).
#[derive(Debug, Clone, PartialEq)]
pub struct Wolf {
    pub outside: i8,
    pub room: u8,
    pub warm_water: u8,
    pub boiler: u8,
    pub returns: u8,
    pub status: u8,
    pub burner_on: bool,
    pub collector_16ths: u8,
    pub storage_16ths: u8,
    pub solar_pump_on: bool,
}

impl Default for Wolf {
    fn default() -> Self {
        Wolf {
            outside: -5,
            room: 21,
            warm_water: 48,
            boiler: 55,
            returns: 40,
            status: 1,
            burner_on: true,
            // 0xA9 and 0xAA must be escaped on the wire: 10.6 °C and 10.6 °C.
            collector_16ths: 0xA9,
            storage_16ths: 0xAA,
            solar_pump_on: true,
        }
    }
}

impl Wolf {
    /// The heater's broadcast `03 FE 05 03`, on the wire.
    pub fn heater(&self) -> Vec<u8> {
        let burner = if self.burner_on { 0x08 } else { 0x00 };
        part(
            &[0x03, 0xFE, 0x05, 0x03],
            &[
                0x01,
                self.status,
                burner,
                0xFF,
                self.boiler,
                self.returns,
                self.warm_water,
                self.outside as u8,
            ],
        )
    }

    /// The controller asks the room unit `51`; the room unit answers (ACKs included).
    pub fn room(&self) -> Vec<u8> {
        let mut t = part(
            &[0x70, 0x51, 0x50, 0x14],
            &[0x41, 0x00, 0x05, 0x00, self.room, 0x00, 0x5A],
        );
        t.push(0x00);
        t.extend(part(&[], &[0x00, 0x40, 0x80]));
        t.push(0x00);
        t
    }

    /// The solar module's broadcast `71 FE 50 17`.
    pub fn solar(&self) -> Vec<u8> {
        let mut data = [0x80u8; 16];
        data[0] = u8::from(self.solar_pump_on);
        data[1] = 0x91;
        data[2] = 0x05;
        data[3] = self.collector_16ths;
        data[4] = 0x01;
        data[5] = self.storage_16ths;
        part(&[0x71, 0xFE, 0x50, 0x17], &data)
    }

    /// One cycle of the bus: each telegram after a few idle SYNs.
    pub fn cycle(&self) -> Vec<Vec<u8>> {
        vec![self.heater(), self.room(), self.solar()]
    }

    /// The cycle as one byte stream: SYNs, telegram, SYNs, ...
    pub fn stream(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for t in self.cycle() {
            out.extend([SYN, SYN, SYN]);
            out.extend(t);
        }
        out.push(SYN);
        out
    }
}

/// What a UART set to `read_baud` receives from 8N1 bytes sent at `sent_baud` (a wrong baud rate
/// in the script): the line is sampled in the middle of each of the receiver's bits, a frame
/// starts at a falling edge, and a frame whose stop bit reads 0 is dropped (a framing error).
pub fn received_at(bytes: &[u8], sent_baud: u32, read_baud: u32) -> Vec<u8> {
    // The line level at time t (in units of 1/sent_baud), idle high.
    let mut bits = Vec::new();
    for &b in bytes {
        bits.push(false);
        bits.extend((0..8).map(|i| (b >> i) & 1 == 1));
        bits.push(true);
    }
    let level = |t: f64| bits.get(t as usize).copied().unwrap_or(true);
    let step = f64::from(sent_baud) / f64::from(read_baud);
    let end = bits.len() as f64;
    let mut out = Vec::new();
    let mut t = 0.0;
    while t < end {
        if level(t) {
            t += step / 16.0;
            continue;
        }
        // A start bit: read the data bits and the stop bit in their middles.
        let mut byte = 0u8;
        for i in 0..8 {
            if level(t + step * (1.5 + f64::from(i))) {
                byte |= 1 << i;
            }
        }
        // From the middle of the stop bit the receiver looks for the next falling edge; after a
        // framing error (stop bit 0) it first waits for the line to go high.
        t += step * 9.5;
        if level(t) {
            out.push(byte);
        }
        while t < end && !level(t) {
            t += step / 16.0;
        }
    }
    out
}

/// Write the bus's stream to the master side of a pty until `stop`, one telegram at a time at
/// about 2400 baud; `mangle(n, telegram)` may change the n-th telegram (tests of bad input).
pub fn serve_pty(
    mut master: serialport::TTYPort,
    bus: Wolf,
    stop: Arc<AtomicBool>,
    mangle: impl Fn(usize, Vec<u8>) -> Vec<u8> + Send + 'static,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            for t in bus.cycle() {
                let mut bytes = vec![SYN, SYN];
                bytes.extend(mangle(sent, t));
                bytes.push(SYN);
                if master.write_all(&bytes).is_err() {
                    return sent;
                }
                let _ = master.flush();
                sent += 1;
                // 2400 baud is 240 bytes/s.
                std::thread::sleep(Duration::from_micros(bytes.len() as u64 * 4_167));
            }
        }
        sent
    })
}

#[test]
fn the_simulators_crc_is_the_one_a_wolf_heater_sent() {
    // csowada/ebus's test telegram `03 FE 05 03 08 01 00 40 FF 2C 17 30 0E` ends in CRC 96.
    let t = part(
        &[0x03, 0xFE, 0x05, 0x03],
        &[0x01, 0x00, 0x40, 0xFF, 0x2C, 0x17, 0x30, 0x0E],
    );
    assert_eq!(t.last(), Some(&0x96));
}

#[test]
fn escaped_bytes_never_put_a_syn_inside_a_telegram() {
    let wolf = Wolf::default();
    for t in wolf.cycle() {
        assert!(!t.contains(&SYN), "{t:02X?}");
    }
    assert!(wolf.solar().windows(2).any(|w| w == [0xA9, 0x01]));
}

#[test]
fn reading_at_the_right_baud_rate_gives_the_bytes_back() {
    let bytes = Wolf::default().stream();
    assert_eq!(received_at(&bytes, 2400, 2400), bytes);
    assert_ne!(received_at(&bytes, 2400, 9600), bytes);
}
