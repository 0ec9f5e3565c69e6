//! Fuzz the `e` decoder: arbitrary bytes in arbitrary chunks. Invariants: no panic (decoder and
//! `explain`), events and statistics do not depend on the chunking, and every piece the framer
//! accepts has master and answer CRCs that check.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sml::decode::ebus::frame::{self, crc8_unescaped};
use sml::decode::ebus::EbusDecoder;
use sml::decode::{DecodeEvent, DecodeStats, MAX_QUEUED_EVENTS};
use sml::script::model::Meter;

const SCRIPT: &str = ">D\n>M 1\n+1,3,e,0,2400,EBUS\n\
1,xxxx0503xxxxxxxxxxxxxxxxss@1,a,C,a,0\n\
1,03fe0503xxxxxxuu@b3:1,b,,b,0\n\
1,xxxx5017xxxxxxuuuu@16,c,C,c,1\n\
1,xxxx5014x5UUuu@1,d,C,d,0\n\
1,pm(r0700)bcd4@1,e,,e,0\n\
1,x20ffffffff@1,f,,f,0\n#\n";

fn run(data: &[u8], chunk: usize) -> (Vec<DecodeEvent>, DecodeStats) {
    static METER: OnceLock<Meter> = OnceLock::new();
    common::run(
        EbusDecoder::new(&common::first_meter(&METER, SCRIPT)),
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
    common::assert_chunking_invariant(data.len(), chunk, MAX_QUEUED_EVENTS, |c| run(data, c));
    let _ = sml::decode::ebus::explain(data);
    // A piece between SYNs that the framer accepts has good CRCs.
    for piece in data.split(|&b| b == frame::SYN) {
        if let Ok(t) = frame::check(piece, 0) {
            let s = &t.symbols;
            let end = 5 + usize::from(t.master.nn);
            assert_eq!(crc8_unescaped(&s[..end]), s[end], "master CRC");
            if let Some(p) = t.slave {
                let end = p.start + 1 + usize::from(p.nn);
                assert_eq!(crc8_unescaped(&s[p.start..end]), s[end], "answer CRC");
            }
        }
    }
});
