//! The Rhai that every script in `meters/` translates to, pinned by an insta snapshot in `snapshots/`
//! (`hooks_<name>.snap`), so a change in the translation shows up as a readable diff of generated code.

use std::path::Path;

#[test]
fn every_meter_script_translates_to_its_snapshot() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("meters");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("meters/ exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 2, "the seed scripts are in meters/");
    for path in paths {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let script = sml::script::compile(&std::fs::read(&path).unwrap())
            .script
            .expect("meters/ scripts compile (tests/compile_meters.rs)");
        // Warnings are allowed (the Tasmota docs' SDM630 script keeps a `>xM` section commented
        // out, which sml notes); errors are not.
        let errors: Vec<_> = sml::hooks::check::check(&script)
            .into_iter()
            .filter(|d| d.severity == sml::script::Severity::Error)
            .collect();
        assert!(
            errors.is_empty(),
            "{name}: the sections of a shipped meter script translate, got {errors:#?}"
        );
        let translation = sml::hooks::translate(&script);
        sml::hooks::Hooks::new(&script).expect("the generated Rhai compiles");
        insta::with_settings!({
            snapshot_path => "../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => format!("Rhai translated from the sections of meters/{name}.sml"),
        }, {
            insta::assert_snapshot!(format!("hooks_{name}"), translation.rhai);
        });
    }
}
