//! `sml run`'s InfluxDB options through the real binary: a wrong combination is refused before
//! the run starts (exit 2) with a message that says what to give, and never quotes a secret.

use std::path::Path;
use std::process::{Command, Output};

fn sml_run(extra: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new(env!("CARGO_BIN_EXE_sml"))
        .arg("run")
        // The seed's `>M` without its `>B`/`>S` hold-back (`smlj`): a capture is over in a moment.
        .arg(root.join("tests/fixtures/no-holdback/sx631.sml"))
        .arg("--port")
        .arg(format!(
            "1=file:{}",
            root.join("tests/fixtures/meters/sx631.txt").display()
        ))
        .args(extra)
        .output()
        .unwrap()
}

fn refused(extra: &[&str]) -> String {
    let out = sml_run(extra);
    assert_eq!(out.status.code(), Some(2), "{extra:?}: {out:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn influx_without_a_database_says_which_options_name_one() {
    let e = refused(&["--influx", "http://127.0.0.1:8086"]);
    assert!(e.contains("--influx-db NAME"), "{e}");
    assert!(e.contains("--influx-bucket"), "{e}");
}

#[test]
fn options_of_both_influxdb_generations_at_once_are_refused() {
    let e = refused(&[
        "--influx",
        "http://127.0.0.1:8086",
        "--influx-db",
        "sml",
        "--influx-org",
        "home",
    ]);
    assert!(e.contains("one or the other"), "{e}");
}

#[test]
fn an_influx_option_without_influx_is_refused() {
    let e = refused(&["--influx-db", "sml"]);
    assert!(e.contains("--influx-db needs --influx URL"), "{e}");
}

#[test]
fn a_password_in_the_influx_url_is_refused_without_being_quoted() {
    let e = refused(&[
        "--influx",
        "http://admin:hunter2@127.0.0.1:8086",
        "--influx-db",
        "x",
    ]);
    assert!(!e.contains("hunter2"), "{e}");
    assert!(e.contains("credentials do not go in the URL"), "{e}");
}

#[test]
fn a_2x_target_needs_its_token_file() {
    let e = refused(&[
        "--influx",
        "http://127.0.0.1:8086",
        "--influx-org",
        "home",
        "--influx-bucket",
        "sml",
    ]);
    assert!(e.contains("--influx-token-file"), "{e}");
}

#[test]
fn the_spool_may_serve_influxdb_alone() {
    // Accepted as options: the run then fails for want of a server (port 9 refuses), exit 1,
    // with the points kept in the spool.
    let spool = tempfile::tempdir().unwrap();
    let out = sml_run(&[
        "--influx",
        "http://127.0.0.1:9",
        "--influx-db",
        "sml",
        "--spool",
        spool.path().to_str().unwrap(),
        "--replay-speed",
        "max",
        "--every-telegram",
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("not written to InfluxDB"), "{e}");
    let journal = spool.path().join("influx/outbox.jsonl");
    let kept = std::fs::read_to_string(&journal).unwrap();
    assert!(kept.contains("EON,meter=1,topic=sx631 "), "{kept}");
}
