//! Every raw (`r`/`R`) script of the community corpus (`../shared/corpus/tasmota-community`, or
//! `$SML_SHARED/corpus/...`) run against a simulated meter of its type: the simulator
//! (`tests/raw_sim.rs`) builds the meter's telegram from the script's own metric lines (an M-Bus
//! RSP_UD long frame with its checksum for M-Bus meters), the meter's decoder reads it twice, and
//! the script runs when every metric line published the value laid into the telegram. Encrypted
//! meters (`=so4`) belong to the `dlms` decoder and are counted apart; scripts that cannot run
//! are listed in [`KNOWN_BROKEN`] with the reason. Any other failure, or a listed script that now
//! runs, fails the test. Prints runs/total. Skips cleanly when the corpus is absent.

#[path = "raw_sim.rs"]
mod sim;

use std::path::{Path, PathBuf};
use std::time::Instant;

use sml::decode::{decoder_for, DecodeEvent, Value};
use sml::script::model::{Decoding, Meter};

/// Scripts that do not run against a well-behaved meter, and why (checked by the test).
const KNOWN_BROKEN: &[(&str, &str)] = &[(
    "abb-b-series-like-b21-b23-m-bus-over-infrared-port.tas",
    "does not compile: the docs' optional-block notation `[,107b108b16[,...]]` was copied \
     literally into the request blocks (tests/corpus-known-broken.tsv)",
)];

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

/// Feed the simulated telegrams twice; (entry, value) published, and the decoder's complaints.
fn run_meter(meter: &Meter, sim: &sim::Simulated) -> (Vec<(u16, f64)>, Vec<String>) {
    let mut d = decoder_for(meter).unwrap();
    let (mut got, mut complaints) = (Vec::new(), Vec::new());
    let now = Instant::now();
    for _ in 0..2 {
        for t in &sim.telegrams {
            d.handle_bytes(now, t);
            // A silence after each telegram, as between a meter's answers.
            d.handle_end();
        }
    }
    while let Some(ev) = d.poll_event() {
        match ev {
            DecodeEvent::Telegram(t) => {
                got.extend(t.readings.iter().filter_map(|r| match r.value {
                    Value::Number(v) => Some((r.entry, v)),
                    Value::Text(_) => None,
                }))
            }
            DecodeEvent::Error(e) => complaints.push(e.to_string()),
            DecodeEvent::Discarded { .. } => {}
        }
    }
    (got, complaints)
}

fn is_raw_line(l: &str) -> bool {
    let f: Vec<&str> = l.split(',').collect();
    l.starts_with('+') && f.len() > 2 && f[2].starts_with(['r', 'R'])
}

#[test]
fn every_raw_script_of_the_corpus_runs_against_a_simulated_meter() {
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
    let (mut total, mut runs, mut encrypted) = (0, 0, Vec::new());
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let compiled = sml::script::compile(&source_of(path));
        let Some(script) = compiled.script else {
            let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
            if text.lines().any(is_raw_line) {
                total += 1;
                report.push(format!("{name}: does not compile"));
                check(&name, Some("does not compile"), &mut failures);
            }
            continue;
        };
        let meters: Vec<&Meter> = script
            .meters
            .iter()
            .filter(|m| matches!(m.decoding, Decoding::Raw { .. }))
            .collect();
        if meters.is_empty() {
            continue;
        }
        total += 1;
        if meters.iter().any(|m| sml::decode::dlms::wants(m)) {
            // `=so4`: the DLMS push decoder's; `tests/dlms_corpus.rs` runs these with a key.
            for m in &meters {
                assert!(
                    decoder_for(m).is_ok(),
                    "{name}: meter {} has no decoder",
                    m.index
                );
            }
            encrypted.push(name);
            continue;
        }
        let mut problems = Vec::new();
        for m in meters {
            let sim = sim::simulate(m);
            for (entry, why) in &sim.skipped {
                problems.push(format!("meter {} entry {entry}: simulator: {why}", m.index));
            }
            let (got, complaints) = run_meter(m, &sim);
            for (entry, want) in &sim.expected {
                let seen: Vec<f64> = got
                    .iter()
                    .filter(|(e, _)| e == entry)
                    .map(|(_, v)| *v)
                    .collect();
                if seen.is_empty()
                    || seen
                        .iter()
                        .any(|v| (v - want).abs() > 1e-9 * want.abs().max(1.0))
                {
                    problems.push(format!(
                        "meter {} entry {entry}: published {seen:?}, the meter sent {want}",
                        m.index
                    ));
                }
            }
            if !complaints.is_empty() {
                problems.push(format!(
                    "meter {}: decoder said {}",
                    m.index,
                    complaints.join("; ")
                ));
            }
        }
        if problems.is_empty() {
            runs += 1;
            check(&name, None, &mut failures);
        } else {
            let why = problems.join(", ");
            report.push(format!("{name}: {why}"));
            check(&name, Some(&why), &mut failures);
        }
    }
    eprintln!(
        "raw corpus: {runs}/{} unencrypted r/R scripts run end to end; {} encrypted (=so4, the \
         dlms decoder's): {}",
        total - encrypted.len(),
        encrypted.len(),
        encrypted.join(", ")
    );
    for r in &report {
        eprintln!("  {r}");
    }
    assert!(total > 0, "the corpus has raw scripts");
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
