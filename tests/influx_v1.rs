//! The InfluxDB sink against a real InfluxDB 1.x (`influxd`, started here with its own directories
//! on loopback ports): the values and tags land as written, a 10 s outage of the database loses
//! nothing and moves no timestamp, and a point InfluxDB refuses is dropped alone, said once.
//! Skips cleanly when `influxd` is not installed.

mod common;
mod influx_support;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{line_decoders, start_sml, wait_for};
use influx_support::{capture_log, compile, have_influxd, log_lines_with, Influxd, LOG};
use serialport::{SerialPort, TTYPort};
use sml::link::{Binding, Source};
use sml::publish::influx::{InfluxConfig, Target};
use sml::publish::mqtt::Secret;
use sml::runner::SinkConfig;

fn influx(server: &Influxd, db: &str, spool: Option<PathBuf>) -> InfluxConfig {
    InfluxConfig {
        url: server.url().parse().unwrap(),
        target: Target::V1 {
            database: db.into(),
            user: None,
            password: None,
        },
        tls: Default::default(),
        topic: "myelectricmeter".into(),
        retry_cap: Duration::from_secs(2),
        queue_capacity: 10_000,
        spool,
    }
}

fn run_config(script: &str, ports: Vec<(u16, Source)>, sink: SinkConfig) -> sml::runner::RunConfig {
    sml::runner::RunConfig {
        script: compile(script),
        bindings: ports
            .into_iter()
            .map(|(meter, source)| Binding { meter, source })
            .collect(),
        engine: sml::engine::scheduler::EngineConfig {
            teleperiod: Duration::from_secs(300),
            every_telegram: true,
            ..Default::default()
        },
        replay_speed: sml::link::ReplaySpeed::Max,
        link_backoff: sml::backoff::Backoff {
            first: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        },
        sink,
        decoders: line_decoders(),
        hooks: Default::default(),
    }
}

const ONE_METER: &str = ">D\n>M 1\n+1,3,o,0,9600,EON\n\
    1,1-0:1.8.0(@1,Energy,kWh,enrg,3\n1,1-0:16.7.0(@1,Power,W,pwr,1\n#\n";

fn ns(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

fn f(row: &serde_json::Map<String, serde_json::Value>, k: &str) -> f64 {
    row[k].as_f64().unwrap_or_else(|| panic!("{k} in {row:?}"))
}

#[test]
fn each_telegram_becomes_a_point_with_the_lines_precision_and_its_meter_and_topic_tags() {
    if !have_influxd() {
        return;
    }
    let server = Influxd::start("sml");
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture.txt");
    std::fs::write(&capture, "1.5 230.16\n2.25 231.04\n3.0004 0\n").unwrap();
    let before = SystemTime::now();
    let report = start_sml(run_config(
        ONE_METER,
        vec![(1, Source::Replay(capture))],
        SinkConfig::Influx {
            influx: Box::new(influx(&server, "sml", None)),
            mqtt: None,
        },
    ))
    .join();
    let after = SystemTime::now();
    let influx_report = report.influx.expect("an InfluxDB report");
    assert_eq!(
        (influx_report.written, influx_report.left_queued),
        (3, 0),
        "{influx_report:?}"
    );
    let rows = server.rows("sml", "SELECT * FROM \"EON\" ORDER BY time");
    let got: Vec<(f64, f64)> = rows.iter().map(|r| (f(r, "enrg"), f(r, "pwr"))).collect();
    // The JSON's numbers: 3 and 1 decimals.
    assert_eq!(got, [(1.5, 230.2), (2.25, 231.0), (3.0, 0.0)], "{rows:?}");
    for r in &rows {
        assert_eq!(r["meter"], "1", "{r:?}");
        assert_eq!(r["topic"], "myelectricmeter", "{r:?}");
        let t = r["time"].as_i64().unwrap();
        assert!(ns(before) <= t && t <= ns(after), "{r:?}");
    }
    // Floats, so that a later 0 or 1 never conflicts with 0.5.
    let types = server.rows("sml", "SHOW FIELD KEYS FROM \"EON\"");
    assert!(types.iter().all(|r| r["fieldType"] == "float"), "{types:?}");
}

#[test]
fn influxdb_stopped_for_ten_seconds_loses_no_point_and_moves_no_timestamp() {
    if !have_influxd() {
        return;
    }
    capture_log();
    let mut server = Influxd::start("sml");
    let spool = tempfile::tempdir().unwrap();
    let (mut master, slave) = TTYPort::pair().unwrap();
    let path = slave.name().unwrap();
    let running = start_sml(run_config(
        ONE_METER,
        vec![(1, Source::Serial(path.clone().into()))],
        SinkConfig::Influx {
            influx: Box::new(influx(&server, "sml", Some(spool.path().to_path_buf()))),
            mqtt: None,
        },
    ));
    assert!(wait_for(Duration::from_secs(10), || {
        !log_lines_with(&format!("={path}): open")).is_empty()
    }));
    // A telegram every 250 ms: 3 s up, 10 s down, 3 s up again.
    let mut sent: Vec<(u32, SystemTime)> = vec![];
    let mut i = 0u32;
    let mut telegram = |master: &mut TTYPort, sent: &mut Vec<(u32, SystemTime)>| {
        let at = SystemTime::now();
        master.write_all(format!("{i}.5 1\n").as_bytes()).unwrap();
        sent.push((i, at));
        i += 1;
        std::thread::sleep(Duration::from_millis(250));
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        telegram(&mut master, &mut sent);
    }
    server.pause();
    let down_at = SystemTime::now();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        telegram(&mut master, &mut sent);
    }
    server.resume();
    let up_at = SystemTime::now();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        telegram(&mut master, &mut sent);
    }
    // Each telegram's point, by its value.
    let points = || {
        let mut by_value = std::collections::BTreeMap::new();
        for r in server.rows("sml", "SELECT enrg FROM \"EON\" ORDER BY time") {
            by_value
                .entry(f(&r, "enrg").to_bits())
                .or_insert(r["time"].as_i64().unwrap());
        }
        by_value
    };
    assert!(
        wait_for(Duration::from_secs(60), || points().len() == sent.len()),
        "{} of {} points in InfluxDB",
        points().len(),
        sent.len()
    );
    let report = running.stop().influx.unwrap();
    assert_eq!(
        (report.left_queued, report.refused, report.dropped),
        (0, 0, 0)
    );

    let points = points();
    // The teleperiod's SENSOR repeats the last telegram's point with its read time: no new one.
    let all = server.rows("sml", "SELECT enrg FROM \"EON\"");
    assert_eq!(all.len(), sent.len(), "{all:?}");
    let mut during_outage = 0;
    for (n, sent_at) in &sent {
        let value = *n as f64 + 0.5;
        let t = *points
            .get(&value.to_bits())
            .unwrap_or_else(|| panic!("no point for telegram {n}"));
        // Stamped when read (within the 250 ms before the next telegram), not when written.
        let lag = t - ns(*sent_at);
        assert!(
            (0..2_000_000_000).contains(&lag),
            "point {n} stamped {lag} ns after it was sent"
        );
        if ns(down_at) < t && t < ns(up_at) {
            during_outage += 1;
        }
    }
    assert!(
        during_outage >= 30,
        "{during_outage} points read while InfluxDB was down"
    );
    assert!(
        !log_lines_with("InfluxDB").is_empty(),
        "the outage is in the log"
    );
}

const TWO_METERS: &str = ">D\n>M 2\n\
    +1,3,o,0,9600,A\n1,1-0:1.8.0(@1,Energy,kWh,e,3\n\
    +2,3,o,0,9600,B\n2,1-0:1.8.0(@1,Energy,kWh,e,3\n#\n";

#[test]
fn a_point_whose_field_type_conflicts_is_dropped_alone_with_one_log_line_naming_the_field() {
    if !have_influxd() {
        return;
    }
    capture_log();
    let server = Influxd::start("conflict");
    // B's `e` is text in this week's shard (the server's time): InfluxDB refuses a float for it.
    server.write("conflict", "B,meter=2,topic=myelectricmeter e=\"text\"\n");
    let (mut a_master, a_slave) = TTYPort::pair().unwrap();
    let (mut b_master, b_slave) = TTYPort::pair().unwrap();
    let running = start_sml(run_config(
        TWO_METERS,
        vec![
            (1, Source::Serial(a_slave.name().unwrap().into())),
            (2, Source::Serial(b_slave.name().unwrap().into())),
        ],
        SinkConfig::Influx {
            influx: Box::new(influx(&server, "conflict", None)),
            mqtt: None,
        },
    ));
    // Both links open.
    let (a_path, b_path) = (a_slave.name().unwrap(), b_slave.name().unwrap());
    assert!(wait_for(Duration::from_secs(10), || {
        [&a_path, &b_path]
            .iter()
            .all(|p| !log_lines_with(&format!("={p}): open")).is_empty())
    }));
    // One bad point in the middle of good ones, within one batch.
    for n in 0..6 {
        a_master.write_all(format!("{n}.5\n").as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        if n == 2 {
            // The test decoder numbers words from entry 1; B's value is entry 2.
            b_master.write_all(b"0 7.5\n").unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Points of A's telegrams: the teleperiod's SENSOR has a value of its own (0, none sent).
    let a_count = || {
        server
            .rows("conflict", "SELECT count(e) FROM \"A\" WHERE e > 0")
            .first()
            .map_or(0, |r| r["count"].as_u64().unwrap())
    };
    assert!(
        wait_for(Duration::from_secs(30), || a_count() == 6),
        "{} of A's 6 points",
        a_count()
    );
    // Later points are not blocked either.
    a_master.write_all(b"9.5\n").unwrap();
    assert!(wait_for(Duration::from_secs(30), || a_count() == 7));
    let report = running.stop().influx.unwrap();
    // A teleperiod on a slow machine would repeat the points (same timestamps): more counted.
    assert!(
        report.written >= 7 && report.refused >= 1 && report.left_queued == 0,
        "{report:?}"
    );
    let b = server.rows("conflict", "SELECT * FROM \"B\"");
    assert_eq!(b.len(), 1, "only the text point written by hand: {b:?}");
    let said = log_lines_with("type conflict");
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("\\\"e\\\"") || said[0].contains("\"e\""),
        "names the field: {}",
        said[0]
    );
    assert!(said[0].contains("refused 1 of"), "{}", said[0]);
}

#[test]
fn points_spooled_while_influxdb_was_away_arrive_on_the_next_run_with_their_first_timestamps() {
    if !have_influxd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let capture = dir.path().join("capture.txt");
    std::fs::write(&capture, "1.5 1\n2.5 1\n3.5 1\n").unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    // Nothing listens on port 9 (discard) on loopback: every write fails.
    let nowhere = InfluxConfig {
        url: "http://127.0.0.1:9".parse().unwrap(),
        ..influx_unstarted(Some(spool.clone()))
    };
    let before = SystemTime::now();
    let first = start_sml(run_config(
        ONE_METER,
        vec![(1, Source::Replay(capture))],
        SinkConfig::Influx {
            influx: Box::new(nowhere),
            mqtt: None,
        },
    ))
    .join();
    let after = SystemTime::now();
    assert_eq!(first.influx.as_ref().unwrap().left_queued, 3);
    assert!(first.failure().is_some_and(|f| f.contains("InfluxDB")));

    let server = Influxd::start("sml");
    let second = start_sml(run_config(
        ONE_METER,
        vec![(1, Source::Replay(empty))],
        SinkConfig::Influx {
            influx: Box::new(influx(&server, "sml", Some(spool))),
            mqtt: None,
        },
    ))
    .join();
    assert_eq!(second.influx.unwrap().written, 3);
    let rows = server.rows("sml", "SELECT enrg FROM \"EON\" ORDER BY time");
    let got: Vec<f64> = rows.iter().map(|r| f(r, "enrg")).collect();
    assert_eq!(got, [1.5, 2.5, 3.5]);
    for r in &rows {
        let t = r["time"].as_i64().unwrap();
        assert!(
            ns(before) <= t && t <= ns(after),
            "{r:?} stamped outside the first run"
        );
    }
}

/// A configuration for a server given later (the URL is replaced).
fn influx_unstarted(spool: Option<PathBuf>) -> InfluxConfig {
    InfluxConfig {
        url: "http://127.0.0.1:1".parse().unwrap(),
        target: Target::V1 {
            database: "sml".into(),
            user: None,
            password: None,
        },
        tls: Default::default(),
        topic: "myelectricmeter".into(),
        retry_cap: Duration::from_secs(1),
        queue_capacity: 100,
        spool,
    }
}

#[test]
fn https_uses_the_same_ca_file_as_mqtt_and_refuses_a_server_it_cannot_verify() {
    if !have_influxd() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let Some(pki) = influx_support::make_pki(certs.path()) else {
        return;
    };
    capture_log();
    let server = Influxd::start_with("sml", Some(&pki), None);
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture.txt");
    std::fs::write(&capture, "1.5 1\n2.5 1\n").unwrap();
    let run = |ca: Option<PathBuf>| {
        let mut config = influx(&server, "sml", None);
        assert!(config.url.tls, "{:?}", config.url);
        config.tls.ca = ca;
        config.retry_cap = Duration::from_secs(1);
        start_sml(run_config(
            ONE_METER,
            vec![(1, Source::Replay(capture.clone()))],
            SinkConfig::Influx {
                influx: Box::new(config),
                mqtt: None,
            },
        ))
        .join()
        .influx
        .unwrap()
    };
    // The system's roots do not know the test CA: nothing is written.
    let untrusted = run(None);
    assert_eq!((untrusted.written, untrusted.left_queued), (0, 2));
    assert!(
        !log_lines_with("UnknownIssuer").is_empty(),
        "the log says why the server was not trusted"
    );
    let trusted = run(Some(pki.ca.clone()));
    assert_eq!((trusted.written, trusted.left_queued), (2, 0));
    let rows = server.rows("sml", "SELECT enrg FROM \"EON\"");
    assert_eq!(rows.len(), 2, "{rows:?}");
}

#[test]
fn a_1x_login_is_sent_as_basic_auth_and_a_wrong_password_keeps_the_points_without_logging_it() {
    if !have_influxd() {
        return;
    }
    capture_log();
    let server = Influxd::start_with("sml", None, Some(("meter", "s3cret-pw")));
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture.txt");
    std::fs::write(&capture, "1.5 1\n").unwrap();
    let run = |password: &str| {
        let mut config = influx(&server, "sml", None);
        config.target = Target::V1 {
            database: "sml".into(),
            user: Some("meter".into()),
            password: Some(Secret::new(password.into())),
        };
        config.retry_cap = Duration::from_secs(1);
        start_sml(run_config(
            ONE_METER,
            vec![(1, Source::Replay(capture.clone()))],
            SinkConfig::Influx {
                influx: Box::new(config),
                mqtt: None,
            },
        ))
        .join()
        .influx
        .unwrap()
    };
    let refused = run("wrong-pw-xyz");
    assert_eq!(
        (refused.written, refused.left_queued),
        (0, 1),
        "{refused:?}"
    );
    let said = log_lines_with("HTTP 401");
    assert!(!said.is_empty(), "the refusal is in the log");
    let log = String::from_utf8_lossy(&LOG.lock().unwrap()).to_string();
    assert!(
        !log.contains("wrong-pw-xyz") && !log.contains("s3cret-pw"),
        "{log}"
    );
    let written = run("s3cret-pw");
    assert_eq!(
        (written.written, written.left_queued),
        (1, 0),
        "{written:?}"
    );
    assert_eq!(server.rows("sml", "SELECT enrg FROM \"EON\"").len(), 1);
}
