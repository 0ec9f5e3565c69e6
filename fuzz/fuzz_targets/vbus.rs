//! Fuzz the `v` decoder: arbitrary bytes in arbitrary chunks. Invariants: no panic, and events and
//! statistics do not depend on the chunking.

#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sml::decode::vbus::{VbusDecoder, MAX_QUEUED_EVENTS};
use sml::decode::{DecodeEvent, DecodeStats, Decoder};

const SCRIPT: &str = ">D\n>M 1\n+1,3,v,0,9600,V\n\
1,AA100021421000010774vo12ut@#,a,,a,1\n\
1,AA100021421000010774vo0sw@10,b,C,b,1\n\
1,AA100021421000010774vo10ub@b1:1,c,,c,0\n\
1,AA10vo22uw@1,d,Wh,d,0\n\
1,AAvo400sb@1,e,,e,0\n#\n";

fn meter() -> sml::script::model::Meter {
    static METER: std::sync::OnceLock<sml::script::model::Meter> = std::sync::OnceLock::new();
    METER
        .get_or_init(|| sml::script::compile(SCRIPT.as_bytes()).script.unwrap().meters[0].clone())
        .clone()
}

fn run(data: &[u8], chunk: usize) -> (Vec<DecodeEvent>, DecodeStats) {
    let mut d = VbusDecoder::new(&meter());
    let now = Instant::now();
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
    let chunk = usize::from(control) + 1;
    let (whole, whole_stats) = run(data, data.len().max(1));
    let (chunked, chunked_stats) = run(data, chunk);
    assert_eq!(
        whole_stats, chunked_stats,
        "statistics depend on chunking (chunk {chunk})"
    );
    if data.len() < 2 * MAX_QUEUED_EVENTS {
        assert_eq!(whole, chunked, "events depend on chunking (chunk {chunk})");
    }
});
