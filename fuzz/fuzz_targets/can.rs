//! Fuzz the `C` decoder: arbitrary bytes (frame records, garbage, cut records) in arbitrary chunks.
//! Invariants: no panic, and events and statistics do not depend on the chunking.

#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sml::decode::can::CanDecoder;
use sml::decode::{DecodeEvent, DecodeStats, Decoder, MAX_QUEUED_EVENTS};

const SCRIPT: &str = ">D\n>M 1\n+1,7,C,0,3203,CAN,6,10,908040FE080000000000000000\n\
1,1081407f0801700000UUuuUUuu@1024,a,W,a,1\n\
1,100124800500uuUU@10,b,C,b,0\n\
1,10022480050000ss@-0.01,c,,c,0\n\
1,xxxxxxxx08ffffffff@1,d,,d,2\n\
1,00000123xxbcd4@b3:1,e,,e,0\n#\n";

fn meter() -> sml::script::model::Meter {
    static METER: std::sync::OnceLock<sml::script::model::Meter> = std::sync::OnceLock::new();
    METER
        .get_or_init(|| sml::script::compile(SCRIPT.as_bytes()).script.unwrap().meters[0].clone())
        .clone()
}

fn run(data: &[u8], chunk: usize) -> (Vec<DecodeEvent>, DecodeStats) {
    let mut d = CanDecoder::new(&meter());
    let now = Instant::now();
    let mut events: Vec<DecodeEvent> = Vec::new();
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
    let chunk = usize::from(control) + 1;
    let (whole, whole_stats) = run(data, data.len().max(1));
    let (chunked, chunked_stats) = run(data, chunk);
    assert_eq!(whole_stats, chunked_stats, "statistics depend on chunking (chunk {chunk})");
    if data.len() < 2 * MAX_QUEUED_EVENTS {
        assert_eq!(whole, chunked, "events depend on chunking (chunk {chunk})");
    }
});
