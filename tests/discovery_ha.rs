//! Home Assistant and Tasmota discovery against a real broker (mosquitto, which keeps retained
//! messages and deletes them on an empty retained payload as Home Assistant's brokers do): every
//! config is read back and checked field by field, each `value_template` is rendered with a Jinja
//! engine on the SENSOR payload sml published, and a config left by an earlier run for a line no
//! longer in the script is removed while a foreign one is kept.

mod common;
mod http_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{free_port, start_mosquitto, subscribe, wait_for, Seen};
use http_common::*;
use serde_json::Value as Json;
use sml::publish::discovery::{pseudo_mac, DiscoveryConfig};
use sml::runner::{Frontends, SinkConfig};

const TOPIC: &str = "myelectricmeter";
const SENSOR: &str = "home1/tele/myelectricmeter/SENSOR";
const LWT: &str = "home1/tele/myelectricmeter/LWT";
const NODE: &str = "homeassistant/sensor/myelectricmeter";
const WAIT: Duration = Duration::from_secs(20);

/// Publish retained messages and wait until the broker has acknowledged them all.
fn publish_retained(port: u16, messages: &[(&str, &str)]) {
    let mut o = rumqttc::MqttOptions::new(format!("seed-{}", free_port()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = rumqttc::Client::new(o, 10);
    for (t, p) in messages {
        client
            .publish(*t, rumqttc::QoS::AtLeastOnce, true, p.as_bytes().to_vec())
            .unwrap();
    }
    let mut acked = 0;
    for ev in conn.iter() {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = ev {
            acked += 1;
            if acked == messages.len() {
                break;
            }
        }
    }
    let _ = client.disconnect();
}

/// Everything retained under `filter` now, as a late subscriber (Home Assistant) sees it.
fn retained(port: u16, filter: &str, expect: usize) -> BTreeMap<String, String> {
    let rx = subscribe(port, filter);
    let mut out = BTreeMap::new();
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        match rx.recv_timeout(Duration::from_millis(300)) {
            Ok(Seen {
                topic,
                payload,
                retain: true,
            }) => {
                out.insert(topic, payload);
            }
            Ok(_) => {}
            // Quiet for a while after the expected count: that is all there is.
            Err(_) if out.len() >= expect => break,
            Err(_) => {}
        }
    }
    out
}

fn render(template: &str, payload: &str) -> String {
    let env = minijinja::Environment::new();
    let value_json: Json = serde_json::from_str(payload).unwrap();
    env.render_str(template, minijinja::context! { value_json => value_json })
        .unwrap_or_else(|e| panic!("{template} on {payload}: {e}"))
}

#[test]
fn every_value_is_announced_to_home_assistant_and_a_vanished_line_is_removed() {
    let port = free_port();
    let Some(_broker) = start_mosquitto(port, None) else {
        eprintln!("skipped: mosquitto is not installed");
        return;
    };
    // An earlier run announced a line since removed from the script; another integration keeps
    // a config under the same node that is not sml's.
    let old = format!("{NODE}/EON_enrg_exp/config");
    let foreign = format!("{NODE}/zigbee_plug/config");
    publish_retained(
        port,
        &[
            (
                &old,
                r#"{"unique_id":"myelectricmeter_EON_enrg_exp","name":"Energy export"}"#,
            ),
            (&foreign, r#"{"unique_id":"zigbee_plug_power"}"#),
        ],
    );
    let seen = subscribe(port, "home1/#");

    let (mut meter, device) = pty_meter();
    let config = run_config(
        SCRIPT,
        device,
        SinkConfig::Mqtt(Box::new(common::mqtt_config(port, TOPIC))),
    );
    let frontends = Frontends {
        http: None,
        discovery: Some(DiscoveryConfig {
            ha_prefix: Some("homeassistant".into()),
            tasmota: true,
            topic: TOPIC.into(),
            full_topic: "home1/%prefix%/%topic%/".into(),
        }),
    };
    let sml = start(config, frontends);

    // The lines without a serial wait for none: the meter's device waits for its serial, so
    // nothing of meter 1 is announced before its first telegram; the vanished line goes at once.
    assert!(
        wait_for(WAIT, || !retained(port, &format!("{NODE}/+/config"), 1)
            .contains_key(&old)),
        "the vanished line's config was not removed"
    );
    send_telegram(&mut meter, b"1ESY1160 22803.012 233.9 1500\n");
    let sensor = common::next_on(&seen, SENSOR, WAIT).payload;
    assert!(sensor.contains("\"volts_l1\":233.9"), "{sensor}");

    let ours = |m: &BTreeMap<String, String>| {
        m.keys()
            .filter(|t| t.starts_with(&format!("{NODE}/EON_")))
            .count()
    };
    let mut configs = BTreeMap::new();
    assert!(
        wait_for(WAIT, || {
            configs = retained(port, &format!("{NODE}/+/config"), 5);
            ours(&configs) == 4
        }),
        "four configs expected: {configs:#?}"
    );
    assert!(!configs.contains_key(&old), "removed: {configs:#?}");
    assert_eq!(
        configs.get(&foreign).map(String::as_str),
        Some(r#"{"unique_id":"zigbee_plug_power"}"#),
        "a config sml did not make is kept"
    );

    // Field by field.
    let expect = [
        ("meter_id", "Meter number", None, None, None, "1ESY1160"),
        (
            "enrg_imp",
            "Energy import",
            Some("kWh"),
            Some("energy"),
            Some("total_increasing"),
            "22803.012",
        ),
        (
            "volts_l1",
            "Voltage L1",
            Some("V"),
            Some("voltage"),
            Some("measurement"),
            "233.9",
        ),
        (
            "power",
            "Power",
            Some("W"),
            Some("power"),
            Some("measurement"),
            "1500",
        ),
    ];
    for (name, label, unit, dc, sc, value) in expect {
        let topic = format!("{NODE}/EON_{name}/config");
        let raw = configs
            .get(&topic)
            .unwrap_or_else(|| panic!("{topic} in {configs:#?}"));
        let c: Json = serde_json::from_str(raw).unwrap();
        assert_eq!(c["name"], label, "{raw}");
        assert_eq!(
            c["unique_id"],
            format!("myelectricmeter_EON_{name}"),
            "{raw}"
        );
        assert_eq!(c["state_topic"], SENSOR, "{raw}");
        assert_eq!(c["availability_topic"], LWT, "{raw}");
        assert_eq!(c["payload_available"], "Online", "{raw}");
        assert_eq!(c["payload_not_available"], "Offline", "{raw}");
        assert_eq!(c["unit_of_measurement"].as_str(), unit, "{raw}");
        assert_eq!(c["device_class"].as_str(), dc, "{raw}");
        assert_eq!(c["state_class"].as_str(), sc, "{raw}");
        // One device per meter, identified by the serial the script captures.
        assert_eq!(
            c["device"]["identifiers"],
            serde_json::json!(["sml_1ESY1160"]),
            "{raw}"
        );
        assert_eq!(c["device"]["serial_number"], "1ESY1160", "{raw}");
        // Home Assistant's reading of the SENSOR payload sml published gives the published value.
        let template = c["value_template"].as_str().unwrap();
        assert_eq!(render(template, &sensor), value, "{template}");
    }

    // Tasmota discovery: the device and its sensors, under the pseudo-MAC.
    let mac = pseudo_mac(TOPIC);
    let tas = retained(port, &format!("tasmota/discovery/{mac}/+"), 2);
    let device: Json =
        serde_json::from_str(&tas[&format!("tasmota/discovery/{mac}/config")]).unwrap();
    assert_eq!(device["mac"], mac.as_str());
    assert_eq!(device["t"], TOPIC);
    assert_eq!(device["ft"], "home1/%prefix%/%topic%/");
    assert_eq!(
        (device["onln"].as_str(), device["ofln"].as_str()),
        (Some("Online"), Some("Offline"))
    );
    let sensors: Json =
        serde_json::from_str(&tas[&format!("tasmota/discovery/{mac}/sensors")]).unwrap();
    let keys: Vec<&str> = sensors["sn"]["EON"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{sensors}");
    for k in ["meter_id", "enrg_imp", "volts_l1", "power"] {
        assert!(keys.contains(&k), "{k} in {sensors}");
    }
    sml.stop();
}
