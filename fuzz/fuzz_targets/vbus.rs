//! Fuzz the `v` decoder: arbitrary bytes in arbitrary chunks. Invariants: no panic, and events and
//! statistics do not depend on the chunking.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sml::decode::vbus::{VbusDecoder, MAX_QUEUED_EVENTS};
use sml::decode::{DecodeEvent, DecodeStats};
use sml::script::model::Meter;

const SCRIPT: &str = ">D\n>M 1\n+1,3,v,0,9600,V\n\
1,AA100021421000010774vo12ut@#,a,,a,1\n\
1,AA100021421000010774vo0sw@10,b,C,b,1\n\
1,AA100021421000010774vo10ub@b1:1,c,,c,0\n\
1,AA10vo22uw@1,d,Wh,d,0\n\
1,AAvo400sb@1,e,,e,0\n#\n";

fn run(data: &[u8], chunk: usize) -> (Vec<DecodeEvent>, DecodeStats) {
    static METER: OnceLock<Meter> = OnceLock::new();
    common::run(
        VbusDecoder::new(&common::first_meter(&METER, SCRIPT)),
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
