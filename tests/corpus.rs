//! Compatibility over the community corpus (`../shared/corpus/tasmota-community/*.tas`): every script
//! compiles, except those listed in `tests/corpus-known-broken.tsv`, which must fail with the error
//! named there. Each file is compiled as it is, as `sml check` reads it: meter files meant to be pasted
//! into a host script (ottelo's, using `%0rxpin%`, `%0txpin%`, `%0smlf%`) get those three from the
//! compiler. Skips cleanly when `../shared` (or `$SML_SHARED`) is absent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `$SML_SHARED` (a git worktree beside the repository has no `../shared`), else `../shared`.
fn corpus_dir() -> Option<PathBuf> {
    let shared = std::env::var_os("SML_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let dir = shared.join("corpus/tasmota-community");
    dir.is_dir().then_some(dir)
}

/// file -> (expected error substring, reason)
fn known_broken() -> BTreeMap<String, (String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus-known-broken.tsv");
    let text = std::fs::read_to_string(path).expect("tests/corpus-known-broken.tsv");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let file = f.next().unwrap().to_string();
            let error = f.next().expect("an expected error column").to_string();
            let reason = f.next().expect("a reason column").to_string();
            (file, (error, reason))
        })
        .collect()
}

#[test]
fn community_scripts_compile_or_fail_as_listed() {
    let Some(dir) = corpus_dir() else {
        eprintln!("note: ../shared/corpus/tasmota-community is absent; corpus test skipped");
        return;
    };
    let broken = known_broken();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tas"))
        .collect();
    paths.sort();
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
        match broken.get(&name) {
            None if errors.is_empty() => accepted += 1,
            None => failures.push(format!("{name} should compile:\n{}", errors.join(""))),
            Some((expected, reason)) => {
                if !errors.iter().any(|e| e.contains(expected.as_str())) {
                    failures.push(format!(
                        "{name} is listed as broken ({reason}) with error `{expected}`, but got:\n{}",
                        if errors.is_empty() { "no error\n".to_string() } else { errors.join("") }
                    ));
                }
            }
        }
    }
    for listed in broken.keys() {
        if !paths
            .iter()
            .any(|p| p.file_name().unwrap().to_string_lossy() == listed.as_str())
        {
            failures.push(format!(
                "{listed} is listed in corpus-known-broken.tsv but not in the corpus"
            ));
        }
    }
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
