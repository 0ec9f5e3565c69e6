//! Fuzz the `p` decoder: arbitrary bytes in arbitrary chunks, with a request waiting or read as a
//! capture. Invariants: no panic, and events and statistics do not depend on the chunking.

#![no_main]

use std::sync::OnceLock;

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use sml::decode::pzem::PzemDecoder;
use sml::decode::{DecodeEvent, DecodeStats, MAX_QUEUED_EVENTS};
use sml::script::model::Meter;

const SCRIPT: &str = ">D\n>M 1\n+1,3,p,0,9600,PZEM,1,10,B0,B1,B2,B3\n\
1,A0UUuu@1,v,V,v,0\n\
1,A0xxxxuu@10,vd,V,vd,1\n\
1,A3UUuuUUuu@256,e,Wh,e,0\n\
1,xxxxuu@i1:1,a,A,a,0\n\
1,xxbcd4@1,b,,b,0\n#\n";

fn run(data: &[u8], chunk: usize, ask: bool) -> (Vec<DecodeEvent>, DecodeStats) {
    static METER: OnceLock<Meter> = OnceLock::new();
    common::run(
        PzemDecoder::new(&common::first_meter(&METER, SCRIPT)),
        data,
        chunk,
        ask,
    )
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x3f) + 1;
    let ask = control & 0x80 != 0;
    common::assert_chunking_invariant(data.len(), chunk, MAX_QUEUED_EVENTS, |c| run(data, c, ask));
});
