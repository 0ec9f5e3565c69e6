//! Compatibility over the community corpus (`../shared/corpus/tasmota-community/*.tas`): every script
//! compiles, except those listed in `tests/corpus-known-broken.tsv`, which must fail with the error
//! named there. Fragments without `>D` (descriptors meant to be pasted into a host script that defines
//! `rxpin`, `txpin`, `smlf`) are compiled inside `tests/fixtures/fragment-template.sml`.
//! Skips cleanly when `../shared` is absent.

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

/// The script as it would run: fragments without `>D` are pasted into the template; a script with an
/// empty host header (a `>D` that does not declare the `rxpin`, `txpin`, `smlf` it uses, as ottelo's
/// meter files) gets the template's declarations after its `>D` line.
fn source_of(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let template_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fragment-template.sml");
    let template = std::fs::read_to_string(template_path).unwrap();
    let Some(d) = text.lines().position(|l| l.trim_start().starts_with(">D")) else {
        return format!("{template}{text}").into_bytes();
    };
    let declared = |name: &str| {
        text.lines()
            .any(|l| l.trim_start().starts_with(&format!("{name}=")))
    };
    let host: Vec<&str> = template
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with('>'))
        .filter(|l| {
            let name = l.split('=').next().unwrap_or("");
            text.contains(&format!("{name}%")) && !declared(name)
        })
        .collect();
    if host.is_empty() {
        return bytes;
    }
    let mut lines: Vec<&str> = text.split('\n').collect();
    for (i, h) in host.iter().enumerate() {
        lines.insert(d + 1 + i, h);
    }
    lines.join("\n").into_bytes()
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
        let compiled = sml::script::compile(&source_of(path));
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
