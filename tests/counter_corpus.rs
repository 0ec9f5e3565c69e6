//! Every pulse-counter (`c`) script of the community corpus (`../shared/corpus/tasmota-community`,
//! or `$SML_SHARED/corpus/...`) run against a simulated line (`counter_sim.rs`): five pulses 600 ms
//! apart (longer for a slow poll), each with contact bounce in interrupt mode; the script runs when
//! its count line reads five pulses (scaled by the line's divisor) and its rate line, if it has
//! one, the pulses per minute. Scripts that cannot run
//! are listed in [`KNOWN_BROKEN`] with the reason; any other failure, or a listed script that now
//! runs, fails the test. Prints runs/total. Skips cleanly when the corpus is absent.

#[path = "counter_sim.rs"]
mod sim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sml::decode::counter::{CounterDecoder, CounterStore};
use sml::decode::{DecodeEvent, Decoder, Value};
use sml::script::model::{CounterField, Decoding, Meter};

/// Scripts that do not run against a well-behaved line, and why (checked by the test).
const KNOWN_BROKEN: &[(&str, &str)] = &[];

fn corpus() -> Option<PathBuf> {
    let shared = std::env::var_os("SML_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let dir = shared.join("corpus/tasmota-community");
    dir.is_dir().then_some(dir)
}

/// The script as it runs: a fragment without `>D` goes into the host template (as `tests/corpus.rs`
/// does), so `%rxpin%` and friends resolve.
fn source_of(path: &Path) -> Vec<u8> {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fragment-template.sml"
    ))
    .unwrap();
    if !text.lines().any(|l| l.trim_start().starts_with(">D")) {
        return format!("{template}{text}").into_bytes();
    }
    let Some(d) = text.lines().position(|l| l.trim_start().starts_with(">D")) else {
        return text.into_bytes();
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    let host: Vec<&str> = template
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with('>'))
        .filter(|l| {
            let name = l.split('=').next().unwrap_or("");
            text.contains(&format!("{name}%"))
                && !text
                    .lines()
                    .any(|x| x.trim_start().starts_with(&format!("{name}=")))
        })
        .collect();
    for (i, h) in host.iter().enumerate() {
        lines.insert(d + 1 + i, h);
    }
    lines.join("\n").into_bytes()
}

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
    let Some(dir) = corpus() else {
        eprintln!("the community corpus is absent: skipped");
        return;
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tas"))
        .collect();
    paths.sort();
    let (mut total, mut runs) = (0, 0);
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let compiled = sml::script::compile(&source_of(path));
        let Some(script) = compiled.script else {
            let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
            if text.lines().any(|l| {
                let f: Vec<&str> = l.split(',').collect();
                l.starts_with('+') && f.len() > 2 && f[2].starts_with('c')
            }) {
                total += 1;
                report.push(format!("{name}: does not compile"));
                check(&name, Some("does not compile"), &mut failures);
            }
            continue;
        };
        let meters: Vec<&Meter> = script
            .meters
            .iter()
            .filter(|m| matches!(m.decoding, Decoding::Counter { .. }))
            .collect();
        if meters.is_empty() {
            continue;
        }
        total += 1;
        let mut wrong = Vec::new();
        let mut complaints = Vec::new();
        for m in meters {
            let (last, errs) = run_meter(m);
            let Decoding::Counter { metrics, param } = &m.decoding else {
                unreachable!()
            };
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
        if wrong.is_empty() && complaints.is_empty() {
            runs += 1;
            check(&name, None, &mut failures);
        } else {
            let why = format!(
                "{} (decoder said: {})",
                wrong.join(", "),
                complaints.join("; ")
            );
            report.push(format!("{name}: {why}"));
            check(&name, Some(&why), &mut failures);
        }
    }
    eprintln!("counter corpus: {runs}/{total} scripts run end to end");
    for r in &report {
        eprintln!("  {r}");
    }
    assert!(total > 0, "the corpus has counter scripts");
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Compare one script's outcome with [`KNOWN_BROKEN`].
fn check(name: &str, broken: Option<&str>, failures: &mut Vec<String>) {
    let listed = KNOWN_BROKEN.iter().find(|(n, _)| *n == name);
    match (broken, listed) {
        (None, None) | (Some(_), Some(_)) => {}
        (None, Some((_, reason))) => failures.push(format!(
            "{name} runs now; take it off KNOWN_BROKEN ({reason})"
        )),
        (Some(why), None) => failures.push(format!("{name} does not run: {why}")),
    }
}
