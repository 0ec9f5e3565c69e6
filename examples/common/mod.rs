//! Shared by the `sml run` measurement tools: a hand-built SML meter (the `emh-ehz-sml.sml` lines
//! for 1.8.0 and 16.7.0) and the synthetic SML telegram from ../shared/bench.
#![allow(dead_code)]

use sml::script::model::*;

pub const TELEGRAM: &str = "../shared/bench/sml-10-entries.bin";

pub fn telegram() -> Vec<u8> {
    std::fs::read(TELEGRAM)
        .unwrap_or_else(|e| panic!("{TELEGRAM}: {e} (the shared bench inputs are needed)"))
}

fn obis(hex: &str) -> SmlPattern {
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| Some(u8::from_str_radix(&hex[i..i + 2], 16).unwrap()))
        .collect();
    SmlPattern { bytes, bit: None }
}

/// A script with `n` SML meters (indexes 1..=n), each with two lines, prefix `M<i>`.
pub fn sml_script(n: u16) -> Script {
    let mut entry = 0u16;
    let meters = (1..=n)
        .map(|index| {
            let mut metric = |hex: &str, divisor: f64, name: &str, decimals: u32| {
                entry += 1;
                Metric {
                    pattern: obis(hex),
                    value: ValueSpec::Number {
                        divisor,
                        offset: 0.0,
                    },
                    output: Output {
                        entry,
                        line: u32::from(entry),
                        label: name.into(),
                        unit: String::new(),
                        name: name.into(),
                        precision: Precision::from_field(decimals),
                    },
                }
            };
            let metrics = vec![
                metric("77070100010800ff", 1000.0, "import", 4),
                metric("77070100100700ff", 1.0, "power", 1),
            ];
            Meter {
                index,
                line: u32::from(index),
                source: MeterSource::Pin(3),
                serial: SerialSettings {
                    baud: 9600,
                    data_bits: 8,
                    parity: Parity::None,
                    stop_bits: 1,
                },
                flags: 0,
                param: 9600,
                prefix: Some(format!("M{index}")),
                tx: None,
                requests: Requests::default(),
                options: MeterOptions::default(),
                decoding: Decoding::Sml(metrics),
                derived: vec![],
                html: vec![],
            }
        })
        .collect();
    Script {
        string_capacity: 19,
        declarations: vec![],
        sections: vec![],
        meters,
    }
}

pub fn mqtt(port: u16, topic: &str) -> sml::publish::mqtt::MqttConfig {
    use sml::publish::mqtt::*;
    MqttConfig {
        broker: BrokerUrl {
            host: "127.0.0.1".into(),
            port,
            tls: false,
        },
        tls: TlsFiles::default(),
        client_id: format!("sml-{topic}"),
        user: None,
        password: None,
        topics: sml::publish::topics::Topics::new("%prefix%/%topic%/", topic).unwrap(),
        qos: rumqttc::QoS::AtLeastOnce,
        keep_alive: std::time::Duration::from_secs(30),
        retry_cap: std::time::Duration::from_secs(2),
        queue_capacity: 10_000,
        spool: None,
    }
}
