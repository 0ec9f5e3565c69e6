//! `--shard K/N` through the binary: which meters `sml check` says a host keeps, what `sml run`
//! publishes and ignores, and the refusals, quoted as written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A script of `meters` OBIS meters, one value each (`seq`), and a capture of three telegrams per
/// meter whose values are `meter * 1000 + n`.
fn setup(dir: &Path, meters: u16) -> (PathBuf, Vec<PathBuf>) {
    let mut s = format!(">D\n>M {meters}\n");
    for m in 1..=meters {
        s.push_str(&format!(
            "+{m},3,o,0,9600,M{m}\n{m},1-0:1.8.0(@1,Seq,,seq,0\n"
        ));
    }
    s.push_str("#\n");
    let script = dir.join("house.sml");
    std::fs::write(&script, s).unwrap();
    let captures = (1..=meters)
        .map(|m| {
            let mut t = String::new();
            for n in 1..=3 {
                let v = u32::from(m) * 1000 + n;
                t.push_str(&format!("/TST5METER\r\n\r\n1-0:1.8.0({v:06}*kWh)\r\n!\r\n"));
            }
            let path = dir.join(format!("m{m}.txt"));
            std::fs::write(&path, t).unwrap();
            path
        })
        .collect();
    (script, captures)
}

fn sml(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sml"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn sml_check_says_which_meters_a_shard_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let (script, _) = setup(dir.path(), 6);
    let script = script.to_str().unwrap();
    for (shard, kept) in [
        ("1/3", "1, 4"),
        ("2/3", "2, 5"),
        ("0/3", "3, 6"),
        ("0/1", "1, 2, 3, 4, 5, 6"),
    ] {
        let out = sml(&["check", "--shard", shard, script]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            format!("{script}: --shard {shard} runs meter(s) {kept} of 6\n")
        );
    }
}

#[test]
fn a_shard_that_keeps_no_meter_or_is_malformed_is_refused_quoting_it() {
    let dir = tempfile::tempdir().unwrap();
    let (script, captures) = setup(dir.path(), 2);
    let script = script.to_str().unwrap();
    let out = sml(&["check", "--shard", "0/3", script]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--shard 0/3 keeps none of the script's meters (1, 2)"),
        "{}",
        text(&out.stderr)
    );
    let port = format!("1=file:{}", captures[0].display());
    let out = sml(&["run", script, "--port", &port, "--shard", "0/3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("keeps none of the script's meters (1, 2)"));
    for (bad, says) in [
        ("3/3", "'3/3': K must be less than N"),
        ("1/0", "'1/0': N must be at least 1"),
        ("half", "'half': expected K/N"),
    ] {
        let out = sml(&["run", script, "--port", &port, "--shard", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = text(&out.stderr);
        assert!(
            err.contains("--shard") && err.contains(says),
            "{bad}: {err}"
        );
    }
}

#[test]
fn a_shard_runs_its_meters_only_and_ignores_the_other_shards_ports_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (script, captures) = setup(dir.path(), 4);
    // Meter 4's capture is another host's file: it does not exist here.
    let ports = [
        format!("1=file:{}", captures[0].display()),
        format!("2=file:{}", captures[1].display()),
        format!("3=file:{}", captures[2].display()),
        "4=file:/nonexistent/on-another-host.txt".to_string(),
    ];
    let mut args = vec!["run", script.to_str().unwrap(), "--shard", "1/2"];
    for p in &ports {
        args.extend(["--port", p]);
    }
    args.extend(["--every-telegram", "--replay-speed", "max"]);
    let out = sml(&args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let mut values: Vec<String> = stdout
        .lines()
        .map(|l| l.split_once(",\"").unwrap().1.to_string())
        .collect();
    values.sort();
    assert_eq!(
        values,
        [
            "M1\":{\"seq\":1001}}",
            "M1\":{\"seq\":1002}}",
            "M1\":{\"seq\":1003}}",
            "M3\":{\"seq\":3001}}",
            "M3\":{\"seq\":3002}}",
            "M3\":{\"seq\":3003}}",
        ],
        "{stdout}"
    );
    assert!(
        stderr.contains("--shard 1/2: this host runs meters 1, 3"),
        "{stderr}"
    );
    let ignored: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ignored here"))
        .collect();
    assert_eq!(ignored.len(), 1, "{stderr}");
    assert!(
        ignored[0].contains(&format!("--port {}", ports[1]))
            && ignored[0].contains("--port 4=file:/nonexistent/on-another-host.txt"),
        "{stderr}"
    );
}
