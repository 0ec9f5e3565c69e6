//! Fuzz the `k` decoder: arbitrary bytes in arbitrary chunks, with a request waiting or read as a
//! capture. Invariants: no panic, and events and statistics do not depend on the chunking.

#![no_main]

use std::sync::OnceLock;

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use sml::decode::kamstrup::{KamstrupDecoder, MAX_QUEUED_EVENTS};
use sml::decode::{DecodeEvent, DecodeStats};
use sml::script::model::Meter;

const SCRIPT: &str = ">D\n>M 1\n+1,3,k,0,9600,K,1,10,3F10040001041E043403FF,3F1001003C\n\
1,3F100001kstr@i0:1000,a,kWh,a,3\n\
1,3F10x8xx041Ekstr@i0:1,b,V,b,1\n\
1,3F10x26xx03FFkstr@i0:1,c,W,c,0\n\
1,3F10003Ckstr@i1:#,d,,d,0\n\
1,3F10xxxxUUuu@1,e,,e,0\n#\n";

fn run(data: &[u8], chunk: usize, ask: bool) -> (Vec<DecodeEvent>, DecodeStats) {
    static METER: OnceLock<Meter> = OnceLock::new();
    common::run(
        KamstrupDecoder::new(&common::first_meter(&METER, SCRIPT)),
        data,
        chunk,
        ask,
    )
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x7f) + 1;
    let ask = control & 0x80 != 0;
    common::assert_chunking_invariant(data.len(), chunk, MAX_QUEUED_EVENTS, |c| run(data, c, ask));
});
