//! Every pulse-counter (`c`) script of the community corpus (`../shared/corpus/tasmota-community`,
//! or `$SML_SHARED/corpus/...`) run against a simulated line (`counter_sim.rs`): five pulses 600 ms
//! apart (longer for a slow poll), each with contact bounce in interrupt mode; the script runs when
//! its count line reads five pulses (scaled by the line's divisor) and its rate line, if it has
//! one, the pulses per minute. Scripts that cannot run
//! are listed in [`KNOWN_BROKEN`] with the reason; any other failure, or a listed script that now
//! runs, fails the test. Prints runs/total. Skips cleanly when the corpus is absent.

#[path = "counter_sim.rs"]
mod sim;
#[path = "support/type_corpus.rs"]
mod type_corpus;

use std::collections::BTreeMap;
use std::time::Instant;

use sml::decode::counter::{CounterDecoder, CounterStore};
use sml::decode::{DecodeEvent, Decoder, Value};
use sml::script::model::{CounterField, Decoding, Meter};
use type_corpus::{defines_meter_of, source_of, TypeCorpus, Verdict};

/// Scripts that do not run against a well-behaved line, and why (checked by the test).
const KNOWN_BROKEN: &[(&str, &str)] = &[];

/// Pulses come this often: 600 ms (100 a minute), longer for a slow poll.
fn period_ms(param: i32) -> u64 {
    600.max(2 * (6 * u64::from(param.unsigned_abs()) + 20))
}

/// What each line of a counter meter read last after the simulated pulses, and the decoder's
/// complaints other than the bounces it is meant to reject.
fn run_meter(meter: &Meter) -> (BTreeMap<u16, f64>, Vec<String>) {
    let store = CounterStore::default();
    let mut d = CounterDecoder::new(meter, &store);
    let Decoding::Counter { param, .. } = &meter.decoding else {
        unreachable!()
    };
    // Chatter of 4 ms is bounce for an interrupt-mode debounce; a polled line stays low longer
    // than its six polls, so the pulse counts.
    let bounce = *param < 0 && param.unsigned_abs() > 4;
    let low_ms = 200.max(6 * u64::from(param.unsigned_abs()) + 20);
    d.handle_bytes(
        Instant::now(),
        &sim::encode(&sim::pulses(5, 1000, period_ms(*param), low_ms, bounce)),
    );
    let (mut last, mut complaints) = (BTreeMap::new(), Vec::new());
    while let Some(ev) = d.poll_event() {
        match ev {
            DecodeEvent::Telegram(t) => {
                for r in t.readings {
                    if let Value::Number(v) = r.value {
                        last.insert(r.entry, v);
                    }
                }
            }
            DecodeEvent::Error(e) if !e.to_string().contains("bounce") => {
                complaints.push(e.to_string())
            }
            _ => {}
        }
    }
    (last, complaints)
}

#[test]
fn every_counter_script_of_the_corpus_runs_against_a_simulated_line() {
    TypeCorpus {
        label: "counter corpus",
        kind: "counter scripts",
        known_broken: KNOWN_BROKEN,
        mentions: |text| defines_meter_of(text, &['c']),
        source: source_of,
    }
    .check_every_script(|script, _| {
        let (mut any, mut wrong, mut complaints) = (false, Vec::new(), Vec::new());
        for m in &script.meters {
            let Decoding::Counter { metrics, param } = &m.decoding else {
                continue;
            };
            any = true;
            let (last, errs) = run_meter(m);
            for metric in metrics {
                let want = match metric.pattern {
                    CounterField::Count => sml::decode::scale(5.0, &metric.value),
                    CounterField::Rate => {
                        sml::decode::scale(60_000.0 / period_ms(*param) as f64, &metric.value)
                    }
                };
                let got = last.get(&metric.output.entry).copied();
                if got.is_none_or(|g| (g - want).abs() > 1e-9 * want.abs().max(1.0)) {
                    wrong.push(format!(
                        "meter {} line {} `{}`: {got:?}, want {want}",
                        m.index, metric.output.line, metric.output.name
                    ));
                }
            }
            complaints.extend(errs);
        }
        match (any, wrong.is_empty() && complaints.is_empty()) {
            (false, _) => Verdict::NotOfType,
            (true, true) => Verdict::Runs,
            (true, false) => Verdict::Broken(format!(
                "{} (decoder said: {})",
                wrong.join(", "),
                complaints.join("; ")
            )),
        }
    });
}
