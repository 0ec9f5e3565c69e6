//! Every script in `meters/` compiles without errors, and its compiled model is pinned by an insta
//! snapshot in `snapshots/` (`meter@<file>.snap`, one per script). `insta::glob!` checks every
//! file before failing, so one mismatch does not hide the others; a new meter gets a new snapshot.

#[test]
fn every_meter_script_compiles_to_its_snapshot() {
    let mut scripts = 0;
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::glob!("../meters", "*.sml", |path| {
            scripts += 1;
            let compiled = sml::script::compile(&std::fs::read(path).unwrap());
            let errors: Vec<String> = compiled
                .diagnostics
                .iter()
                .filter(|d| d.severity == sml::script::Severity::Error)
                .map(|d| d.render(&path.display().to_string()))
                .collect();
            assert!(errors.is_empty(), "{} does not compile:\n{}", path.display(), errors.join(""));
            let script = compiled.script.expect("no errors, so a model");
            insta::assert_yaml_snapshot!("meter", script);
        });
    });
    assert!(scripts >= 2, "the seed scripts are in meters/");
}

/// The request bytes these meters sent before framing moved from the front end to the decode layer
/// (the `telegrams` of the old model snapshots): the move must not change a byte on the wire.
#[test]
fn framed_requests_are_the_bytes_sent_before_framing_moved_to_the_decode_layer() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let expected: [(&str, Vec<Vec<u8>>); 2] = [
        (
            "meters/iskra-mt174.sml",
            vec![vec![175, 63, 33, 141, 10], vec![6, 48, 48, 48, 141, 10]],
        ),
        (
            "meters/lk11bl804011.sml",
            vec![vec![175, 63, 33, 141, 10], vec![6, 0, 0, 80]],
        ),
    ];
    for (file, wire) in expected {
        let compiled = sml::script::compile(&std::fs::read(root.join(file)).unwrap());
        let script = compiled.script.expect("the meter compiles");
        assert_eq!(
            sml::decode::request::frame(&script.meters[0]),
            wire,
            "{file}"
        );
    }
}
