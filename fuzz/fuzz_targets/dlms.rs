//! Fuzz the DLMS push decoder (`r` meter with `=so4`): arbitrary bytes in arbitrary chunks, either
//! as they come (framing, M-Bus segments, ciphering headers) or as the plaintext of a correctly
//! encrypted and framed push (so the data-notification parser, the COSEM walker and the metric
//! lines see arbitrary data behind a valid tag). Invariants: no panic; events and statistics do not
//! depend on the chunking; `explain` never panics either.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sml::decode::dlms::apdu::{self, Keys};
use sml::decode::dlms::{explain, frame, DlmsDecoder, MAX_QUEUED_EVENTS};
use sml::decode::{DecodeEvent, DecodeStats};
use sml::script::model::Meter;

const SCRIPT: &str = ">D\n>M 1\n+1,3,r,0,9600,IM350\n\
1,=so4,000102030405060708090A0B0C0D0E0F\n\
1,=so5,D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF\n\
1,0209090Cx13UUuuUUuu@1000,a,kWh,a,3\n\
1,0209090Cx0UUuu@1,b,,b,0\n\
1,pm(1.8.0)@1000,c,kWh,c,3\n\
1,pm(.3.8.1)@1,d,,d,0\n\
1,pm(h0100600100ff)@#,e,,e,0\n\
1,x5FFffFFff@1,f,,f,0\n#\n";

fn keys() -> Keys {
    Keys {
        encryption: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        authentication: Some((0xD0..=0xDF).collect()),
    }
}

fn run(data: &[u8], chunk: usize) -> (Vec<DecodeEvent>, DecodeStats) {
    static METER: OnceLock<Meter> = OnceLock::new();
    common::run(
        DlmsDecoder::new(&common::first_meter(&METER, SCRIPT)),
        data,
        chunk,
        false,
    )
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x3f) + 1;
    let wire: Vec<u8> = match control >> 6 {
        // The bytes as a link delivers them.
        0 | 1 => data.to_vec(),
        // The bytes as the plaintext of an authenticated, encrypted push in HDLC.
        2 => {
            let apdu = apdu::encrypt(data, &keys(), *b"SMSgp\x04R\xCD", 0x30, 1);
            frame::hdlc_frame(&apdu, false, true)
        }
        // ... in segmented M-Bus, encryption only.
        _ => {
            let apdu = apdu::encrypt(data, &keys(), *b"SMSgp\x04R\xCD", 0x20, 2);
            frame::mbus_frames(&apdu, 64)
        }
    };
    common::assert_chunking_invariant(wire.len(), chunk, MAX_QUEUED_EVENTS, |c| run(&wire, c));
    let _ = explain(&wire, Some(&keys()));
});
