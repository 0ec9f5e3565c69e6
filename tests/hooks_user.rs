//! Users' own post-processing (`--rhai FILE`): the example `meters/sx631-net-power.rhai` (net power
//! = import - export, and a running daily maximum), pinned by snapshots: on the seed's recorded
//! telegram through `sml decode --rhai` as a user runs it, and over a sequence of payloads across a
//! day boundary; and a broken file is refused at start with its line.

use std::path::Path;
use std::process::Command;

use sml::hooks::user::UserRhai;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const EXAMPLE: &str = "meters/sx631-net-power.rhai";

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("../snapshots");
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s
}

#[test]
fn the_net_power_example_adds_its_keys_to_the_seeds_telegram() {
    let out = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .args([
            "decode",
            "--time",
            "2024-03-04T11:25:20",
            "meters/sx631.sml",
            "tests/fixtures/meters/sx631.txt",
            "--rhai",
            EXAMPLE,
        ])
        .output()
        .unwrap();
    let report = format!(
        "exit code: {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    settings().bind(|| insta::assert_snapshot!("user_rhai_decode_sx631", report));
}

#[test]
fn the_daily_maximum_runs_through_a_day_and_starts_afresh_on_the_next() {
    let mut user = UserRhai::load(&root().join(EXAMPLE)).unwrap();
    let mut lines = Vec::new();
    for (time, import, export) in [
        ("2024-03-04T11:00:00", "1.873", "0.000"),
        ("2024-03-04T12:00:00", "0.250", "2.125"),
        ("2024-03-04T13:00:00", "3.500", "0.000"),
        ("2024-03-04T23:59:59", "0.500", "0.000"),
        ("2024-03-05T00:00:10", "0.400", "0.000"),
    ] {
        let payload = format!(
            r#"{{"Time":"{time}","EON":{{"pwr_imp":{import},"pwr_exp":{export},"enrg_imp":22803.012}}}}"#
        );
        let (out, error) = user.before_publish(&payload);
        assert_eq!(error, None);
        lines.push(out.expect("a payload"));
    }
    // A payload without the meter's powers goes out untouched.
    let other = r#"{"Time":"2024-03-05T00:00:11","EON":{"enrg_imp":22803.012}}"#;
    lines.push(user.before_publish(other).0.unwrap());
    settings().bind(|| insta::assert_snapshot!("user_rhai_daily_max", lines.join("\n")));
}

#[test]
fn a_broken_post_processing_file_stops_sml_run_at_start_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.rhai");
    std::fs::write(&file, "fn before_publish(p) {\n  p.x = ;\n}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(root())
        .args([
            "run",
            "tests/fixtures/no-holdback/sx631.sml",
            "--port",
            "1=file:tests/fixtures/meters/sx631.txt",
            "--rhai",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", file.display())), "{err}");
}
