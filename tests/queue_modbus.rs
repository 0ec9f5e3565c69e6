//! `sml(m 3 svar)` end to end: a script's `>S` queues a Modbus register write (as the Growatt
//! community script does to set its inverter's power limit) for a simulated slave on a real
//! pseudo-terminal. The slave sees the write, the polls go on, and the write's echo is read by no
//! metric line (a line without `iN:` would read it as 768 if it were).

mod common;
#[path = "modbus_sim.rs"]
mod sim;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serialport::{SerialPort, TTYPort};
use sim::*;
use sml::engine::scheduler::Publication;
use sml::link::{Binding, Source};

/// Register 0 of slave 1 polled every 500 ms; at the second `>S` run, register 3 is set to 0x42
/// with the Growatt script's own statements.
const SCRIPT: &str = ">D 22\ncstr=\"\"\nn=0\n>S\nn=n+1\nif n==2 {\ncstr=\"r0106000300\"+hn(66)\nsml(1 3 cstr)\n}\n>M 1\n+1,3,m,0,9600,SIM,1,5,01040000\n1,01xxxxUUuu@1,Reg,,reg,0\n#\n";

fn sensors(published: &Mutex<Vec<Publication>>) -> Vec<String> {
    published
        .lock()
        .unwrap()
        .iter()
        .filter_map(|p| match p {
            Publication::Sensor(s) => Some(without_time(s)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_write_queued_in_s_reaches_the_slave_between_polls_and_publishes_nothing_wrong() {
    let compiled = sml::script::compile(SCRIPT.as_bytes());
    let script = compiled
        .script
        .unwrap_or_else(|| panic!("{:#?}", compiled.diagnostics));
    let mut slave_sim = Simulator::default();
    slave_sim.set(1, 0, &[1234]);
    let (master, slave) = TTYPort::pair().unwrap();
    let path = std::path::PathBuf::from(slave.name().unwrap());
    // What the slave answered, in order: a write is answered with its echo.
    let answered: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let bus = {
        let answered = answered.clone();
        serve_pty(master, slave_sim, stop.clone(), move |_, reply| {
            answered.lock().unwrap().push(reply.clone());
            Some(reply)
        })
    };
    let sink = sml::publish::RecordingSink::default();
    let published = sink.published.clone();
    let run = start_sml(sml::runner::RunConfig {
        script,
        bindings: vec![Binding {
            meter: 1,
            source: Source::Serial(path),
        }],
        engine: sml::engine::scheduler::EngineConfig {
            teleperiod: Duration::from_secs(300),
            every_telegram: true,
            ..Default::default()
        },
        replay_speed: sml::link::ReplaySpeed::RealTime,
        link_backoff: sml::backoff::Backoff {
            first: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        },
        sink: sml::runner::SinkConfig::Recording(sink),
        decoders: sml::runner::default_decoders(),
        hooks: sml::runner::HooksConfig {
            script_path: "queue.sml".into(),
            ..Default::default()
        },
    });
    let write = with_crc(vec![0x01, 0x06, 0x00, 0x03, 0x00, 0x42]);
    let polls_after_write = |answered: &[Vec<u8>]| {
        answered.iter().position(|r| *r == write).map_or(0, |w| {
            answered[w + 1..].iter().filter(|r| r[1] == 0x04).count()
        })
    };
    let done = wait_for(Duration::from_secs(15), || {
        polls_after_write(&answered.lock().unwrap()) >= 3
    });
    run.stop();
    stop.store(true, Ordering::Relaxed);
    bus.join().unwrap();
    drop(slave);
    let answered = answered.lock().unwrap().clone();
    assert!(done, "the slave answered {answered:02X?}");
    assert_eq!(
        answered.iter().filter(|r| **r == write).count(),
        1,
        "one write, once: {answered:02X?}"
    );
    let payloads = sensors(&published);
    assert!(payloads.len() >= 4, "{payloads:?}");
    for p in &payloads {
        assert_eq!(p, r#"{"Time":"T","SIM":{"reg":1234}}"#);
    }
}
