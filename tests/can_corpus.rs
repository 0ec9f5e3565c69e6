//! Every CAN (`C`) script of the community corpus (`../shared/corpus/tasmota-community`, or
//! `$SML_SHARED/corpus/...`) run against a simulated bus: for each metric line the simulator
//! (`can_sim.rs`) puts the frame that line is written for on the bus, and the script runs when every
//! metric line published a value. Scripts that cannot run are listed in [`KNOWN_BROKEN`] with the
//! reason; any other failure, or a listed script that now runs, fails the test. Prints runs/total.
//! Skips cleanly when the corpus is absent.

#[path = "can_sim.rs"]
mod sim;
#[path = "support/type_corpus.rs"]
mod type_corpus;

use std::collections::BTreeSet;
use std::time::Instant;

use sml::decode::decoder_for;
use sml::script::model::{Decoding, Meter};
use type_corpus::{defines_meter_of, judge_meters, source_of, TypeCorpus};

/// Scripts that do not run against a well-behaved bus, and why (checked by the test).
const KNOWN_BROKEN: &[(&str, &str)] = &[];

/// The entries that got a value when every line's frame was on the bus, and the complaints.
fn run_meter(meter: &Meter) -> (BTreeSet<u16>, Vec<String>) {
    let mut d = decoder_for(meter).unwrap();
    let Decoding::Can(metrics) = &meter.decoding else {
        unreachable!()
    };
    let now = Instant::now();
    // The request the definition line sends (if any) goes out first, as on the bus.
    let _ = d.poll_transmit(now);
    for (i, m) in metrics.iter().enumerate() {
        d.handle_bytes(now, &sim::frame_for(&m.pattern, 1 + i as u8).encode());
    }
    type_corpus::drain(d.as_mut(), false)
}

#[test]
fn every_can_script_of_the_corpus_runs_against_a_simulated_bus() {
    TypeCorpus {
        label: "CAN corpus",
        kind: "CAN scripts",
        known_broken: KNOWN_BROKEN,
        mentions: |text| defines_meter_of(text, &['C']),
        source: source_of,
    }
    .check_every_script(|script, _| {
        judge_meters(
            script,
            |m| match &m.decoding {
                Decoding::Can(metrics) => Some(metrics.as_slice()),
                _ => None,
            },
            run_meter,
            false,
        )
    });
}
