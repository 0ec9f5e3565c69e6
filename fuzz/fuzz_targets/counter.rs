//! Fuzz the `c` decoder: arbitrary bytes (edge records, garbage, timestamps going back, bounce) in
//! arbitrary chunks, in interrupt and poll mode, with timeouts in between. Invariants: no panic,
//! events and statistics do not depend on the chunking, and the count never goes down.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sml::decode::counter::{CounterDecoder, CounterStore};
use sml::decode::{DecodeEvent, DecodeStats, Decoder, MAX_QUEUED_EVENTS};
use sml::script::model::Meter;

const INTERRUPT: &str = ">D\n>M 1\n+1,4,c,0,-50,GAS\n\
1,1-0:1.8.0*255(@100,a,cbm,Count,2\n1,1-0:1.7.0*255(@1,b,,Rate,1\n#\n";
const POLLED: &str = ">D\n>M 1\n+1,1,c,1,10,H2O\n\
1,1-0:1.8.0*255(@1,a,l,Count,0\n1,1-0:1.7.0*255(@1,b,,Rate,1\n#\n";

fn meter(polled: bool) -> Meter {
    static INTERRUPT_METER: OnceLock<Meter> = OnceLock::new();
    static POLLED_METER: OnceLock<Meter> = OnceLock::new();
    if polled {
        common::first_meter(&POLLED_METER, POLLED)
    } else {
        common::first_meter(&INTERRUPT_METER, INTERRUPT)
    }
}

/// The events, and the statistics with the count (which must not depend on the chunking either).
fn run(data: &[u8], chunk: usize, polled: bool) -> (Vec<DecodeEvent>, (DecodeStats, u64)) {
    let store = CounterStore::default();
    let mut d = CounterDecoder::new(&meter(polled), &store);
    let mut last_count = 0;
    let mut events = common::feed(&mut d, data, chunk, || {
        let count = store.get(1);
        assert!(count >= last_count, "the count went down");
        last_count = count;
    });
    d.handle_timeout(Instant::now() + Duration::from_secs(10));
    common::drain(&mut d, &mut events);
    (events, (d.stats(), store.get(1)))
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x7f) + 1;
    let polled = control & 0x80 != 0;
    common::assert_chunking_invariant(data.len(), chunk, MAX_QUEUED_EVENTS, |c| {
        run(data, c, polled)
    });
});
