//! `r` end to end with real parts: the built `sml run` binary reads a simulated M-Bus heat meter
//! over a pseudo-terminal (the meter's frames built from the script's own metric lines by
//! `tests/raw_sim.rs`) and publishes the script's values on the SENSOR payload of an in-process
//! broker; noise, a cut frame and a frame with a wrong checksum sent first publish nothing.

mod common;
#[path = "raw_sim.rs"]
mod sim;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serialport::{SerialPort, TTYPort};

const WAIT: Duration = Duration::from_secs(20);
const SCRIPT: &str = "meters/elster-f96-mbus.sml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The script's meter and what the simulator sends for it.
fn simulated() -> sim::Simulated {
    let text = std::fs::read(root().join(SCRIPT)).unwrap();
    let compiled = sml::script::compile(&text);
    let script = compiled.script.expect("the meter script compiles");
    sim::simulate(&script.meters[0])
}

/// What `sml decode` prints for `bytes`: the payload `sml run` must publish for them.
fn decoded(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("frame.bin");
    std::fs::write(&capture, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .args(["decode", SCRIPT])
        .arg(&capture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    without_time(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
}

#[test]
fn the_elster_script_unchanged_publishes_the_simulated_heat_meters_values() {
    let sim = simulated();
    assert!(sim.mbus && sim.skipped.is_empty(), "{:?}", sim.skipped);
    let frame = sim.telegrams[0].clone();
    let want = decoded(&frame);
    // The values the simulator laid into the frame, as the script publishes them.
    assert!(want.contains("\"w_total\":11,"), "{want}");
    assert!(want.contains("\"t_flow\":3.9,"), "{want}");

    let port = free_port();
    start_broker(port);
    let seen = subscribe(port, "tele/#");
    let (mut meter, slave) = TTYPort::pair().unwrap();
    let path = slave.name().unwrap();
    std::mem::forget(slave);
    let mut sml = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .args(["run", SCRIPT, "--port", &format!("1={path}")])
        .args(["--broker", &format!("mqtt://127.0.0.1:{port}")])
        .args(["--topic", "heat", "--every-telegram"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(next_on(&seen, "tele/heat/LWT", WAIT).payload, "Online");

    // Hostile input first: wrong-baud noise (even holding the energy record's bytes), a frame cut
    // short, a frame whose checksum is wrong. None of it may publish anything.
    let mut noise: Vec<u8> = (0..300u32)
        .map(|i| (i.wrapping_mul(151) >> 1) as u8)
        .collect();
    noise.extend_from_slice(&[0x0C, 0x06, 0x99, 0x99, 0x99, 0x99]);
    meter.write_all(&noise).unwrap();
    // Another energy reading in the frame, the checksum left as it was: wrong.
    let mut bad = frame.clone();
    let energy = bad.windows(2).position(|w| w == [0x0C, 0x06]).unwrap() + 2;
    bad[energy] = 0x99;
    meter.write_all(&frame[..frame.len() / 2]).unwrap();
    meter.write_all(&bad).unwrap();
    meter.flush().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let server = sim::serve_pty(meter, sim, Duration::from_millis(300), stop.clone());
    let got = next_on(&seen, "tele/heat/SENSOR", WAIT).payload;
    assert_eq!(
        without_time(&got),
        want,
        "the first payload is the good frame's"
    );
    let again = next_on(&seen, "tele/heat/SENSOR", WAIT).payload;
    assert_eq!(without_time(&again), want);

    stop.store(true, Ordering::Relaxed);
    Command::new("kill")
        .args(["-TERM", &sml.id().to_string()])
        .status()
        .unwrap();
    let status = sml.wait().unwrap();
    server.join().unwrap();
    assert!(
        status.success(),
        "sml run exits cleanly on SIGTERM: {status:?}"
    );
}

#[test]
fn an_r_upper_meter_is_read_burst_by_burst_after_its_so6_silence() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("raw.sml");
    std::fs::write(
        &script,
        ">D\n>M 1\n+1,3,R,0,9600,RAW\n1,=so6,150\n1,AA55UUuu@1,Value,,v,0\n\
         1,AA55x2uuUU@10,Other,,o,1\n#\n",
    )
    .unwrap();
    let compiled = sml::script::compile(&std::fs::read(&script).unwrap());
    let sim = sim::simulate(&compiled.script.unwrap().meters[0]);
    assert_eq!(sim.telegrams.len(), 1, "both lines fit one burst");
    assert!(!sim.mbus);

    let port = free_port();
    start_broker(port);
    let seen = subscribe(port, "tele/#");
    let (meter, slave) = TTYPort::pair().unwrap();
    let path = slave.name().unwrap();
    std::mem::forget(slave);
    let mut sml = Command::new(env!("CARGO_BIN_EXE_sml"))
        .arg("run")
        .arg(&script)
        .args(["--port", &format!("1={path}")])
        .args(["--broker", &format!("mqtt://127.0.0.1:{port}")])
        .args(["--topic", "raw", "--every-telegram"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(next_on(&seen, "tele/raw/LWT", WAIT).payload, "Online");
    let stop = Arc::new(AtomicBool::new(false));
    // Bursts 500 ms apart: each ends with a silence longer than `=so6,150`.
    let server = sim::serve_pty(meter, sim, Duration::from_millis(500), stop.clone());
    let got = next_on(&seen, "tele/raw/SENSOR", WAIT).payload;
    // Raw 11 for `v`; 18 / 10 for `o` (the values the simulator laid in).
    assert_eq!(without_time(&got), r#"{"Time":"T","RAW":{"v":11,"o":1.8}}"#);
    stop.store(true, Ordering::Relaxed);
    Command::new("kill")
        .args(["-TERM", &sml.id().to_string()])
        .status()
        .unwrap();
    sml.wait().unwrap();
    server.join().unwrap();
}
