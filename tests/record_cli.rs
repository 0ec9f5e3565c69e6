//! `sml record` through the built binary, on real sources: a pty (a serial adapter) and a TCP
//! listener (a serial bridge) send a meter's capture; the recording holds exactly those bytes, and
//! `sml decode` of it prints what `sml decode` of the capture prints. `--duration` and Ctrl-C end it
//! with every byte in the file; an existing `--out` is refused; the progress line is on a terminal
//! only; a polled meter is asked as the script says.
//!
//! The Kaifa DSMR 4.2 script has no `smlj` hold-back, so its decode is the capture's telegram.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{send_at_9600, wait_for};
use serialport::{SerialPort, TTYPort};

const SCRIPT: &str = "meters/kaifa-dsmr42.sml";
const CAPTURE: &str = "tests/fixtures/meters/kaifa-dsmr42.txt";
const WAIT: Duration = Duration::from_secs(20);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn capture() -> Vec<u8> {
    std::fs::read(root().join(CAPTURE)).unwrap()
}

fn sml() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sml"));
    c.current_dir(root());
    c
}

fn record(port: &str, out: &Path, extra: &[&str]) -> Command {
    let mut c = sml();
    c.args(["record", SCRIPT, "--port", port, "--out"])
        .arg(out)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// `sml decode` of the script on `file`, with a fixed `Time`: the payload lines.
fn decode(script: &str, file: &Path) -> String {
    let out = sml()
        .args(["decode", script])
        .arg(file)
        .args(["--time", "2024-03-04T11:25:20"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.is_empty());
    text
}

/// Wait for `child` to end, killing it after [`WAIT`] (a hung recording fails the test, not CI).
fn finish(mut child: Child) -> Output {
    let ended = wait_for(WAIT, || child.try_wait().unwrap().is_some());
    if !ended {
        child.kill().unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(ended, "sml record did not end: {out:?}");
    out
}

/// Whether process `pid` has `path` open: then bytes written to the pty's other end reach it.
fn has_open(pid: u32, path: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == path))
        })
        .unwrap_or(false)
}

/// A pty pair whose ends are not inherited by the `sml` processes the tests spawn (`pair()` does
/// not set close-on-exec): an inherited master would keep the pty alive after the test drops it.
fn pty() -> (TTYPort, TTYPort, PathBuf) {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use std::os::fd::AsRawFd;
    let (master, slave) = TTYPort::pair().unwrap();
    for fd in [master.as_raw_fd(), slave.as_raw_fd()] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
    }
    let name = PathBuf::from(slave.name().unwrap());
    (master, slave, name)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Ctrl-C: SIGINT through the `kill` command (no `unsafe` in the tests).
fn interrupt(child: &Child) {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "kill -INT {} failed", child.id());
}

#[test]
fn a_pty_recording_ended_by_duration_decodes_like_the_capture() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kaifa.bin");
    let (mut master, _slave, name) = pty();
    let started = Instant::now();
    let child = record(&format!("1={}", name.display()), &out, &["--duration", "2"])
        .spawn()
        .unwrap();
    assert!(wait_for(WAIT, || has_open(child.id(), &name)));
    send_at_9600(&mut master, &capture());
    let result = finish(child);
    assert!(result.status.success(), "{result:?}");
    // The duration ended it, not the test's timeout.
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(std::fs::read(&out).unwrap(), capture());
    assert_eq!(decode(SCRIPT, &out), decode(SCRIPT, &root().join(CAPTURE)));
    // stderr is a pipe here: no progress line.
    assert_eq!(String::from_utf8_lossy(&result.stderr), "");
}

#[test]
fn ctrl_c_leaves_every_byte_read_in_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kaifa.bin");
    let (mut master, _slave, name) = pty();
    let child = record(&format!("1={}", name.display()), &out, &[])
        .spawn()
        .unwrap();
    assert!(wait_for(WAIT, || has_open(child.id(), &name)));
    // Two telegrams, the second cut short: what was read is kept, half a telegram included.
    let mut sent = capture();
    sent.extend_from_slice(&capture()[..100]);
    send_at_9600(&mut master, &sent);
    assert!(wait_for(WAIT, || file_len(&out) == sent.len() as u64));
    interrupt(&child);
    let result = finish(child);
    assert!(result.status.success(), "{result:?}");
    assert_eq!(std::fs::read(&out).unwrap(), sent);
    // The cut telegram is rejected as truncated, the whole one decodes as in the capture.
    assert_eq!(decode(SCRIPT, &out), decode(SCRIPT, &root().join(CAPTURE)));
}

#[test]
fn a_tcp_recording_ends_when_the_bridge_closes_and_decodes_like_the_capture() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kaifa.bin");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bridge = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        for piece in capture().chunks(64) {
            conn.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        // Closing ends the recording.
    });
    let child = record(&format!("1=tcp://127.0.0.1:{port}"), &out, &[])
        .spawn()
        .unwrap();
    let result = finish(child);
    bridge.join().unwrap();
    assert!(result.status.success(), "{result:?}");
    assert_eq!(std::fs::read(&out).unwrap(), capture());
    assert_eq!(decode(SCRIPT, &out), decode(SCRIPT, &root().join(CAPTURE)));
    assert_eq!(String::from_utf8_lossy(&result.stderr), "");
    assert_eq!(String::from_utf8_lossy(&result.stdout), "");
}

#[test]
fn a_recording_replays_through_sml_run_as_a_file_port() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kaifa.bin");
    let copy = record(&format!("1=file:{CAPTURE}"), &out, &[])
        .output()
        .unwrap();
    assert!(copy.status.success(), "{copy:?}");
    let run = |capture: &Path| {
        let o = sml()
            .args(["run", SCRIPT, "--replay-speed", "max", "--every-telegram"])
            .arg("--port")
            .arg(format!("1=file:{}", capture.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(common::without_time)
            .collect::<Vec<_>>()
    };
    let replayed = run(&out);
    assert!(!replayed.is_empty());
    assert_eq!(replayed, run(&root().join(CAPTURE)));
}

#[test]
fn an_existing_out_file_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kaifa.bin");
    std::fs::write(&out, b"an earlier recording").unwrap();
    let result = record(&format!("1=file:{CAPTURE}"), &out, &[])
        .output()
        .unwrap();
    assert_eq!(result.status.code(), Some(2), "{result:?}");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains(&format!("--out {}: the file exists", out.display()))
            && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"an earlier recording");

    let forced = record(&format!("1=file:{CAPTURE}"), &out, &["--force"])
        .output()
        .unwrap();
    assert!(forced.status.success(), "{forced:?}");
    assert_eq!(std::fs::read(&out).unwrap(), capture());
}

#[test]
fn the_progress_line_on_a_terminal_counts_bytes_and_telegrams() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kaifa.bin");
    // stderr is a pty: a terminal.
    let (mut term, _term_slave, term_name) = pty();
    let stderr = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&term_name)
        .unwrap();
    let mut cmd = record(&format!("1=file:{CAPTURE}"), &out, &[]);
    cmd.stderr(Stdio::from(stderr));
    let result = finish(cmd.spawn().unwrap());
    assert!(result.status.success(), "{result:?}");
    term.set_timeout(Duration::from_millis(500)).unwrap();
    let mut shown = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = term.read(&mut buf) {
        if n == 0 {
            break;
        }
        shown.extend_from_slice(&buf[..n]);
    }
    let shown = String::from_utf8_lossy(&shown);
    let last = shown.rsplit('\r').find(|l| !l.trim().is_empty()).unwrap();
    assert!(
        last.contains(&format!(
            "to {}: {} bytes, 1 telegrams, 0 CRC errors",
            out.display(),
            capture().len()
        )),
        "{shown:?}"
    );
}

#[test]
fn a_polled_meter_is_asked_as_its_script_says_and_only_its_answer_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mt174.bin");
    let (mut master, _slave, name) = pty();
    let mut cmd = sml();
    cmd.args(["record", "meters/iskra-mt174.sml", "--port"])
        .arg(format!("1={}", name.display()))
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // The script's request, 2F3F210D0A: "/?!\r\n", with the even parity bit of the meter's 7E1
    // set by sml on an 8N1 port (as Tasmota does); the parity bit is dropped to compare.
    master.set_timeout(Duration::from_millis(200)).unwrap();
    let mut asked = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 64];
    let request = |asked: &[u8]| asked.windows(5).any(|w| w == b"/?!\r\n");
    while !request(&asked) && Instant::now() < deadline {
        if let Ok(n) = master.read(&mut buf) {
            asked.extend(buf[..n].iter().map(|b| b & 0x7f));
        }
    }
    assert!(request(&asked), "{asked:?}");
    let answer = std::fs::read(root().join("tests/fixtures/meters/iskra-mt174.txt")).unwrap();
    // At the pty's pace, not 9600 baud: 9.5 kB would take 10 s.
    master.write_all(&answer).unwrap();
    assert!(wait_for(WAIT, || file_len(&out) == answer.len() as u64));
    interrupt(&child);
    let result = finish(child);
    assert!(result.status.success(), "{result:?}");
    assert_eq!(std::fs::read(&out).unwrap(), answer);
}

#[test]
fn an_unplugged_adapter_fails_the_recording_and_keeps_what_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kaifa.bin");
    let (mut master, slave, name) = pty();
    let child = record(&format!("1={}", name.display()), &out, &[])
        .spawn()
        .unwrap();
    assert!(wait_for(WAIT, || has_open(child.id(), &name)));
    send_at_9600(&mut master, &capture());
    assert!(wait_for(WAIT, || file_len(&out) == capture().len() as u64));
    // Unplugged: both ends of the pty go away.
    drop(master);
    drop(slave);
    let result = finish(child);
    assert_eq!(result.status.code(), Some(1), "{result:?}");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains(&format!("--port 1={}: ", name.display()))
            && stderr.contains(&format!(
                "({} bytes recorded in {})",
                capture().len(),
                out.display()
            )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), capture());
}

#[test]
fn a_source_that_cannot_be_opened_is_named_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kaifa.bin");
    let missing = dir.path().join("ttyUSB9");
    let result = record(&format!("1={}", missing.display()), &out, &[])
        .output()
        .unwrap();
    assert_eq!(result.status.code(), Some(2), "{result:?}");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.starts_with(&format!("sml: error: --port 1={}: ", missing.display())),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn a_source_that_sends_nothing_fails_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kaifa.bin");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A bridge that accepts and closes at once.
    let bridge = std::thread::spawn(move || drop(listener.accept().unwrap()));
    let result = finish(
        record(&format!("1=tcp://127.0.0.1:{port}"), &out, &[])
            .spawn()
            .unwrap(),
    );
    bridge.join().unwrap();
    assert_eq!(result.status.code(), Some(1), "{result:?}");
    assert_eq!(
        String::from_utf8_lossy(&result.stderr),
        format!(
            "sml: nothing recorded: no byte arrived from --port 1=tcp://127.0.0.1:{port}; {} not \
             written\n",
            out.display()
        )
    );
    assert!(!out.exists());
}
