//! Fuzz the `m` decoder: arbitrary bytes in arbitrary chunks, over RTU and Modbus TCP, with a request
//! waiting or read as a capture. Invariants: no panic, and events and statistics do not depend on
//! the chunking.

#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sml::decode::modbus::{ModbusDecoder, MAX_QUEUED_EVENTS};
use sml::decode::{DecodeEvent, DecodeStats, Decoder};

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

fn meter(tcp: bool) -> sml::script::model::Meter {
    static METERS: std::sync::OnceLock<[sml::script::model::Meter; 2]> = std::sync::OnceLock::new();
    let m = METERS.get_or_init(|| {
        let one = |s: &str| sml::script::compile(s.as_bytes()).script.unwrap().meters[0].clone();
        [one(RTU), one(TCP)]
    });
    m[usize::from(tcp)].clone()
}

fn run(data: &[u8], chunk: usize, tcp: bool, ask: bool) -> (Vec<DecodeEvent>, DecodeStats) {
    let mut d = ModbusDecoder::new(&meter(tcp));
    let now = Instant::now();
    if ask {
        d.poll_transmit(now);
    }
    let mut events: Vec<DecodeEvent> = Vec::new();
    // Discards split by a poll are one run of skipped bytes.
    let push = |events: &mut Vec<DecodeEvent>, e: DecodeEvent| {
        if let (DecodeEvent::Discarded { bytes }, Some(DecodeEvent::Discarded { bytes: last })) =
            (&e, events.last_mut())
        {
            *last += bytes;
        } else {
            events.push(e);
        }
    };
    for piece in data.chunks(chunk.max(1)) {
        d.handle_bytes(now, piece);
        while let Some(e) = d.poll_event() {
            push(&mut events, e);
        }
    }
    d.handle_end();
    while let Some(e) = d.poll_event() {
        push(&mut events, e);
    }
    (events, d.stats())
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x3f) + 1;
    let tcp = control & 0x40 != 0;
    let ask = control & 0x80 != 0;
    let (whole, whole_stats) = run(data, data.len().max(1), tcp, ask);
    let (chunked, chunked_stats) = run(data, chunk, tcp, ask);
    assert_eq!(
        whole_stats, chunked_stats,
        "statistics depend on chunking (chunk {chunk})"
    );
    if data.len() < 2 * MAX_QUEUED_EVENTS {
        assert_eq!(whole, chunked, "events depend on chunking (chunk {chunk})");
    }
});
