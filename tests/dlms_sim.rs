//! A DLMS push meter's side, for the corpus run and the end-to-end test: data-notifications in the
//! two layouts the community `=so4` scripts read (Siemens IM350/IM351 and Iskra AM550: a structure
//! of the date-time and eight registers; Landis+Gyr E450: OBIS codes each followed by its value),
//! encrypted under the meter's keys with general-glo-ciphering and framed in HDLC or wired M-Bus.

#![allow(dead_code)]

use sml::decode::dlms::apdu::{self, Keys};
use sml::decode::dlms::frame;

pub const SYSTEM_TITLE: [u8; 8] = *b"SMS\x67\x70\x04\x52\xCD";

/// 2024-03-04 11:25:10, a Monday, UTC+1.
pub const DATE_TIME: [u8; 12] = [0x07, 0xE8, 3, 4, 1, 11, 25, 10, 0xFF, 0xFF, 0xC4, 0x00];

/// The eight IM350 registers the simulator sends: A+, A-, R+, R- (Wh, varh), P+, P-, Q+, Q- (W, var).
pub const IM350_REGISTERS: [u32; 8] = [4_523_781, 1_020_345, 12_345, 67_890, 734, 5, 111, 222];

/// `0F invoke 09 0C date-time` + `02 09 09 0C date-time` + eight double-long-unsigned.
pub fn im350_notification(invoke: u32, registers: &[u32; 8]) -> Vec<u8> {
    let mut n = vec![0x0F];
    n.extend_from_slice(&invoke.to_be_bytes());
    n.extend_from_slice(&[0x09, 0x0C]);
    n.extend_from_slice(&DATE_TIME);
    n.extend_from_slice(&[0x02, 0x09, 0x09, 0x0C]);
    n.extend_from_slice(&DATE_TIME);
    for r in registers {
        n.push(0x06);
        n.extend_from_slice(&r.to_be_bytes());
    }
    n
}

/// An E450-style list: a structure of `09 06 <OBIS>` and `06 <value>` pairs.
pub fn obis_notification(invoke: u32, registers: &[([u8; 6], u32)]) -> Vec<u8> {
    let mut n = vec![0x0F];
    n.extend_from_slice(&invoke.to_be_bytes());
    n.extend_from_slice(&[0x09, 0x0C]);
    n.extend_from_slice(&DATE_TIME);
    n.extend_from_slice(&[0x02, (registers.len() * 2) as u8]);
    for (obis, v) in registers {
        n.extend_from_slice(&[0x09, 0x06]);
        n.extend_from_slice(obis);
        n.push(0x06);
        n.extend_from_slice(&v.to_be_bytes());
    }
    n
}

/// The E450 registers of the corpus scripts: 1.8.0, 1.8.1, 1.8.2, 1.7.0, 3.8.0 ... 4.7.0
/// (`1-0:C.D.E*255`), each with a value of its own.
pub fn e450_registers() -> Vec<([u8; 6], u32)> {
    let codes = [
        (1, 8, 0),
        (1, 8, 1),
        (1, 8, 2),
        (1, 7, 0),
        (2, 8, 0),
        (2, 8, 1),
        (2, 8, 2),
        (2, 7, 0),
        (3, 8, 0),
        (3, 8, 1),
        (3, 8, 2),
        (3, 7, 0),
        (4, 8, 0),
        (4, 8, 1),
        (4, 8, 2),
        (4, 7, 0),
    ];
    codes
        .iter()
        .enumerate()
        .map(|(i, (c, d, e))| ([1, 0, *c, *d, *e, 0xFF], 100_000 + 1_111 * i as u32))
        .collect()
}

/// How the meter frames its pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Hdlc,
    MBus,
}

/// One push as the meter sends it: ciphered (security byte `security`) and framed.
pub fn push(plain: &[u8], keys: &Keys, security: u8, counter: u32, link: Link) -> Vec<u8> {
    let apdu = apdu::encrypt(plain, keys, SYSTEM_TITLE, security, counter);
    match link {
        Link::Hdlc => frame::hdlc_frame(&apdu, false, true),
        Link::MBus => frame::mbus_frames(&apdu, 120),
    }
}
