//! Every CAN (`C`) script of the community corpus (`../shared/corpus/tasmota-community`, or
//! `$SML_SHARED/corpus/...`) run against a simulated bus: for each metric line the simulator
//! (`can_sim.rs`) puts the frame that line is written for on the bus, and the script runs when every
//! metric line published a value. Scripts that cannot run are listed in [`KNOWN_BROKEN`] with the
//! reason; any other failure, or a listed script that now runs, fails the test. Prints runs/total.
//! Skips cleanly when the corpus is absent.

#[path = "can_sim.rs"]
mod sim;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sml::decode::{decoder_for, DecodeEvent};
use sml::script::model::{Decoding, Meter};

/// Scripts that do not run against a well-behaved bus, and why (checked by the test).
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
    let (mut got, mut complaints) = (BTreeSet::new(), Vec::new());
    while let Some(ev) = d.poll_event() {
        match ev {
            DecodeEvent::Telegram(t) => got.extend(t.readings.iter().map(|r| r.entry)),
            DecodeEvent::Error(e) => complaints.push(e.to_string()),
            DecodeEvent::Discarded { .. } => {}
        }
    }
    (got, complaints)
}

#[test]
fn every_can_script_of_the_corpus_runs_against_a_simulated_bus() {
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
                l.starts_with('+') && f.len() > 2 && f[2].starts_with('C')
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
            .filter(|m| matches!(m.decoding, Decoding::Can(_)))
            .collect();
        if meters.is_empty() {
            continue;
        }
        total += 1;
        let mut missing = Vec::new();
        let mut complaints = Vec::new();
        for m in meters {
            let (got, errs) = run_meter(m);
            let Decoding::Can(metrics) = &m.decoding else {
                unreachable!()
            };
            for metric in metrics {
                if !got.contains(&metric.output.entry) {
                    missing.push(format!(
                        "meter {} line {} `{}`",
                        m.index, metric.output.line, metric.output.name
                    ));
                }
            }
            complaints.extend(errs);
        }
        if missing.is_empty() {
            runs += 1;
            check(&name, None, &mut failures);
        } else {
            let why = format!(
                "no value for {} (decoder said: {})",
                missing.join(", "),
                complaints.join("; ")
            );
            report.push(format!("{name}: {why}"));
            check(&name, Some(&why), &mut failures);
        }
    }
    eprintln!("CAN corpus: {runs}/{total} scripts run end to end");
    for r in &report {
        eprintln!("  {r}");
    }
    assert!(total > 0, "the corpus has CAN scripts");
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
