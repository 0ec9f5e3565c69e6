//! `sml check` output for broken scripts: for each `tests/fixtures/broken/*.sml`, the exact text the
//! built binary prints (stdout, stderr) and its exit code, pinned by an insta snapshot in `snapshots/`.
//! Plus: a 50,000-line script compiles (no timing assertion; it must simply finish).

use std::path::Path;
use std::process::Command;

#[test]
fn check_output_for_each_broken_script_matches_its_snapshot() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths: Vec<_> = std::fs::read_dir(root.join("tests/fixtures/broken"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 10, "the broken-script fixtures are present");
    for path in paths {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let relative = path.strip_prefix(root).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sml"))
            .current_dir(root)
            .arg("check")
            .arg(relative)
            .output()
            .expect("sml runs");
        let report = format!(
            "exit code: {}\n--- stdout\n{}--- stderr\n{}",
            out.status
                .code()
                .map_or("signal".to_string(), |c| c.to_string()),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        insta::with_settings!({
            snapshot_path => "../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => format!("sml check tests/fixtures/broken/{name}.sml"),
        }, {
            insta::assert_snapshot!(format!("check_{name}"), report);
        });
    }
}

#[test]
fn check_without_files_is_a_usage_error_and_help_works() {
    let out = Command::new(env!("CARGO_BIN_EXE_sml"))
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap reports the missing FILE");
    let help = Command::new(env!("CARGO_BIN_EXE_sml"))
        .args(["check", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("FILE"));
}

#[test]
fn check_of_a_missing_file_fails_without_panicking() {
    let out = Command::new(env!("CARGO_BIN_EXE_sml"))
        .args(["check", "/nonexistent/x.sml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/x.sml"));
}

#[test]
fn a_fifty_thousand_line_script_compiles() {
    let mut text = String::from(">D\n>B\n=>sensor53 r\n>S\n");
    for i in 0..20_000 {
        text.push_str(&format!("x{i}=1\n"));
    }
    text.push_str(">M 1\n+1,3,s,0,9600,SML\n");
    for i in 0..30_000 {
        text.push_str(&format!(
            "1,77070100{:02x}0800ff@1000,T{i},kWh,t{i},3\n",
            i % 256
        ));
    }
    text.push_str("#\n");
    assert!(text.lines().count() >= 50_000);
    let compiled = sml::script::compile(text.as_bytes());
    assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics.first());
    let script = compiled.script.unwrap();
    assert_eq!(script.meters[0].decoding.metric_count(), 30_000);
    assert_eq!(script.sections[1].lines.len(), 20_000);
}
