//! eBus end to end with real parts: `sml::runner::run` listens to a simulated Wolf heating bus on a
//! pseudo-terminal, and the Tasmota docs' Wolf CSZ script, unchanged, publishes the bus's values
//! on the SENSOR payload; damaged telegrams, garbage, a wrong baud rate and silence publish
//! nothing wrong.

mod common;
#[path = "support/recorded_run.rs"]
mod recorded_run;
#[path = "ebus_sim.rs"]
mod sim;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use recorded_run::*;
use sim::*;
use sml::link::{Binding, Source};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn wolf_script() -> sml::script::Script {
    library_script("wolf-csz-ebus.sml")
}

/// The Wolf script's run with `bindings`, publishing every telegram into memory.
fn wolf_run(bindings: Vec<Binding>) -> (sml::runner::RunConfig, Published) {
    recorded_run(wolf_script(), bindings)
}

/// The payload once every line of the script has a value (the default bus).
const ALL_VALUES: &str = r#"{"Time":"T","EBUS":{"Outsidetemp":-5,"Roomtemp":21,"Warmwater":48,"Boiler":55,"Returns":40,"Status":1,"Burner":1,"Collector":10.6,"Solarstorage":10.6,"Solarpump":1}}"#;

#[test]
fn the_wolf_script_unchanged_publishes_the_simulated_buses_values() {
    let (master, path) = pty();
    let stop = Arc::new(AtomicBool::new(false));
    let bus = serve_pty(master, Wolf::default(), stop.clone(), |_, t| t);
    let (cfg, published) = wolf_run(serial(path));
    let run = start_sml(cfg);
    let complete = |published: &Published| sensors(published).iter().any(|s| s == ALL_VALUES);
    let ok = wait_for(Duration::from_secs(20), || complete(&published));
    run.stop();
    stop.store(true, Ordering::Relaxed);
    assert!(bus.join().unwrap() >= 3);
    assert!(ok, "{:#?}", sensors(&published));
}

#[test]
fn damaged_telegrams_on_the_wire_publish_nothing_wrong() {
    let (master, path) = pty();
    let stop = Arc::new(AtomicBool::new(false));
    // The first cycles carry wrong values, each spoilt in one way; later cycles are good.
    let wrong = Wolf {
        returns: 99,
        room: 99,
        ..Wolf::default()
    };
    let bus = serve_pty(master, Wolf::default(), stop.clone(), move |n, good| {
        let bad = match n % 3 {
            0 => wrong.heater(),
            1 => wrong.room(),
            _ => return good,
        };
        match n / 3 {
            // A flipped bit behind the value: the CRC fails.
            0 => {
                let mut t = bad;
                t[7] ^= 0x01;
                t
            }
            // Cut short before the CRC.
            1 => bad[..bad.len() - 4].to_vec(),
            // Garbage glued on (a collision with another master).
            2 => {
                let mut t = bad;
                t.extend([0x13, 0x37]);
                t
            }
            // Line noise where a telegram should be.
            3 => vec![0x42; 12],
            _ => good,
        }
    });
    let (cfg, published) = wolf_run(serial(path));
    let run = start_sml(cfg);
    let ok = wait_for(Duration::from_secs(20), || {
        sensors(&published).iter().any(|s| s == ALL_VALUES)
    });
    run.stop();
    stop.store(true, Ordering::Relaxed);
    let sent = bus.join().unwrap();
    assert!(ok, "{:#?}", sensors(&published));
    assert!(sent >= 15, "{sent}");
    for s in sensors(&published) {
        assert!(
            !s.contains("99"),
            "a damaged telegram's value was published: {s}"
        );
    }
}

#[test]
fn silence_publishes_nothing_until_the_bus_speaks() {
    let (mut master, path) = pty();
    let (cfg, published) = wolf_run(serial(path));
    let run = start_sml(cfg);
    std::thread::sleep(Duration::from_millis(1500));
    let before = sensors(&published);
    master.write_all(&Wolf::default().stream()).unwrap();
    let spoke = wait_for(Duration::from_secs(20), || !sensors(&published).is_empty());
    run.stop();
    assert!(before.is_empty(), "{before:?}");
    assert!(spoke, "the bus spoke but nothing was published");
}

#[test]
fn a_wrong_baud_rate_publishes_nothing_and_counts_the_rejections() {
    // The bus at 2400 baud, read at 9600 (and at 1200): garbage to the decoder.
    let mut stream = Vec::new();
    for _ in 0..20 {
        stream.extend(Wolf::default().stream());
    }
    for baud in [9600, 4800, 1200] {
        let garbage = received_at(&stream, 2400, baud);
        assert!(!garbage.is_empty());
        let script = wolf_script();
        let mut d = sml::decode::decoder_for(&script.meters[0]).unwrap();
        d.handle_bytes(Instant::now(), &garbage);
        d.handle_end();
        let mut telegrams = 0;
        while let Some(ev) = d.poll_event() {
            if let sml::decode::DecodeEvent::Telegram(t) = ev {
                telegrams += 1;
                assert!(t.readings.is_empty(), "{baud}: {t:?}");
            }
        }
        let stats = d.stats();
        eprintln!("read at {baud} baud: {stats:?}");
        assert_eq!(telegrams, 0, "{baud}: {stats:?}");
        assert!(
            stats.rejections() + stats.bytes_skipped > 0,
            "{baud}: {stats:?}"
        );
    }

    // And on the wire: nothing reaches the SENSOR payload.
    let (mut master, path) = pty();
    let (cfg, published) = wolf_run(serial(path));
    let run = start_sml(cfg);
    master.write_all(&received_at(&stream, 2400, 9600)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let got = sensors(&published);
    // The same pty then carries the bus at the right rate: the pipeline was alive all along.
    master.write_all(&Wolf::default().stream()).unwrap();
    let alive = wait_for(Duration::from_secs(20), || !sensors(&published).is_empty());
    run.stop();
    assert!(got.is_empty(), "{got:?}");
    assert!(alive);
}

/// `tests/fixtures/meters/wolf-csz-ebus.bin` is the simulator's default cycle; regenerate it with
/// `SML_WRITE_FIXTURES=1 cargo test --test ebus_run`.
#[test]
fn the_checked_in_capture_is_what_the_simulator_sends() {
    let path = format!("{ROOT}/tests/fixtures/meters/wolf-csz-ebus.bin");
    let want = Wolf::default().stream();
    if std::env::var_os("SML_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    assert_eq!(std::fs::read(&path).unwrap(), want);
}

#[test]
fn a_replayed_ebus_capture_publishes_every_telegram_then_ends() {
    let (cfg, published) = wolf_run(vec![Binding {
        meter: 1,
        source: Source::Replay(format!("{ROOT}/tests/fixtures/meters/wolf-csz-ebus.bin").into()),
    }]);
    let report = start_sml(cfg).join();
    assert_eq!(report.engine.telegrams, 3);
    // A capture replays at full speed: each telegram's payload carries what it gave.
    assert_eq!(
        sensors(&published),
        vec![
            r#"{"Time":"T","EBUS":{"Outsidetemp":-5,"Warmwater":48,"Boiler":55,"Returns":40,"Status":1,"Burner":1}}"#,
            r#"{"Time":"T","EBUS":{"Roomtemp":21}}"#,
            r#"{"Time":"T","EBUS":{"Collector":10.6,"Solarstorage":10.6,"Solarpump":1}}"#,
        ]
    );
}

#[test]
fn the_wolf_values_reach_the_broker_on_the_sensor_topic() {
    let broker = free_port();
    start_broker(broker);
    let seen = subscribe(broker, "home1/#");
    let (master, path) = pty();
    let stop = Arc::new(AtomicBool::new(false));
    let bus = serve_pty(master, Wolf::default(), stop.clone(), |_, t| t);
    let (mut cfg, _) = wolf_run(serial(path));
    cfg.sink = sml::runner::SinkConfig::Mqtt(Box::new(mqtt_config(broker, "wolf")));
    let run = start_sml(cfg);
    // The first telegram of a cycle is the heater's broadcast.
    let s = next_on(&seen, "home1/tele/wolf/SENSOR", Duration::from_secs(20));
    run.stop();
    stop.store(true, Ordering::Relaxed);
    bus.join().unwrap();
    assert_eq!(
        without_time(&s.payload),
        r#"{"Time":"T","EBUS":{"Outsidetemp":-5,"Warmwater":48,"Boiler":55,"Returns":40,"Status":1,"Burner":1}}"#
    );
}
