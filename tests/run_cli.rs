//! `sml run` as users run it (the built binary): the SX631 seed script on a pty meter, publishing
//! to an in-process rumqttd on the seed's topic; killed, the broker says Offline for it.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serialport::{SerialPort, TTYPort};

const WAIT: Duration = Duration::from_secs(20);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn sml_run_publishes_the_sx631_telegram_on_the_seed_topic_and_the_will_when_killed() {
    let capture = std::fs::read(root().join("tests/fixtures/meters/sx631.txt")).unwrap();
    // What `sml decode` prints for the capture: the payload sml run must publish.
    let decoded = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .args([
            "decode",
            "meters/sx631.sml",
            "tests/fixtures/meters/sx631.txt",
        ])
        .output()
        .unwrap();
    assert!(decoded.status.success());
    let want = without_time(
        String::from_utf8(decoded.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    );

    let port = free_port();
    start_broker(port);
    let seen = subscribe(port, "home1/#");
    let (mut meter, slave) = TTYPort::pair().unwrap();
    let path = slave.name().unwrap();
    drop(slave);
    let mut sml = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .args(["run", "meters/sx631.sml", "--port", &format!("1={path}")])
        .args([
            "--broker",
            &format!("mqtt://127.0.0.1:{port}"),
            "--topic",
            "myelectricmeter",
        ])
        .args([
            "--full-topic",
            "home1/%prefix%/%topic%/",
            "--every-telegram",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    assert_eq!(
        next_on(&seen, "home1/tele/myelectricmeter/LWT", WAIT).payload,
        "Online"
    );
    for chunk in capture.chunks(64) {
        meter.write_all(chunk).unwrap();
    }
    let got = next_on(&seen, "home1/tele/myelectricmeter/SENSOR", WAIT).payload;
    assert_eq!(without_time(&got), want);
    assert!(want.contains("\"enrg_imp\":22803.012"), "{want}");

    // SIGKILL: no DISCONNECT, so the broker publishes the will.
    sml.kill().unwrap();
    sml.wait().unwrap();
    assert_eq!(
        next_on(&seen, "home1/tele/myelectricmeter/LWT", WAIT).payload,
        "Offline"
    );
}

#[test]
fn one_meter_and_no_port_fails_with_the_three_ways_to_give_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .args(["run", "meters/sx631.sml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for form in [
        "--port 1=/dev/ttyUSB0",
        "--port 1=tcp://host:2000",
        "--port 1=file:capture.txt",
    ] {
        assert!(err.contains(form), "{err}");
    }
}
