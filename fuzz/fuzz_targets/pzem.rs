//! Fuzz the `p` decoder: arbitrary bytes in arbitrary chunks, with a request waiting or read as a
//! capture. Invariants: no panic, and events and statistics do not depend on the chunking.

#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sml::decode::pzem::PzemDecoder;
use sml::decode::{DecodeEvent, DecodeStats, Decoder, MAX_QUEUED_EVENTS};

const SCRIPT: &str = ">D\n>M 1\n+1,3,p,0,9600,PZEM,1,10,B0,B1,B2,B3\n\
1,A0UUuu@1,v,V,v,0\n\
1,A0xxxxuu@10,vd,V,vd,1\n\
1,A3UUuuUUuu@256,e,Wh,e,0\n\
1,xxxxuu@i1:1,a,A,a,0\n\
1,xxbcd4@1,b,,b,0\n#\n";

fn meter() -> sml::script::model::Meter {
    static METER: std::sync::OnceLock<sml::script::model::Meter> = std::sync::OnceLock::new();
    METER
        .get_or_init(|| sml::script::compile(SCRIPT.as_bytes()).script.unwrap().meters[0].clone())
        .clone()
}

fn run(data: &[u8], chunk: usize, ask: bool) -> (Vec<DecodeEvent>, DecodeStats) {
    let mut d = PzemDecoder::new(&meter());
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
    let ask = control & 0x80 != 0;
    let (whole, whole_stats) = run(data, data.len().max(1), ask);
    let (chunked, chunked_stats) = run(data, chunk, ask);
    assert_eq!(
        whole_stats, chunked_stats,
        "statistics depend on chunking (chunk {chunk})"
    );
    if data.len() < 2 * MAX_QUEUED_EVENTS {
        assert_eq!(whole, chunked, "events depend on chunking (chunk {chunk})");
    }
});
