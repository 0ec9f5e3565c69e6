//! `sml run` under systemd's eyes, with the real binary: the notifications on a `$NOTIFY_SOCKET`
//! the test binds (READY, WATCHDOG at half of `$WATCHDOG_USEC`, STATUS, STOPPING), log levels as
//! syslog priorities when stderr is the journal's stream, and `/etc/sml/sml.toml`'s stand-in
//! `$SML_CONFIG` read when no script is given.

mod common;
mod service_support;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use service_support::*;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn ready_comes_once_running_then_watchdog_pings_repeat_and_stopping_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    let script = dir.path().join("meter.sml");
    std::fs::write(&script, meter_script("E1")).unwrap();
    let (mut meter, pty) = pty_meter();
    let sml = start_sml(
        &notify.path,
        Some(Duration::from_millis(400)),
        &[
            "run",
            script.to_str().unwrap(),
            "--port",
            &format!("1={pty}"),
        ],
        &[],
    );
    let ready = notify.wait_for(WAIT, |l| l == "READY=1");
    assert!(
        ready.contains("STATUS=running ") && ready.contains("1 meters"),
        "{ready}"
    );
    // Pings at half of the 400 ms timeout: five of them come within a few seconds on a busy
    // machine, and the status they carry follows the telegrams.
    let first = Instant::now();
    for _ in 0..5 {
        notify.wait_for(WAIT, |l| l == "WATCHDOG=1");
    }
    let five = first.elapsed();
    assert!(five < Duration::from_secs(10), "5 pings took {five:?}");
    send(&mut meter, &telegram(1.5));
    let status = notify.wait_for(WAIT, |l| l.contains("1 telegrams"));
    assert!(status.contains("WATCHDOG=1"), "{status}");

    signal(&sml, "TERM");
    notify.wait_for(WAIT, |l| l == "STOPPING=1");
    let (code, stderr, _) = exit_within(sml, WAIT);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn without_watchdog_pid_of_its_own_sml_sends_no_watchdog_pings() {
    // systemd names the process the watchdog is for; another process's variable is not ours.
    let dir = tempfile::tempdir().unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    let script = dir.path().join("meter.sml");
    std::fs::write(&script, meter_script("E1")).unwrap();
    let (_meter, pty) = pty_meter();
    let sml = start_sml(
        &notify.path,
        Some(Duration::from_millis(200)),
        &[
            "run",
            script.to_str().unwrap(),
            "--port",
            &format!("1={pty}"),
        ],
        &[("WATCHDOG_PID", "1")],
    );
    notify.wait_for(WAIT, |l| l == "READY=1");
    // A second's worth of would-be pings (ten at 100 ms), then the stop.
    std::thread::sleep(Duration::from_secs(1));
    signal(&sml, "TERM");
    notify.wait_for(WAIT, |l| l == "STOPPING=1");
    let (code, stderr, _) = exit_within(sml, WAIT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !notify.seen.iter().any(|d| d.contains("WATCHDOG=1")),
        "{:#?}",
        notify.seen
    );
}

#[test]
fn on_the_journals_stream_each_log_line_starts_with_its_priority_and_has_no_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let script = dir.path().join("meter.sml");
    std::fs::write(&script, meter_script("E1")).unwrap();
    // stderr is a file whose device and inode `$JOURNAL_STREAM` names, as systemd names its
    // stream socket. The missing serial device gives a warning, the stop an info line.
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let mut sml = std::process::Command::new(env!("CARGO_BIN_EXE_sml"))
        .args([
            "run",
            script.to_str().unwrap(),
            "--port",
            "1=/dev/ttyNOSUCHDEVICE",
        ])
        .env("JOURNAL_STREAM", &stream)
        .env("NOTIFY_SOCKET", &notify.path)
        .env_remove("RUST_LOG")
        .stderr(log)
        .spawn()
        .unwrap();
    let mut notify = notify;
    notify.wait_for(WAIT, |l| l == "READY=1");
    assert!(common::wait_for(WAIT, || std::fs::read_to_string(
        &log_path
    )
    .unwrap()
    .contains("<4>")));
    signal_pid(sml.id(), "TERM");
    assert_eq!(sml.wait().unwrap().code(), Some(0));
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(!text.is_empty());
    for line in text.lines() {
        let priority = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .map(|(p, _)| p);
        assert!(
            matches!(priority, Some("3" | "4" | "6" | "7")),
            "no priority: {line}"
        );
        assert!(!line[3..].starts_with("20"), "a timestamp: {line}");
    }
    assert!(text.contains("<4>") && text.contains("<6>"), "{text}");
    assert!(
        text.contains("/dev/ttyNOSUCHDEVICE"),
        "the warning names the device: {text}"
    );
}

fn signal_pid(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn without_a_script_sml_run_reads_the_config_file_sml_config_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    std::fs::write(dir.path().join("meter.sml"), meter_script("E1")).unwrap();
    let (_meter, pty) = pty_meter();
    let config = dir.path().join("sml.toml");
    std::fs::write(
        &config,
        format!("script = \"meter.sml\"\nteleperiod = 60\n[port]\n1 = \"{pty}\"\n"),
    )
    .unwrap();
    let sml = start_sml(
        &notify.path,
        None,
        &["run"],
        &[("SML_CONFIG", config.to_str().unwrap())],
    );
    let ready = notify.wait_for(WAIT, |l| l == "READY=1");
    assert!(ready.contains("meter.sml"), "{ready}");
    signal(&sml, "TERM");
    let (code, stderr, _) = exit_within(sml, WAIT);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_config_file_sml_config_names_that_is_missing_is_an_error_quoting_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sml"))
        .arg("run")
        .env("SML_CONFIG", "/nonexistent/sml.toml")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/sml.toml"), "{stderr}");
}
