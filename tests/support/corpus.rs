//! The community corpus (`../shared/corpus/tasmota-community/*.tas`) and the lists of scripts expected to
//! fail there (`tests/*.tsv`: file, expected error, reason), shared by the corpus tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `$SML_SHARED` (a git worktree beside the repository has no `../shared`), else `../shared`.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("SML_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

/// The community corpus in [`shared_dir`], if it is there.
pub fn corpus_dir() -> Option<PathBuf> {
    let dir = shared_dir().join("corpus/tasmota-community");
    dir.is_dir().then_some(dir)
}

/// The corpus' scripts, sorted.
pub fn corpus_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tas"))
        .collect();
    paths.sort();
    paths
}

/// A `tests/*.tsv` list: file -> (expected error substring, reason).
pub struct Listed {
    tsv: &'static str,
    entries: BTreeMap<String, (String, String)>,
}

impl Listed {
    /// `tsv` relative to the repository (`tests/corpus-known-broken.tsv`).
    pub fn load(tsv: &'static str) -> Listed {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(tsv);
        let text = std::fs::read_to_string(path).expect(tsv);
        let entries = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let mut f = l.splitn(3, '\t');
                let file = f.next().unwrap().to_string();
                let error = f.next().expect("an expected error column").to_string();
                let reason = f.next().expect("a reason column").to_string();
                (file, (error, reason))
            })
            .collect();
        Listed { tsv, entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Judge one file by its errors: `Ok(true)` it passes, `Ok(false)` it is listed and fails with
    /// the listed error, `Err` what is wrong (`should` says what an unlisted file should do).
    pub fn judge(&self, file: &str, errors: &[String], should: &str) -> Result<bool, String> {
        match self.entries.get(file) {
            None if errors.is_empty() => Ok(true),
            None => Err(format!("{file} should {should}:\n{}", errors.join(""))),
            Some((expected, _)) if errors.iter().any(|e| e.contains(expected.as_str())) => {
                Ok(false)
            }
            Some((expected, reason)) => Err(format!(
                "{file} is listed in {} ({reason}) with `{expected}`, but got:\n{}",
                self.tsv,
                if errors.is_empty() {
                    "no error\n".to_string()
                } else {
                    errors.join("")
                }
            )),
        }
    }

    /// Listed files that are not in the corpus (a renamed or removed script).
    pub fn missing_from(&self, paths: &[PathBuf]) -> Vec<String> {
        self.entries
            .keys()
            .filter(|name| {
                !paths
                    .iter()
                    .any(|p| p.file_name().unwrap().to_string_lossy() == name.as_str())
            })
            .map(|name| format!("{name} is listed in {} but not in the corpus", self.tsv))
            .collect()
    }
}
