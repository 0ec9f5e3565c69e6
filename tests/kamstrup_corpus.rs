//! Every Kamstrup (`k`) script of the community corpus (`../shared/corpus/tasmota-community`, or
//! `$SML_SHARED/corpus/...`) run against a simulated meter: the decoder sends its request blocks on
//! an injected clock, the simulator answers each one (a MULTICAL's and an OMNIPOWER's registers,
//! with the mantissa lengths the scripts' skips imply), and the script runs when every one of its
//! metric lines has published a value within two rounds of blocks. Scripts that cannot run are
//! listed in [`KNOWN_BROKEN`] with the reason; any other failure, or a listed script that now runs,
//! fails the test. Prints runs/total. Also reproduces every Kamstrup capture of
//! `../shared/captures/kamstrup` that has an `expected.json`. Skips cleanly when `../shared` is absent.

#[path = "kamstrup_sim.rs"]
mod sim;
#[path = "support/type_corpus.rs"]
mod type_corpus;

use std::collections::BTreeSet;
use std::time::Instant;

use sim::Simulator;
use sml::decode::{decoder_for, DecodeEvent, Value};
use sml::script::model::{Decoding, Meter};
use type_corpus::{
    defines_meter_of, judge_meters, poll_two_rounds, shared_dir, source_of, TypeCorpus,
};

/// Scripts that do not run against a well-behaved meter, and why (checked by the test).
const KNOWN_BROKEN: &[(&str, &str)] = &[(
    "kamstrup-multical-4xx-6xx-8xx-ottelo.tas",
    "its definition line has no request blocks: its `>S` section asks the meter once an hour with \
     `sml(1 1 \"3F10...\")`, which the runner sends as written, without the KMP CRC and framing \
     Tasmota's `SML_Write` adds for a `k` meter, so the meter never answers",
)];

/// Both meters' registers in one simulator (their register ids do not overlap).
fn simulator() -> Simulator {
    let mut sim = Simulator::multical();
    sim.registers.extend(Simulator::omnipower().registers);
    sim
}

/// Poll `meter` for two rounds of its blocks against `sim`.
fn run_meter(meter: &Meter, sim: &Simulator) -> (BTreeSet<u16>, Vec<String>) {
    poll_two_rounds(meter, |request| sim.answer_wire(request))
}

#[test]
fn every_kamstrup_script_of_the_corpus_runs_against_a_simulated_meter() {
    let sim = simulator();
    TypeCorpus {
        label: "kamstrup corpus",
        kind: "Kamstrup scripts",
        known_broken: KNOWN_BROKEN,
        mentions: |text| defines_meter_of(text, &['k']),
        source: source_of,
    }
    .check_every_script(|script, _| {
        judge_meters(
            script,
            |m| match &m.decoding {
                Decoding::Kamstrup(metrics) => Some(metrics.as_slice()),
                _ => None,
            },
            |m| run_meter(m, &sim),
            false,
        )
    });
}

/// The script that reads each capture with an `expected.json`, and the value it must publish for
/// each asserted key.
fn reader_for(capture: &str) -> Option<(&'static str, &'static str)> {
    match capture {
        // GetSerialNo (CID 02): the serial number is the four data bytes, big endian.
        "pykmp_doc_6_2_2_getserialno_response.bin" => Some((
            ">D\n>M 1\n+1,3,k,0,1200,KMP\n1,3F02UUuuUUuu@1,Serial,,serial,0\n#\n",
            "serial",
        )),
        _ => None,
    }
}

#[test]
fn every_kamstrup_capture_with_expected_values_is_reproduced() {
    let dir = shared_dir().join("captures/kamstrup");
    let Ok(index) = std::fs::read_to_string(dir.join("INDEX.tsv")) else {
        eprintln!("../shared/captures/kamstrup is absent: skipped");
        return;
    };
    let (mut asserted, mut matched) = (0, 0);
    for row in index.lines().skip(1) {
        let cols: Vec<&str> = row.split('\t').collect();
        if cols.get(9) != Some(&"yes") {
            continue;
        }
        let file = cols[0];
        let expected_path = dir.join(file.replace(".bin", ".expected.json"));
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&expected_path).unwrap()).unwrap();
        let (script, key) = reader_for(file)
            .unwrap_or_else(|| panic!("{file}: a capture with expected values and no reader here"));
        let want = expected["values"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("{file}: no number for `{key}` in {expected}"));
        asserted += 1;
        let meter = sml::script::compile(script.as_bytes())
            .script
            .unwrap()
            .meters[0]
            .clone();
        let mut d = decoder_for(&meter).unwrap();
        d.handle_bytes(Instant::now(), &std::fs::read(dir.join(file)).unwrap());
        d.handle_end();
        let mut got = Vec::new();
        while let Some(e) = d.poll_event() {
            if let DecodeEvent::Telegram(t) = e {
                got.extend(t.readings.into_iter().map(|r| r.value));
            }
        }
        assert_eq!(got, vec![Value::Number(want)], "{file}");
        assert_eq!(d.stats().crc_errors, 0, "{file}");
        matched += 1;
    }
    eprintln!("kamstrup captures: {matched}/{asserted} expected values reproduced");
    assert!(asserted > 0, "the Kamstrup captures have expected values");
}
