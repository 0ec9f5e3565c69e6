//! Every VBus (`v`) script of the community corpus (`../shared/corpus/tasmota-community`, or
//! `$SML_SHARED/corpus/...`) run against a simulated controller: the DeltaSol BS Plus simulator
//! broadcasts one telegram, and the script runs when every one of its metric lines has published
//! a value from it. Scripts that cannot run are listed in [`KNOWN_BROKEN`] with the reason; any
//! other failure, or a listed script that now runs, fails the test. Prints runs/total. Skips
//! cleanly when the corpus is absent.

#[path = "vbus_sim.rs"]
mod sim;
#[path = "support/type_corpus.rs"]
mod type_corpus;

use std::collections::BTreeSet;
use std::time::Instant;

use sim::Controller;
use sml::decode::decoder_for;
use sml::script::model::{Decoding, Meter};
use type_corpus::{defines_meter_of, judge_meters, source_of, TypeCorpus};

/// Scripts that do not run against a well-behaved meter, and why (checked by the test).
const KNOWN_BROKEN: &[(&str, &str)] = &[(
    "resol-deltasol-bs-plus-vbus-gemu.tas",
    "does not compile: the line breaks of its `>M` section were lost upstream (every metric line on \
     the `+1` line) and no `>D` declares `r` (tests/corpus-known-broken.tsv)",
)];

/// Feed one telegram of `controller` to `meter`'s decoder; the entries that got a value, and the
/// decoder's complaints.
fn run_meter(meter: &Meter, controller: &Controller) -> (BTreeSet<u16>, Vec<String>) {
    let mut d = decoder_for(meter).unwrap();
    d.handle_bytes(Instant::now(), &controller.telegram());
    d.handle_end();
    type_corpus::drain(d.as_mut(), false)
}

#[test]
fn every_vbus_script_of_the_corpus_runs_against_a_simulated_controller() {
    let controller = Controller::deltasol_bs_plus();
    TypeCorpus {
        label: "vbus corpus",
        kind: "VBus scripts",
        known_broken: KNOWN_BROKEN,
        mentions: |text| defines_meter_of(text, &['v']),
        source: source_of,
    }
    .check_every_script(|script, _| {
        judge_meters(
            script,
            |m| match &m.decoding {
                Decoding::Vbus(metrics) => Some(metrics.as_slice()),
                _ => None,
            },
            |m| run_meter(m, &controller),
            false,
        )
    });
}
