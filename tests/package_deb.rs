//! The `.deb` as a user gets it: `cargo deb` builds it from `Cargo.toml`'s metadata (from the
//! binary this test run built: `--no-build --profile dev`, so no release build is paid for), `dpkg -i`
//! installs it, `systemd-analyze verify` checks the installed unit, and the installed binary runs
//! the way the unit runs it, then `dpkg --purge` removes it.
//!
//! It changes the system, so it runs only with `SML_TEST_DEB=1` (`.ci/run` sets it, as root on a
//! throwaway machine). Not root: `dpkg-deb -x` into a temporary root instead of `dpkg -i`, and a
//! copy of the unit naming the unpacked binary is verified. systemd is not PID 1 in a CI container, so `systemctl start` is
//! not run: the ExecStart line runs under `setpriv` with what the unit sets (a dynamic uid with no
//! capabilities, group dialout, `NoNewPrivileges`, the state directory owned by that uid `0700`, a
//! `$NOTIFY_SOCKET` and `$WATCHDOG_USEC`, the working directory `/`).
//!
//! The shipped example configuration is checked in every run: uncommented, each key is one
//! `sml run` takes.

mod common;
mod service_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use service_support::*;

const WAIT: Duration = Duration::from_secs(30);
/// A uid from systemd's DynamicUser range (61184..65519), as the unit's process gets one.
const DYNAMIC_UID: u32 = 61_999;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_setting_of_the_example_config_is_a_key_sml_run_takes() {
    let text = std::fs::read_to_string(root().join("packaging/sml.toml")).unwrap();
    // `#key = ...` and `#[table]` are settings; `# ...` is prose.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '[') => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let mut table: toml::Table = toml::from_str(&uncommented).unwrap();
    // `[influx]` is the flags' `influx-*`, as `sml run` reads it.
    if let Some(toml::Value::Table(influx)) = table.remove("influx") {
        for (key, value) in influx {
            let flat = if key == "url" {
                "influx".into()
            } else {
                format!("influx-{key}")
            };
            table.insert(flat, value);
        }
    }
    // meter-name and script are alternatives: the example shows both.
    table.remove("script");
    let args: sml::cli::run::Args = table.try_into().unwrap();
    assert_eq!(args.meter_name.as_deref(), Some("sx631"));
    assert_eq!(args.spool, Some(PathBuf::from("/var/lib/sml")));
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The unit's `Key=value` lines for `key`.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_deb_installs_verifies_runs_as_the_unit_does_and_purges() {
    if std::env::var_os("SML_TEST_DEB").is_none() {
        eprintln!("skipped: installs a package; set SML_TEST_DEB=1 (.ci/run does)");
        return;
    }
    let is_root = run(Command::new("id").arg("-u")).trim() == "0";
    let work = tempfile::tempdir().unwrap();
    let deb = work.path().join("sml.deb");
    // The binary of this test build: target/debug/sml, where `--profile dev` looks.
    assert!(Path::new(env!("CARGO_BIN_EXE_sml")).exists());
    eprintln!(
        "{}",
        run(Command::new("cargo").current_dir(root()).args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "--output",
            deb.to_str().unwrap()
        ]))
    );
    eprintln!("{}", run(Command::new("dpkg-deb").arg("-I").arg(&deb)));

    // Installed for real as root; else unpacked into a root of its own.
    let sysroot = if is_root {
        eprintln!("{}", run(Command::new("dpkg").arg("-i").arg(&deb)));
        let conffiles = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "sml"]));
        assert!(conffiles.contains("/etc/sml/sml.toml"), "{conffiles}");
        PathBuf::from("/")
    } else {
        let r = work.path().join("root");
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&r));
        r
    };
    let installed = |p: &str| sysroot.join(p.trim_start_matches('/'));
    for f in [
        "/usr/bin/sml",
        "/usr/lib/systemd/system/sml.service",
        "/etc/sml/sml.toml",
        "/usr/share/sml/meters/index.toml",
        "/usr/share/sml/meters/sx631.sml",
    ] {
        assert!(installed(f).exists(), "{f} not installed");
    }

    let unit_path = installed("/usr/lib/systemd/system/sml.service");
    // Unpacked only, the unit's ExecStart would name a /usr/bin/sml that is not there: verify a
    // copy that names the unpacked binary (`--root` would need a whole systemd in the root).
    let verify_path = if is_root {
        unit_path.clone()
    } else {
        let unit = std::fs::read_to_string(&unit_path).unwrap();
        let copy = work.path().join("sml.service");
        let binary = installed("/usr/bin/sml").display().to_string();
        std::fs::write(&copy, unit.replace("/usr/bin/sml", &binary)).unwrap();
        copy
    };
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&verify_path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    eprintln!(
        "systemd-analyze verify {}: exit {:?}\n{said}",
        verify_path.display(),
        verified.status.code()
    );
    assert!(verified.status.success(), "{said}");
    assert!(said.trim().is_empty(), "warnings: {said}");

    // How exposed the unit leaves the system, by systemd's own measure (0 best, 10 worst), from
    // the file alone: no running systemd needed.
    let security = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit_path));
    let overall = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{security}"));
    eprintln!("systemd-analyze security --offline=true: {overall}");
    let score: f64 = overall
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{overall}"));
    assert!(score <= 2.0, "the hardening slipped: {overall}");

    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert_eq!(unit_values(&unit, "Type"), ["notify"]);
    assert_eq!(unit_values(&unit, "DynamicUser"), ["yes"]);
    assert_eq!(unit_values(&unit, "SupplementaryGroups"), ["dialout"]);
    assert_eq!(unit_values(&unit, "StateDirectory"), ["sml"]);
    let exec_start = unit_values(&unit, "ExecStart").remove(0);
    let mut argv: Vec<String> = exec_start.split_whitespace().map(String::from).collect();
    argv[0] = installed(&argv[0]).display().to_string();

    if is_root {
        run_as_the_unit(&argv, work.path());
        eprintln!("{}", run(Command::new("dpkg").args(["--purge", "sml"])));
        assert!(!Path::new("/usr/bin/sml").exists());
        assert!(
            !Path::new("/etc/sml/sml.toml").exists(),
            "purge removes the conffile"
        );
    } else {
        eprintln!("not root: the ExecStart line was not run under another uid");
    }
}

/// The unit's ExecStart under `setpriv`, as systemd would start it with the unit's settings; the
/// meter on a pty that belongs to group dialout (as a USB adapter's device does), the spool and
/// the `p:` variables in a state directory owned by the uid, the broker in this process.
fn run_as_the_unit(argv: &[String], work: &Path) {
    // What systemd would create: /var/lib/sml owned by the dynamic uid, 0700.
    let open = |p: &Path| std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
    open(work).unwrap();
    let state = work.join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(DYNAMIC_UID), Some(DYNAMIC_UID)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let dialout: u32 = run(Command::new("getent").args(["group", "dialout"]))
        .split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .expect("group dialout");
    let (mut meter, pty) = pty_meter();
    std::os::unix::fs::chown(&pty, Some(0), Some(dialout)).unwrap();
    std::fs::set_permissions(&pty, std::fs::Permissions::from_mode(0o660)).unwrap();
    let broker = common::free_port();
    common::start_broker(broker);
    let seen = common::subscribe(broker, "tele/#");
    let config = work.join("sml.toml");
    std::fs::write(
        &config,
        format!(
            "meter-name = \"sx631\"\nbroker = \"mqtt://127.0.0.1:{broker}\"\n\
             spool = \"{state}\"\nstate-dir = \"{state}\"\n[port]\n1 = \"{pty}\"\n",
            state = state.display()
        ),
    )
    .unwrap();
    let notify_dir = work.join("notify");
    std::fs::create_dir(&notify_dir).unwrap();
    open(&notify_dir).unwrap();
    let mut notify = NotifySocket::bind(&notify_dir);
    std::fs::set_permissions(&notify.path, std::fs::Permissions::from_mode(0o777)).unwrap();

    let uid = DYNAMIC_UID.to_string();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        &format!("--groups={}", dialout),
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
        "sh",
        "-c",
        "WATCHDOG_PID=$$; export WATCHDOG_PID; umask 077; exec \"$0\" \"$@\"",
    ])
    .args(argv)
    .current_dir("/")
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .env("NOTIFY_SOCKET", &notify.path)
    .env("WATCHDOG_USEC", "1000000")
    .env("SML_CONFIG", &config)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    eprintln!("running as the unit would: {cmd:?}");
    let sml = cmd.spawn().unwrap();

    let ready = notify.wait_for(WAIT, |l| l == "READY=1");
    eprintln!("notified: {ready}");
    // The installed meters library gave the script; the capture's telegrams arrive through the
    // dialout-owned pty.
    let capture = std::fs::read(root().join("tests/fixtures/meters/sx631.txt")).unwrap();
    send(&mut meter, &capture);
    let status = notify.wait_for(WAIT, |l| {
        l.starts_with("STATUS=") && !l.contains(" 0 telegrams")
    });
    assert!(status.contains("WATCHDOG=1"), "{status}");
    assert_eq!(
        common::next_on(&seen, "tele/sx631/LWT", WAIT).payload,
        "Online"
    );
    signal(&sml, "TERM");
    notify.wait_for(WAIT, |l| l == "STOPPING=1");
    let (code, stderr, _) = exit_within(sml, WAIT);
    eprintln!("{stderr}");
    assert_eq!(code, Some(0), "{stderr}");
    // The spool was made in the state directory by the unit's uid.
    let journal = state.join("outbox.jsonl");
    let meta = std::fs::metadata(&journal).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), DYNAMIC_UID);
}
