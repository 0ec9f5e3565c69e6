//! Compatibility over the community corpus (`../shared/corpus/tasmota-community/*.tas`): every script
//! compiles, except those listed in `tests/corpus-known-broken.tsv`, which must fail with the error
//! named there. Each file is compiled as it is, as `sml check` reads it: meter files meant to be pasted
//! into a host script (ottelo's, using `%0rxpin%`, `%0txpin%`, `%0smlf%`) get those three from the
//! compiler. Skips cleanly when `../shared` (or `$SML_SHARED`) is absent.

#[path = "support/corpus.rs"]
mod corpus;

use corpus::{corpus_dir, corpus_files, Listed};

#[test]
fn community_scripts_compile_or_fail_as_listed() {
    let Some(dir) = corpus_dir() else {
        eprintln!("note: ../shared/corpus/tasmota-community is absent; corpus test skipped");
        return;
    };
    let broken = Listed::load("tests/corpus-known-broken.tsv");
    let paths = corpus_files(&dir);
    let mut accepted = 0;
    let mut failures = Vec::new();
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let compiled = sml::script::compile(&std::fs::read(path).unwrap());
        let errors: Vec<String> = compiled
            .diagnostics
            .iter()
            .filter(|d| d.severity == sml::script::Severity::Error)
            .map(|d| d.render(&name))
            .collect();
        match broken.judge(&name, &errors, "compile") {
            Ok(true) => accepted += 1,
            Ok(false) => {}
            Err(problem) => failures.push(problem),
        }
    }
    failures.extend(broken.missing_from(&paths));
    println!(
        "corpus: {accepted}/{} scripts accepted, {} known broken",
        paths.len(),
        broken.len()
    );
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(accepted + broken.len(), paths.len());
}
