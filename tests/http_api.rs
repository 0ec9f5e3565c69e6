//! `--http` over real sockets: Tasmota's `/cm?cmnd=Status%2010` against the SENSOR payload sml
//! published, `/metrics` read back with a Prometheus text-format parser, and basic auth.

mod common;
mod http_common;

use std::time::Duration;

use common::wait_for;
use http_common::*;
use sml::http::HttpConfig;
use sml::publish::mqtt::Secret;
use sml::publish::RecordingSink;
use sml::runner::{Frontends, SinkConfig};

const WAIT: Duration = Duration::from_secs(20);

/// sml with `--http` on a free loopback port, publishing into memory.
fn start_with_http(
    password: Option<&str>,
) -> (
    Running,
    std::net::SocketAddr,
    RecordingSink,
    serialport::TTYPort,
) {
    let (meter, device) = pty_meter();
    let sink = RecordingSink::default();
    let config = run_config(SCRIPT, device, SinkConfig::Recording(sink.clone()));
    let http = HttpConfig::bind("127.0.0.1:0", password.map(|p| Secret::new(p.into()))).unwrap();
    let addr = http.listener.local_addr().unwrap();
    let sml = start(
        config,
        Frontends {
            http: Some(http),
            discovery: None,
        },
    );
    (sml, addr, sink, meter)
}

fn last_sensor(sink: &RecordingSink) -> Option<String> {
    sink.published
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|p| match p {
            sml::engine::scheduler::Publication::Sensor(s) => Some(s.clone()),
            _ => None,
        })
}

#[test]
fn status_10_answers_the_sensor_object_and_metrics_parse_as_prometheus() {
    let (sml, addr, sink, mut meter) = start_with_http(None);

    // Before any telegram: Tasmota's answer with the time alone.
    let (code, head, body) = http_get(addr, "/cm?cmnd=Status%2010", None);
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(without_time(&body), r#"{"StatusSNS":{"Time":"T"}}"#);

    send_telegram(&mut meter, b"1ESY1160 22803.012 233.9 1500\n");
    send_telegram(&mut meter, b"!\n");
    send_telegram(&mut meter, b"1ESY1160 22803.013 234.1 1480\n");
    assert!(
        wait_for(WAIT, || last_sensor(&sink)
            .is_some_and(|s| s.contains("234.1"))),
        "no SENSOR payload"
    );
    let sensor = last_sensor(&sink).unwrap();
    for cmnd in ["Status%2010", "status+10", "STATUS%2010"] {
        let (_, _, body) = http_get(addr, &format!("/cm?cmnd={cmnd}"), None);
        // The same object as SENSOR, byte for byte; only the time is the time of asking.
        assert_eq!(
            without_time(&body),
            format!("{{\"StatusSNS\":{}}}", without_time(&sensor)),
            "{cmnd}"
        );
    }
    assert_eq!(
        without_time(&sensor),
        r#"{"Time":"T","EON":{"meter_id":"1ESY1160","enrg_imp":22803.013,"volts_l1":234.1,"power":1480}}"#
    );
    let (_, _, unknown) = http_get(addr, "/cm?cmnd=Power%20On", None);
    assert_eq!(unknown, r#"{"Command":"Unknown"}"#);

    let (code, head, text) = http_get(addr, "/metrics", None);
    assert_eq!(code, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    let eon = [("meter", "EON")];
    assert_eq!(
        value(
            "sml_value",
            &[("meter", "EON"), ("name", "volts_l1"), ("unit", "V")]
        ),
        Some(234.1),
        "{text}"
    );
    assert_eq!(
        value("sml_value", &[("name", "enrg_imp"), ("unit", "kWh")]),
        Some(22803.013),
        "{text}"
    );
    assert_eq!(
        value("sml_value", &[("name", "power"), ("unit", "W")]),
        Some(1480.0),
        "{text}"
    );
    // A text value is no number: not a sample.
    assert_eq!(value("sml_value", &[("name", "meter_id")]), None, "{text}");
    assert_eq!(value("sml_telegrams_total", &eon), Some(2.0), "{text}");
    assert_eq!(value("sml_crc_errors_total", &eon), Some(1.0), "{text}");
    assert_eq!(
        value("sml_rejected_total", &[("meter", "EON"), ("reason", "crc")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value("sml_timeouts_total", &eon), Some(0.0), "{text}");
    assert_eq!(value("sml_link_drops_total", &eon), Some(0.0), "{text}");
    // No broker, no queue.
    assert_eq!(value("sml_mqtt_queue_length", &[]), None, "{text}");
    sml.stop();
}

#[test]
fn with_a_password_every_page_asks_for_it() {
    let (sml, addr, _sink, _meter) = start_with_http(Some("s3cret"));
    for path in ["/", "/cm?cmnd=Status%2010", "/metrics", "/api/live"] {
        let (code, head, body) = http_get(addr, path, None);
        assert_eq!(code, 401, "{path}");
        assert!(head.contains("Basic realm=\"sml\""), "{head}");
        assert!(!body.contains("s3cret"));
        assert_eq!(http_get(addr, path, Some("admin:wrong")).0, 401, "{path}");
        assert_eq!(http_get(addr, path, Some("admin:s3cret")).0, 200, "{path}");
    }
    sml.stop();
}
