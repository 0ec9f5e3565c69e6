//! DLMS end to end with real parts: the `sml` binary runs `meters/siemens-im350-dlms.sml`
//! unchanged against a simulated IM350 pushing encrypted telegrams over a pseudo-terminal, and the
//! values come out on the SENSOR payload of a real broker. Pushes under a wrong key, with a bad FCS
//! or cut short publish nothing; each is logged naming the meter, and no key is ever logged.

mod common;
#[path = "dlms_sim.rs"]
mod sim;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serialport::{SerialPort, TTYPort};
use sim::Link;
use sml::decode::dlms::apdu::Keys;

const WAIT: Duration = Duration::from_secs(20);
const KEY: &str = "000102030405060708090A0B0C0D0E0F";
const AUTH: &str = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF";

fn keys(key: &str) -> Keys {
    Keys {
        encryption: sml::hex::decode(key.as_bytes())
            .unwrap()
            .try_into()
            .unwrap(),
        authentication: Some(sml::hex::decode(AUTH.as_bytes()).unwrap()),
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Write like a meter at 115200 baud: a frame in a few chunks.
fn send(meter: &mut TTYPort, bytes: &[u8]) {
    for chunk in bytes.chunks(32) {
        meter.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
    meter.flush().unwrap();
}

#[test]
fn the_im350_script_unchanged_publishes_the_simulated_pushes_and_nothing_from_bad_ones() {
    let script = std::fs::read_to_string(root().join("meters/siemens-im350-dlms.sml")).unwrap();
    assert!(
        script.contains(KEY) && script.contains(AUTH),
        "the meter file's demo keys"
    );
    let port = free_port();
    start_broker(port);
    let seen = subscribe(port, "dlms/#");
    let (mut meter, slave) = TTYPort::pair().unwrap();
    let path = slave.name().unwrap();
    // Keep the slave side open, so the pty does not hang up between opens.
    std::mem::forget(slave);
    let mut sml = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .args([
            "run",
            "meters/siemens-im350-dlms.sml",
            "--port",
            &format!("1={path}"),
        ])
        .args([
            "--broker",
            &format!("mqtt://127.0.0.1:{port}"),
            "--topic",
            "im350",
        ])
        .args(["--full-topic", "dlms/%prefix%/%topic%/", "--every-telegram"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(
        next_on(&seen, "dlms/tele/im350/LWT", WAIT).payload,
        "Online"
    );

    let good = keys(KEY);
    send(
        &mut meter,
        &sim::push(
            &sim::im350_notification(1, &sim::IM350_REGISTERS),
            &good,
            0x30,
            100,
            Link::Hdlc,
        ),
    );
    let first = next_on(&seen, "dlms/tele/im350/SENSOR", WAIT).payload;
    assert_eq!(
        without_time(&first),
        r#"{"Time":"T","IM350":{"Total_in":4523.781,"Total_out":1020.345,"Reactive_in":12.345,"Reactive_out":67.890,"Power_in":734,"Power_out":5}}"#
    );

    // Bad pushes: another key, a bad FCS, a frame cut short by a silence.
    let mut other = sim::IM350_REGISTERS;
    other[0] = 999_999_999;
    let wrong_key = "FF0102030405060708090A0B0C0D0E0F";
    send(
        &mut meter,
        &sim::push(
            &sim::im350_notification(2, &other),
            &keys(wrong_key),
            0x30,
            101,
            Link::Hdlc,
        ),
    );
    let mut bad_fcs = sim::push(
        &sim::im350_notification(3, &other),
        &good,
        0x30,
        102,
        Link::Hdlc,
    );
    let n = bad_fcs.len();
    bad_fcs[n - 3] ^= 0x55;
    send(&mut meter, &bad_fcs);
    let cut = sim::push(
        &sim::im350_notification(4, &other),
        &good,
        0x30,
        103,
        Link::Hdlc,
    );
    send(&mut meter, &cut[..cut.len() / 2]);
    std::thread::sleep(Duration::from_millis(1500));

    // The next good push, over segmented M-Bus this time, is the next payload.
    let mut next = sim::IM350_REGISTERS;
    next[4] = 1_210;
    send(
        &mut meter,
        &sim::push(
            &sim::im350_notification(5, &next),
            &good,
            0x30,
            104,
            Link::MBus,
        ),
    );
    let second = next_on(&seen, "dlms/tele/im350/SENSOR", WAIT).payload;
    assert!(second.contains(r#""Power_in":1210"#), "{second}");
    assert!(!second.contains("999999"), "{second}");

    sml.kill().unwrap();
    sml.wait().unwrap();
    let mut err = String::new();
    sml.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("meter 1: decryption failed"), "{err}");
    assert!(err.contains("CRC mismatch"), "{err}");
    assert!(err.contains("truncated"), "{err}");
    for secret in [KEY, AUTH, wrong_key] {
        assert!(
            !err.to_uppercase().contains(secret),
            "a key in the log:\n{err}"
        );
    }
}

#[test]
fn decode_explain_lists_the_capture_with_offsets_and_without_keys() {
    let out = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .args(["decode", "--explain", "meters/siemens-im350-dlms.sml"])
        .arg("tests/fixtures/meters/siemens-im350-dlms.bin")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("tag checked").count(), 3, "{text}");
    // Offset 16 is the first register: `0209090Cx13` reads its value at 17.
    assert!(text.contains("   16      unsigned 4523781"), "{text}");
    assert!(!text.to_uppercase().contains(KEY) && !text.to_uppercase().contains(AUTH));
    // A meter that is no DLMS meter: a clear refusal naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .args(["decode", "--explain", "meters/sdm630-modbus.sml"])
        .arg("tests/fixtures/meters/siemens-im350-dlms.bin")
        .output()
        .unwrap();
    // Exit 2, as every failed command of the CLI.
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("meter 1 is type 'm'"));
}

#[test]
fn decode_explain_of_a_capture_without_a_good_frame_exits_1_and_says_so() {
    // A DLMS meter's listing of M-Bus noise, and an M-Bus listing (capture alone) of the DLMS
    // capture: each holds nothing its reader can use, which a script must not take for success.
    for args in [
        &[
            "decode",
            "--explain",
            "meters/siemens-im350-dlms.sml",
            "meters/index.toml",
        ][..],
        &[
            "decode",
            "--explain",
            "tests/fixtures/meters/siemens-im350-dlms.bin",
        ][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sml"))
            .current_dir(root())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no good frame"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
