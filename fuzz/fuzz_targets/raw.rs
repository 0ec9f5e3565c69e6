//! Fuzz the `r`/`R` decoder: arbitrary bytes in arbitrary chunks, for an M-Bus meter (8E1), a plain
//! raw meter with a short window, and an `R` meter. Invariants: no panic, and events and statistics
//! do not depend on the chunking.

#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sml::decode::raw::RawDecoder;
use sml::decode::{DecodeEvent, DecodeStats, Decoder, MAX_QUEUED_EVENTS};

const SCRIPTS: [&str; 3] = [
    ">D\n>M 1\n+1,3,rE1,0,2400,H,1,10,105b015c16\n\
1,0C06bcd8@1,e,kWh,e,0\n1,0259ssSS@100,t,C,t,2\n1,68xxxx6808xx72bcd8@1,id,,id,0\n\
1,04A9FF8100ssSSssSSs@100,p,W,p,2\n#\n",
    ">D\n>M 1\n+1,3,r,0,9600,A\n1,=so3,8\n1,212717UUuux2@1,p,W,p,0\n1,2127x2ffffffff@1,f,,f,2\n\
1,pm(r2127)uu@1,u,,u,0\n#\n",
    ">D\n>M 1\n+1,3,R,0,2400,R\n1,=so6,100\n1,AA55UUuu@1,v,,v,0\n1,68xxxx68bcd8@1,i,,i,0\n#\n",
];

fn meter(i: usize) -> sml::script::model::Meter {
    static METERS: std::sync::OnceLock<Vec<sml::script::model::Meter>> = std::sync::OnceLock::new();
    METERS.get_or_init(|| {
        SCRIPTS
            .iter()
            .map(|s| sml::script::compile(s.as_bytes()).script.unwrap().meters[0].clone())
            .collect()
    })[i]
        .clone()
}

fn run(data: &[u8], chunk: usize, which: usize) -> (Vec<DecodeEvent>, DecodeStats) {
    let mut d = RawDecoder::new(&meter(which));
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
    let chunk = usize::from(control & 0x3f) + 1;
    let which = usize::from(control >> 6) % SCRIPTS.len();
    let (whole, whole_stats) = run(data, data.len().max(1), which);
    let (chunked, chunked_stats) = run(data, chunk, which);
    assert_eq!(
        whole_stats, chunked_stats,
        "statistics depend on chunking (chunk {chunk})"
    );
    // A byte can give an error and a discard (each `68` may start a frame that fails): below half
    // the queue's cap no event is dropped in either run.
    if data.len() < MAX_QUEUED_EVENTS / 2 {
        assert_eq!(whole, chunked, "events depend on chunking (chunk {chunk})");
    }
});
