//! Compatibility over `../shared/captures/modbus` (Modbus RTU replies from Tasmota issue dumps):
//! every capture with an `expected.json` reproduces its values, and every capture is a frame with a
//! valid CRC (a data reply or an exception). Prints matched/asserted and valid/total; skips cleanly
//! when `../shared` is absent.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sml::decode::{decoder_for, DecodeEvent, Value};

/// `../shared`, or `$SML_SHARED` (a worktree that does not sit beside it).
fn shared() -> PathBuf {
    std::env::var_os("SML_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

fn captures() -> Option<PathBuf> {
    let dir = shared().join("captures/modbus");
    dir.is_dir().then_some(dir)
}

/// Feed `bytes` to the meter of `script`; (numbers read, valid frames, rejections).
fn decode(script: &str, bytes: &[u8]) -> (Vec<f64>, usize, Vec<String>) {
    let compiled = sml::script::compile(script.as_bytes());
    let script = compiled.script.expect("test script compiles");
    let mut d = decoder_for(&script.meters[0]).unwrap();
    d.handle_bytes(Instant::now(), bytes);
    d.handle_end();
    let (mut values, mut valid, mut errors) = (Vec::new(), 0, Vec::new());
    while let Some(ev) = d.poll_event() {
        match ev {
            DecodeEvent::Telegram(t) => {
                valid += 1;
                values.extend(t.readings.iter().map(|r| match r.value {
                    Value::Number(v) => v,
                    Value::Text(_) => f64::NAN,
                }));
            }
            DecodeEvent::Error(e) => {
                // An exception reply is a whole frame with a good CRC, refused for what it says.
                if e.to_string().contains("exception") {
                    valid += 1;
                }
                errors.push(e.to_string());
            }
            DecodeEvent::Discarded { .. } => {}
        }
    }
    (values, valid, errors)
}

/// The mask that reads an expected value, by the key the capture index uses.
fn mask_for(key: &str) -> &'static str {
    match key {
        "float32_be" => "xxxxxxffffffff",
        other => panic!("expected.json key `{other}` has no mask here yet: add one"),
    }
}

#[test]
fn every_modbus_capture_decodes_and_reproduces_its_expected_values() {
    let Some(dir) = captures() else {
        eprintln!("../shared/captures/modbus is absent: skipped");
        return;
    };
    let mut bins: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    bins.sort();
    let (mut asserted, mut matched, mut valid_total) = (0, 0, 0);
    for bin in &bins {
        let bytes = std::fs::read(bin).unwrap();
        let name = bin.file_name().unwrap().to_string_lossy().to_string();
        // A bus only listened to: every reply with a good CRC is read.
        let (_, valid, errors) =
            decode(">D\n>M 1\n+1,3,m,0,9600,C\n1,xxuu@1,fn,,fn,0\n#\n", &bytes);
        assert_eq!(valid, 1, "{name}: {errors:?}");
        valid_total += valid;

        let expected = bin.with_extension("expected.json");
        let Ok(text) = std::fs::read_to_string(&expected) else {
            continue;
        };
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (key, want) in json["values"].as_object().unwrap() {
            asserted += 1;
            let want = want["value"].as_f64().unwrap();
            // The request the reply answers: slave and function from the reply, register 0.
            let script = format!(
                ">D\n>M 1\n+1,3,m,0,9600,C,1,10,{:02x}{:02x}0000\n1,{}@i0:1,v,,v,9\n#\n",
                bytes[0],
                bytes[1],
                mask_for(key)
            );
            let (values, _, errors) = decode(&script, &bytes);
            assert_eq!(values.len(), 1, "{name}: {errors:?}");
            assert!(
                (values[0] - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{name} {key}: {} != {want}",
                values[0]
            );
            matched += 1;
        }
    }
    eprintln!(
        "modbus captures: expected values matched {matched}/{asserted}; \
         frames with a valid CRC {valid_total}/{}",
        bins.len()
    );
    assert!(asserted >= 1, "the SDM630 capture asserts a value");
}
