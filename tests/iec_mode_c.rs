//! IEC 62056-21 mode C done natively, with the built `sml` binary against a simulated meter on a
//! real pseudo-terminal. The script is what a Tasmota user writes for a mode C meter (an `o` meter at
//! 300 baud asking `/?!`, its ACK block allowing 9600); it has no `>F` handshake.
//!
//! The simulated meter answers only the right sequence at the right speed and parity: the sign-on
//! and the ACK with even parity in bit 7 (7E1, as Tasmota sends it) at 300 baud, its data only once
//! the line is at 9600 (the speed sml sets is visible through termios on the pty's slave side, which
//! the meter reads as it gets each request). Also: a readout with a wrong BCC, a meter at the wrong
//! speed, a meter that stops after its identification, and `sml decode` of a recorded exchange.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serialport::{SerialPort, TTYPort};

/// Sign-on every 2 s (20 ticks); the ACK block `063035300D0A` allows 9600 baud.
const SCRIPT: &str = ">D\n>B\n->sensor53 r\n>M 1\n+1,3,o,0,300,MT,1,20,2F3F210D0A,063035300D0A\n1,1-0:1.8.0(@1,Import,kWh,import,3\n1,0.0.0(@1,Meter number,,meter_no,0\n#\n";

/// Even parity in bit 7 of every byte: 7E1 on the wire, as the meter expects and sends.
fn parity(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| if b.count_ones() % 2 == 1 { b | 0x80 } else { b })
        .collect()
}

/// `STX body ETX BCC`, the BCC over body and ETX (wrong on purpose when `good` is false).
fn readout(body: &str, good: bool) -> Vec<u8> {
    let mut out = vec![0x02];
    out.extend_from_slice(body.as_bytes());
    out.push(0x03);
    let bcc = out[1..].iter().fold(0u8, |a, b| a ^ b);
    out.push(if good { bcc } else { bcc ^ 0x5a });
    out
}

const IDENT: &[u8] = b"/SIM5MODEC-01\r\n";
const BODY: &str = "0.0.0(12345678)\r\n1-0:1.8.0(001234.567*kWh)\r\n!\r\n";

#[derive(Clone, Copy)]
struct Behaviour {
    /// The speed at which the meter hears a sign-on (a mode C meter: 300).
    hears_at: u32,
    good_bcc: bool,
    /// Whether the meter sends its data after the ACK at all.
    sends_data: bool,
}

const GOOD: Behaviour = Behaviour {
    hears_at: 300,
    good_bcc: true,
    sends_data: true,
};

/// What the simulated meter saw, with when it saw it, for assertions and failure messages.
#[derive(Debug, Default)]
struct MeterLog {
    events: Vec<(Duration, String)>,
}

impl MeterLog {
    fn said(&self) -> Vec<&str> {
        self.events.iter().map(|(_, s)| s.as_str()).collect()
    }
}

struct SimMeter {
    log: Arc<Mutex<MeterLog>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimMeter {
    fn start(mut master: TTYPort, slave: TTYPort, how: Behaviour) -> SimMeter {
        let log = Arc::new(Mutex::new(MeterLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            master.set_timeout(Duration::from_millis(20)).unwrap();
            let started = Instant::now();
            let note = |s: String| l.lock().unwrap().events.push((started.elapsed(), s));
            let sign_on = parity(b"/?!\r\n");
            let ack = parity(b"\x06050\r\n");
            let (mut got, mut stage, mut buf) = (Vec::new(), 0, [0u8; 64]);
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = master.read(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                }
                let baud = slave.baud_rate().unwrap_or(0);
                if got.ends_with(&sign_on) {
                    // A sign-on restarts the conversation, wherever it was.
                    note(format!("request at {baud}"));
                    got.clear();
                    stage = 0;
                    if baud == how.hears_at {
                        master.write_all(&parity(IDENT)).unwrap();
                        stage = 1;
                    }
                } else if stage == 1 && got.ends_with(&ack) {
                    note(format!("ACK at {baud}"));
                    got.clear();
                    stage = if baud == 300 && how.sends_data { 2 } else { 0 };
                } else if stage == 2 && baud == 9600 {
                    note("data at 9600".into());
                    master
                        .write_all(&parity(&readout(BODY, how.good_bcc)))
                        .unwrap();
                    stage = 0;
                }
            }
        });
        SimMeter {
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn said(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.said().into_iter().map(String::from).collect()
    }

    fn times_of(&self, what: &str) -> Vec<Duration> {
        let log = self.log.lock().unwrap();
        log.events
            .iter()
            .filter(|(_, s)| s == what)
            .map(|(t, _)| *t)
            .collect()
    }
}

impl Drop for SimMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `sml run` of SCRIPT on the pty `slave`, payloads on stdout, logs on stderr.
fn run_sml(dir: &Path, slave: &TTYPort) -> Child {
    let script = dir.join("mt.sml");
    std::fs::write(&script, SCRIPT).unwrap();
    Command::new(env!("CARGO_BIN_EXE_sml"))
        .arg("run")
        .arg(&script)
        .args(["--port", &format!("1={}", slave.name().unwrap())])
        .arg("--every-telegram")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Stop sml and take what it printed: (stdout, stderr).
fn finish(mut sml: Child) -> (String, String) {
    let _ = sml.kill();
    let out = sml.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn setup(how: Behaviour) -> (tempfile::TempDir, Child, SimMeter) {
    let dir = tempfile::tempdir().unwrap();
    let (master, slave) = TTYPort::pair().unwrap();
    let sml = run_sml(dir.path(), &slave);
    let meter = SimMeter::start(master, slave, how);
    (dir, sml, meter)
}

#[test]
fn an_unchanged_mode_c_script_gets_the_whole_handshake_and_publishes_every_period() {
    let (_dir, sml, meter) = setup(GOOD);
    // Three: `sensor53 r` in `>B` may start a conversation afresh at boot.
    let two_readouts = wait_for(Duration::from_secs(20), || {
        meter.times_of("data at 9600").len() >= 3
    });
    std::thread::sleep(Duration::from_millis(500));
    let (stdout, stderr) = finish(sml);
    let said = meter.said();
    assert!(two_readouts, "the meter saw {said:?}; sml said:\n{stderr}");
    // `sensor53 r` in `>B` may restart the first conversation; every one goes the same way.
    let wrong = ["request at 9600", "ACK at 9600"];
    assert!(
        !said.iter().any(|s| wrong.contains(&s.as_str())),
        "{said:?}"
    );
    let data = said.iter().position(|s| s == "data at 9600").unwrap();
    assert_eq!(
        said[data - 2..data],
        ["request at 300", "ACK at 300"],
        "{said:?}"
    );
    let payloads: Vec<&str> = stdout.lines().filter(|l| l.contains("\"MT\"")).collect();
    assert!(payloads.len() >= 2, "{stdout}\n{stderr}");
    assert_eq!(
        without_time(payloads[0]),
        r#"{"Time":"T","MT":{"import":1234.567,"meter_no":12345678}}"#
    );
    // The next sign-on comes a period after the last, not at once after the readout.
    let requests = meter.times_of("request at 300");
    let gap = requests[requests.len() - 1] - requests[requests.len() - 2];
    assert!(gap >= Duration::from_millis(1900), "{requests:?}");
}

#[test]
fn a_readout_with_a_wrong_bcc_publishes_nothing_and_is_counted() {
    let (_dir, sml, meter) = setup(Behaviour {
        good_bcc: false,
        ..GOOD
    });
    let two_readouts = wait_for(Duration::from_secs(20), || {
        meter.times_of("data at 9600").len() >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    let (stdout, stderr) = finish(sml);
    assert!(two_readouts, "the meter saw {:?}\n{stderr}", meter.said());
    assert!(!stdout.contains("\"MT\""), "published: {stdout}");
    assert!(
        stderr.contains("telegram rejected") && stderr.contains("1 rejected so far"),
        "{stderr}"
    );
}

#[test]
fn a_meter_at_the_wrong_speed_is_counted_as_unanswered_and_asked_again_later_and_later() {
    // A meter that listens at 9600: sml's sign-ons at 300 are never answered.
    let (_dir, sml, meter) = setup(Behaviour {
        hears_at: 9600,
        ..GOOD
    });
    // Sign-ons at 0, 2.5+2, 2.5+4 later (period 2 s doubling): three within 12 s.
    let three = wait_for(Duration::from_secs(14), || {
        meter.times_of("request at 300").len() >= 3
    });
    let (stdout, stderr) = finish(sml);
    let requests = meter.times_of("request at 300");
    assert!(three, "{:?}\n{stderr}", meter.said());
    assert!(meter.times_of("ACK at 300").is_empty());
    assert!(!stdout.contains("\"MT\""), "published: {stdout}");
    assert!(stderr.contains("no answer"), "{stderr}");
    let (first, second) = (requests[1] - requests[0], requests[2] - requests[1]);
    assert!(
        second >= first + Duration::from_millis(1500),
        "the retries do not back off: {requests:?}"
    );
}

#[test]
fn a_meter_that_falls_silent_after_its_identification_is_asked_again_at_300_baud() {
    let (_dir, sml, meter) = setup(Behaviour {
        sends_data: false,
        ..GOOD
    });
    let again = wait_for(Duration::from_secs(15), || {
        meter.times_of("request at 300").len() >= 2
    });
    let (stdout, stderr) = finish(sml);
    assert!(again, "{:?}\n{stderr}", meter.said());
    assert_eq!(
        meter.said()[..3],
        ["request at 300", "ACK at 300", "request at 300"]
    );
    assert!(!stdout.contains("\"MT\""), "published: {stdout}");
}

#[test]
fn sml_decode_reads_a_recorded_exchange_with_the_handshake_bytes_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("mt.sml");
    std::fs::write(&script, SCRIPT).unwrap();
    // What a half-duplex optical head records: our sign-on's echo, the identification, our ACK's
    // echo, the readout; twice, the second readout with a wrong BCC.
    let mut capture = Vec::new();
    for good in [true, false] {
        capture.extend(parity(b"/?!\r\n"));
        capture.extend(parity(IDENT));
        capture.extend(parity(b"\x06050\r\n"));
        capture.extend(parity(&readout(BODY, good)));
    }
    let file = dir.path().join("mt.bin");
    std::fs::write(&file, &capture).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sml"))
        .arg("decode")
        .args([&script, &file])
        .arg("--stats")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let payloads: Vec<&str> = stdout.lines().filter(|l| l.contains("\"MT\"")).collect();
    assert_eq!(payloads.len(), 1, "{stdout}\n{stderr}");
    assert_eq!(
        without_time(payloads[0]),
        r#"{"Time":"T","MT":{"import":1234.567,"meter_no":12345678}}"#
    );
    assert!(
        stderr.contains("CRC errors: 1"),
        "the bad BCC is counted: {stderr}"
    );
}
