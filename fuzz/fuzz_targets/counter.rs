//! Fuzz the `c` decoder: arbitrary bytes (edge records, garbage, timestamps going back, bounce) in
//! arbitrary chunks, in interrupt and poll mode, with timeouts in between. Invariants: no panic,
//! events and statistics do not depend on the chunking, and the count never goes down.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sml::decode::counter::{CounterDecoder, CounterStore};
use sml::decode::{DecodeEvent, DecodeStats, Decoder, MAX_QUEUED_EVENTS};

const INTERRUPT: &str = ">D\n>M 1\n+1,4,c,0,-50,GAS\n\
1,1-0:1.8.0*255(@100,a,cbm,Count,2\n1,1-0:1.7.0*255(@1,b,,Rate,1\n#\n";
const POLLED: &str = ">D\n>M 1\n+1,1,c,1,10,H2O\n\
1,1-0:1.8.0*255(@1,a,l,Count,0\n1,1-0:1.7.0*255(@1,b,,Rate,1\n#\n";

fn meter(polled: bool) -> sml::script::model::Meter {
    static METERS: std::sync::OnceLock<[sml::script::model::Meter; 2]> = std::sync::OnceLock::new();
    let m = METERS.get_or_init(|| {
        let one = |s: &str| sml::script::compile(s.as_bytes()).script.unwrap().meters[0].clone();
        [one(INTERRUPT), one(POLLED)]
    });
    m[usize::from(polled)].clone()
}

fn run(data: &[u8], chunk: usize, polled: bool) -> (Vec<DecodeEvent>, DecodeStats, u64) {
    let store = CounterStore::default();
    let meter = meter(polled);
    let mut d = CounterDecoder::new(&meter, &store);
    let now = Instant::now();
    let mut events = Vec::new();
    let mut last_count = 0;
    for piece in data.chunks(chunk.max(1)) {
        d.handle_bytes(now, piece);
        while let Some(e) = d.poll_event() {
            events.push(e);
        }
        let count = store.get(1);
        assert!(count >= last_count, "the count went down");
        last_count = count;
    }
    d.handle_end();
    d.handle_timeout(now + Duration::from_secs(10));
    while let Some(e) = d.poll_event() {
        events.push(e);
    }
    (events, d.stats(), store.get(1))
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x7f) + 1;
    let polled = control & 0x80 != 0;
    let (whole, whole_stats, whole_count) = run(data, data.len().max(1), polled);
    let (chunked, chunked_stats, chunked_count) = run(data, chunk, polled);
    assert_eq!(whole_count, chunked_count, "the count depends on chunking");
    assert_eq!(whole_stats, chunked_stats, "statistics depend on chunking (chunk {chunk})");
    if data.len() < 2 * MAX_QUEUED_EVENTS {
        assert_eq!(whole, chunked, "events depend on chunking (chunk {chunk})");
    }
});
