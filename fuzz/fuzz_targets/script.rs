//! Fuzz the script front end: any bytes compile to a model or to diagnostics, never a panic, and the
//! result is consistent (a model exactly when there is no error; positions are 1-based).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A define takes the host-variable path too (`%ms%` in ottelo's files).
    let options = sml::script::CompileOptions {
        defines: vec!["ms=1".parse().unwrap()],
    };
    let compiled = sml::script::compile_with(data, &options);
    assert_eq!(compiled.script.is_some(), !compiled.has_errors());
    for d in &compiled.diagnostics {
        assert!(d.line >= 1 && d.col >= 1, "{d:?}");
        let _ = d.render("fuzz.sml");
    }
    if let Some(script) = &compiled.script {
        assert!(!script.meters.is_empty(), "a model always has a meter to run");
        for m in &script.meters {
            let _ = sml::decode::request::frame(m);
        }
    }
});
