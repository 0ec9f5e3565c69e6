//! PZEM-004T end to end with real parts: `sml::runner::run` polls a simulated PZEM-004T (v1) over
//! a pseudo-terminal with the library's script, and the meter's values come out on the SENSOR
//! payload; bad replies on the wire publish nothing wrong.

mod common;
#[path = "support/recorded_run.rs"]
mod recorded_run;
#[path = "pzem_sim.rs"]
mod sim;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use recorded_run::*;
use sim::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn script(period: &str) -> sml::script::Script {
    let text = std::fs::read_to_string(format!("{ROOT}/meters/pzem-004t-v1.sml")).unwrap();
    // The library polls a block a second; the tests poll faster where they say so.
    let text = text.replace("PZEM,1,10,", &format!("PZEM,1,{period},"));
    let c = sml::script::compile(text.as_bytes());
    c.script.unwrap_or_else(|| panic!("{:?}", c.diagnostics))
}

/// Every value of the default meter, as they come in a payload that has them all.
const ALL: [&str; 4] = [
    r#""Voltage":230.2"#,
    r#""Current":17.32"#,
    r#""Power":2200"#,
    r#""Energy":99999"#,
];

fn has_all(published: &Published) -> bool {
    ALL.iter()
        .all(|v| sensors(published).iter().any(|s| s.contains(v)))
}

#[test]
fn the_library_script_publishes_the_simulated_meters_values() {
    let (master, path) = pty();
    let stop = Arc::new(AtomicBool::new(false));
    let meter = serve_pty(master, Pzem::default(), stop.clone(), |_, r| Some(r));
    let (cfg, published) = recorded_run(script("10"), serial(path));
    let run = start_sml(cfg);
    let ok = wait_for(Duration::from_secs(20), || has_all(&published));
    run.stop();
    stop.store(true, Ordering::Relaxed);
    assert!(meter.join().unwrap() >= 4);
    assert!(ok, "{:#?}", sensors(&published));
    assert_eq!(
        sensors(&published)[0],
        r#"{"Time":"T","PZEM":{"Volt_int":230,"Volt_dec":0.2,"Voltage":230.2}}"#
    );
}

#[test]
fn bad_replies_on_the_wire_publish_nothing_wrong() {
    let (master, path) = pty();
    let stop = Arc::new(AtomicBool::new(false));
    // A meter with wrong values gives the spoilt replies, so a published spoilt reply shows.
    let wrong = Pzem {
        volts: 777,
        amps: 777,
        watts: 7777,
        watt_hours: 777_777,
        ..Pzem::default()
    };
    let wrong_reply = move |command: u8| {
        let mut r = vec![command, 0xC0, 0xA8, 0x01, 0x01, 0x00];
        r.push(checksum(&r));
        wrong.answer(&r).unwrap()
    };
    let meter = serve_pty(master, Pzem::default(), stop.clone(), move |n, good| {
        let asked = good[0] + 0x10;
        match n {
            // A flipped bit: the checksum fails.
            0 => {
                let mut r = wrong_reply(asked);
                r[2] ^= 0x01;
                Some(r)
            }
            // Silence.
            1 => None,
            // Cut short: the rest never comes.
            2 => Some(wrong_reply(asked)[..4].to_vec()),
            // The reply to another command (voltage 777 V while the power was asked).
            3 => Some(wrong_reply(if asked == 0xB0 { 0xB1 } else { 0xB0 })),
            // Noise, then the good reply.
            4 => Some([vec![0x13, 0x37], good].concat()),
            _ => Some(good),
        }
    });
    let (cfg, published) = recorded_run(script("1"), serial(path));
    let run = start_sml(cfg);
    let ok = wait_for(Duration::from_secs(20), || has_all(&published));
    run.stop();
    stop.store(true, Ordering::Relaxed);
    let answered = meter.join().unwrap();
    assert!(ok, "{:#?}", sensors(&published));
    assert!(answered >= 8, "{answered}");
    for s in sensors(&published) {
        assert!(!s.contains("777"), "a bad reply's value was published: {s}");
    }
}

#[test]
fn silence_publishes_nothing() {
    let (master, path) = pty();
    let stop = Arc::new(AtomicBool::new(false));
    let meter = serve_pty(master, Pzem::default(), stop.clone(), |_, _| None);
    let (cfg, published) = recorded_run(script("1"), serial(path));
    let run = start_sml(cfg);
    std::thread::sleep(Duration::from_millis(1500));
    run.stop();
    stop.store(true, Ordering::Relaxed);
    // The meter was asked (so the link was up) and never answered.
    assert!(meter.join().unwrap() >= 4);
    assert!(sensors(&published).is_empty(), "{:?}", sensors(&published));
}

/// `tests/fixtures/meters/pzem-004t-v1.bin` is one round of the simulator's replies; regenerate it
/// with `SML_WRITE_FIXTURES=1 cargo test --test pzem_run`.
#[test]
fn the_checked_in_capture_is_what_the_simulator_sends() {
    let path = format!("{ROOT}/tests/fixtures/meters/pzem-004t-v1.bin");
    let want = Pzem::default().round();
    if std::env::var_os("SML_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    assert_eq!(std::fs::read(&path).unwrap(), want);
}
