/*!
`sml meters`: the meters library's index (`meters/index.toml`), and `sml run --meter-name NAME`'s
look-up in it. A meter descriptor library picked by name, as the issue asks after Tasmota's
`smlpd`: here the library is the tested scripts in `meters/`, each with the capture it is tested on
and where that came from, so a user picks a meter by name instead of copying a script.

The library is found in `--meters-dir`, else `$SML_METERS_DIR`, else `./meters`, else the packaged
`/usr/share/sml/meters`. Paths in the index are relative to the index file.
*/

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde::Deserialize;

/// The index's file name inside the library directory.
pub const INDEX_FILE: &str = "index.toml";

/// Where a packaged sml finds its library when there is none in the working directory.
pub const PACKAGED_DIR: &str = "/usr/share/sml/meters";

/// The environment variable naming the library directory.
pub const DIR_ENV: &str = "SML_METERS_DIR";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The meters library (a directory with index.toml); default: $SML_METERS_DIR, ./meters,
    /// then /usr/share/sml/meters.
    #[arg(long, value_name = "DIR")]
    pub meters_dir: Option<PathBuf>,
}

/// One meter of the library.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// What `--meter-name` takes.
    pub name: String,
    /// Maker and model, as on the meter.
    pub meter: String,
    pub protocol: String,
    /// Where the reading head goes: P1 port, optical, RS-485.
    pub interface: String,
    pub baud: u32,
    /// The script, relative to the index.
    pub script: PathBuf,
    /// Post-processing to go with it (`sml run --rhai`), relative to the index.
    #[serde(default)]
    pub rhai: Option<PathBuf>,
    /// The recording the script is tested on, relative to the index.
    pub capture: PathBuf,
    /// Where the capture comes from (repository, path, commit), or "made by us".
    pub source: String,
    pub licence: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexFile {
    #[serde(default)]
    meter: Vec<Entry>,
}

/// The library as loaded: the directory its paths are relative to, and its meters in file order.
#[derive(Debug)]
pub struct Index {
    pub dir: PathBuf,
    pub meters: Vec<Entry>,
}

impl Index {
    /// Load `dir/index.toml`; a duplicate name is refused (a look-up would be ambiguous).
    pub fn load(dir: &Path) -> anyhow::Result<Index> {
        let path = dir.join(INDEX_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the meters index {}", path.display()))?;
        let file: IndexFile =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        for (i, e) in file.meter.iter().enumerate() {
            if file.meter[..i].iter().any(|o| o.name == e.name) {
                bail!(
                    "{}: meter name '{}' is listed twice",
                    path.display(),
                    e.name
                );
            }
        }
        Ok(Index {
            dir: dir.to_path_buf(),
            meters: file.meter,
        })
    }

    /// The library named by `--meters-dir`, `$SML_METERS_DIR`, or the first default that exists.
    pub fn find(explicit: Option<&Path>) -> anyhow::Result<Index> {
        if let Some(dir) = explicit {
            return Index::load(dir);
        }
        if let Some(dir) = std::env::var_os(DIR_ENV) {
            return Index::load(Path::new(&dir)).with_context(|| format!("${DIR_ENV}"));
        }
        let local = Path::new("meters");
        if local.join(INDEX_FILE).exists() || !Path::new(PACKAGED_DIR).exists() {
            return Index::load(local);
        }
        Index::load(Path::new(PACKAGED_DIR))
    }

    pub fn entry(&self, name: &str) -> anyhow::Result<&Entry> {
        match self.meters.iter().find(|e| e.name == name) {
            Some(e) => Ok(e),
            None => {
                let known: Vec<&str> = self.meters.iter().map(|e| e.name.as_str()).collect();
                bail!(
                    "--meter-name '{name}': no such meter in {}; known: {}",
                    self.dir.join(INDEX_FILE).display(),
                    known.join(", ")
                )
            }
        }
    }

    /// A path of an entry, as a file to open.
    pub fn path_of(&self, relative: &Path) -> PathBuf {
        self.dir.join(relative)
    }
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let index = Index::find(args.meters_dir.as_deref())?;
    print!("{}", table(&index.meters));
    Ok(ExitCode::SUCCESS)
}

/// The index as aligned columns: name, meter, protocol, interface, baud, capture source.
fn table(meters: &[Entry]) -> String {
    let rows: Vec<[String; 6]> = std::iter::once(
        [
            "NAME",
            "METER",
            "PROTOCOL",
            "INTERFACE",
            "BAUD",
            "CAPTURE FROM",
        ]
        .map(String::from),
    )
    .chain(meters.iter().map(|e| {
        [
            e.name.clone(),
            e.meter.clone(),
            e.protocol.clone(),
            e.interface.clone(),
            e.baud.to_string(),
            // The repository, without path and commit, and the licence: enough to tell them apart.
            format!(
                "{} ({})",
                e.source.split(':').next().unwrap_or(&e.source),
                e.licence
            ),
        ]
    }))
    .collect();
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (w, cell)) in widths.iter().zip(row).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> Entry {
        Entry {
            name: name.into(),
            meter: "M".into(),
            protocol: "P".into(),
            interface: "I".into(),
            baud: 9600,
            script: "s.sml".into(),
            rhai: None,
            capture: "c.txt".into(),
            source: "owner/repo: path @ abc".into(),
            licence: "MIT".into(),
        }
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let index = Index {
            dir: "lib".into(),
            meters: vec![entry("a"), entry("b")],
        };
        let e = index.entry("c").unwrap_err().to_string();
        assert_eq!(
            e,
            "--meter-name 'c': no such meter in lib/index.toml; known: a, b"
        );
        assert_eq!(index.entry("b").unwrap().name, "b");
    }

    #[test]
    fn the_table_aligns_columns_and_names_the_capture_repository() {
        let t = table(&[entry("kaifa")]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("kaifa  M"), "{t}");
        assert!(lines[1].ends_with("owner/repo (MIT)"), "{t}");
        assert_eq!(lines[0].find("METER"), lines[1].find('M'));
    }
}
