//! Every script in `meters/` compiles without errors, and its compiled model is pinned by an insta
//! snapshot in `snapshots/` (one per script, named after the file). New meters get a new snapshot.

use std::path::Path;

#[test]
fn every_meter_script_compiles_to_its_snapshot() {
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
        let compiled = sml::script::compile(&std::fs::read(&path).unwrap());
        let errors: Vec<String> = compiled
            .diagnostics
            .iter()
            .filter(|d| d.severity == sml::script::Severity::Error)
            .map(|d| d.render(&path.display().to_string()))
            .collect();
        assert!(
            errors.is_empty(),
            "{name} does not compile:\n{}",
            errors.join("")
        );
        let script = compiled.script.expect("no errors, so a model");
        insta::with_settings!({
            snapshot_path => "../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => format!("compiled model of meters/{name}.sml"),
        }, {
            insta::assert_yaml_snapshot!(format!("meter_{name}"), script);
        });
    }
}
