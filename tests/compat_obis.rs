//! Compatibility of the `o` decoder with peer projects, over `../shared/captures/{dsmr,iec62056-21}`
//! (skipped when absent): for every capture whose `expected.json` has `values`, a metric line is
//! generated per asserted OBIS code, the capture is decoded, and our values are compared with the
//! peer's. Every mismatch must be listed, with its reason, in `tests/compat-obis-exceptions.tsv`, and
//! every listed one must still mismatch (a fixed one must leave the list).
//!
//! How a peer's assertion becomes a metric line (what a user would write):
//! - a number: `<code>(@(N:<divisor>` with N the last bracket of the line (the value after a
//!   timestamp), the divisor converting the line's unit to the peer's (`kW` -> `W`: `@0.001`);
//!   list entries `0-0:98.1.0[i]` read the i-th bracket holding a number with a unit;
//! - a string: `<code>(@#)`; DSMR timestamps (`YYMMDDhhmmssW/S`) are compared as instants with the
//!   peer's ISO 8601 text;
//! - `null` (the peer asserts the value is absent): we must publish nothing for it.
//!
//! Peer semantics applied (from `value_semantics` and INDEX notes): amsreader compares voltages and
//! currents within 0.02 and counters within 0.01; dsmr-reader stores phase currents as integers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value as Json;
use sml::decode::obis::ObisDecoder;
use sml::decode::{DecodeEvent, Decoder, Value};

mod support {
    use sml::script::compile;
    use sml::script::model::*;
    include!("support/obis_meter.rs");
}

/// `$SML_SHARED`, or `../shared` next to the repository (a git worktree elsewhere sets
/// `SML_SHARED=/work/shared`).
fn shared_dir() -> PathBuf {
    std::env::var_os("SML_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

fn shared() -> PathBuf {
    shared_dir().join("captures")
}

/// What the peer asserts for one value.
#[derive(Debug, Clone)]
enum Expect {
    Number {
        value: f64,
        tolerance: f64,
        truncate: bool,
    },
    Text(String),
    Timestamp(chrono::DateTime<chrono::FixedOffset>),
    Absent,
}

/// One generated metric line and what it must give.
struct Check {
    key: String,
    descriptor: Option<String>,
    expect: Expect,
}

/// The capture's lines as (code up to and including `(`, whole line).
fn capture_lines(bytes: &[u8]) -> Vec<(String, String)> {
    let text: String = bytes.iter().map(|&b| char::from(b & 0x7f)).collect();
    text.split('\n')
        .filter_map(|l| {
            let l = l.trim_end_matches('\r').trim_start_matches('\u{2}');
            let p = l.find('(')?;
            Some((l[..=p].to_string(), l.to_string()))
        })
        .collect()
}

/// `A-B:C.D.E*F` without leading zeros in F; `*255` dropped (peers print it or not).
fn normalize(code: &str) -> String {
    let code = code.trim_end_matches('(');
    match code.split_once('*') {
        Some((base, f)) => match f.parse::<u32>() {
            Ok(255) => base.to_string(),
            Ok(n) => format!("{base}*{n}"),
            Err(_) => code.to_string(),
        },
        None => code.to_string(),
    }
}

/// The bracket contents of a line after its code.
fn brackets(line: &str, code: &str) -> Vec<String> {
    let rest = &line[code.len() - 1..];
    rest.split('(')
        .skip(1)
        .map(|b| b.split(')').next().unwrap_or("").to_string())
        .collect()
}

fn unit_of(bracket: &str) -> &str {
    bracket.split_once('*').map_or("", |(_, u)| u)
}

/// Factor from the line's unit to the peer's: published = raw * factor, i.e. divisor 1/factor.
fn unit_factor(line_unit: &str, peer_unit: Option<&str>) -> f64 {
    let Some(peer) = peer_unit else { return 1.0 };
    let kilo = |u: &str| {
        u.strip_prefix('k')
            .map(|b| (b.to_string(), 1000.0))
            .unwrap_or((u.to_string(), 1.0))
    };
    let (lb, lf) = kilo(line_unit);
    let (pb, pf) = kilo(peer);
    if lb.eq_ignore_ascii_case(&pb) {
        lf / pf
    } else {
        1.0
    }
}

fn parse_peer_time(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    let s = s.split(' ').next()?;
    chrono::DateTime::parse_from_rfc3339(s).ok()
}

/// A DSMR timestamp `YYMMDDhhmmssX` (X = W winter +01:00, S summer +02:00) as an instant.
fn dsmr_time(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    if s.len() != 13 {
        return None;
    }
    let offset = match &s[12..] {
        "W" => 3600,
        "S" => 7200,
        _ => return None,
    };
    let naive =
        chrono::NaiveDateTime::parse_from_str(&format!("20{}", &s[..12]), "%Y%m%d%H%M%S").ok()?;
    naive
        .and_local_timezone(chrono::FixedOffset::east_opt(offset)?)
        .single()
}

fn checks_for(values: &serde_json::Map<String, Json>, bytes: &[u8], semantics: &str) -> Vec<Check> {
    let lines = capture_lines(bytes);
    let amsreader = semantics.contains("amsreader");
    let integer_currents = semantics.contains("phase currents are stored as integers");
    let mut out = Vec::new();
    for (key, spec) in values {
        let (base, index) = match key.split_once('[') {
            Some((b, i)) => (b.to_string(), i.trim_end_matches(']').parse::<usize>().ok()),
            None => (key.clone(), None),
        };
        // Short EDIS codes in the capture (`0.2.0(`) for a peer key with its defaults (`1-0:0.2.0`).
        let short = base.split_once(':').map_or(base.as_str(), |(_, cde)| cde);
        let line = lines
            .iter()
            .find(|(code, _)| normalize(code) == normalize(&base))
            .or_else(|| {
                lines
                    .iter()
                    .find(|(code, _)| normalize(code) == normalize(short))
            });
        // smartmeter-obis lists several values per code.
        let expects: Vec<(Option<usize>, &Json, Option<&str>)> =
            match spec.get("values").and_then(Json::as_array) {
                Some(list) => list
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (Some(i), &v["value"], v.get("unit").and_then(Json::as_str)))
                    .collect(),
                None => vec![(
                    None,
                    &spec["value"],
                    spec.get("unit").and_then(Json::as_str),
                )],
            };
        for (pos, value, unit) in expects {
            let key = match pos {
                Some(i) if spec["values"].as_array().is_some_and(|a| a.len() > 1) => {
                    format!("{key}#{i}")
                }
                _ => key.clone(),
            };
            let Some((code, text)) = line else {
                // The code is not in the capture: we must publish nothing; a peer value is a mismatch.
                let expect = if value.is_null() {
                    Expect::Absent
                } else {
                    Expect::Text(value.to_string())
                };
                out.push(Check {
                    key,
                    descriptor: None,
                    expect,
                });
                continue;
            };
            let br = brackets(text, code);
            let expect = match value {
                Json::Null => Expect::Absent,
                Json::Number(n) => {
                    let current =
                        ["1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0"].contains(&base.as_str());
                    let tolerance = if amsreader {
                        if base.ends_with(".8.0") {
                            0.01
                        } else {
                            0.02
                        }
                    } else {
                        1e-9
                    };
                    Expect::Number {
                        value: n.as_f64().unwrap(),
                        tolerance,
                        truncate: integer_currents && current,
                    }
                }
                Json::String(s) => match parse_peer_time(s) {
                    Some(t) => Expect::Timestamp(t),
                    None => Expect::Text(s.clone()),
                },
                other => Expect::Text(other.to_string()),
            };
            let bracket = match (index, pos) {
                (Some(i), _) => br
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| {
                        b.contains('*')
                            && b.split('*')
                                .next()
                                .is_some_and(|n| n.parse::<f64>().is_ok())
                    })
                    .nth(i)
                    .map(|(k, _)| k),
                // Several peer values from one bracket (split at `#`): only the first is reachable
                // by a metric line (text up to a terminator).
                (None, Some(i)) if br.len() == 1 && i > 0 => None,
                (None, Some(i)) if spec["values"].as_array().is_some_and(|a| a.len() > 1) => {
                    Some(i)
                }
                _ => match expect {
                    Expect::Text(_) => Some(0),
                    _ => Some(br.len().saturating_sub(1)),
                },
            };
            let Some(bracket) = bracket else {
                out.push(Check {
                    key,
                    descriptor: None,
                    expect,
                });
                continue;
            };
            let descriptor = match &expect {
                Expect::Text(_) | Expect::Timestamp(_) => {
                    // The terminator a user would write: the character after the wanted text.
                    let content = br.get(bracket).map_or("", |s| s.as_str());
                    let end = match &expect {
                        Expect::Text(t)
                            if content.len() > t.len() && content.starts_with(t.as_str()) =>
                        {
                            content[t.len()..].chars().next().unwrap_or(')')
                        }
                        _ => ')',
                    };
                    if bracket == 0 {
                        format!("{code}@#{end}")
                    } else {
                        format!("{code}@({bracket}:#{end}")
                    }
                }
                _ => {
                    let factor =
                        unit_factor(unit_of(br.get(bracket).map_or("", |s| s.as_str())), unit);
                    format!("{code}@({bracket}:{}", 1.0 / factor)
                }
            };
            out.push(Check {
                key,
                descriptor: Some(descriptor),
                expect,
            });
        }
    }
    out
}

/// Decode the capture with the checks' metric lines; the last value per entry.
fn decode(checks: &[Check], bytes: &[u8]) -> BTreeMap<u16, Value> {
    let descriptors: Vec<&str> = checks
        .iter()
        .map(|c| c.descriptor.as_deref().unwrap_or("\u{1}never(@1"))
        .collect();
    let meter = support::obis_meter(&descriptors);
    let mut d = ObisDecoder::new(&meter);
    d.handle_bytes(Instant::now(), bytes);
    d.handle_end();
    let mut last = BTreeMap::new();
    while let Some(e) = d.poll_event() {
        if let DecodeEvent::Telegram(t) = e {
            for r in t.readings {
                last.insert(r.entry, r.value);
            }
        }
    }
    last
}

fn compare(expect: &Expect, ours: Option<&Value>) -> Result<(), String> {
    match (expect, ours) {
        (Expect::Absent, None) => Ok(()),
        (
            Expect::Number {
                value,
                tolerance,
                truncate,
            },
            Some(Value::Number(v)),
        ) => {
            let v = if *truncate { v.trunc() } else { *v };
            let tol = tolerance.max(value.abs() * 1e-12);
            if (v - value).abs() <= tol {
                Ok(())
            } else {
                Err(format!("ours {v}, peer {value}"))
            }
        }
        (Expect::Text(s), Some(Value::Text(t))) if s == t => Ok(()),
        (Expect::Timestamp(peer), Some(Value::Text(t))) => match dsmr_time(t) {
            Some(ours) if ours == *peer => Ok(()),
            _ => Err(format!("ours {t:?}, peer {peer}")),
        },
        (e, o) => Err(format!("ours {o:?}, peer {e:?}")),
    }
}

fn read_index(dir: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Some((
                cols.first()?.to_string(),
                cols.get(10).unwrap_or(&"").to_string(),
            ))
        })
        .collect()
}

fn exceptions() -> BTreeMap<(String, String), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat-obis-exceptions.tsv");
    let text = std::fs::read_to_string(path).expect("tests/compat-obis-exceptions.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut cols = l.splitn(3, '\t');
            let file = cols.next().unwrap_or("").to_string();
            let key = cols.next().unwrap_or("").to_string();
            let reason = cols.next().unwrap_or("").to_string();
            assert!(
                !reason.trim().is_empty(),
                "exception {file} {key} has no reason"
            );
            ((file, key), reason)
        })
        .collect()
}

#[test]
fn obis_values_match_the_peers() {
    let root = shared();
    if !root.exists() {
        eprintln!(
            "note: {} absent; compatibility test skipped",
            root.display()
        );
        return;
    }
    let listed = exceptions();
    let mut asserted = 0;
    let mut matched = 0;
    let mut mismatches: BTreeMap<(String, String), String> = BTreeMap::new();
    for protocol in ["dsmr", "iec62056-21"] {
        let dir = root.join(protocol);
        let index = read_index(&dir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".expected.json"))
            .collect();
        files.sort();
        for exp_path in files {
            let expected: Json =
                serde_json::from_str(&std::fs::read_to_string(&exp_path).unwrap()).unwrap();
            let Some(values) = expected.get("values").and_then(Json::as_object) else {
                continue;
            };
            let capture = expected["capture"].as_str().unwrap().to_string();
            let bytes = std::fs::read(dir.join(&capture)).unwrap();
            let semantics = format!(
                "{} {}",
                expected["value_semantics"].as_str().unwrap_or(""),
                index.get(&capture).map_or("", |s| s.as_str())
            );
            let checks = checks_for(values, &bytes, &semantics);
            let ours = decode(&checks, &bytes);
            let name = format!("{protocol}/{capture}");
            let mut file_matched = 0;
            for (i, c) in checks.iter().enumerate() {
                asserted += 1;
                match compare(&c.expect, ours.get(&(i as u16 + 1))) {
                    Ok(()) => {
                        matched += 1;
                        file_matched += 1;
                    }
                    Err(why) => {
                        let why = format!(
                            "{why} [{}]",
                            c.descriptor
                                .as_deref()
                                .unwrap_or("no metric line can select it")
                        );
                        mismatches.insert((name.clone(), c.key.clone()), why);
                    }
                }
            }
            println!("{name}: {file_matched}/{}", checks.len());
        }
    }
    println!(
        "compat obis: matched {matched}/{asserted} asserted values; {} listed exceptions",
        listed.len()
    );
    let got: BTreeSet<&(String, String)> = mismatches.keys().collect();
    let want: BTreeSet<&(String, String)> = listed.keys().collect();
    let unlisted: Vec<String> = got
        .difference(&want)
        .map(|k| format!("{}\t{}\t{}", k.0, k.1, mismatches[*k]))
        .collect();
    let fixed: Vec<String> = want
        .difference(&got)
        .map(|k| format!("{}\t{}", k.0, k.1))
        .collect();
    assert!(
        unlisted.is_empty(),
        "mismatches not in tests/compat-obis-exceptions.tsv:\n{}",
        unlisted.join("\n")
    );
    assert!(
        fixed.is_empty(),
        "listed exceptions that now match (remove them):\n{}",
        fixed.join("\n")
    );
    assert!(matched > 0);
}
