//! Compatibility with amsreader-firmware on real DLMS/COSEM push captures
//! (`../shared/captures/dlms`, or `$SML_SHARED/captures/dlms`; skipped when absent).
//!
//! - Captures with asserted `values` (amsreader's golden-master decode, AmsData after scaling): the
//!   capture is framed, checked and unwrapped by `sml::decode::dlms`, its COSEM data walked for OBIS
//!   codes, and every asserted value compared (A, C, D, E of the OBIS code; the peer puts Kamstrup's
//!   `1-1:` registers under `1-0:`). Where the telegram carries a `{scaler, unit}` the scaled value
//!   must match; where it carries none (Kamstrup, Kaifa short lists) amsreader applies a per-meter
//!   scaler, so a power of ten from 10^0 to 10^-5 (Wh or 10 Wh to kWh) is accepted and counted
//!   apart as "scaler inferred". Energies the telegram gives in Wh/varh with a scaler are compared
//!   in kWh/kvarh, as the peer states them. `meter_id` must be one of the telegram's strings. Tolerances are the peer's: 0.02 for
//!   voltages and currents, 0.01 otherwise.
//! - Every mismatch must be listed with its reason in `tests/compat-dlms-exceptions.tsv`; the test
//!   asserts that the mismatches are exactly those.
//! - Every capture: decoded-with-valid-checksum / total is printed (frames whose FCS/checksum holds
//!   and whose APDU gives a data-notification, or is encrypted with no key posted).
//! - `amsreader_kaifa_gh905-1` has its key posted (INDEX notes): it must decrypt.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use sml::decode::dlms::apdu::{ApduError, Keys, Notification, Unwrapper};
use sml::decode::dlms::cosem::{self, Data, ObisValue};
use sml::decode::dlms::frame::{Framed, Framer};

fn captures() -> Option<PathBuf> {
    let shared = std::env::var_os("SML_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let dir = shared.join("captures/dlms");
    dir.is_dir().then_some(dir)
}

/// What one capture gave.
#[derive(Default, Debug)]
struct Outcome {
    frames_ok: usize,
    frames_bad: usize,
    notifications: Vec<Notification>,
    /// Encrypted with no key to try.
    no_key: usize,
    errors: Vec<String>,
}

fn decode(bytes: &[u8], keys: Option<&Keys>) -> Outcome {
    let mut out = Outcome::default();
    let first = bytes.first().copied();
    if !matches!(first, Some(0x7E) | Some(0x68)) {
        // A raw APDU (no link layer), maybe still behind an LLC header.
        let apdu = if bytes.starts_with(&[0xE6, 0xE7, 0x00]) {
            &bytes[3..]
        } else {
            bytes
        };
        let mut u = Unwrapper::default();
        match u.open(apdu, keys) {
            Ok(Some(n)) => out.notifications.push(n),
            Ok(None) => {}
            Err(ApduError::NoKey { .. }) => out.no_key += 1,
            Err(e) => out.errors.push(e.to_string()),
        }
        return out;
    }
    let mut framer = Framer::default();
    let mut u = Unwrapper::default();
    let mut sink = |f: Framed| match f {
        Framed::Payload { bytes, .. } => {
            out.frames_ok += 1;
            match u.open(&bytes, keys) {
                Ok(Some(n)) => out.notifications.push(n),
                Ok(None) => {}
                Err(ApduError::NoKey { .. }) => out.no_key += 1,
                Err(e) => out.errors.push(e.to_string()),
            }
        }
        Framed::Rejected(e) => {
            out.frames_bad += 1;
            out.errors.push(e.to_string());
        }
        Framed::Discarded(_) => {}
    };
    framer.push(bytes, &mut sink);
    framer.flush("end of capture", &mut sink);
    out
}

fn obis_key(o: &[u8; 6]) -> String {
    format!("{}-0:{}.{}.{}", o[0], o[2], o[3], o[4])
}

fn strings(items: &[cosem::Item], out: &mut Vec<String>) {
    for i in items {
        match &i.data {
            Data::OctetString(b) | Data::VisibleString(b) | Data::Utf8String(b) => {
                out.push(String::from_utf8_lossy(b).into_owned())
            }
            Data::Array(e) | Data::Structure(e) => strings(e, out),
            _ => {}
        }
    }
}

/// Whether `want` is one of the values the telegram has under `key`; `Some(true)` when the
/// scaler had to be inferred.
fn matches(values: &[ObisValue], key: &str, want: f64) -> Option<bool> {
    let tolerance = if key.contains(":31.")
        || key.contains(":32.")
        || key.contains(":51.")
        || key.contains(":52.")
        || key.contains(":71.")
        || key.contains(":72.")
    {
        0.02
    } else {
        0.01
    };
    let close = |v: f64| (v - want).abs() <= tolerance + want.abs() * 1e-9;
    let mut inferred = None;
    for v in values.iter().filter(|v| obis_key(&v.obis) == key) {
        let Some(raw) = v.value.number() else {
            continue;
        };
        // The peer states energies in kWh (kvarh), the telegram in Wh (varh).
        let per_kilo = if matches!(v.unit, Some(30..=32)) {
            1000.0
        } else {
            1.0
        };
        if v.scaler.is_some() {
            if v.scaled().is_some_and(|x| close(x / per_kilo)) {
                return Some(false);
            }
        } else if close(raw) {
            return Some(false);
        } else if [0.1, 0.01, 0.001, 1e-4, 1e-5]
            .iter()
            .any(|f| close(raw * f))
        {
            inferred = Some(true);
        }
    }
    inferred
}

fn exceptions() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/compat-dlms-exceptions.tsv"
    ))
    .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split('\t');
            (
                f.next().unwrap().to_string(),
                f.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn dlms_captures_reproduce_the_peers_values() {
    let Some(dir) = captures() else {
        eprintln!("skipped: no captures/dlms");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    let (mut asserted, mut matched, mut inferred) = (0, 0, 0);
    let mut mismatches = BTreeSet::new();
    let (mut valid, mut total_without, mut notified) = (0, 0, 0);
    for path in &files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(path).unwrap();
        let out = decode(&bytes, None);
        if !out.notifications.is_empty() {
            notified += 1;
        }
        let expected = path.with_file_name(format!("{name}.expected.json"));
        let values = std::fs::read_to_string(&expected)
            .ok()
            .and_then(|t| serde_json::from_str::<Json>(&t).ok())
            .and_then(|j| j.get("values").cloned());
        let Some(Json::Object(values)) = values else {
            total_without += 1;
            if std::env::var_os("DLMS_CAPTURES_DEBUG").is_some() {
                eprintln!(
                    "without values: {name}: frames ok {} bad {}, notifications {}, no key {}, errors {:?}",
                    out.frames_ok,
                    out.frames_bad,
                    out.notifications.len(),
                    out.no_key,
                    out.errors
                );
            }
            if (out.frames_ok > 0 || out.frames_bad == 0)
                && (!out.notifications.is_empty() || out.no_key > 0)
            {
                valid += 1;
            }
            continue;
        };
        if std::env::var_os("DLMS_CAPTURES_DEBUG").is_some() {
            // `DLMS_CAPTURES_DEBUG=1`: what each capture holds, to review a mismatch.
            eprintln!(
                "== {name}\n{}",
                sml::decode::dlms::explain(&bytes, None).text
            );
        }
        let n = out.notifications.first();
        let items = n
            .map(|n| cosem::parse_all(n.body(), 0).unwrap())
            .unwrap_or_default();
        let found = cosem::obis_values(&items);
        let mut texts = Vec::new();
        strings(&items, &mut texts);
        for (key, want) in &values {
            asserted += 1;
            let ok = match want.get("value") {
                Some(Json::String(s)) => texts.iter().any(|t| t == s).then_some(false),
                Some(v) => v.as_f64().and_then(|w| matches(&found, key, w)),
                None => None,
            };
            match ok {
                Some(false) => matched += 1,
                Some(true) => inferred += 1,
                None => {
                    mismatches.insert((name.clone(), key.clone()));
                }
            }
        }
    }
    println!(
        "dlms captures: asserted values {asserted}: matched {matched} with the telegram's scaler, \
         {inferred} with an inferred scaler, {} listed exceptions",
        mismatches.len()
    );
    println!(
        "dlms captures without asserted values: decoded with a valid checksum {valid}/{total_without}; \
         captures giving a notification: {notified}/{}",
        files.len()
    );
    let listed = exceptions();
    let unlisted: Vec<_> = mismatches.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&mismatches).collect();
    assert!(
        unlisted.is_empty(),
        "mismatches not in compat-dlms-exceptions.tsv: {unlisted:#?}"
    );
    assert!(
        stale.is_empty(),
        "exceptions that now match (remove them): {stale:#?}"
    );
}

#[test]
fn the_kaifa_capture_with_its_posted_key_decrypts() {
    let Some(dir) = captures() else {
        eprintln!("skipped: no captures/dlms");
        return;
    };
    let bytes = std::fs::read(dir.join("amsreader_kaifa_gh905-1.bin")).unwrap();
    // key.txt of the attachment, quoted in INDEX.tsv: ASCII '9CoQ7w5LMFoLS3gJ'.
    let keys = Keys {
        encryption: *b"9CoQ7w5LMFoLS3gJ",
        authentication: None,
    };
    let out = decode(&bytes, Some(&keys));
    assert_eq!(out.notifications.len(), 1, "{out:?}");
    let n = &out.notifications[0];
    assert_eq!(
        n.security.as_ref().unwrap().system_title,
        b"KFM\x10\x20\x02\x98\x02".to_vec()
    );
    let items = cosem::parse_all(n.body(), 0).unwrap();
    let values = cosem::obis_values(&items);
    assert!(
        values.iter().any(|v| obis_key(&v.obis) == "1-0:1.8.0"),
        "{values:#?}"
    );
    println!("{}", sml::decode::dlms::explain(&bytes, Some(&keys)).text);
    // The wrong key: a clear rejection, no notification.
    let wrong = Keys {
        encryption: *b"9CoQ7w5LMFoLS3gK",
        authentication: None,
    };
    let out = decode(&bytes, Some(&wrong));
    assert!(out.notifications.is_empty());
    assert!(
        out.errors.iter().any(|e| e.contains("wrong `=so4` key")),
        "{:?}",
        out.errors
    );
}
