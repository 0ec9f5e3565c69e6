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

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sim::Simulator;
use sml::decode::{decoder_for, DecodeEvent, Value};
use sml::script::model::{Decoding, Meter};

/// Scripts that do not run against a well-behaved meter, and why (checked by the test).
const KNOWN_BROKEN: &[(&str, &str)] = &[(
    "kamstrup-multical-4xx-6xx-8xx-ottelo.tas",
    "its definition line has no request blocks: its `>S` section asks the meter once an hour with \
     `sml(1 1 \"3F10...\")`, which the runner sends as written, without the KMP CRC and framing \
     Tasmota's `SML_Write` adds for a `k` meter, so the meter never answers",
)];

fn shared() -> PathBuf {
    std::env::var_os("SML_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

fn corpus() -> Option<PathBuf> {
    let dir = shared().join("corpus/tasmota-community");
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

/// Both meters' registers in one simulator (their register ids do not overlap).
fn simulator() -> Simulator {
    let mut sim = Simulator::multical();
    sim.registers.extend(Simulator::omnipower().registers);
    sim
}

/// Poll `meter` for two rounds of its blocks against `sim`; the entries that got a value, and the
/// decoder's complaints.
fn run_meter(meter: &Meter, sim: &Simulator) -> (BTreeSet<u16>, Vec<String>) {
    let mut d = decoder_for(meter).unwrap();
    let blocks = meter.requests.blocks.len().max(1);
    let period = Duration::from_millis(u64::from(meter.requests.period_ms.max(100)));
    let t0 = Instant::now();
    let (mut got, mut complaints) = (BTreeSet::new(), Vec::new());
    for tick in 0..(2 * blocks as u32 + 1) {
        let now = t0 + period * tick;
        while let Some(request) = d.poll_transmit(now) {
            if let Some(reply) = sim.answer_wire(&request) {
                d.handle_bytes(now, &reply);
            }
        }
        d.handle_timeout(now);
        while let Some(ev) = d.poll_event() {
            match ev {
                DecodeEvent::Telegram(t) => got.extend(t.readings.iter().map(|r| r.entry)),
                DecodeEvent::Error(e) => complaints.push(e.to_string()),
                DecodeEvent::Discarded { .. } => {}
            }
        }
    }
    (got, complaints)
}

#[test]
fn every_kamstrup_script_of_the_corpus_runs_against_a_simulated_meter() {
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
    let sim = simulator();
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
                l.starts_with('+') && f.len() > 2 && f[2].starts_with('k')
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
            .filter(|m| matches!(m.decoding, Decoding::Kamstrup(_)))
            .collect();
        if meters.is_empty() {
            continue;
        }
        total += 1;
        let mut missing = Vec::new();
        let mut complaints = Vec::new();
        for m in meters {
            let (got, errs) = run_meter(m, &sim);
            let Decoding::Kamstrup(metrics) = &m.decoding else {
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
            complaints.dedup();
            let why = format!(
                "no value for {} (decoder said: {})",
                missing.join(", "),
                complaints.join("; ")
            );
            report.push(format!("{name}: {why}"));
            check(&name, Some(&why), &mut failures);
        }
    }
    eprintln!("kamstrup corpus: {runs}/{total} scripts run end to end");
    for r in &report {
        eprintln!("  {r}");
    }
    assert!(total > 0, "the corpus has Kamstrup scripts");
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
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
    let dir = shared().join("captures/kamstrup");
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
