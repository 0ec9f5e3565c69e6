//! Publishing with real parts: rumqttd brokers (in this process, or a child process where it must
//! be killed and restarted), rumqttc subscribers, pty meters; sml runs in-process with a hand-built
//! meter and a plain-text line decoder, so these tests are about links, timing and MQTT only.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::*;
use serialport::{SerialPort, TTYPort};
use sml::link::Source;
use sml::runner::SinkConfig;

const SENSOR: &str = "home1/tele/myelectricmeter/SENSOR";
const STATE: &str = "home1/tele/myelectricmeter/STATE";
const LWT: &str = "home1/tele/myelectricmeter/LWT";
const WAIT: Duration = Duration::from_secs(20);

fn pty_meter() -> (TTYPort, PathBuf) {
    let (master, slave) = TTYPort::pair().unwrap();
    let path = PathBuf::from(slave.name().unwrap());
    // The test keeps only the meter's side; sml opens the other by name.
    drop(slave);
    (master, path)
}

#[test]
fn sensor_state_and_lwt_reach_the_broker_on_tasmotas_topics() {
    let port = free_port();
    start_broker(port);
    let seen = subscribe(port, "home1/#");
    let (mut meter, path) = pty_meter();
    let mut config = run_config(
        &["volts_l1", "enrg_imp"],
        Source::Serial(path),
        SinkConfig::Mqtt(Box::new(mqtt_config(port, "myelectricmeter"))),
    );
    config.engine.teleperiod = Duration::from_secs(10);
    let sml = start_sml(config);

    assert_eq!(next_on(&seen, LWT, WAIT).payload, "Online");
    send_at_9600(&mut meter, b"230.1 1234.5\n");
    let s = next_on(&seen, SENSOR, WAIT);
    assert_eq!(
        without_time(&s.payload),
        r#"{"Time":"T","EON":{"volts_l1":230.10,"enrg_imp":1234.50}}"#
    );
    assert!(!s.retain, "SENSOR is not retained");

    // The first teleperiod, 5 s after connecting: SENSOR with what is known, then STATE.
    let s = next_on(&seen, SENSOR, WAIT);
    assert_eq!(
        without_time(&s.payload),
        r#"{"Time":"T","EON":{"volts_l1":230.10,"enrg_imp":1234.50}}"#
    );
    let state = next_on(&seen, STATE, WAIT).payload;
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    let secs = v["UptimeSec"]
        .as_u64()
        .unwrap_or_else(|| panic!("UptimeSec in {state}"));
    assert_eq!(
        without_time(&state),
        format!(r#"{{"Time":"T","Uptime":"0T00:00:{secs:02}","UptimeSec":{secs},"Silent":[]}}"#)
    );

    // A clean stop says Offline itself, and it stays retained for later subscribers.
    let report = sml.stop();
    assert_eq!(next_on(&seen, LWT, WAIT).payload, "Offline");
    let later = subscribe(port, LWT);
    let lwt = next_on(&later, LWT, WAIT);
    assert_eq!((lwt.payload.as_str(), lwt.retain), ("Offline", true));
    let mqtt = report.mqtt.unwrap();
    assert_eq!(
        (mqtt.delivered, mqtt.dropped, mqtt.left_queued),
        (2, 0, 0),
        "{mqtt:?}"
    );
}

#[test]
fn the_broker_publishes_offline_when_sml_dies_without_disconnecting() {
    let port = free_port();
    start_broker(port);
    let seen = subscribe(port, "home1/#");
    let (_meter, path) = pty_meter();
    let sml = start_sml(run_config(
        &["a"],
        Source::Serial(path),
        SinkConfig::Mqtt(Box::new(mqtt_config(port, "myelectricmeter"))),
    ));
    assert_eq!(next_on(&seen, LWT, WAIT).payload, "Online");
    let later = subscribe(port, LWT);
    let online = next_on(&later, LWT, WAIT);
    assert_eq!(
        (online.payload.as_str(), online.retain),
        ("Online", true),
        "Online is retained"
    );

    sml.kill();
    // The last will: published by the broker, retained.
    assert_eq!(next_on(&seen, LWT, WAIT).payload, "Offline");
    let after = subscribe(port, LWT);
    let lwt = next_on(&after, LWT, WAIT);
    assert_eq!((lwt.payload.as_str(), lwt.retain), ("Offline", true));
}

#[test]
fn payloads_spooled_while_the_broker_is_away_survive_a_restart_of_sml() {
    let port = free_port();
    let spool = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("three.txt");
    std::fs::write(&capture, "1\n2\n3\n").unwrap();
    let mut mqtt = mqtt_config(port, "myelectricmeter");
    mqtt.spool = Some(spool.path().to_path_buf());

    // No broker: the three payloads wait in the spool when sml stops.
    let first = start_sml(run_config(
        &["n"],
        Source::Replay(capture),
        SinkConfig::Mqtt(Box::new(mqtt.clone())),
    ));
    let report = first.join();
    let read_at = chrono::Local::now().naive_local();
    assert_eq!(report.engine.telegrams, 3);
    assert_eq!(report.mqtt.unwrap().left_queued, 3);

    // The broker is back; a new sml with nothing new to read delivers them, in order, once.
    start_broker(port);
    let seen = subscribe(port, "home1/#");
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let second = start_sml(run_config(
        &["n"],
        Source::Replay(empty),
        SinkConfig::Mqtt(Box::new(mqtt)),
    ));
    let report = second.join();
    let mut got = Vec::new();
    while let Ok(s) = seen.recv_timeout(Duration::from_millis(500)) {
        if s.topic == SENSOR {
            got.push(s.payload);
        }
    }
    let values: Vec<String> = got.iter().map(|p| without_time(p)).collect();
    assert_eq!(
        values,
        [1, 2, 3].map(|n| format!(r#"{{"Time":"T","EON":{{"n":{n}.00}}}}"#)),
        "{got:?}"
    );
    // Each keeps the Time it was read at, not the time it was delivered.
    for p in &got {
        let v: serde_json::Value = serde_json::from_str(p).unwrap();
        let t =
            chrono::NaiveDateTime::parse_from_str(v["Time"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S")
                .unwrap();
        assert!(t <= read_at, "{p} was re-stamped");
    }
    assert_eq!(report.mqtt.unwrap().left_queued, 0);
}

/// A line someone slipped into the spool for another device's command topic is never published
/// with sml's credentials; sml's own lines still are.
#[test]
fn a_spooled_line_for_another_topic_is_not_published() {
    let port = free_port();
    start_broker(port);
    let seen = subscribe(port, "#");
    let spool = tempfile::tempdir().unwrap();
    std::fs::write(
        spool.path().join("outbox.jsonl"),
        format!(
            "{{\"seq\":1,\"topic\":\"cmnd/victim/POWER\",\"payload\":\"ON\"}}\n\
             {{\"seq\":2,\"topic\":\"{SENSOR}\",\"payload\":\"{{\\\"n\\\":1}}\"}}\n"
        ),
    )
    .unwrap();
    let mut mqtt = mqtt_config(port, "myelectricmeter");
    mqtt.spool = Some(spool.path().to_path_buf());
    let empty = spool.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let report = start_sml(run_config(
        &["n"],
        Source::Replay(empty),
        SinkConfig::Mqtt(Box::new(mqtt)),
    ))
    .join();
    let mut topics = Vec::new();
    while let Ok(s) = seen.recv_timeout(Duration::from_millis(500)) {
        topics.push((s.topic, s.payload));
    }
    assert!(
        topics.contains(&(SENSOR.to_string(), r#"{"n":1}"#.to_string())),
        "{topics:?}"
    );
    assert!(
        !topics.iter().any(|(t, _)| t.starts_with("cmnd/")),
        "{topics:?}"
    );
    let mqtt = report.mqtt.unwrap();
    assert_eq!((mqtt.delivered, mqtt.left_queued), (1, 0), "{mqtt:?}");
}

// ---- a broker that can be killed and restarted: this test binary again, in a child process ----

const CHILD_ENV: &str = "SML_TEST_BROKER_PORT";

/// In the child: rumqttd with an in-process observer that prints every publish as a `SEEN` line.
/// The observer subscribes before the listener opens, so it sees everything sml delivers.
fn be_the_broker(port: u16) -> ! {
    let mut broker = rumqttd::Broker::new(broker_config(port));
    let (mut link_tx, mut link_rx) = broker.link("observer").unwrap();
    link_tx.subscribe("#").unwrap();
    std::thread::spawn(move || {
        let _ = broker.start();
    });
    loop {
        if let Ok(Some(rumqttd::Notification::Forward(f))) = link_rx.recv() {
            let line = serde_json::json!({
                "topic": String::from_utf8_lossy(&f.publish.topic),
                "payload": String::from_utf8_lossy(&f.publish.payload),
            });
            println!("SEEN {line}");
        }
    }
}

fn spawn_broker(port: u16, name: &str) -> (Child, Receiver<Seen>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if let Some(json) = line.strip_prefix("SEEN ") {
                let v: serde_json::Value = serde_json::from_str(json).unwrap();
                let seen = Seen {
                    topic: v["topic"].as_str().unwrap().into(),
                    payload: v["payload"].as_str().unwrap().into(),
                    retain: false,
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        }
    });
    assert!(
        wait_for(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "the broker child did not start"
    );
    (child, rx)
}

fn sensor_values(rx: &Receiver<Seen>, into: &mut Vec<String>) {
    while let Ok(s) = rx.try_recv() {
        if s.topic == SENSOR {
            let v: serde_json::Value = serde_json::from_str(&s.payload).unwrap();
            into.push(v["EON"]["n"].to_string());
        }
    }
}

/// The broker is killed (no goodbye, sessions and all gone) while the meter goes on sending one
/// telegram a second for 30 s; when it comes back, every payload arrives once, in order (QoS 1).
#[test]
fn a_broker_down_for_thirty_seconds_loses_and_duplicates_nothing() {
    const NAME: &str = "a_broker_down_for_thirty_seconds_loses_and_duplicates_nothing";
    if let Ok(port) = std::env::var(CHILD_ENV) {
        be_the_broker(port.parse().unwrap());
    }
    let port = free_port();
    let (mut broker, seen) = spawn_broker(port, NAME);
    let (mut meter, path) = pty_meter();
    let mut config = run_config(
        &["n"],
        Source::Serial(path),
        SinkConfig::Mqtt(Box::new(mqtt_config(port, "myelectricmeter"))),
    );
    config.engine.teleperiod = Duration::from_secs(3600);
    let sml = start_sml(config);
    let mut got = Vec::new();
    let telegram = |meter: &mut TTYPort, n: u32| send_at_9600(meter, format!("{n}\n").as_bytes());
    // The first teleperiod (5 s after connecting) passes before the meter speaks, so every SENSOR
    // payload below is one telegram's.
    next_on(&seen, STATE, WAIT);

    for n in 1..=3 {
        telegram(&mut meter, n);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(wait_for(WAIT, || {
        sensor_values(&seen, &mut got);
        got.len() == 3
    }));
    // Let the last PUBACK leave before the kill: a payload the broker took but could not
    // acknowledge may come twice, which QoS 1 allows and this test is not about.
    std::thread::sleep(Duration::from_millis(300));
    broker.kill().unwrap();
    broker.wait().unwrap();

    let down_since = Instant::now();
    for n in 4..=33 {
        telegram(&mut meter, n);
        std::thread::sleep(Duration::from_secs(1).saturating_sub(Duration::from_millis(10)));
    }
    assert!(down_since.elapsed() >= Duration::from_secs(30));
    let (mut broker, seen) = spawn_broker(port, NAME);
    for n in 34..=36 {
        telegram(&mut meter, n);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(wait_for(WAIT, || {
        sensor_values(&seen, &mut got);
        got.len() >= 36
    }));
    std::thread::sleep(Duration::from_millis(500));
    sensor_values(&seen, &mut got);
    let want: Vec<String> = (1..=36).map(|n| format!("{n}.0")).collect();
    let got_n: Vec<String> = got
        .iter()
        .map(|v| format!("{:.1}", v.parse::<f64>().unwrap()))
        .collect();
    assert_eq!(got_n, want);
    let mqtt = sml.stop().mqtt.unwrap();
    assert_eq!(
        (mqtt.connects, mqtt.delivered, mqtt.dropped),
        (2, 36, 0),
        "{mqtt:?}"
    );
    broker.kill().unwrap();
    broker.wait().unwrap();
}

// ---- a broker that checks passwords ----------------------------------------------------------

/// The broker refuses the login: sml does not retry forever, it stops delivery at once with the
/// reason (for the run to end non-zero), and the password appears nowhere in it.
#[test]
fn a_broker_that_refuses_the_password_ends_delivery_with_the_reason() {
    use sml::engine::scheduler::Publication;
    use sml::publish::mqtt::Secret;
    use sml::publish::Sink;

    let port = free_port();
    let Some(broker) = start_mosquitto(port, Some(("sml", "the-right-one"))) else {
        eprintln!("skipped: mosquitto is not installed");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let login = |password: &str| {
        let mut config = mqtt_config(port, "myelectricmeter");
        config.user = Some("sml".into());
        config.password = Some(Secret::new(password.into()));
        config
    };

    // The right password connects (the broker is set up as the test thinks).
    rt.block_on(async {
        let (sink, mut connected, task) =
            sml::publish::mqtt::start(login("the-right-one")).unwrap();
        tokio::time::timeout(WAIT, connected.wait_for(|up| *up))
            .await
            .expect("connected with the right password")
            .unwrap();
        drop(sink);
        assert_eq!(task.await.unwrap().fatal, None);
    });

    let (report, publish_error) = rt.block_on(async {
        let (mut sink, _connected, task) = sml::publish::mqtt::start(login("wr0ng-Pa55")).unwrap();
        let report = tokio::time::timeout(WAIT, task)
            .await
            .expect("the MQTT task ends by itself")
            .unwrap();
        let e = sink
            .publish(Publication::Sensor("{}".into()))
            .unwrap_err()
            .to_string();
        (report, e)
    });
    let fatal = report.fatal.clone().expect("a fatal reason");
    assert!(
        fatal.contains("not authorized") || fatal.contains("bad user name or password"),
        "{fatal}"
    );
    assert!(fatal.contains("--password-file"), "{fatal}");
    assert!(!fatal.contains("wr0ng"), "{fatal}");
    assert_eq!(publish_error, fatal, "the engine's side says the same");
    assert_eq!(report.connects, 0, "{report:?}");
    drop(broker);
}

/// Through the binary: a refused login ends `sml run` by itself, exit 1, the broker's reason last on
/// stderr, and the password nowhere (a service manager then sees a failure, not a quiet success).
#[test]
fn sml_run_exits_non_zero_when_the_broker_refuses_the_password() {
    let port = free_port();
    let Some(broker) = start_mosquitto(port, Some(("sml", "the-right-one"))) else {
        eprintln!("skipped: mosquitto is not installed");
        return;
    };
    let password_file = broker.dir.path().join("pw");
    std::fs::write(&password_file, "wr0ng-Pa55\n").unwrap();
    // A meter that stays quiet: the run would go on for ever if the refusal did not end it.
    let (_master, slave) = TTYPort::pair().unwrap();
    let device = slave.name().unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "meters/sx631.sml", "--port"])
        .arg(format!("1={device}"))
        .args([
            "--broker",
            &format!("mqtt://127.0.0.1:{port}"),
            "--user",
            "sml",
        ])
        .arg("--password-file")
        .arg(&password_file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(started.elapsed() < WAIT, "it ended by itself: {err}");
    let last = err.lines().last().unwrap_or("");
    assert!(last.contains("the broker refused sml"), "{err}");
    assert!(!err.contains("wr0ng"), "{err}");
    drop(broker);
}
