//! A RESOL VBus controller simulator: the controller's side of the bus, for the `vbus_*` tests. A
//! controller is asked nothing; it broadcasts a VBus 1.0 telegram of its payload about once a
//! second ([`serve_pty`] faster, on a pseudo-terminal). Septets and checksums are written here
//! independently of the decoder's. Included with `#[path]` by the tests that use it; as a test
//! target of its own it only checks itself.
#![allow(dead_code)]

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// VBus's 7-bit checksum: `7F` minus the sum of the bytes, low 7 bits.
pub fn checksum(bytes: &[u8]) -> u8 {
    let sum: u32 = bytes.iter().map(|&b| u32::from(b)).sum();
    // 2^32 is a multiple of 128, so the wrapped difference has the right low 7 bits.
    (0x7Fu32.wrapping_sub(sum) & 0x7F) as u8
}

/// A controller: its address, and the payload its telegrams carry.
#[derive(Clone)]
pub struct Controller {
    pub source: u16,
    pub destination: u16,
    pub command: u16,
    pub payload: Vec<u8>,
}

impl Controller {
    /// A DeltaSol BS Plus (source 4221) with the values the Tasmota docs' script reads.
    pub fn deltasol_bs_plus() -> Self {
        let mut p = vec![0u8; 28];
        let mut put16 = |at: usize, v: u16| p[at..at + 2].copy_from_slice(&v.to_le_bytes());
        put16(0, 653); // S1 collector 65.3 C
        put16(2, 452); // S2 tank 45.2 C
        put16(4, 481); // S3 48.1 C
        put16(6, (-52i16) as u16); // S4 -5.2 C
        put16(12, 13 * 60 + 7); // system time 13:07
        put16(20, 345); // heat quantity Wh
        put16(22, 456); // kWh
        put16(24, 2); // MWh
        p[8] = 100; // pump 1 speed %
        p[9] = 0; // pump 2 speed %
        p[10] = 0b01; // relay 1 on, relay 2 off
        p[15] = 0b10_0001; // collector max and WMZ status bits
        Controller {
            source: 0x4221,
            destination: 0x0010,
            command: 0x0100,
            payload: p,
        }
    }

    /// One telegram: header, then the payload in frames of 4 bytes, septet, checksum.
    pub fn telegram(&self) -> Vec<u8> {
        let frames = self.payload.len().div_ceil(4);
        let mut t = vec![0xAA];
        t.extend_from_slice(&self.destination.to_le_bytes());
        t.extend_from_slice(&self.source.to_le_bytes());
        t.push(0x10);
        t.extend_from_slice(&self.command.to_le_bytes());
        t.push(frames as u8);
        t.push(checksum(&t[1..]));
        for i in 0..frames {
            let mut data = [0u8; 4];
            for (j, d) in data.iter_mut().enumerate() {
                *d = self.payload.get(4 * i + j).copied().unwrap_or(0);
            }
            let mut septet = 0u8;
            for (j, d) in data.iter().enumerate() {
                if d & 0x80 != 0 {
                    septet |= 1 << j;
                }
            }
            let mut frame: Vec<u8> = data.iter().map(|d| d & 0x7F).collect();
            frame.push(septet);
            frame.push(checksum(&frame));
            t.extend(frame);
        }
        t
    }
}

/// Broadcast `controller`'s telegram on the master side of a pty every `period` until `stop`;
/// `mangle` may change or drop the n-th telegram (tests of bad input). Returns how many were sent.
pub fn serve_pty(
    mut port: serialport::TTYPort,
    controller: Controller,
    period: Duration,
    stop: Arc<AtomicBool>,
    mangle: impl Fn(usize, Vec<u8>) -> Option<Vec<u8>> + Send + 'static,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Some(bytes) = mangle(sent, controller.telegram()) {
                if port.write_all(&bytes).is_err() {
                    break;
                }
            }
            sent += 1;
            std::thread::sleep(period);
        }
        sent
    })
}

#[test]
fn the_simulated_header_is_the_one_the_tasmota_docs_script_matches() {
    let t = Controller::deltasol_bs_plus().telegram();
    assert_eq!(
        &t[..10],
        &[0xAA, 0x10, 0x00, 0x21, 0x42, 0x10, 0x00, 0x01, 0x07, 0x74]
    );
    assert_eq!(t.len(), 10 + 7 * 6);
    assert!(
        t[1..].iter().all(|b| b & 0x80 == 0),
        "only AA has bit 7 set"
    );
}
