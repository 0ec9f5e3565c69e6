//! Every Modbus (`m`/`M`) script of the community corpus (`../shared/corpus/tasmota-community`, or
//! `$SML_SHARED/corpus/...`) run against a simulated meter: the meter's decoder sends its request
//! blocks on an injected clock, the simulator answers each one (every slave, every register), and
//! the script runs when every one of its metric lines has published a value within two rounds of
//! blocks. Scripts that cannot run are listed in [`KNOWN_BROKEN`] with the reason; any other
//! failure, or a listed script that now runs, fails the test. Prints runs/total. Skips cleanly when
//! the corpus is absent.

#[path = "modbus_sim.rs"]
mod sim;
#[path = "support/type_corpus.rs"]
mod type_corpus;

use std::collections::BTreeSet;

use sim::Simulator;
use sml::script::model::{Decoding, Meter, MeterSource};
use type_corpus::{defines_meter_of, judge_meters, poll_two_rounds, source_of, TypeCorpus};

/// Scripts that do not run against a well-behaved meter, and why (checked by the test).
const KNOWN_BROKEN: &[(&str, &str)] = &[
    (
        "eastron-sdm230-modbus-ottelo.tas",
        "does not compile: uses `%ms%`, a macro of its host script (tests/corpus-known-broken.tsv)",
    ),
    (
        "sbc-ale3-2x-modbus-ottelo.tas",
        "does not compile: the definition line is wrapped inside a hex block, so the rest reads as a \
         metric line without `@` (tests/corpus-known-broken.tsv)",
    ),
    (
        "sdm630-modbus-tcp-gemu.tas",
        "the empty block in `...,01040010,,01040048,...` is block 9 and asks slave 0 (no reply, as \
         on Tasmota), so `@i9:` (Timp) never gets a value and `@i10:` (Texp) reads register 0x48",
    ),
];

/// Poll `meter` for two rounds of its blocks against `sim`, over RTU or Modbus TCP as the meter is.
fn run_meter(meter: &Meter, sim: &Simulator) -> (BTreeSet<u16>, Vec<String>) {
    let tcp = matches!(meter.source, MeterSource::ModbusTcp { .. });
    poll_two_rounds(meter, |request| {
        if tcp {
            sim.answer_tcp(request)
        } else {
            sim.answer_rtu(request)
        }
    })
}

#[test]
fn every_modbus_script_of_the_corpus_runs_against_a_simulated_meter() {
    let sim = Simulator::default();
    TypeCorpus {
        label: "modbus corpus",
        kind: "Modbus scripts",
        known_broken: KNOWN_BROKEN,
        mentions: |text| defines_meter_of(text, &['m', 'M']),
        source: source_of,
    }
    .check_every_script(|script, _| {
        judge_meters(
            script,
            |m| match &m.decoding {
                Decoding::Modbus(metrics) => Some(metrics.as_slice()),
                _ => None,
            },
            |m| run_meter(m, &sim),
            false,
        )
    });
}
