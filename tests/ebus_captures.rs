//! Compatibility over `../shared/captures/ebus` (eBus telegrams from csowada/ebus's tests): every
//! capture is a telegram whose CRC(s) check, except those listed in
//! `tests/compat-ebus-exceptions.tsv` with a reason, and every capture with an `expected.json`
//! reproduces its values through a script's metric lines. Prints matched/asserted and valid/total;
//! skips cleanly when `../shared` is absent.

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
    let dir = shared().join("captures/ebus");
    dir.is_dir().then_some(dir)
}

/// Captures that do not decode, and why (file, reason), from the TSV beside this test.
fn exceptions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/compat-ebus-exceptions.tsv"
    ))
    .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (file, why) = l.split_once('\t').expect("file<TAB>reason");
            (file.to_string(), why.to_string())
        })
        .collect()
}

/// Feed `bytes` to the meter of `script`: (numbers read in line order, telegrams, rejections).
fn decode(script: &str, bytes: &[u8]) -> (Vec<(u16, f64)>, usize, Vec<String>) {
    let compiled = sml::script::compile(script.as_bytes());
    let script = compiled.script.expect("test script compiles");
    let mut d = decoder_for(&script.meters[0]).unwrap();
    d.handle_bytes(Instant::now(), bytes);
    d.handle_end();
    let (mut values, mut telegrams, mut errors) = (Vec::new(), 0, Vec::new());
    while let Some(ev) = d.poll_event() {
        match ev {
            DecodeEvent::Telegram(t) => {
                telegrams += 1;
                values.extend(t.readings.iter().map(|r| match r.value {
                    Value::Number(v) => (r.entry, v),
                    Value::Text(_) => (r.entry, f64::NAN),
                }));
            }
            DecodeEvent::Error(e) => errors.push(e.to_string()),
            DecodeEvent::Discarded { bytes } => errors.push(format!("{bytes} bytes discarded")),
        }
    }
    (values, telegrams, errors)
}

/// The Vaillant B5 16 broadcast's date and time (BCD: second, minute, hour, day, month, weekday,
/// year), read by metric lines as a user would write them.
const B516_DATETIME: &str = ">D\n>M 1\n+1,3,e,0,2400,VRC\n\
1,xxfeb516xxxxbcd2@1,Second,,s,0\n\
1,xxfeb516x3bcd2@1,Minute,,mi,0\n\
1,xxfeb516x4bcd2@1,Hour,,h,0\n\
1,xxfeb516x5bcd2@1,Day,,d,0\n\
1,xxfeb516x6bcd2@1,Month,,mo,0\n\
1,xxfeb516x8bcd2@1,Year,,y,0\n#\n";

/// What an expected.json value is, as sml reads it from the capture.
fn reproduce(key: &str, bytes: &[u8]) -> Option<serde_json::Value> {
    match key {
        "datetime" => {
            let (values, _, errors) = decode(B516_DATETIME, bytes);
            assert_eq!(values.len(), 6, "{errors:?}");
            let v: Vec<u32> = values.iter().map(|(_, v)| *v as u32).collect();
            Some(
                format!(
                    "20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}",
                    v[5], v[4], v[3], v[2], v[1], v[0]
                )
                .into(),
            )
        }
        _ => None,
    }
}

#[test]
fn every_ebus_capture_decodes_and_reproduces_its_expected_values() {
    let Some(dir) = captures() else {
        eprintln!("../shared/captures/ebus is absent: skipped");
        return;
    };
    let mut bins: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    bins.sort();
    let exceptions = exceptions();
    let (mut asserted, mut matched, mut valid) = (0, 0, 0);
    let mut failures = Vec::new();
    for bin in &bins {
        let bytes = std::fs::read(bin).unwrap();
        let name = bin.file_name().unwrap().to_string_lossy().to_string();
        // Every telegram counts, whatever a line reads from it.
        let (_, telegrams, errors) =
            decode(">D\n>M 1\n+1,3,e,0,2400,B\n1,uu@1,QQ,,qq,0\n#\n", &bytes);
        // The listing for `sml decode --explain` shows the telegram and no rejection.
        let listing = sml::decode::ebus::explain(&bytes).text;
        if telegrams == 1
            && (!listing.starts_with("telegram at byte") || listing.contains("rejected"))
        {
            failures.push(format!("{name}: explain says {listing}"));
        }
        let excepted = exceptions.iter().any(|(f, _)| *f == name);
        match (telegrams == 1 && errors.is_empty(), excepted) {
            (true, false) => valid += 1,
            (false, true) => {}
            (true, true) => {
                failures.push(format!("{name} decodes now: remove it from the exceptions"))
            }
            (false, false) => failures.push(format!("{name}: {telegrams} telegrams, {errors:?}")),
        }

        let Ok(text) = std::fs::read_to_string(bin.with_extension("expected.json")) else {
            continue;
        };
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (key, want) in json["values"].as_object().unwrap() {
            asserted += 1;
            match reproduce(key, &bytes) {
                Some(got) if got == want["value"] => matched += 1,
                Some(got) => failures.push(format!("{name} {key}: {got} != {}", want["value"])),
                None => failures.push(format!("{name}: no reader for expected key `{key}` yet")),
            }
        }
    }
    eprintln!(
        "ebus captures: expected values matched {matched}/{asserted}; \
         decoded with valid CRC {valid}/{} ({} listed as exceptions)",
        bins.len(),
        exceptions.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(asserted >= 1, "the B5 16 capture asserts a date and time");
}
