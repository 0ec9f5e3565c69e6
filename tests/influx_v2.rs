//! The InfluxDB 2.x sink against the exchange in `tests/fixtures/influx2/exchange.json`, served
//! by a loopback HTTP server in this test: the request line, the token, the content type and the
//! line protocol sml sends are checked byte for byte (timestamps aside), and the 2.x answers drive
//! it: 503 is retried with the same points, 422 `partial write` drops the point alone.
//!
//! No InfluxDB 2.x server installs here (see the fixture's `about`); a real 1.x is in
//! `influx_v1.rs`.

mod common;
mod influx_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{line_decoders, start_sml, wait_for};
use influx_support::{capture_log, compile, log_lines_with};
use serde_json::Value;
use serialport::{SerialPort, TTYPort};
use sml::link::{Binding, Source};
use sml::publish::influx::{InfluxConfig, Target};
use sml::publish::mqtt::Secret;
use sml::runner::SinkConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    method: String,
    target: String,
    authorization: String,
    content_type: String,
    /// Each line's timestamp replaced by `<ts>`.
    body: String,
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let (mut authorization, mut content_type, mut length) = (String::new(), String::new(), 0);
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        match k.to_ascii_lowercase().as_str() {
            "authorization" => authorization = v.trim().to_string(),
            "content-type" => content_type = v.trim().to_string(),
            "content-length" => length = v.trim().parse().ok()?,
            _ => {}
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    let body = String::from_utf8(body).ok()?;
    let body = body
        .lines()
        .map(|l| match l.rsplit_once(' ') {
            Some((point, ts)) if ts.chars().all(|c| c.is_ascii_digit()) => {
                format!("{point} <ts>\n")
            }
            _ => format!("{l}\n"),
        })
        .collect();
    Some(Request {
        method,
        target,
        authorization,
        content_type,
        body,
    })
}

fn respond(stream: &mut TcpStream, r: &Value) {
    let body = r["body"].as_str().unwrap();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        r["status"].as_u64().unwrap(),
        r["reason"].as_str().unwrap()
    );
    for (k, v) in r["headers"].as_object().unwrap() {
        head.push_str(&format!("{k}: {}\r\n", v.as_str().unwrap()));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
}

/// Serve the fixture's answers in order; what was asked, for the test to compare.
fn serve(exchanges: Vec<Value>) -> (u16, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let ok =
            serde_json::json!({"status": 204, "reason": "No Content", "headers": {}, "body": ""});
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            while let Some(req) = read_request(&mut reader) {
                let n = {
                    let mut seen = log.lock().unwrap();
                    seen.push(req);
                    seen.len() - 1
                };
                // Past the fixture (a teleperiod's SENSOR on a slow machine): taken.
                let answer = exchanges.get(n).map_or(&ok, |e| &e["response"]);
                respond(&mut stream, answer);
            }
        }
    });
    (port, seen)
}

fn expected(e: &Value) -> Request {
    let r = &e["request"];
    Request {
        method: r["method"].as_str().unwrap().into(),
        target: r["target"].as_str().unwrap().into(),
        authorization: r["headers"]["authorization"].as_str().unwrap().into(),
        content_type: r["headers"]["content-type"].as_str().unwrap().into(),
        body: r["body"].as_str().unwrap().into(),
    }
}

#[test]
fn the_v2_write_api_gets_the_token_and_points_and_its_answers_are_honoured() {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/influx2/exchange.json")).unwrap();
    let exchanges = fixture["exchanges"].as_array().unwrap().clone();
    let (port, seen) = serve(exchanges.clone());

    let (mut master, slave) = TTYPort::pair().unwrap();
    let config = sml::runner::RunConfig {
        script: compile(
            ">D\n>M 1\n+1,3,o,0,9600,EON\n\
             1,1-0:1.8.0(@1,Energy,kWh,enrg,3\n1,1-0:16.7.0(@1,Power,W,pwr,1\n#\n",
        ),
        bindings: vec![Binding {
            meter: 1,
            source: Source::Serial(slave.name().unwrap().into()),
        }],
        engine: sml::engine::scheduler::EngineConfig {
            every_telegram: true,
            ..Default::default()
        },
        replay_speed: sml::link::ReplaySpeed::Max,
        link_backoff: Default::default(),
        sink: SinkConfig::Influx {
            influx: Box::new(InfluxConfig {
                url: format!("http://127.0.0.1:{port}").parse().unwrap(),
                target: Target::V2 {
                    org: "home".into(),
                    bucket: "sml/meters".into(),
                    token: Secret::new("sml-test-token==".into()),
                },
                tls: Default::default(),
                topic: "myelectricmeter".into(),
                retry_cap: Duration::from_secs(1),
                queue_capacity: 100,
                spool: None,
            }),
            mqtt: None,
        },
        decoders: line_decoders(),
        hooks: Default::default(),
    };
    capture_log();
    let path = slave.name().unwrap();
    let running = start_sml(config);
    assert!(wait_for(Duration::from_secs(10), || {
        !log_lines_with(&format!("={path}): open")).is_empty()
    }));
    let served = |n: usize| seen.lock().unwrap().len() >= n;
    master.write_all(b"1.5 230.16\n").unwrap();
    assert!(wait_for(Duration::from_secs(10), || served(1)));
    // 503: the same point again, after the backoff.
    assert!(wait_for(Duration::from_secs(10), || served(2)));
    master.write_all(b"2.5 231.04\n").unwrap();
    assert!(wait_for(Duration::from_secs(10), || served(3)));
    let report = running.stop().influx.unwrap();

    let seen = seen.lock().unwrap();
    for (i, e) in exchanges.iter().enumerate() {
        let mut got = seen[i].clone();
        // The first teleperiod (5 s after the start) repeats the last telegram's point; on a
        // slow machine it may join a batch.
        got.body = dedup(&got.body);
        assert_eq!(got, expected(e), "request {i}");
    }
    assert_eq!((report.refused, report.left_queued), (1, 0), "{report:?}");
}

fn dedup(body: &str) -> String {
    let mut lines: Vec<&str> = body.lines().collect();
    lines.dedup();
    lines.iter().map(|l| format!("{l}\n")).collect()
}
