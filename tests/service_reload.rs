//! SIGHUP and SIGTERM on the real binary, as `systemctl reload` and `systemctl stop` send them: a
//! pty meter whose every telegram carries its own value, a real broker (mosquitto when installed)
//! behind a gate that keeps it away while payloads queue, and `$NOTIFY_SOCKET` to know when sml has
//! read what was sent (its STATUS counts telegrams) and when a reload is done (READY=1 again).

mod common;
mod service_support;

use std::path::Path;
use std::time::Duration;

use common::{next_on, subscribe};
use service_support::*;

const WAIT: Duration = Duration::from_secs(20);

/// The run's configuration file: the script, the meter's pty, the broker, a payload per telegram,
/// and with `spool`, the spool in DIR/spool.
fn write_config(dir: &Path, pty: &str, broker: u16, spool: bool) -> std::path::PathBuf {
    let config = dir.join("sml.toml");
    let spool = if spool { "spool = \"spool\"\n" } else { "" };
    std::fs::write(
        &config,
        format!(
            "script = \"meter.sml\"\nbroker = \"mqtt://127.0.0.1:{broker}\"\ntopic = \"svc\"\n\
             every-telegram = true\nmqtt-retry = 1\n{spool}[port]\n1 = \"{pty}\"\n"
        ),
    )
    .unwrap();
    config
}

/// The value of `name` in a SENSOR payload (`{"Time":..,"EON":{"E1":1.001}}`).
fn value_of(payload: &str, name: &str) -> Option<f64> {
    let json: serde_json::Value = serde_json::from_str(payload).ok()?;
    json["EON"][name].as_f64()
}

#[test]
fn a_sighup_mid_run_loads_the_new_script_and_every_queued_payload_still_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _guard) = broker();
    let gate = Gate::to(broker);
    let seen = subscribe(broker, "tele/svc/#");
    let mut notify = NotifySocket::bind(dir.path());
    std::fs::write(dir.path().join("meter.sml"), meter_script("E1")).unwrap();
    let (mut meter, pty) = pty_meter();
    // No spool: the payloads that survive the reload survive in the publisher's memory.
    let config = write_config(dir.path(), &pty, gate.port, false);
    let sml = start_sml(
        &notify.path,
        Some(Duration::from_millis(200)),
        &["run"],
        &[("SML_CONFIG", config.to_str().unwrap())],
    );
    notify.wait_for(WAIT, |l| l == "READY=1");

    // Three telegrams while the broker is away: their payloads wait in the queue.
    for v in [1.001, 1.002, 1.003] {
        send(&mut meter, &telegram(v));
        std::thread::sleep(Duration::from_millis(200));
    }
    notify.wait_for(WAIT, |l| l.contains("3 telegrams"));

    // The new script names the value E2; the reload restarts the meter and the engine only.
    std::fs::write(dir.path().join("meter.sml"), meter_script("E2")).unwrap();
    signal(&sml, "HUP");
    notify.wait_for(WAIT, |l| l == "RELOADING=1");
    let ready = notify.wait_for(WAIT, |l| l == "READY=1");
    assert!(ready.contains("STATUS=reloaded"), "{ready}");
    for v in [2.001, 2.002, 2.003] {
        send(&mut meter, &telegram(v));
        std::thread::sleep(Duration::from_millis(200));
    }
    notify.wait_for(WAIT, |l| l.contains("6 telegrams"));

    // The broker comes back: the six payloads arrive, the old script's first and in order.
    gate.open();
    let mut got = Vec::new();
    while got.len() < 6 {
        let p = next_on(&seen, "tele/svc/SENSOR", WAIT).payload;
        // The first teleperiod after the connect repeats the latest value; only new ones count.
        let v = value_of(&p, "E1").map(|v| ("E1", v));
        let v = v.or_else(|| value_of(&p, "E2").map(|v| ("E2", v)));
        let v = v.unwrap_or_else(|| panic!("unexpected payload {p}"));
        if !got.contains(&v) {
            got.push(v);
        }
    }
    assert_eq!(
        got,
        vec![
            ("E1", 1.001),
            ("E1", 1.002),
            ("E1", 1.003),
            ("E2", 2.001),
            ("E2", 2.002),
            ("E2", 2.003)
        ]
    );
    signal(&sml, "TERM");
    let (code, stderr, _) = exit_within(sml, WAIT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("reloaded"), "{stderr}");
}

#[test]
fn a_broken_script_on_sighup_is_refused_with_its_error_and_the_old_one_keeps_publishing() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _guard) = broker();
    let seen = subscribe(broker, "tele/svc/#");
    let mut notify = NotifySocket::bind(dir.path());
    std::fs::write(dir.path().join("meter.sml"), meter_script("E1")).unwrap();
    let (mut meter, pty) = pty_meter();
    let config = write_config(dir.path(), &pty, broker, true);
    let sml = start_sml(
        &notify.path,
        None,
        &["run"],
        &[("SML_CONFIG", config.to_str().unwrap())],
    );
    notify.wait_for(WAIT, |l| l == "READY=1");
    assert_eq!(next_on(&seen, "tele/svc/LWT", WAIT).payload, "Online");
    send(&mut meter, &telegram(1.001));
    let p = next_on(&seen, "tele/svc/SENSOR", WAIT).payload;
    assert_eq!(value_of(&p, "E1"), Some(1.001), "{p}");

    // A meter line without its decoder: the script does not compile.
    std::fs::write(
        dir.path().join("meter.sml"),
        ">D\n>M 1\n+1,3,zz,0,9600,EON\n1,1-0:1.8.0(@1,Energy,kWh,E2,3\n#\n",
    )
    .unwrap();
    signal(&sml, "HUP");
    let refused = notify.wait_for(WAIT, |l| l.starts_with("STATUS=reload refused"));
    assert!(refused.contains("READY=1"), "{refused}");

    // The old script goes on: the next telegram is published under its name.
    send(&mut meter, &telegram(1.002));
    let value = loop {
        let p = next_on(&seen, "tele/svc/SENSOR", WAIT).payload;
        assert_eq!(value_of(&p, "E2"), None, "the broken script ran: {p}");
        match value_of(&p, "E1") {
            Some(v) if v == 1.002 => break v,
            _ => continue,
        }
    };
    assert_eq!(value, 1.002);
    signal(&sml, "TERM");
    let (code, stderr, _) = exit_within(sml, WAIT);
    assert_eq!(code, Some(0), "{stderr}");
    let refusal = stderr
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(refusal.contains("meter.sml"), "names the script: {refusal}");
}

#[test]
fn sigterm_with_the_broker_away_keeps_the_payloads_in_the_spool_and_exits_0_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _guard) = broker();
    // Never opened: the broker stays away for this run.
    let gate = Gate::to(broker);
    let mut notify = NotifySocket::bind(dir.path());
    std::fs::write(dir.path().join("meter.sml"), meter_script("E1")).unwrap();
    let (mut meter, pty) = pty_meter();
    let config = write_config(dir.path(), &pty, gate.port, true);
    let sml = start_sml(
        &notify.path,
        Some(Duration::from_millis(200)),
        &["run"],
        &[("SML_CONFIG", config.to_str().unwrap())],
    );
    notify.wait_for(WAIT, |l| l == "READY=1");
    for v in [1.001, 1.002] {
        send(&mut meter, &telegram(v));
        std::thread::sleep(Duration::from_millis(200));
    }
    notify.wait_for(WAIT, |l| l.contains("2 telegrams"));
    signal(&sml, "TERM");
    notify.wait_for(WAIT, |l| l == "STOPPING=1");
    let (code, stderr, took) = exit_within(sml, WAIT);
    assert_eq!(code, Some(0), "a stop as asked: {stderr}");
    // The drain waits for the broker 5 s at most (TimeoutStopSec= in the unit is well above).
    assert!(took < Duration::from_secs(12), "took {took:?}");
    assert!(stderr.contains("kept in the spool"), "{stderr}");
    let journal = std::fs::read_to_string(dir.path().join("spool/outbox.jsonl")).unwrap();
    assert!(
        journal.contains("1.001") && journal.contains("1.002"),
        "{journal}"
    );

    // The next start delivers them.
    let seen = subscribe(broker, "tele/svc/#");
    let config = write_config(dir.path(), &pty, broker, true);
    let sml = start_sml(
        &notify.path,
        None,
        &["run"],
        &[("SML_CONFIG", config.to_str().unwrap())],
    );
    let mut values = Vec::new();
    while values.len() < 2 {
        let p = next_on(&seen, "tele/svc/SENSOR", WAIT).payload;
        if let Some(v) = value_of(&p, "E1") {
            if !values.contains(&v) {
                values.push(v);
            }
        }
    }
    assert_eq!(values, vec![1.001, 1.002]);
    signal(&sml, "TERM");
    let (code, stderr, _) = exit_within(sml, WAIT);
    assert_eq!(code, Some(0), "{stderr}");
}
