//! The community corpus (`../shared/corpus/tasmota-community/*.tas`) through the translation to Rhai:
//! every script whose front end accepts it (tests/corpus.rs) must translate and compile, except those
//! listed in `tests/hooks-known-untranslated.tsv` with the error they give and why. Prints
//! translated/total. Skips cleanly when `../shared` is absent (`SML_SHARED` names it from elsewhere).

use std::path::Path;

#[path = "support/corpus.rs"]
mod corpus;

use corpus::{corpus_dir, corpus_files, Listed};

/// Descriptor fragments without `>D` are pasted after the host template's `>D` and `>B`, as users do
/// (the same template tests/corpus.rs uses).
fn with_host_template(bytes: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&bytes);
    if text.lines().any(|l| l.trim_start().starts_with(">D")) {
        return bytes;
    }
    let template =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fragment-template.sml");
    let mut out = std::fs::read(template).unwrap();
    out.extend_from_slice(&bytes);
    out
}

#[test]
fn community_script_sections_translate_or_fail_as_listed() {
    let Some(dir) = corpus_dir() else {
        eprintln!("note: ../shared/corpus/tasmota-community is absent; hooks corpus test skipped");
        return;
    };
    let listed = Listed::load("tests/hooks-known-untranslated.tsv");
    let paths = corpus_files(&dir);
    let (mut total, mut translated, mut with_sections, mut rejected) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = with_host_template(std::fs::read(path).unwrap());
        let Some(script) = sml::script::compile(&bytes).script else {
            // The front end rejects it (tests/corpus-known-broken.tsv, or a fragment without `>D`):
            // not this test's business.
            rejected += 1;
            continue;
        };
        total += 1;
        if !script.sections.is_empty() {
            with_sections += 1;
        }
        let source = String::from_utf8_lossy(&bytes);
        let errors: Vec<String> = sml::hooks::check::check_with_source(&script, &source)
            .iter()
            .filter(|d| d.severity == sml::script::Severity::Error)
            .map(|d| d.render(&name))
            .collect();
        match listed.judge(&name, &errors, "translate") {
            Ok(true) => translated += 1,
            Ok(false) => {}
            Err(problem) => failures.push(problem),
        }
    }
    failures.extend(listed.missing_from(&paths));
    println!(
        "hooks corpus: {translated}/{total} scripts translated ({with_sections} with sections), {} listed as untranslated; {rejected} of {} rejected by the front end before translation",
        listed.len(),
        paths.len()
    );
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Two minutes across midnight, every 100 ms and every second, with a teleperiod every 30 s: the
/// translated hooks of every corpus script run without a hook error (a run-time failure of the
/// generated Rhai would show up here, not in `sml check`).
#[test]
fn community_script_hooks_run_two_minutes_across_midnight_without_errors() {
    use chrono::{Duration as Days, NaiveDate};
    use std::time::Duration;
    let Some(dir) = corpus_dir() else {
        eprintln!("note: ../shared/corpus/tasmota-community is absent; hooks run test skipped");
        return;
    };
    let paths = corpus_files(&dir);
    let readings: Vec<f64> = (1..=40).map(|i| 1000.0 + i as f64 * 0.25).collect();
    let start = NaiveDate::from_ymd_opt(2026, 11, 27)
        .unwrap()
        .and_hms_opt(23, 59, 0)
        .unwrap();
    let json = serde_json::json!({"SML": {"Total_in": 1234.5}, "WAERME": {"w_total": 42.0}});
    let (mut ran, mut commands, mut failures) = (0, 0, Vec::new());
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(script) =
            sml::script::compile(&with_host_template(std::fs::read(path).unwrap())).script
        else {
            continue;
        };
        let Ok(mut hooks) = sml::hooks::Hooks::new(&script) else {
            continue; // listed as untranslated; the other test checks why
        };
        ran += 1;
        let mut errors: Vec<String> = Vec::new();
        let ctx = |tenths: u64| sml::hooks::HookContext {
            uptime: Duration::from_millis(tenths * 100),
            local: start + Days::milliseconds(tenths as i64 * 100),
            epoch: 1_795_823_940 + (tenths / 10) as i64,
            readings: &readings,
        };
        errors.extend(hooks.run_boot(&ctx(0)).iter().map(|e| e.render(&name)));
        commands += hooks.take_commands().len();
        for tenths in 1..=1200u64 {
            let c = ctx(tenths);
            errors.extend(hooks.run_every_100ms(&c).map(|e| e.render(&name)));
            if tenths % 10 == 0 {
                errors.extend(hooks.run_every_second(&c).map(|e| e.render(&name)));
            }
            if tenths % 300 == 0 {
                errors.extend(hooks.json_append(&c).1.map(|e| e.render(&name)));
                errors.extend(hooks.run_teleperiod(&c, &json).map(|e| e.render(&name)));
            }
            commands += hooks.take_commands().len();
        }
        errors.extend(hooks.run_restart(&ctx(1201)).map(|e| e.render(&name)));
        if !errors.is_empty() {
            failures.push(errors.join("\n"));
        }
    }
    println!(
        "hooks run: {ran} scripts ran two simulated minutes, issuing {commands} host commands"
    );
    // Every script boots with `sensor53 r` at least; the handshake scripts send every few 100 ms.
    assert!(commands > ran, "the hooks ran and asked for things");
    assert!(
        failures.is_empty(),
        "{} script(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
