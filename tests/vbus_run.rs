//! VBus end to end with real parts: `sml::runner::run` reads a simulated RESOL DeltaSol BS Plus
//! broadcasting on a pseudo-terminal, and the unchanged Tasmota docs' script's values come out on
//! the SENSOR payload; spoilt telegrams (a bad checksum, silence, the wrong baud rate, a cut
//! telegram) publish nothing wrong, and the decoder counts each one.

mod common;
#[path = "support/recorded_run.rs"]
mod recorded_run;
#[path = "vbus_sim.rs"]
mod sim;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use recorded_run::*;
use sim::*;
use sml::decode::vbus::VbusDecoder;
use sml::decode::{DecodeEvent, Decoder};

fn script() -> sml::script::Script {
    compile(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/meters/resol-deltasol-bs-plus.sml"
        ))
        .unwrap(),
    )
}

const EXPECTED: &str = r#"{"Time":"T","Solar":{"zeit":"13:07","sens1":65.3,"sens2":45.2,"sens3":48.1,"sens4":-5.2,"relay1":1,"relay2":0,"pump1":100,"pump2":0,"p1":345,"p2":456,"p3":2,"col1":1,"col2":0,"col3":0,"col4":0,"col5":0,"col6":1}}"#;

#[test]
fn the_deltasol_script_unchanged_publishes_the_simulated_controllers_values() {
    let (master, path) = pty();
    let stop = Arc::new(AtomicBool::new(false));
    let controller = serve_pty(
        master,
        Controller::deltasol_bs_plus(),
        Duration::from_millis(200),
        stop.clone(),
        |_, t| Some(t),
    );
    let (cfg, published) = recorded_run(script(), serial(path));
    run_until_a_sensor_payload(cfg, &published);
    stop.store(true, Ordering::Relaxed);
    assert!(controller.join().unwrap() >= 1);
    assert_eq!(sensors(&published)[0], EXPECTED);
}

/// What a controller at the wrong baud rate looks like from here: bytes misread, bit 7 set, none
/// of them the sync byte.
fn misread(t: &[u8]) -> Vec<u8> {
    t.iter()
        .map(|b| match b.rotate_left(3) | 0x80 {
            0xAA => 0xAB,
            m => m,
        })
        .collect()
}

/// The n-th telegram spoilt in each way a bus can spoil it; from the 5th on, good ones.
fn spoil(n: usize, mut t: Vec<u8>) -> Option<Vec<u8>> {
    match n {
        // A flipped bit in a data frame: its checksum fails.
        0 => {
            t[12] ^= 0x01;
            Some(t)
        }
        // Silence.
        1 => None,
        // The wrong baud rate.
        2 => Some(misread(&t)),
        // Cut short: the rest never comes (the next telegram's AA ends it).
        3 => Some(t[..25].to_vec()),
        _ => Some(t),
    }
}

#[test]
fn spoilt_telegrams_on_the_wire_publish_nothing_wrong() {
    let (master, path) = pty();
    let stop = Arc::new(AtomicBool::new(false));
    let controller = serve_pty(
        master,
        Controller::deltasol_bs_plus(),
        Duration::from_millis(100),
        stop.clone(),
        spoil,
    );
    let (cfg, published) = recorded_run(script(), serial(path));
    run_until_a_sensor_payload(cfg, &published);
    stop.store(true, Ordering::Relaxed);
    let sent = controller.join().unwrap();
    let got = sensors(&published);
    for s in &got {
        assert_eq!(s, EXPECTED);
    }
    assert!(
        got.len() <= sent.saturating_sub(4),
        "{} payloads, {sent} telegrams",
        got.len()
    );
}

/// The same spoilt telegrams, sans-IO on an injected clock: each one is counted under its kind.
#[test]
fn each_kind_of_spoilt_telegram_is_counted_and_publishes_nothing() {
    let script = script();
    let mut d = VbusDecoder::new(&script.meters[0]);
    let t0 = Instant::now();
    let controller = Controller::deltasol_bs_plus();
    let mut telegrams = Vec::new();
    let mut errors = Vec::new();
    for n in 0..6 {
        let now = t0 + Duration::from_secs(n as u64);
        d.handle_timeout(now);
        if let Some(bytes) = spoil(n, controller.telegram()) {
            d.handle_bytes(now, &bytes);
        }
        while let Some(e) = d.poll_event() {
            match e {
                DecodeEvent::Telegram(t) => telegrams.push(t),
                DecodeEvent::Error(e) => errors.push(e.to_string()),
                DecodeEvent::Discarded { .. } => {}
            }
        }
    }
    let stats = d.stats();
    assert_eq!(stats.crc_errors, 1, "{errors:?}");
    // The misread telegram: its AA is misread too, so it is skipped as noise.
    assert_eq!(stats.bytes_skipped, 52, "{errors:?}");
    // The cut telegram, ended by the silence after it.
    assert_eq!(stats.rejected, 1, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("truncated after 25 bytes")),
        "{errors:?}"
    );
    assert_eq!(telegrams.len(), 2, "the two good telegrams, 4 and 5");
    assert!(telegrams.iter().all(|t| t.readings.len() == 18));
}
