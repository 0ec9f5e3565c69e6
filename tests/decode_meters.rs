//! `sml decode` on every script of the meters library with its recorded capture
//! (`tests/fixtures/meters/<name>.txt|.bin`): the exact JSON lines, statistics and exit code,
//! snapshot-tested with `insta::glob!`, one snapshot per meter (`snapshots/decode@<name>.sml.snap`),
//! so one meter's mismatch is reported together with every other one instead of hiding them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn capture_for(script: &Path) -> Option<PathBuf> {
    let stem = script.file_stem()?.to_str()?;
    ["txt", "bin"]
        .iter()
        .map(|ext| {
            root()
                .join("tests/fixtures/meters")
                .join(format!("{stem}.{ext}"))
        })
        .find(|p| p.exists())
}

/// What `sml decode --stats` does with one meter script and its capture, as one text: exit code,
/// stdout, stderr, and any line of stdout that is not a SENSOR payload with the fixed `Time`.
fn decode_report(script: &Path) -> String {
    let Some(capture) = capture_for(script) else {
        return "no capture in tests/fixtures/meters".to_string();
    };
    let out = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .args(["decode", "--stats", "--time", "2024-03-04T11:25:20"])
        .arg(script.strip_prefix(root()).unwrap())
        .arg(capture.strip_prefix(root()).unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Every line must be JSON with the Time key first, as Tasmota prints it; a bad line is written
    // into the report, so the snapshot shows it next to the meter's other output.
    let mut bad_lines = String::new();
    for line in stdout.lines() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) if v["Time"] == "2024-03-04T11:25:20" => {}
            Ok(_) => bad_lines.push_str(&format!("no Time 2024-03-04T11:25:20: {line}\n")),
            Err(e) => bad_lines.push_str(&format!("not JSON ({e}): {line}\n")),
        }
    }
    format!(
        "exit: {}\n--- stdout\n{stdout}--- stderr\n{stderr}{}",
        out.status.code().unwrap_or(-1),
        if bad_lines.is_empty() {
            String::new()
        } else {
            format!("--- not SENSOR payloads\n{bad_lines}")
        }
    )
}

#[test]
fn every_meter_script_decodes_its_capture() {
    let mut scripts = 0;
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::glob!("../meters", "*.sml", |script| {
            scripts += 1;
            insta::assert_snapshot!("decode", decode_report(script));
        });
    });
    assert!(
        scripts >= 8,
        "the meters library has the two seed scripts and at least six more, found {scripts}"
    );
}

#[test]
fn a_capture_that_matches_no_metric_line_exits_1_and_says_what_it_found() {
    // The SX631 script's codes (`1-0:32.7.0(`...) are not in the Iskra MT174's readout (`1.8.0(`...).
    let out = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .args([
            "decode",
            "meters/sx631.sml",
            "tests/fixtures/meters/iskra-mt174.txt",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "nothing published: 1 telegram framed in tests/fixtures/meters/iskra-mt174.txt, \
             but none of meter 1's 47 metric lines matched a value in them"
        ),
        "{stderr}"
    );
}

/// A number from `/proc/<pid>/<file>`: the field `key`, first word after it.
fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[test]
fn decoding_an_endless_input_reads_on_in_bounded_memory() {
    if !Path::new("/proc/self/io").exists() {
        eprintln!("no /proc/<pid>/io on this system: skipped");
        return;
    }
    // `/dev/zero` never ends: the capture must be decoded as it is read, not read first. Reading
    // it whole grows the process by every byte read.
    const READ: u64 = 192 << 20;
    const PEAK_KB: u64 = 64 << 10;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .args(["decode", "meters/emh-ehz-sml.sml", "/dev/zero"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = std::time::Instant::now();
    let mut read = 0;
    while read < READ && started.elapsed() < std::time::Duration::from_secs(180) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if let Ok(Some(status)) = child.try_wait() {
            panic!("sml decode of /dev/zero ended ({status}) after {read} bytes");
        }
        read = proc_field(pid, "io", "rchar:").unwrap_or(read);
    }
    let peak_kb = proc_field(pid, "status", "VmHWM:");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(read >= READ, "only {read} bytes read in 180 s");
    let peak_kb = peak_kb.expect("VmHWM in /proc/<pid>/status");
    assert!(
        peak_kb < PEAK_KB,
        "peak resident memory {peak_kb} kB after reading {read} bytes"
    );
}
