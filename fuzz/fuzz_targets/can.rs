//! Fuzz the `C` decoder: arbitrary bytes (frame records, garbage, cut records) in arbitrary chunks.
//! Invariants: no panic, and events and statistics do not depend on the chunking.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sml::decode::can::CanDecoder;
use sml::decode::{DecodeEvent, DecodeStats, MAX_QUEUED_EVENTS};
use sml::script::model::Meter;

const SCRIPT: &str = ">D\n>M 1\n+1,7,C,0,3203,CAN,6,10,908040FE080000000000000000\n\
1,1081407f0801700000UUuuUUuu@1024,a,W,a,1\n\
1,100124800500uuUU@10,b,C,b,0\n\
1,10022480050000ss@-0.01,c,,c,0\n\
1,xxxxxxxx08ffffffff@1,d,,d,2\n\
1,00000123xxbcd4@b3:1,e,,e,0\n#\n";

fn run(data: &[u8], chunk: usize) -> (Vec<DecodeEvent>, DecodeStats) {
    static METER: OnceLock<Meter> = OnceLock::new();
    common::run(
        CanDecoder::new(&common::first_meter(&METER, SCRIPT)),
        data,
        chunk,
        false,
    )
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(control) + 1;
    common::assert_chunking_invariant(data.len(), chunk, MAX_QUEUED_EVENTS, |c| run(data, c));
});
