//! Compatibility over `../shared/captures/mbus` (wired M-Bus RSP_UD long frames; `expected.json` is
//! libmbus's normalized output): every frame passes its length/checksum/stop check, the record
//! walker reproduces every libmbus record (value scaled to its unit, storage, tariff, subunit), and
//! the metric lines `sml decode --explain` would suggest, run as an `r` script through the raw
//! decoder, read back the walker's values. Prints matched/asserted and valid-checksum/total;
//! mismatches that are libmbus's quirks are listed in `tests/compat-mbus-exceptions.tsv`. Skips
//! cleanly when `../shared` is absent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sml::decode::mbus::{check_long_frame, records, DataField, RecordValue};
use sml::decode::{decoder_for, DecodeEvent, Value};

fn shared() -> PathBuf {
    std::env::var_os("SML_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

fn captures() -> Option<PathBuf> {
    let dir = shared().join("captures/mbus");
    dir.is_dir().then_some(dir)
}

/// (capture, record id or `-`) -> reason, from the exceptions file.
fn exceptions() -> BTreeMap<(String, String), String> {
    let text = include_str!("compat-mbus-exceptions.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let capture = f.next().unwrap_or("").to_string();
            let id = f.next().unwrap_or("").to_string();
            let reason = f.next().unwrap_or("").to_string();
            assert!(!reason.is_empty(), "exception without a reason: {l}");
            ((capture, id), reason)
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

/// What differs between libmbus's record and ours, if anything.
fn compare(want: &serde_json::Value, got: &sml::decode::mbus::Record) -> Option<String> {
    // libmbus leaves out a field that is 0 (and says nothing of it for fixed-structure counters).
    let field = |k: &str| want.get(k).and_then(|v| v.as_str()).unwrap_or("0");
    for (name, ours) in [
        ("StorageNumber", got.storage.to_string()),
        ("Tariff", got.tariff.to_string()),
        ("Device", got.subunit.to_string()),
    ] {
        if field(name) != ours {
            return Some(format!("{name}: libmbus {}, ours {ours}", field(name)));
        }
    }
    match (want.get("value"), &got.value) {
        (Some(serde_json::Value::Number(n)), RecordValue::Number(v)) => {
            let w = n.as_f64().unwrap_or(f64::NAN);
            (!close(w, *v)).then(|| format!("value: libmbus {w}, ours {v}"))
        }
        (Some(serde_json::Value::Number(n)), other) => {
            Some(format!("value: libmbus {n}, ours {other:?}"))
        }
        // Strings (dates, texts, hex ids): libmbus's formatting, not compared.
        _ => None,
    }
}

/// An `r` script of every record the walker can write a line for; (script, expected values).
fn explain_script(frame: &[u8]) -> (String, Vec<f64>) {
    let mut script = String::from(">D\n>M 1\n+1,3,rE1,0,2400,MB\n1,=so3,256\n");
    let mut want = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, r) in records(frame).records.iter().enumerate() {
        let (Some(line), RecordValue::Number(v)) = (r.tasmota_line(1, &format!("r{i}")), &r.value)
        else {
            continue;
        };
        // Tasmota's `bcdN` reads no sign: a negative BCD (top nibble F) reads nothing, as it should.
        if matches!(r.field, DataField::Bcd(_)) && *v < 0.0 {
            continue;
        }
        // Two records with the same DIF/VIF bytes: the first wins in the decoder, so skip the rest.
        if !seen.insert(r.head.clone()) {
            continue;
        }
        script.push_str(&line);
        script.push('\n');
        want.push(*v);
    }
    script.push_str("#\n");
    (script, want)
}

#[test]
fn mbus_captures_check_and_reproduce_libmbus() {
    let Some(dir) = captures() else {
        eprintln!("skipped: no ../shared/captures/mbus");
        return;
    };
    let exceptions = exceptions();
    let mut used = BTreeSet::new();
    let (mut total, mut valid, mut asserted, mut matched) = (0, 0, 0, 0);
    let (mut lines_run, mut lines_ok) = (0, 0);
    let mut failures = Vec::new();
    let mut bins: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    bins.sort();
    for bin in bins {
        let name = bin.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&bin).unwrap();
        total += 1;
        let Ok(frame) = check_long_frame(&bytes) else {
            let key = (name.clone(), "-".to_string());
            if exceptions.contains_key(&key) {
                used.insert(key);
            } else {
                failures.push(format!("{name}: {:?}", check_long_frame(&bytes).err()));
            }
            continue;
        };
        valid += 1;
        let walked = records(frame);
        if let Some(e) = &walked.error {
            failures.push(format!("{name}: walk stopped at byte {}: {}", e.0, e.1));
        }

        // The explain lines, run through the raw decoder, read back the walker's values.
        let (script, want) = explain_script(frame);
        let compiled = sml::script::compile(script.as_bytes());
        let meter = &compiled.script.expect("explain lines compile").meters[0];
        let mut d = decoder_for(meter).unwrap();
        d.handle_bytes(Instant::now(), &bytes);
        d.handle_end();
        let mut got: Vec<(u16, f64)> = Vec::new();
        while let Some(ev) = d.poll_event() {
            if let DecodeEvent::Telegram(t) = ev {
                got.extend(t.readings.iter().filter_map(|r| match r.value {
                    Value::Number(v) => Some((r.entry, v)),
                    Value::Text(_) => None,
                }));
            }
        }
        for (i, w) in want.iter().enumerate() {
            lines_run += 1;
            let entry = (i + 1) as u16;
            match got.iter().find(|(e, _)| *e == entry) {
                Some((_, v)) if close(*v, *w) => lines_ok += 1,
                other => failures.push(format!(
                    "{name}: explain line {entry} read {other:?}, the walker says {w}"
                )),
            }
        }

        let expected = bin.with_extension("expected.json");
        let Ok(text) = std::fs::read_to_string(&expected) else {
            continue;
        };
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        if let Some(id) = json
            .pointer("/slave_information/Id")
            .and_then(|v| v.as_str())
        {
            asserted += 1;
            let ours = walked
                .header
                .as_ref()
                .and_then(|h| h.id.clone())
                .unwrap_or_default();
            if ours.trim_start_matches('0') == id.trim_start_matches('0') {
                matched += 1;
            } else {
                let key = (name.clone(), "Id".to_string());
                if exceptions.contains_key(&key) {
                    used.insert(key);
                } else {
                    failures.push(format!("{name}: Id libmbus {id}, ours {ours}"));
                }
            }
        }
        let want_records = json["records"].as_array().cloned().unwrap_or_default();
        for (i, w) in want_records.iter().enumerate() {
            asserted += 1;
            let key = (name.clone(), i.to_string());
            let function = w.get("Function").and_then(|f| f.as_str()).unwrap_or("");
            let problem = match walked.records.get(i) {
                Some(got) => compare(w, got),
                // libmbus lists the data after DIF 0F/1F as one more record.
                None if i == walked.records.len()
                    && walked.manufacturer_data.is_some()
                    && function
                        == if walked.more_records_follow {
                            "More records follow"
                        } else {
                            "Manufacturer specific"
                        } =>
                {
                    None
                }
                None => Some("record missing".to_string()),
            };
            match problem {
                None => matched += 1,
                Some(_) if exceptions.contains_key(&key) => {
                    used.insert(key);
                }
                Some(why) => failures.push(format!("{name} record {i}: {why}")),
            }
        }
        if walked.records.len() + usize::from(walked.manufacturer_data.is_some())
            > want_records.len()
        {
            failures.push(format!(
                "{name}: {} records, libmbus has {}",
                walked.records.len(),
                want_records.len()
            ));
        }
    }
    // An exception that no longer applies must go.
    for key in exceptions.keys().filter(|k| !used.contains(*k)) {
        failures.push(format!(
            "{}\t{}: listed exception no longer needed",
            key.0, key.1
        ));
    }
    println!(
        "mbus captures: {matched}/{asserted} libmbus assertions matched ({} listed exceptions), \
         {valid}/{total} frames with a valid checksum, {lines_ok}/{lines_run} explain lines read back \
         by the r decoder",
        used.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
