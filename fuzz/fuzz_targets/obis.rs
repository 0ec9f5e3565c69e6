//! Fuzz the `o` decoder: arbitrary bytes in arbitrary chunks. Invariants: no panic, memory bounded
//! (the decoder's own bounds), the events do not depend on the chunking, and every rejection is
//! counted once in the statistics.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use sml::decode::obis::{ObisDecoder, MAX_QUEUED_EVENTS};
use sml::decode::{DecodeEvent, DecodeStats};

mod support {
    use sml::script::compile;
    use sml::script::model::*;
    include!("../../tests/support/obis_meter.rs");
}

const DESCRIPTORS: &[&str] = &[
    "1-0:1.8.0(@1",
    "1-0:1.8.1*255(@1000",
    "0-0:98.1.0(@(19:1",
    "0-1:24.2.1(@(1:1",
    "0-0:96.1.1(@#)",
    ".8.1(@1",
    "@s 2:10",
    "1.8.0(@-0.1+5",
];

fn run(data: &[u8], chunk: usize, window_mode: bool) -> (Vec<DecodeEvent>, DecodeStats) {
    // Compiled once: the fuzzer's time goes to the decoder, not to the front end.
    static METER: std::sync::OnceLock<sml::script::model::Meter> = std::sync::OnceLock::new();
    let mut meter = METER
        .get_or_init(|| support::obis_meter(DESCRIPTORS))
        .clone();
    if window_mode {
        meter.options.so2_flags = Some(1);
    }
    common::run(ObisDecoder::new(&meter), data, chunk, false)
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x3f) + 1;
    let window_mode = control & 0x40 != 0;
    let (whole, whole_stats) = run(data, data.len().max(1), window_mode);
    let (chunked, chunked_stats) = run(data, chunk, window_mode);
    assert_eq!(
        whole_stats, chunked_stats,
        "statistics depend on chunking (chunk {chunk})"
    );
    // A caller that does not poll loses old errors past the queue bound, never telegrams.
    let telegrams = |ev: &[DecodeEvent]| -> Vec<DecodeEvent> {
        ev.iter()
            .filter(|e| matches!(e, DecodeEvent::Telegram(_)))
            .cloned()
            .collect()
    };
    assert_eq!(
        telegrams(&whole),
        telegrams(&chunked),
        "telegrams depend on chunking (chunk {chunk})"
    );
    if data.len() < 2 * MAX_QUEUED_EVENTS {
        assert_eq!(whole, chunked, "events depend on chunking (chunk {chunk})");
        let errors = whole
            .iter()
            .filter(|e| matches!(e, DecodeEvent::Error(_)))
            .count() as u64;
        assert_eq!(
            errors,
            whole_stats.rejections(),
            "every rejection is counted once"
        );
    }
});
