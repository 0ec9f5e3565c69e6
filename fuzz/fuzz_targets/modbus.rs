//! Fuzz the `m` decoder: arbitrary bytes in arbitrary chunks, over RTU and Modbus TCP, with a request
//! waiting or read as a capture. Invariants: no panic, and events and statistics do not depend on
//! the chunking.

#![no_main]

use std::sync::OnceLock;

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use sml::decode::modbus::{ModbusDecoder, MAX_QUEUED_EVENTS};
use sml::decode::{DecodeEvent, DecodeStats};
use sml::script::model::Meter;

const RTU: &str = ">D\n>M 1\n+1,3,m,0,9600,M,1,10,01040000,02030010,r010600010001\n\
1,010404ffffffff@i0:1,a,V,a,2\n\
1,020304UUuuUUuus@i1:1,b,V,b,0\n\
1,0106xxxxSSss@i2:1,c,V,c,0\n\
1,01x2bcd4@1,d,V,d,0\n\
1,pm(r0104)xxFFffFFff@1,e,V,e,0\n\
1,010404uu@b3:1,f,V,f,0\n#\n";

const TCP: &str = ">D\n>M 1\n+1,[10.0.0.1],m,0,502,M,1,10,01040000,02030010\n\
1,010404ffffffff@i0:1,a,V,a,2\n\
1,020304U64@i1:1,b,V,b,0\n#\n";

fn meter(tcp: bool) -> Meter {
    static RTU_METER: OnceLock<Meter> = OnceLock::new();
    static TCP_METER: OnceLock<Meter> = OnceLock::new();
    if tcp {
        common::first_meter(&TCP_METER, TCP)
    } else {
        common::first_meter(&RTU_METER, RTU)
    }
}

fn run(data: &[u8], chunk: usize, tcp: bool, ask: bool) -> (Vec<DecodeEvent>, DecodeStats) {
    common::run(ModbusDecoder::new(&meter(tcp)), data, chunk, ask)
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x3f) + 1;
    let tcp = control & 0x40 != 0;
    let ask = control & 0x80 != 0;
    common::assert_chunking_invariant(data.len(), chunk, MAX_QUEUED_EVENTS, |c| {
        run(data, c, tcp, ask)
    });
});
