//! The script's sections driving real links, in real time, on pseudo-terminals:
//! - the seed script `meters/sx631.sml` publishes nothing before 22 s of uptime and publishes after
//!   (the one real-time test of the seed: about 25 s of wall time);
//! - the IEC 62056-21 baud switch as community scripts write it in `>F` (`sml(1 0 300)`, send `/?!`,
//!   send the ACK `063035300D0A`, `sml(1 0 9600)`) against a simulated meter that answers only after
//!   the right sequence at the right speeds (the speed a pty is set to is visible through termios
//!   on its slave side, which the simulated meter reads as it gets each request);
//! - an endless loop in `>S` is stopped and the payloads keep coming;
//! - `p:` variables survive a restart through the state file.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serialport::{SerialPort, TTYPort};
use sml::engine::scheduler::{EngineConfig, Publication};
use sml::link::{Binding, ReplaySpeed, Source};
use sml::publish::RecordingSink;
use sml::runner::{RunConfig, SinkConfig};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compile(text: &str) -> sml::script::model::Script {
    let compiled = sml::script::compile(text.as_bytes());
    compiled
        .script
        .unwrap_or_else(|| panic!("{:#?}", compiled.diagnostics))
}

/// A run of `script` with meter 1 on the pty `slave`, a payload per telegram, into `sink`.
fn pty_run(script: sml::script::model::Script, slave: &TTYPort, sink: RecordingSink) -> RunConfig {
    let path = PathBuf::from(slave.name().unwrap());
    run_config(script, Source::Serial(path), sink)
}

fn run_config(
    script: sml::script::model::Script,
    source: Source,
    sink: RecordingSink,
) -> RunConfig {
    RunConfig {
        script,
        bindings: vec![Binding { meter: 1, source }],
        engine: EngineConfig {
            every_telegram: true,
            ..Default::default()
        },
        replay_speed: ReplaySpeed::RealTime,
        link_backoff: sml::backoff::Backoff {
            first: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        },
        sink: SinkConfig::Recording(sink),
        decoders: sml::runner::default_decoders(),
        hooks: sml::runner::HooksConfig {
            script_path: "test.sml".into(),
            ..Default::default()
        },
    }
}

fn sensors(sink: &RecordingSink) -> Vec<String> {
    sink.published
        .lock()
        .unwrap()
        .iter()
        .filter_map(|p| match p {
            Publication::Sensor(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// The first telegram of the seed's capture, `/` to `!` line.
fn seed_telegram() -> Vec<u8> {
    let text = std::fs::read_to_string(root().join("tests/fixtures/meters/sx631.txt")).unwrap();
    let end = text.find("\n!").expect("a telegram end") + 2;
    let end = end + text[end..].find('\n').unwrap_or(text.len() - end) + 1;
    text.as_bytes()[text.find('/').unwrap()..end.min(text.len())].to_vec()
}

#[test]
fn the_seed_script_on_a_pty_publishes_nothing_before_22_seconds_and_publishes_after() {
    let script = compile(&std::fs::read_to_string(root().join("meters/sx631.sml")).unwrap());
    let (mut master, slave) = TTYPort::pair().unwrap();
    let sink = RecordingSink::default();
    let started = Instant::now();
    let run = start_sml(pty_run(script, &slave, sink.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let meter = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let telegram = seed_telegram();
            while !stop.load(Ordering::Relaxed) {
                // A closed link is reopened by sml; a failed write here is retried next second.
                let _ = master.write_all(&telegram);
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    // Watch for the first payload, up to 27 s.
    let mut first_at = None;
    while started.elapsed() < Duration::from_secs(27) {
        if !sensors(&sink).is_empty() {
            first_at = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let report = run.stop();
    meter.join().unwrap();
    drop(slave);
    let first_at = first_at.expect("payloads after 22 s of uptime");
    // `upsecs>22` is first true at the 23 s tick; the run started after `started`.
    assert!(
        first_at >= Duration::from_secs(22),
        "published at {first_at:?}"
    );
    assert!(report.engine.telegrams >= 20, "{report:?}");
    let payload = &sensors(&sink)[0];
    assert!(payload.contains(r#""EON":{"#), "{payload}");
}

/// What the simulated meter saw, for the failure message.
#[derive(Debug, Default)]
struct MeterLog {
    events: Vec<String>,
}

/// An IEC 62056-21 mode C meter: it answers `/?!` only at 300 baud, takes the ACK `050` (9600 baud)
/// at 300 baud, and sends its data only once the line is at 9600. `slave` is the pty's slave side,
/// whose termios show the speed sml set.
fn iec_meter(
    mut master: TTYPort,
    slave: TTYPort,
    log: Arc<Mutex<MeterLog>>,
    stop: Arc<AtomicBool>,
) {
    master
        .set_timeout(Duration::from_millis(50))
        .expect("a read timeout");
    let note = |s: String| log.lock().unwrap().events.push(s);
    let mut got: Vec<u8> = Vec::new();
    let mut stage = 0;
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        match master.read(&mut buf) {
            Ok(n) if n > 0 => {
                // An `o` meter's sends go out 7E1 over the 8N1 line, as Tasmota sends them: a
                // byte with odd parity is one the meter would drop.
                for &b in &buf[..n] {
                    if b.count_ones() % 2 != 0 {
                        note(format!("odd parity byte {b:02X}"));
                    }
                    got.push(b & 0x7f);
                }
            }
            _ => {}
        }
        let baud = slave.baud_rate().unwrap_or(0);
        match stage {
            0 if got.ends_with(b"/?!\r\n") => {
                note(format!("request at {baud} baud"));
                got.clear();
                if baud == 300 {
                    master.write_all(b"/ABC5SIM01\r\n").unwrap();
                    stage = 1;
                }
            }
            1 if got.ends_with(&[0x06, b'0', b'5', b'0', b'\r', b'\n']) => {
                note(format!("ACK at {baud} baud"));
                got.clear();
                if baud == 300 {
                    stage = 2;
                }
            }
            2 if baud == 9600 => {
                note("sending data at 9600 baud".into());
                master
                    .write_all(b"/ABC5SIM01\r\n\r\n1-0:1.8.0(001234.567*kWh)\r\n!\r\n")
                    .unwrap();
                stage = 3;
            }
            _ => {}
        }
    }
}

#[test]
fn the_iec_baud_switch_written_in_f_reads_a_meter_that_answers_only_to_the_right_sequence() {
    // As community scripts write it: at 300 baud the request, then the ACK asking for 9600, then
    // the switch; `sml(1 0 9600)` waits until the ACK has left at 300 baud.
    let script = compile(
        ">D\nn=0\nres=0\n>F\nn=n+1\nif n==5\nthen\nres=sml(1 0 300)\nres=sml(1 1 \"2F3F210D0A\")\nendif\nif n==15\nthen\nres=sml(1 1 \"063035300D0A\")\nres=sml(1 0 9600)\nendif\n>M 1\n+1,3,o,0,9600,IEC\n1,1-0:1.8.0(@1,Energy,kWh,e,3\n#\n",
    );
    let (master, slave) = TTYPort::pair().unwrap();
    let sink = RecordingSink::default();
    let log = Arc::new(Mutex::new(MeterLog::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let run = start_sml(pty_run(script, &slave, sink.clone()));
    let meter = {
        let (log, stop) = (log.clone(), stop.clone());
        // The test's own slave handle watches the speed sml sets on its handle of the same pty.
        std::thread::spawn(move || iec_meter(master, slave, log, stop))
    };
    let published = wait_for(Duration::from_secs(10), || !sensors(&sink).is_empty());
    stop.store(true, Ordering::Relaxed);
    run.stop();
    meter.join().unwrap();
    let events = &log.lock().unwrap().events;
    assert!(published, "no payload; the meter saw: {events:?}");
    assert_eq!(
        events,
        &[
            "request at 300 baud",
            "ACK at 300 baud",
            "sending data at 9600 baud"
        ],
    );
    let payload = without_time(&sensors(&sink)[0]);
    assert_eq!(payload, r#"{"Time":"T","IEC":{"e":1234.567}}"#);
}

#[test]
fn permanent_variables_survive_a_restart_through_the_state_file() {
    let script =
        ">D\np:runs=0\n>B\nruns=runs+1\n>M 1\n+1,3,o,0,115200,EON\n1,1-0:1.8.0(@1,E,kWh,e,3\n#\n";
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for _ in 0..2 {
        let mut config = replay_run(compile(script));
        config.hooks.state_dir = Some(state.clone());
        start_sml(config).join();
    }
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join(sml::hooks::state::STATE_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["runs"], serde_json::json!(2.0));
}

#[test]
fn an_endless_loop_in_s_is_stopped_and_the_values_keep_flowing() {
    let script = compile(
        ">D\nx=0\n>S\nfor x 1 2 0\nnext\n>M 1\n+1,3,o,0,115200,EON\n1,1-0:1.8.0(@1,E,kWh,e,3\n#\n",
    );
    let (mut master, slave) = TTYPort::pair().unwrap();
    let sink = RecordingSink::default();
    let run = start_sml(pty_run(script, &slave, sink.clone()));
    let telegram = seed_telegram();
    let mut published = 0;
    let started = Instant::now();
    // Telegrams for 3 s, so `>S` runs (and is stopped) a few times between them.
    while started.elapsed() < Duration::from_secs(3) {
        master.write_all(&telegram).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        published = sensors(&sink).len();
    }
    run.stop();
    assert!(published >= 3, "{published} payloads");
    drop(slave);
}

/// The seed's capture replayed as fast as it goes, meter 1 of `script`.
fn replay_run(script: sml::script::model::Script) -> RunConfig {
    let capture = root().join("tests/fixtures/meters/sx631.txt");
    RunConfig {
        replay_speed: ReplaySpeed::Max,
        ..run_config(script, Source::Replay(capture), RecordingSink::default())
    }
}
