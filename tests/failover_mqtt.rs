//! Broker failover with real brokers: two mosquittos, sml given both (`--broker` twice), a pty
//! meter whose telegrams carry a sequence number. The first broker is killed mid-run (SIGKILL):
//! the payloads go on on the second, none lost, and the second holds `Online` on the LWT topic.
//! Skipped when mosquitto is not installed (`.ci/run` installs it).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serialport::{SerialPort, TTYPort};
use sml::link::Source;
use sml::publish::mqtt::BrokerUrl;
use sml::runner::SinkConfig;

const SENSOR: &str = "home1/tele/failover/SENSOR";
const LWT: &str = "home1/tele/failover/LWT";
const WAIT: Duration = Duration::from_secs(20);

/// The sequence number of a SENSOR payload (`{"Time":"...","EON":{"seq":12.00}}`).
fn seq(payload: &str) -> u32 {
    let at = payload.find("\"seq\":").expect("a seq value") + 6;
    let number: String = payload[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number.parse::<f64>().expect("a number") as u32
}

/// How often each sequence number arrived, from what `rx` holds now and within `limit` until
/// every one of `want` has arrived.
fn collect(
    rx: &std::sync::mpsc::Receiver<Seen>,
    want: std::ops::RangeInclusive<u32>,
    limit: Duration,
    counts: &mut BTreeMap<u32, u32>,
) {
    let end = std::time::Instant::now() + limit;
    while want.clone().any(|n| !counts.contains_key(&n)) {
        let left = end.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(s) if s.topic == SENSOR => *counts.entry(seq(&s.payload)).or_default() += 1,
            Ok(_) => {}
            Err(_) => return,
        }
    }
    // A duplicate may trail the last new one.
    while let Ok(s) = rx.recv_timeout(Duration::from_millis(300)) {
        if s.topic == SENSOR {
            *counts.entry(seq(&s.payload)).or_default() += 1;
        }
    }
}

fn send(meter: &mut TTYPort, numbers: std::ops::RangeInclusive<u32>) {
    for n in numbers {
        send_at_9600(meter, format!("{n}\n").as_bytes());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killing_the_first_broker_moves_the_payloads_to_the_second_with_none_lost() {
    let (port_a, port_b) = (free_port(), free_port());
    let Some(a) = start_mosquitto(port_a, None) else {
        eprintln!("skipped: mosquitto is not installed");
        return;
    };
    let b = start_mosquitto(port_b, None).expect("mosquitto started once");
    let seen_a = subscribe(port_a, "home1/#");
    let seen_b = subscribe(port_b, "home1/#");

    let (mut meter, slave) = TTYPort::pair().unwrap();
    let path = PathBuf::from(slave.name().unwrap());
    drop(slave);
    let mut mqtt = mqtt_config(port_a, "failover");
    mqtt.more_brokers = vec![BrokerUrl {
        host: "127.0.0.1".into(),
        port: port_b,
        tls: false,
    }];
    let config = run_config(
        &["seq"],
        Source::Serial(path),
        SinkConfig::Mqtt(Box::new(mqtt)),
    );
    let sml = start_sml(config);
    assert_eq!(next_on(&seen_a, LWT, WAIT).payload, "Online");

    // On the first broker: 1..=20, all seen there before it dies.
    let mut on_a = BTreeMap::new();
    send(&mut meter, 1..=20);
    collect(&seen_a, 1..=20, WAIT, &mut on_a);
    assert_eq!(
        on_a.keys().copied().collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );

    // Let the last PUBACK reach sml (a payload in flight at the kill would be sent again, which
    // is allowed, but this test is about what comes after).
    std::thread::sleep(Duration::from_millis(300));
    // SIGKILL: no goodbye from the broker; sml learns of it on its next write or read. The
    // meter goes on at once: what sml hands to the dead connection must reach the second broker.
    drop(a);
    send(&mut meter, 21..=60);
    let mut on_b = BTreeMap::new();
    collect(&seen_b, 21..=60, WAIT, &mut on_b);

    let lost: Vec<u32> = (21..=60).filter(|n| !on_b.contains_key(n)).collect();
    let duplicated = on_b.values().filter(|&&c| c > 1).count();
    eprintln!(
        "failover: 20 on the first broker, {} of 40 on the second ({} duplicated, {} lost: {:?})",
        on_b.len(),
        duplicated,
        lost.len(),
        lost
    );
    assert_eq!(
        lost,
        Vec::<u32>::new(),
        "every payload after the kill reaches the second broker"
    );
    // A payload the first broker took whose PUBACK died with it is sent again (at-least-once):
    // allowed, counted, and never anything the meter did not send.
    let resent: Vec<u32> = on_b.keys().copied().filter(|n| *n < 21).collect();
    eprintln!("failover: re-sent to the second broker after the first took them: {resent:?}");
    assert!(on_b.keys().all(|n| (1..=60).contains(n)), "{on_b:?}");

    // The second broker says sml is online (retained, for a subscriber that comes later).
    let late = subscribe(port_b, LWT);
    let lwt = next_on(&late, LWT, WAIT);
    assert_eq!((lwt.payload.as_str(), lwt.retain), ("Online", true));

    let report = sml.stop();
    let mqtt = report.mqtt.unwrap();
    assert_eq!(mqtt.left_queued, 0);
    assert!(mqtt.failovers >= 1, "{mqtt:?}");
    assert_eq!(mqtt.connects, 2, "{mqtt:?}");
    drop(b);
}

// ---- a refused login, per broker -----------------------------------------------------------

fn login_to(ports: &[u16], password: &str) -> sml::publish::mqtt::MqttConfig {
    let mut config = mqtt_config(ports[0], "failover");
    config.more_brokers = ports[1..]
        .iter()
        .map(|&port| BrokerUrl {
            host: "127.0.0.1".into(),
            port,
            tls: false,
        })
        .collect();
    config.user = Some("sml".into());
    config.password = Some(sml::publish::mqtt::Secret::new(password.into()));
    config
}

/// The first broker refuses the password (its user database differs); the second takes sml and
/// gets the payloads; delivery does not end.
#[test]
fn a_broker_that_refuses_the_login_is_skipped_for_one_that_takes_it() {
    use sml::engine::scheduler::Publication;
    use sml::publish::Sink;

    let (port_a, port_b) = (free_port(), free_port());
    let Some(a) = start_mosquitto(port_a, Some(("sml", "another-one"))) else {
        eprintln!("skipped: mosquitto is not installed");
        return;
    };
    let b = start_mosquitto(port_b, None).unwrap();
    let seen_b = subscribe(port_b, "home1/#");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(async {
        let (mut sink, mut connected, task) =
            sml::publish::mqtt::start(login_to(&[port_a, port_b], "wr0ng-Pa55")).unwrap();
        tokio::time::timeout(WAIT, connected.wait_for(|up| *up))
            .await
            .expect("connected to the second broker")
            .unwrap();
        sink.publish(Publication::Sensor(r#"{"EON":{"seq":1}}"#.into()))
            .unwrap();
        drop(sink);
        task.await.unwrap()
    });
    assert_eq!(
        next_on(&seen_b, SENSOR, WAIT).payload,
        r#"{"EON":{"seq":1}}"#
    );
    assert_eq!(report.fatal, None);
    assert_eq!(
        (report.delivered, report.connects, report.failovers),
        (1, 1, 1)
    );
    drop((a, b));
}

/// Every broker of the list refuses: delivery ends by itself with each broker's reason, and the
/// password appears nowhere.
#[test]
fn when_every_broker_refuses_the_login_delivery_ends_naming_each() {
    let (port_a, port_b) = (free_port(), free_port());
    let Some(a) = start_mosquitto(port_a, Some(("sml", "the-right-one"))) else {
        eprintln!("skipped: mosquitto is not installed");
        return;
    };
    let b = start_mosquitto(port_b, Some(("sml", "the-right-one"))).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(async {
        let (_sink, _connected, task) =
            sml::publish::mqtt::start(login_to(&[port_a, port_b], "wr0ng-Pa55")).unwrap();
        tokio::time::timeout(WAIT, task)
            .await
            .expect("the MQTT task ends by itself")
            .unwrap()
    });
    let fatal = report.fatal.expect("a fatal reason");
    assert!(
        fatal.starts_with("every broker refused the connection"),
        "{fatal}"
    );
    for port in [port_a, port_b] {
        assert!(fatal.contains(&format!("127.0.0.1:{port}: ")), "{fatal}");
    }
    assert!(!fatal.contains("wr0ng"), "{fatal}");
    drop((a, b));
}
