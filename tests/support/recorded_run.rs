/*!
The harness of the per-type run tests (`tests/<type>_run.rs`): an in-process run of a script whose
meter 1 reads a pty or a TCP port, publishing every telegram into memory, and the SENSOR payloads
it published. The tests wait on those with `common::wait_for` and a generous bound; each keeps only
its simulator and what it asserts.
*/
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serialport::{SerialPort, TTYPort};
use sml::engine::scheduler::Publication;
use sml::link::{Binding, Source};
use sml::runner::RunConfig;
use sml::script::Script;

/// What a run published, in order.
pub type Published = Arc<Mutex<Vec<Publication>>>;

/// `text` compiled; panics with the diagnostics when it does not compile.
pub fn compile(text: &str) -> Script {
    let c = sml::script::compile(text.as_bytes());
    c.script.unwrap_or_else(|| panic!("{:?}", c.diagnostics))
}

/// The script of the meters library (`meters/<file>`), compiled.
pub fn library_script(file: &str) -> Script {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("meters")
        .join(file);
    compile(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
}

/// A run of `script` with `bindings`, publishing every telegram (teleperiod 300 s) into memory,
/// with a fast link backoff (100 ms to 1 s) so a reconnect does not outlast a test's bound.
pub fn recorded_run(script: Script, bindings: Vec<Binding>) -> (RunConfig, Published) {
    let sink = sml::publish::RecordingSink::default();
    let published = sink.published.clone();
    let config = RunConfig {
        script,
        bindings,
        engine: sml::engine::scheduler::EngineConfig {
            teleperiod: Duration::from_secs(300),
            every_telegram: true,
            ..Default::default()
        },
        replay_speed: sml::link::ReplaySpeed::Max,
        link_backoff: sml::backoff::Backoff {
            first: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        },
        sink: sml::runner::SinkConfig::Recording(sink),
        decoders: sml::runner::default_decoders(),
        hooks: Default::default(),
    };
    (config, published)
}

/// Meter 1 on the serial device `path`.
pub fn serial(path: PathBuf) -> Vec<Binding> {
    vec![Binding {
        meter: 1,
        source: Source::Serial(path),
    }]
}

/// Meter 1 on `127.0.0.1:port`.
pub fn tcp(port: u16) -> Vec<Binding> {
    vec![Binding {
        meter: 1,
        source: Source::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
    }]
}

/// A pty pair: the master for the simulator, the slave's path for sml.
pub fn pty() -> (TTYPort, PathBuf) {
    let (master, slave) = TTYPort::pair().unwrap();
    let path = PathBuf::from(slave.name().unwrap());
    // Keep the slave side open for the test's length, so the pty does not hang up between opens.
    std::mem::forget(slave);
    (master, path)
}

/// The SENSOR payloads published so far, as JSON.
pub fn sensor_values(published: &Mutex<Vec<Publication>>) -> Vec<serde_json::Value> {
    sensor_payloads(published)
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect()
}

/// The SENSOR payloads published so far, as sent.
pub fn sensor_payloads(published: &Mutex<Vec<Publication>>) -> Vec<String> {
    published
        .lock()
        .unwrap()
        .iter()
        .filter_map(|p| match p {
            Publication::Sensor(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// The SENSOR payloads published so far, with their time as `T` (`common::without_time`, so the
/// test crate must have `mod common`).
pub fn sensors(published: &Mutex<Vec<Publication>>) -> Vec<String> {
    sensor_payloads(published)
        .iter()
        .map(|s| crate::common::without_time(s))
        .collect()
}

/// Run `config` in this process until it has published a SENSOR payload (panics after 20 s
/// without one), then stop it.
pub fn run_until_a_sensor_payload(config: RunConfig, published: &Published) {
    let run = crate::common::start_sml(config);
    assert!(
        crate::common::wait_for(Duration::from_secs(20), || !sensor_payloads(published)
            .is_empty()),
        "no SENSOR payload"
    );
    run.stop();
}
