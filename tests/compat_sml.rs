//! Compatibility with peer decoders on real SML captures (`../shared/captures/sml`, skipped when
//! absent): for every capture whose `expected.json` asserts values, one metric line per asserted
//! OBIS code is built, the capture is decoded whole, and each telegram is compared with the peer's
//! frame. Every mismatch must be listed, with its reason, in `tests/compat-sml-exceptions.tsv`; the
//! test asserts that the mismatches are exactly those.
//!
//! Peers and what their values mean (from each file's `value_semantics`):
//! - sml-rs snapshots (`frames`): one entry per transport-layer result; values are `raw * 10^scaler`
//!   in the SML unit, octet strings as hex. Only CRC-good frames give values, as with us, so our
//!   telegrams line up one to one with the peer's `values` frames.
//! - smartmeter-obis (`values`): one telegram; energy in kWh (the script line says `@1000`),
//!   manufacturer ids as text (`@#x`).
//! - vzlogger (`values`): Wh/W with a tolerance.
//! - `rejected: true`: the peer gets no value from the capture; neither may we.
//! - SmlLib (`obis_entry_count`): the number of list entries of the frame.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value as Json;
use sml::decode::sml::frame::{CrcPolicy, FrameDecoder, FrameEvent};
use sml::decode::sml::message;
use sml::decode::{decoder_for, DecodeEvent, Telegram, Value};
use sml::script::compile;
use sml::script::model::{Meter, ValueSpec};

/// `$SML_SHARED`, or `../shared` next to the repository (a git worktree elsewhere sets
/// `SML_SHARED=/work/shared`).
fn shared_dir() -> PathBuf {
    std::env::var_os("SML_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

fn captures() -> Option<PathBuf> {
    let dir = shared_dir().join("captures/sml");
    dir.is_dir().then_some(dir)
}

/// `1-0:1.8.0*255` / `129-129:199.130.3*255` -> the six OBIS bytes.
fn obis_bytes(key: &str) -> Option<[u8; 6]> {
    let (ab, rest) = key.split_once(':')?;
    let (a, b) = ab.split_once('-')?;
    let (cde, f) = rest.split_once('*').unwrap_or((rest, "255"));
    let mut parts = cde.split('.');
    let mut out = [0u8; 6];
    out[0] = a.parse().ok()?;
    out[1] = b.parse().ok()?;
    for slot in &mut out[2..5] {
        *slot = parts.next()?.parse().ok()?;
    }
    out[5] = f.parse().ok()?;
    Some(out)
}

/// What one metric line is expected to publish.
#[derive(Debug, Clone)]
enum Want {
    Number { value: f64, tolerance: f64 },
    Text(String),
}

/// A metric line we generate for an asserted OBIS code.
struct Line {
    key: String,
    obis: [u8; 6],
    spec: ValueSpec,
}

/// The script a user would write for these lines: one `s` meter, one metric line per asserted entry
/// (`1,77070100010800ff@1000,1-0:1.8.0*255,,e1,4`), entries 1..n.
fn script(lines: &[Line]) -> String {
    let mut text = String::from(">D\n>B\n->sensor53 r\n>M 1\n+1,3,s,0,9600,SML\n");
    for (i, l) in lines.iter().enumerate() {
        let hex: String = l.obis.iter().map(|b| format!("{b:02x}")).collect();
        let value = match &l.spec {
            ValueSpec::Number { divisor, offset } if *offset == 0.0 => format!("{divisor}"),
            ValueSpec::Number { divisor, offset } => format!("{divisor}{offset:+}"),
            ValueSpec::Text {
                hex_as_ascii: false,
            } => "#".to_string(),
            ValueSpec::Text { hex_as_ascii: true } => "#x".to_string(),
        };
        text.push_str(&format!(
            "1,7707{hex}@{value},{},,e{},4\n",
            l.key.replace(',', ";"),
            i + 1
        ));
    }
    text.push_str("#\n");
    text
}

/// Meter 1 of [`script`], compiled by the real front end.
fn meter(lines: &[Line]) -> Meter {
    let text = script(lines);
    let compiled = compile(text.as_bytes());
    let Some(mut script) = compiled.script else {
        panic!(
            "generated script does not compile: {:?}\n{text}",
            compiled.diagnostics
        );
    };
    script.meters.remove(0)
}

fn decode(meter: &Meter, bytes: &[u8]) -> Vec<Telegram> {
    let mut d = decoder_for(meter).expect("an s meter has a decoder");
    d.handle_bytes(Instant::now(), bytes);
    d.handle_end();
    std::iter::from_fn(|| d.poll_event())
        .filter_map(|e| match e {
            DecodeEvent::Telegram(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// The expected value of one asserted field, and the line that publishes it.
fn sml_rs_want(v: &Json) -> Option<(ValueSpec, Want)> {
    if let Some(n) = v.get("value").and_then(Json::as_f64) {
        let spec = ValueSpec::Number {
            divisor: 1.0,
            offset: 0.0,
        };
        return Some((
            spec,
            Want::Number {
                value: n,
                tolerance: 0.0,
            },
        ));
    }
    let hex = v.get("octets_hex")?.as_str()?;
    Some((
        ValueSpec::Text {
            hex_as_ascii: false,
        },
        Want::Text(hex.to_string()),
    ))
}

#[derive(Default)]
struct Report {
    asserted: usize,
    matched: usize,
    /// `capture \t key` of every mismatch, with what we saw.
    mismatches: Vec<(String, String, String)>,
}

impl Report {
    fn check(&mut self, capture: &str, key: &str, want: &Want, got: Option<&Value>) {
        self.asserted += 1;
        let ok = match (want, got) {
            (Want::Number { value, tolerance }, Some(Value::Number(g))) => {
                (g - value).abs() <= tolerance.max(1e-9 * value.abs()).max(1e-12)
            }
            (Want::Text(t), Some(Value::Text(g))) => g == t,
            _ => false,
        };
        if ok {
            self.matched += 1;
        } else {
            self.mismatches.push((
                capture.to_string(),
                key.to_string(),
                format!("want {want:?}, got {got:?}"),
            ));
        }
    }
}

fn reading(t: &Telegram, entry: usize) -> Option<&Value> {
    t.readings
        .iter()
        .rev()
        .find(|r| usize::from(r.entry) == entry)
        .map(|r| &r.value)
}

/// sml-rs `frames`: our telegrams against the peer's value frames, in order.
fn check_frames(report: &mut Report, capture: &str, bytes: &[u8], frames: &[Json]) {
    let value_frames: Vec<&serde_json::Map<String, Json>> = frames
        .iter()
        .filter_map(|f| f.get("values").and_then(Json::as_object))
        .collect();
    let mut lines: Vec<Line> = Vec::new();
    for f in &value_frames {
        for (key, v) in f.iter() {
            let Some(obis) = obis_bytes(key) else {
                continue;
            };
            if lines.iter().any(|l| &l.key == key) {
                continue;
            }
            if let Some((spec, _)) = sml_rs_want(v) {
                lines.push(Line {
                    key: key.clone(),
                    obis,
                    spec,
                });
            }
        }
    }
    let telegrams = decode(&meter(&lines), bytes);
    if telegrams.len() != value_frames.len() {
        report.asserted += 1;
        report.mismatches.push((
            capture.to_string(),
            "frames".to_string(),
            format!(
                "peer has {} value frames, we decoded {} telegrams",
                value_frames.len(),
                telegrams.len()
            ),
        ));
    }
    for (t, f) in telegrams.iter().zip(&value_frames) {
        for (i, line) in lines.iter().enumerate() {
            let Some(v) = f.get(&line.key) else { continue };
            let Some((_, want)) = sml_rs_want(v) else {
                continue;
            };
            report.check(capture, &line.key, &want, reading(t, i + 1));
        }
    }
}

/// smartmeter-obis / vzlogger `values`: every telegram we decode must carry them.
fn check_values(
    report: &mut Report,
    capture: &str,
    bytes: &[u8],
    values: &serde_json::Map<String, Json>,
) {
    let mut lines = Vec::new();
    let mut wants = Vec::new();
    for (key, v) in values {
        let Some(obis) = obis_bytes(key) else {
            continue;
        };
        // smartmeter-obis nests the value in `values[0]`; vzlogger has it flat.
        let inner = v.get("values").and_then(|a| a.get(0)).unwrap_or(v);
        let tolerance = v.get("tolerance").and_then(Json::as_f64).unwrap_or(0.0);
        let (spec, want) = match inner.get("value") {
            Some(Json::String(s)) => (
                ValueSpec::Text { hex_as_ascii: true },
                Want::Text(s.clone()),
            ),
            Some(Json::Number(n)) => {
                // The peer states energy in kWh; the meter sends Wh: the script line says `@1000`.
                let divisor = if inner.get("unit").and_then(Json::as_str) == Some("kWh") {
                    1000.0
                } else {
                    1.0
                };
                (
                    ValueSpec::Number {
                        divisor,
                        offset: 0.0,
                    },
                    Want::Number {
                        value: n.as_f64().unwrap(),
                        tolerance,
                    },
                )
            }
            _ => continue,
        };
        lines.push(Line {
            key: key.clone(),
            obis,
            spec,
        });
        wants.push(want);
    }
    let telegrams = decode(&meter(&lines), bytes);
    if telegrams.is_empty() {
        report.asserted += 1;
        report.mismatches.push((
            capture.to_string(),
            "frames".into(),
            "no telegram decoded".into(),
        ));
    }
    for t in &telegrams {
        for (i, (line, want)) in lines.iter().zip(&wants).enumerate() {
            report.check(capture, &line.key, want, reading(t, i + 1));
        }
    }
}

/// SmlLib `obis_entry_count`: list entries in the (first) frame, or in the bare message list.
fn entry_count(bytes: &[u8]) -> Option<usize> {
    let mut payload = None;
    let mut frames = FrameDecoder::new(CrcPolicy::Tolerant);
    frames.push(bytes, &mut |ev, data| {
        if matches!(ev, FrameEvent::Frame { .. }) && payload.is_none() {
            payload = Some(data.to_vec());
        }
    });
    let data = payload.unwrap_or_else(|| bytes.to_vec());
    let mut n = 0;
    message::for_each_entry(&data, |e| n += usize::from(e.obj_name.len() == 6)).ok()?;
    Some(n)
}

fn exceptions() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat-sml-exceptions.tsv"),
    )
    .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut cols = l.split('\t');
            let capture = cols.next().unwrap().to_string();
            let key = cols.next().expect("capture, key, reason").to_string();
            assert!(
                cols.next().is_some_and(|r| !r.trim().is_empty()),
                "exception without a reason: {l}"
            );
            (capture, key)
        })
        .collect()
}

#[test]
fn sml_captures_decode_to_the_peers_values() {
    let Some(dir) = captures() else {
        eprintln!("../shared/captures/sml is absent: compatibility test skipped");
        return;
    };
    let mut report = Report::default();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".expected.json"))
        .collect();
    names.sort();
    for path in names {
        let expected: Json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let capture = expected["capture"].as_str().unwrap().to_string();
        let Ok(bytes) = std::fs::read(dir.join(&capture)) else {
            continue;
        };
        if let Some(frames) = expected.get("frames").and_then(Json::as_array) {
            check_frames(&mut report, &capture, &bytes, frames);
        } else if let Some(values) = expected.get("values").and_then(Json::as_object) {
            check_values(&mut report, &capture, &bytes, values);
        } else if expected.get("rejected") == Some(&Json::Bool(true)) {
            // Any metric line: nothing at all may be published.
            let line = Line {
                key: "1-0:1.8.1*255".into(),
                obis: [1, 0, 1, 8, 1, 255],
                spec: ValueSpec::Number {
                    divisor: 1.0,
                    offset: 0.0,
                },
            };
            let published: usize = decode(&meter(&[line]), &bytes)
                .iter()
                .map(|t| t.readings.len())
                .sum();
            report.check(
                &capture,
                "rejected",
                &Want::Number {
                    value: 0.0,
                    tolerance: 0.0,
                },
                Some(&Value::Number(published as f64)),
            );
        } else if let Some(count) = expected.get("obis_entry_count").and_then(Json::as_u64) {
            let got = entry_count(&bytes).map(|n| Value::Number(n as f64));
            report.check(
                &capture,
                "obis_entry_count",
                &Want::Number {
                    value: count as f64,
                    tolerance: 0.0,
                },
                got.as_ref(),
            );
        }
    }
    println!(
        "sml compatibility: {}/{} asserted values matched",
        report.matched, report.asserted
    );
    for (capture, key, what) in &report.mismatches {
        println!("mismatch\t{capture}\t{key}\t{what}");
    }
    let found: BTreeSet<(String, String)> = report
        .mismatches
        .iter()
        .map(|(c, k, _)| (c.clone(), k.clone()))
        .collect();
    assert_eq!(
        found,
        exceptions(),
        "mismatches differ from tests/compat-sml-exceptions.tsv"
    );
    assert!(report.matched > 0);
}
