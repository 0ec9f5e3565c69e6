//! `sml run` as users run it (the built binary): the SX631 seed script on a pty meter, publishing
//! to an in-process rumqttd on the seed's topic; killed, the broker says Offline for it.
//! The runs use `tests/fixtures/no-holdback/sx631.sml`, the seed's `>M` without its `>B`/`>S`
//! sections: the seed itself holds its values back for 22 s (`smlj`), which `tests/run_hooks*.rs`
//! test; here the payloads must go out at once.

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
            "tests/fixtures/no-holdback/sx631.sml",
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
        .args([
            "run",
            "tests/fixtures/no-holdback/sx631.sml",
            "--port",
            &format!("1={path}"),
        ])
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
        .args(["run", "tests/fixtures/no-holdback/sx631.sml"])
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

/// `sml run` as a user types it; its exit code, stdout and stderr.
fn sml_run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .arg("run")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or("")
}

#[test]
fn a_capture_without_every_telegram_publishes_the_values_read_once_at_its_end() {
    let (code, out, err) = sml_run(&[
        "tests/fixtures/no-holdback/sx631.sml",
        "--port",
        "1=file:tests/fixtures/meters/sx631.txt",
        "--replay-speed",
        "max",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 1, "one payload: {out}");
    assert!(out.contains("\"enrg_imp\":22803.012"), "{out}");
}

#[test]
fn a_missing_capture_fails_quoting_the_port_last_on_stderr() {
    let (code, out, err) = sml_run(&[
        "tests/fixtures/no-holdback/sx631.sml",
        "--port",
        "1=file:missing.txt",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(out.is_empty(), "{out}");
    let last = last_line(&err);
    assert!(
        last.contains("--port 1=file:missing.txt") && last.contains("No such file"),
        "{err}"
    );
}

/// `--replay-speed 1e-300` once panicked inside the replay and exited 0 after "0 telegrams".
#[test]
fn a_replay_speed_beyond_the_clock_is_refused_quoting_it() {
    let (code, _, err) = sml_run(&[
        "tests/fixtures/no-holdback/sx631.sml",
        "--port",
        "1=file:tests/fixtures/meters/sx631.txt",
        "--replay-speed",
        "1e-300",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(last_line(&err).contains("'1e-300'"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn payloads_the_broker_never_got_fail_the_run_with_the_count_last_on_stderr() {
    // Nobody listens on this port: the capture's payload stays queued.
    let port = free_port();
    let (code, _, err) = sml_run(&[
        "tests/fixtures/no-holdback/sx631.sml",
        "--port",
        "1=file:tests/fixtures/meters/sx631.txt",
        "--replay-speed",
        "max",
        "--broker",
        &format!("mqtt://127.0.0.1:{port}"),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        last_line(&err).contains("1 payloads were not delivered"),
        "{err}"
    );
}

#[test]
fn a_password_in_the_config_file_is_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sml.toml");
    std::fs::write(
        &config,
        "broker = \"mqtt://127.0.0.1:1\"\nuser = \"meter\"\npassword = \"hunter2-secret\"\n",
    )
    .unwrap();
    let (code, _, err) = sml_run(&[
        "tests/fixtures/no-holdback/sx631.sml",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert!(
        err.contains("line 3") && err.contains("password-file"),
        "{err}"
    );
}

/// A device that is not plugged in yet is waited for (hot-plug), and said once, not per attempt.
#[test]
fn a_serial_device_that_does_not_exist_is_waited_for_and_said_once() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("ttyUSB-not-yet");
    let mut sml = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .args([
            "run",
            "-v",
            "tests/fixtures/no-holdback/sx631.sml",
            "--port",
        ])
        .arg(format!("1={}", device.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = std::io::BufReader::new(sml.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("still waiting") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Two more attempts (debug lines) after the first: the device was looked for three times.
    for _ in 0..2 {
        rx.recv_timeout(WAIT)
            .expect("sml keeps looking for the device");
    }
    let term = Command::new("kill")
        .args(["-TERM", &sml.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = sml.wait().unwrap();
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop: {err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "said once: {err}");
    assert!(
        warnings[0].contains("waiting for it to appear")
            && warnings[0].contains(&format!("--port 1={}", device.display())),
        "{err}"
    );
}

/// 1 MB of noise once wrote 3,128 WARN lines: now the first rejection, then a count.
#[test]
fn a_megabyte_of_noise_writes_a_few_warning_lines_not_one_per_telegram() {
    let dir = tempfile::tempdir().unwrap();
    let noise = dir.path().join("noise.bin");
    // Deterministic noise (an LCG's high bytes), with the OBIS decoder's '/' and '!' among them.
    let mut x: u32 = 12345;
    let bytes: Vec<u8> = (0..1_000_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(&noise, bytes).unwrap();
    let (code, out, err) = sml_run(&[
        "tests/fixtures/no-holdback/sx631.sml",
        "--port",
        &format!("1=file:{}", noise.display()),
        "--replay-speed",
        "max",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.is_empty(), "noise publishes nothing: {out}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
    // Per kind of rejection (truncated, malformed, ...): the first in full, then one count.
    let firsts = warnings
        .iter()
        .filter(|l| l.contains("telegram rejected:"))
        .count();
    assert!(
        (1..=3).contains(&firsts) && warnings.len() <= 2 * firsts,
        "{} warning lines:\n{err}",
        warnings.len()
    );
    assert!(
        warnings[0].contains("telegram rejected"),
        "the first is in full: {err}"
    );
    // The rest are counted, and the count says how many (the noise holds thousands).
    let counted: u64 = warnings
        .iter()
        .filter(|l| l.ends_with(" rejected before it stopped"))
        .filter_map(|l| l.split(": ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(counted > 1000, "{err}");
}

/// The capture's last payload reaches the broker before sml exits: the MQTT sink drains first.
#[test]
fn a_capture_run_against_a_broker_delivers_its_last_payload_before_exiting() {
    let port = free_port();
    start_broker(port);
    let seen = subscribe(port, "tele/capture/#");
    let (code, _, err) = sml_run(&[
        "tests/fixtures/no-holdback/sx631.sml",
        "--port",
        "1=file:tests/fixtures/meters/sx631.txt",
        "--replay-speed",
        "max",
        "--broker",
        &format!("mqtt://127.0.0.1:{port}"),
        "--topic",
        "capture",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let got = next_on(&seen, "tele/capture/SENSOR", WAIT).payload;
    assert!(got.contains("\"enrg_imp\":22803.012"), "{got}");
}

/// A meter file pasted from a host script: `%prefix%` comes from `--define`, the pins are supplied.
#[test]
fn a_meter_fragment_runs_with_its_host_variables_defined() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fragment.sml");
    std::fs::write(
        &script,
        ">D\n>M 1\n+1,%0rxpin%,o,0,115200,%prefix%,%0txpin%\n\
         1,1-0:32.7.0(@1,L1 Voltage,V,volts_l1,1\n#\n",
    )
    .unwrap();
    let script = script.to_str().unwrap();
    let port = "1=file:tests/fixtures/meters/sx631.txt";
    let (code, _, err) = sml_run(&[script, "--port", port, "--replay-speed", "max"]);
    assert_eq!(code, Some(2), "an undefined %prefix% is an error: {err}");
    assert!(err.contains("%prefix%"), "the message quotes it: {err}");

    let (code, out, err) = sml_run(&[
        script,
        "--port",
        port,
        "--replay-speed",
        "max",
        "--define",
        "prefix=P1",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(r#""P1":{"volts_l1":"#), "{out}");

    let (code, _, err) = sml_run(&[script, "--port", port, "--define", "prefix"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(last_line(&err).contains("'prefix'"), "{err}");
}

/// A script's `publish topic payload` reaches the broker on the topic the script names, with its
/// `%var%` substituted; a wildcard topic is refused.
#[test]
fn a_scripts_publish_command_reaches_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("publisher.sml");
    std::fs::write(
        &script,
        ">D\nn=0\n>S\nn+=1\nif n==2\nthen\n=>publish home/script/hello up %n%\n\
         =>publish home/+/bad x\nendif\n>M 1\n+1,3,o,0,9600,P1\n\
         1,1-0:32.7.0(@1,L1 Voltage,V,volts_l1,1\n#\n",
    )
    .unwrap();
    let port = free_port();
    start_broker(port);
    let seen = subscribe(port, "home/#");
    let (_meter, slave) = TTYPort::pair().unwrap();
    let path = slave.name().unwrap();
    let sml = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .arg("run")
        .arg(&script)
        .args(["--port", &format!("1={path}")])
        .args(["--broker", &format!("mqtt://127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let got = next_on(&seen, "home/script/hello", Duration::from_secs(20));
    let _ = Command::new("kill")
        .args(["-TERM", &sml.id().to_string()])
        .status();
    let out = sml.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // `%n%` of a number prints with two decimals, as Tasmota substitutes it.
    assert_eq!(got.payload, "up 2.00", "{err}");
    assert!(err.contains("`publish home/+/bad` refused"), "{err}");
    assert!(
        seen.try_iter().all(|s| !s.topic.contains("bad")),
        "nothing on a wildcard topic"
    );
}
