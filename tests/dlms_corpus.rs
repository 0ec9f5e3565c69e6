//! Every community script with an `=so4` key (`../shared/corpus/tasmota-community`, or
//! `$SML_SHARED/corpus/...`) run against a simulated DLMS push meter ([`sim`]): its meters are
//! decoded by `decoder_for` (an `r` meter with a key is a DLMS meter), the simulator sends both push
//! layouts the scripts are written for (IM350/AM550 register structure, E450 OBIS list), encrypted
//! under the script's key and framed in HDLC and in segmented M-Bus, and the script runs when every
//! one of its metric lines has published a value the simulator sent. The one change a user makes is
//! made here too: a key placeholder (`KEY`, `GUEK`, ...) is replaced by a test key. Scripts that
//! cannot run are listed in [`KNOWN_BROKEN`] with the reason; any other failure, or a listed script
//! that now runs, fails the test. Prints runs/total. Skips cleanly when the corpus is absent.

#[path = "dlms_sim.rs"]
mod sim;
#[path = "support/type_corpus.rs"]
mod type_corpus;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use sim::Link;
use sml::decode::dlms::apdu::Keys;
use sml::decode::{decoder_for, DecodeEvent, Value};
use sml::script::model::{Decoding, Meter};
use type_corpus::{TypeCorpus, Verdict};

/// The key put where a script has a placeholder.
const TEST_KEY: &str = "00112233445566778899AABBCCDDEEFF";

/// Scripts that do not run against a well-behaved meter, and why (checked by the test).
const KNOWN_BROKEN: &[(&str, &str)] = &[
    (
        "2-landis-gyr-e450-encrypted.tas",
        "`pm(.3.8.1)`-style lines search `00 03 08 01` (no `FF` after four groups, as in Tasmota) and \
         land on the OBIS code's last byte `FF`, which is no COSEM value: Tasmota publishes 0 there, \
         we publish nothing",
    ),
    ("landis-gyr-e450-dlms-encrypted-push-mode-7-gemu.tas", "as 2-landis-gyr-e450-encrypted.tas"),
    ("landis-gyr-e450-ottelo.tas", "as 2-landis-gyr-e450-encrypted.tas"),
    (
        "siemens-im-350-ottelo.tas",
        "its masks start `020a09` and `020909` with values 32 and 52 bytes on: a layout (structure of \
         10 starting with an octet string of unknown length) no published IM350 push shows, so the \
         simulator does not send it",
    ),
    (
        "siemens-im-350-raw-ottelo.tas",
        "its offsets fit no data-notification body: the year at x24 and the first register at x30 fall \
         inside one 12-byte date-time (written for the frame before Tasmota's DLMS parser existed?)",
    ),
];

/// The script as it runs: a fragment goes into the host template (as `tests/corpus.rs` does), and a
/// key placeholder becomes [`TEST_KEY`].
fn source_of(path: &Path) -> Vec<u8> {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
    let text: String = text
        .split('\n')
        .map(|l| match l.split_once(",=so4,") {
            Some((m, key))
                if !(key.trim().len() == 32
                    && key.trim().chars().all(|c| c.is_ascii_hexdigit())) =>
            {
                format!("{m},=so4,{TEST_KEY}")
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    if text.lines().any(|l| l.trim_start().starts_with(">D")) {
        return text.into_bytes();
    }
    format!("{}{text}", type_corpus::host_template()).into_bytes()
}

/// The values a line may publish: every register and date field the simulator sends, scaled by
/// any of the divisors the script uses.
fn sent_values() -> BTreeSet<u64> {
    let mut raw: Vec<f64> = sim::IM350_REGISTERS.iter().map(|v| f64::from(*v)).collect();
    raw.extend(sim::e450_registers().iter().map(|(_, v)| f64::from(*v)));
    raw.extend([2024.0, 3.0, 4.0, 1.0, 11.0, 25.0, 10.0]);
    raw.iter()
        .flat_map(|v| [1.0, 10.0, 100.0, 1000.0].map(|d| ((v / d) * 1000.0).round() as u64))
        .collect()
}

/// Both layouts, both links, two pushes each; the entries that got a value the simulator sent, the
/// entries that got any other value, and the decoder's complaints.
fn run_meter(meter: &Meter) -> (BTreeSet<u16>, BTreeMap<u16, f64>, Vec<String>) {
    let keys = Keys {
        encryption: meter.options.aes_key.unwrap(),
        authentication: meter.options.auth_key.clone(),
    };
    let mut d = decoder_for(meter).unwrap();
    let sent = sent_values();
    let (mut got, mut wrong, mut complaints) = (BTreeSet::new(), BTreeMap::new(), Vec::new());
    let mut counter = 1;
    for link in [Link::Hdlc, Link::MBus] {
        for plain in [
            sim::im350_notification(counter, &sim::IM350_REGISTERS),
            sim::obis_notification(counter, &sim::e450_registers()),
        ] {
            let security = if keys.authentication.is_some() {
                0x30
            } else {
                0x20
            };
            d.handle_bytes(
                Instant::now(),
                &sim::push(&plain, &keys, security, counter, link),
            );
            counter += 1;
        }
    }
    while let Some(ev) = d.poll_event() {
        match ev {
            DecodeEvent::Telegram(t) => {
                for r in t.readings {
                    match r.value {
                        Value::Number(v) if sent.contains(&((v * 1000.0).round() as u64)) => {
                            got.insert(r.entry);
                        }
                        Value::Number(v) => {
                            wrong.insert(r.entry, v);
                        }
                        Value::Text(_) => {
                            got.insert(r.entry);
                        }
                    }
                }
            }
            DecodeEvent::Error(e) => complaints.push(e.to_string()),
            DecodeEvent::Discarded { .. } => {}
        }
    }
    (got, wrong, complaints)
}

#[test]
fn every_so4_script_of_the_corpus_runs_against_a_simulated_dlms_meter() {
    let so4 = |text: &str| text.contains(",=so4,");
    TypeCorpus {
        label: "dlms corpus (`=so4` scripts)",
        kind: "`=so4` scripts",
        known_broken: KNOWN_BROKEN,
        mentions: so4,
        source: source_of,
    }
    .check_every_script(|script, text| {
        if !so4(text) {
            return Verdict::NotOfType;
        }
        let meters: Vec<&Meter> = script
            .meters
            .iter()
            .filter(|m| matches!(m.decoding, Decoding::Raw { .. }) && m.options.aes_key.is_some())
            .collect();
        let mut problems = Vec::new();
        if meters.is_empty() {
            problems.push("no `r` meter with a usable key".to_string());
        }
        for m in meters {
            let (got, wrong, mut errs) = run_meter(m);
            let Decoding::Raw { metrics, .. } = &m.decoding else {
                unreachable!()
            };
            for metric in metrics {
                let e = metric.output.entry;
                if let Some(v) = wrong.get(&e) {
                    problems.push(format!(
                        "meter {} `{}` published {v}, which was not sent",
                        m.index, metric.output.name
                    ));
                } else if !got.contains(&e) {
                    problems.push(format!(
                        "meter {} `{}` got no value",
                        m.index, metric.output.name
                    ));
                }
            }
            errs.dedup();
            if !errs.is_empty() {
                problems.push(format!("decoder said: {}", errs.join("; ")));
            }
        }
        if problems.is_empty() {
            Verdict::Runs
        } else {
            Verdict::Broken(problems.join(", "))
        }
    });
}
