/*!
What every decoder fuzz target checks, whatever its meter: feed the input whole and in the pieces
the fuzzer chose, and the statistics (and the events, while the event queue cannot overflow) must
not depend on the chunking; no panic anywhere. A target keeps only how it builds its decoder and
what its control byte chooses.
*/
#![allow(dead_code)]

use std::fmt::Debug;
use std::sync::OnceLock;
use std::time::Instant;

use sml::decode::{DecodeEvent, DecodeStats, Decoder};
use sml::script::model::Meter;

/// The first meter of `script`, compiled once per process (`cell` is the target's own).
pub fn first_meter(cell: &'static OnceLock<Meter>, script: &str) -> Meter {
    cell.get_or_init(|| compile_meter(script)).clone()
}

/// The first meter of `script`; panics when the target's own script does not compile.
pub fn compile_meter(script: &str) -> Meter {
    sml::script::compile(script.as_bytes())
        .script
        .unwrap()
        .meters[0]
        .clone()
}

/// A fresh decoder `d` (that has sent its first request when `ask`) fed `data` in pieces of
/// `chunk`: the events and the statistics.
pub fn run(
    mut d: impl Decoder,
    data: &[u8],
    chunk: usize,
    ask: bool,
) -> (Vec<DecodeEvent>, DecodeStats) {
    if ask {
        d.poll_transmit(Instant::now());
    }
    (feed(&mut d, data, chunk, || {}), d.stats())
}

/// Feed `data` to `d` in pieces of `chunk` bytes, draining events after each (`after_piece` runs
/// then too), then end the input: the events, with adjacent discards as one run (a poll between
/// two pieces splits a run of skipped bytes in two).
pub fn feed(
    d: &mut dyn Decoder,
    data: &[u8],
    chunk: usize,
    mut after_piece: impl FnMut(),
) -> Vec<DecodeEvent> {
    let now = Instant::now();
    let mut events = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        d.handle_bytes(now, piece);
        drain(d, &mut events);
        after_piece();
    }
    d.handle_end();
    drain(d, &mut events);
    events
}

/// Move `d`'s pending events into `events`, merging a discard into a discard just before it.
pub fn drain(d: &mut dyn Decoder, events: &mut Vec<DecodeEvent>) {
    while let Some(e) = d.poll_event() {
        if let (DecodeEvent::Discarded { bytes }, Some(DecodeEvent::Discarded { bytes: last })) =
            (&e, events.last_mut())
        {
            *last += bytes;
        } else {
            events.push(e);
        }
    }
}

/// Run `run(chunk)` with the input whole (`len` bytes) and in pieces of `chunk`: the statistics
/// must agree, and so must the events when the input is shorter than `2 * max_queued` (a longer
/// one may overflow the queue at different places).
pub fn assert_chunking_invariant<S: PartialEq + Debug>(
    len: usize,
    chunk: usize,
    max_queued: usize,
    run: impl Fn(usize) -> (Vec<DecodeEvent>, S),
) {
    let (whole, whole_stats) = run(len.max(1));
    let (chunked, chunked_stats) = run(chunk);
    assert_eq!(
        whole_stats, chunked_stats,
        "statistics depend on chunking (chunk {chunk})"
    );
    if len < 2 * max_queued {
        assert_eq!(whole, chunked, "events depend on chunking (chunk {chunk})");
    }
}
