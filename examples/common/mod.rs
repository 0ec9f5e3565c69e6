//! Shared by the `sml run` measurement tools: a hand-built SML meter (the `emh-ehz-sml.sml` lines
//! for 1.8.0 and 16.7.0) and the synthetic SML telegram from ../shared/bench.
#![allow(dead_code)]

use sml::script::model::*;

pub const TELEGRAM: &str = "../shared/bench/sml-10-entries.bin";

pub fn telegram() -> Vec<u8> {
    std::fs::read(TELEGRAM)
        .unwrap_or_else(|e| panic!("{TELEGRAM}: {e} (the shared bench inputs are needed)"))
}

/// A script with `n` SML meters (indexes 1..=n), each with two lines, prefix `M<i>`.
pub fn sml_script(n: u16) -> Script {
    let mut text = format!(">D\n>M {n}\n");
    for i in 1..=n {
        text.push_str(&format!("+{i},3,s,0,9600,M{i}\n"));
    }
    for i in 1..=n {
        text.push_str(&format!(
            "{i},77070100010800ff@1000,Import,kWh,import,4\n{i},77070100100700ff@1,Power,W,power,1\n"
        ));
    }
    text.push_str("#\n");
    sml::script::compile(text.as_bytes())
        .script
        .expect("load script compiles")
}

pub fn mqtt(port: u16, topic: &str) -> sml::publish::mqtt::MqttConfig {
    use sml::publish::mqtt::*;
    MqttConfig {
        broker: BrokerUrl {
            host: "127.0.0.1".into(),
            port,
            tls: false,
        },
        more_brokers: vec![],
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

// ---- what the load tools measure ----

/// CPU seconds a thread has run, from its schedstat file (the first field: nanoseconds on a CPU).
pub fn cpu_secs(path: &str) -> f64 {
    // The first field of schedstat: nanoseconds this thread ran on a CPU.
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    stat.split_whitespace()
        .next()
        .and_then(|ns| ns.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1e9
}

/// A line of /proc/self/status (`VmHWM:`, `VmRSS:`), whitespace folded.
pub fn status(key: &str) -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The calling thread's id, for its /proc/self/task/<tid>/schedstat.
pub fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}
