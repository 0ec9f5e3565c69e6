//! The meters library's index (`meters/index.toml`) lists every script in `meters/`, and every
//! file it names exists; `sml meters` prints it and `sml run --meter-name` runs a script from it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use sml::cli::meters::Index;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn index() -> Index {
    Index::load(&root().join("meters")).unwrap()
}

fn sml() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sml"));
    c.current_dir(root()).env_remove("SML_METERS_DIR");
    c
}

#[test]
fn every_script_in_meters_is_in_the_index() {
    let scripts: BTreeSet<String> = std::fs::read_dir(root().join("meters"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sml"))
        .collect();
    let listed: BTreeSet<String> = index()
        .meters
        .iter()
        .map(|e| e.script.display().to_string())
        .collect();
    assert!(!scripts.is_empty());
    assert_eq!(scripts, listed);
}

#[test]
fn every_index_entry_names_files_that_exist_and_says_where_its_capture_is_from() {
    let index = index();
    for e in &index.meters {
        for file in [Some(&e.script), Some(&e.capture), e.rhai.as_ref()]
            .into_iter()
            .flatten()
        {
            assert!(
                index.path_of(file).is_file(),
                "{}: {} does not exist",
                e.name,
                file.display()
            );
        }
        assert!(!e.source.is_empty() && !e.licence.is_empty(), "{e:?}");
        assert!(e.baud > 0, "{e:?}");
    }
}

#[test]
fn every_index_entry_decodes_its_capture() {
    for e in &index().meters {
        let out = sml()
            .args(["decode", "--time", "2024-03-04T11:25:20"])
            .arg(Path::new("meters").join(&e.script))
            .arg(Path::new("meters").join(&e.capture))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", e.name);
        assert!(!out.stdout.is_empty(), "{}", e.name);
    }
}

#[test]
fn sml_meters_lists_every_name() {
    let out = sml().arg("meters").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let want: Vec<String> = index().meters.into_iter().map(|e| e.name).collect();
    assert_eq!(names, want);
}

#[test]
fn sml_run_meter_name_runs_the_script_from_the_index() {
    let by_name = sml()
        .args([
            "run",
            "--meter-name",
            "kaifa-dsmr42",
            "--replay-speed",
            "max",
        ])
        .args(["--port", "1=file:tests/fixtures/meters/kaifa-dsmr42.txt"])
        .output()
        .unwrap();
    assert!(by_name.status.success(), "{by_name:?}");
    let by_path = sml()
        .args(["run", "meters/kaifa-dsmr42.sml", "--replay-speed", "max"])
        .args(["--port", "1=file:tests/fixtures/meters/kaifa-dsmr42.txt"])
        .output()
        .unwrap();
    assert!(by_path.status.success(), "{by_path:?}");
    let lines = |o: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| {
                l.split_once(",\"")
                    .map(|(_, rest)| rest.to_string())
                    .unwrap_or_default()
            })
            .collect()
    };
    // The same payloads after `{"Time":"..."`, on the same topic (the script's file name).
    assert!(!lines(&by_name).is_empty());
    assert_eq!(lines(&by_name), lines(&by_path));
}

#[test]
fn an_unknown_meter_name_is_refused_with_the_known_ones() {
    let out = sml()
        .args(["run", "--meter-name", "no-such-meter"])
        .args(["--port", "1=/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--meter-name 'no-such-meter': no such meter in meters/index.toml; known: sx631, lk11bl804011, kaifa-dsmr42"),
        "{stderr}"
    );
}

#[test]
fn a_script_and_a_meter_name_together_are_refused() {
    let out = sml()
        .args(["run", "meters/sx631.sml", "--meter-name", "sx631"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn meter_name_and_meters_dir_may_come_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sml.toml");
    std::fs::write(
        &config,
        format!(
            "meter-name = \"kaifa-dsmr42\"\nmeters-dir = \"{}\"\nreplay-speed = \"max\"\n\
             [port]\n1 = \"file:{}\"\n",
            root().join("meters").display(),
            root()
                .join("tests/fixtures/meters/kaifa-dsmr42.txt")
                .display()
        ),
    )
    .unwrap();
    // Run elsewhere: the library comes from the file's meters-dir, not ./meters.
    let out = sml()
        .current_dir(dir.path())
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"P1\":{"),
        "{out:?}"
    );
}
