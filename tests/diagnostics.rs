//! `sml check` output for broken scripts: for each `tests/fixtures/broken/*.sml`, the exact text the
//! built binary prints (stdout, stderr) and its exit code, pinned by an insta snapshot in `snapshots/`
//! (`check@<file>.snap`; `insta::glob!` checks every file before failing).
//! Plus: a 50,000-line script compiles (no timing assertion; it must simply finish).

use std::path::Path;
use std::process::Command;

/// Run the built `sml` from the repository root.
fn sml(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("sml runs")
}

#[test]
fn check_output_for_each_broken_script_matches_its_snapshot() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut scripts = 0;
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::glob!("fixtures/broken", "*.sml", |path| {
            scripts += 1;
            let relative = path.strip_prefix(root).unwrap().to_string_lossy().to_string();
            let out = sml(&["check", &relative]);
            let report = format!(
                "exit code: {}\n--- stdout\n{}--- stderr\n{}",
                out.status
                    .code()
                    .map_or("signal".to_string(), |c| c.to_string()),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            insta::assert_snapshot!("check", report);
        });
    });
    assert!(scripts >= 10, "the broken-script fixtures are present");
}

#[test]
fn diagnostics_and_the_summary_go_to_stderr_and_nothing_to_stdout() {
    let out = sml(&[
        "check",
        "tests/fixtures/broken/unknown-variable.sml",
        "tests/fixtures/broken/crlf-ok.sml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stderr
        .find("sml check: 1 of 2 file(s) failed")
        .expect("a summary");
    let diagnostic = stderr.find(": error: ").expect("a diagnostic");
    assert!(
        diagnostic < summary,
        "diagnostics come before the summary:\n{stderr}"
    );
}

#[test]
fn a_define_on_the_command_line_supplies_a_host_variable() {
    let file = "tests/fixtures/broken/host-variables.sml";
    assert_eq!(sml(&["check", "-q", file]).status.code(), Some(1));
    let out = sml(&["check", "-q", "--define", "ms=", file]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sml(&["check", "--define", "ms", file]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a malformed --define is a usage error"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("'ms': expected NAME=VALUE"));
}

#[test]
fn an_endless_device_is_refused_at_the_size_cap() {
    let out = sml(&["check", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: /dev/zero is larger than 16 MiB"),
        "{stderr}"
    );
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
    let out = sml(&["check", "/nonexistent/x.sml"]);
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
