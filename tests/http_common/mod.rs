//! What the discovery and HTTP tests share: a meter script with units, an `=h` line and a serial
//! line; a plain-text decoder that also reads text (`M123 22803.012 233.9 1500` = entries 1..4);
//! and sml run in-process with its frontends (`run_with`), on a pty, stopped cleanly.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serialport::{SerialPort, TTYPort};
use sml::decode::{DecodeError, DecodeEvent, DecodeStats, Decoder, Reading, Telegram, Value};
use sml::runner::meter_task::DecoderFactory;
use sml::runner::{RunConfig, SinkConfig};

/// One OBIS meter `EON`: a serial number (`@#`), energy, voltage, power, and an `=h` line.
pub const SCRIPT: &str = ">D\n>M 1\n+1,3,o,0,9600,EON\n\
1,0-0:96.1.0(@#),Meter number,,meter_id,0\n\
1,1-0:1.8.0(@1,Energy import,kWh,enrg_imp,3\n\
1,=h<hr/>\n\
1,1-0:32.7.0(@1,Voltage L1,V,volts_l1,1\n\
1,1-0:16.7.0(@1,Power,W,power,0\n#\n";

pub fn script(text: &str) -> sml::script::Script {
    let compiled = sml::script::compile(text.as_bytes());
    compiled
        .script
        .unwrap_or_else(|| panic!("test script compiles: {:?}", compiled.diagnostics))
}

/// Plain-text telegrams, one per line: the n-th word is entry n, a number or else a text.
#[derive(Default)]
pub struct WordDecoder {
    buf: Vec<u8>,
    events: std::collections::VecDeque<DecodeEvent>,
    stats: DecodeStats,
}

impl Decoder for WordDecoder {
    fn handle_bytes(&mut self, _now: std::time::Instant, bytes: &[u8]) {
        for &b in bytes {
            if b != b'\n' {
                self.buf.push(b);
                continue;
            }
            let line = String::from_utf8_lossy(&self.buf).to_string();
            self.buf.clear();
            // `!` stands for a telegram whose CRC did not match.
            if line.trim() == "!" {
                self.stats.crc_errors += 1;
                self.events
                    .push_back(DecodeEvent::Error(DecodeError::BadCrc {
                        expected: 0x1234,
                        computed: 0x4321,
                    }));
                continue;
            }
            let readings: Vec<Reading> = line
                .split_whitespace()
                .enumerate()
                .map(|(i, w)| Reading {
                    entry: i as u16 + 1,
                    value: w
                        .parse()
                        .map(Value::Number)
                        .unwrap_or_else(|_| Value::Text(w.to_string())),
                })
                .collect();
            if !readings.is_empty() {
                self.stats.telegrams += 1;
                self.events
                    .push_back(DecodeEvent::Telegram(Telegram { readings }));
            }
        }
    }
    fn poll_event(&mut self) -> Option<DecodeEvent> {
        self.events.pop_front()
    }
    fn stats(&self) -> DecodeStats {
        self.stats
    }
}

pub fn word_decoders() -> DecoderFactory {
    Arc::new(|_m| Ok(Box::new(WordDecoder::default())))
}

/// A pty: the test keeps the meter's side, sml opens the other by name.
pub fn pty_meter() -> (TTYPort, PathBuf) {
    let (master, slave) = TTYPort::pair().unwrap();
    let path = PathBuf::from(slave.name().unwrap());
    drop(slave);
    (master, path)
}

pub fn run_config(text: &str, device: PathBuf, sink: SinkConfig) -> RunConfig {
    RunConfig {
        script: script(text),
        bindings: vec![sml::link::Binding {
            meter: 1,
            source: sml::link::Source::Serial(device),
        }],
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
        decoders: word_decoders(),
        hooks: Default::default(),
    }
}

/// `sml run` with its frontends, in-process: `common::start_sml_with`.
#[allow(unused_imports)] // not every test that shares this module starts a run
pub use crate::common::{start_sml_with as start, Running};

/// A GET as curl does it, over a plain socket: the status code, the headers and the body.
pub fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    auth: Option<&str>,
) -> (u16, String, String) {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        let b = base64::engine::general_purpose::STANDARD.encode(a);
        req.push_str(&format!("Authorization: Basic {b}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
}

/// `"Time":"..."` replaced by `"Time":"T"`.
pub fn without_time(payload: &str) -> String {
    let start = payload.find("\"Time\":\"").expect("a Time key") + 8;
    let end = start + payload[start..].find('"').unwrap();
    format!("{}T{}", &payload[..start], &payload[end..])
}

/// Write a telegram to the meter's side of the pty once sml has opened the other side (before
/// that, the write fails with a broken pipe).
pub fn send_telegram(master: &mut TTYPort, bytes: &[u8]) {
    use std::io::Write;
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match master.write_all(bytes).and_then(|_| master.flush()) {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() < end => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the meter's pty: {e}"),
        }
    }
}
