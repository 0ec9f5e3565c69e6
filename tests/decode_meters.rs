//! `sml decode` on every script of the meters library with its recorded capture
//! (`tests/fixtures/meters/<name>.txt|.bin`): the exact JSON lines and statistics, snapshot-tested.

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

#[test]
fn every_meter_script_decodes_its_capture() {
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(root().join("meters"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sml"))
        .collect();
    scripts.sort();
    assert!(
        scripts.len() >= 8,
        "the meters library has the two seed scripts and at least six more"
    );
    for script in scripts {
        let name = script.file_stem().unwrap().to_str().unwrap().to_string();
        let capture = capture_for(&script)
            .unwrap_or_else(|| panic!("meters/{name}.sml has no capture in tests/fixtures/meters"));
        let out = Command::new(env!("CARGO_BIN_EXE_sml"))
            .current_dir(root())
            .args(["decode", "--stats", "--time", "2024-03-04T11:25:20"])
            .arg(script.strip_prefix(root()).unwrap())
            .arg(capture.strip_prefix(root()).unwrap())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "sml decode failed on {name}: {stderr}"
        );
        // Every line is valid JSON with the Time key first, as Tasmota prints it.
        for line in stdout.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {line}"));
            assert_eq!(v["Time"], "2024-03-04T11:25:20");
        }
        let report = format!(
            "exit: {}\n--- stdout\n{stdout}--- stderr\n{stderr}",
            out.status.code().unwrap_or(-1)
        );
        insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(format!("decode__{name}"), report);
        });
    }
}
