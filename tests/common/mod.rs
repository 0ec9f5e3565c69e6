//! Real parts for the `run_*` tests: an in-process rumqttd broker, a rumqttc subscriber, pty meters,
//! and a hand-built meter with a plain-text line decoder (`1.5 230.1\n` = entries 1 and 2), which
//! stands in for the protocol decoders where a test is about links and publishing, not decoding.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sml::decode::{DecodeEvent, DecodeStats, Decoder, Reading, Telegram, Value};
use sml::runner::meter_task::DecoderFactory;
use sml::script::model::*;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait for `cond`, polling; false after `limit` (a generous bound for slow machines).
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

// ---- the broker ----------------------------------------------------------------------------

pub fn broker_config(port: u16) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: 1 << 20,
        max_inflight_count: 200,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "v4".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let router = rumqttd::RouterConfig {
        max_connections: 1100,
        max_outgoing_packet_count: 1000,
        max_segment_size: 100 * 1024 * 1024,
        max_segment_count: 10,
        ..Default::default()
    };
    rumqttd::Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        ..Default::default()
    }
}

/// Start rumqttd on 127.0.0.1:`port` in this process (it runs until the process ends).
pub fn start_broker(port: u16) {
    let mut broker = rumqttd::Broker::new(broker_config(port));
    std::thread::spawn(move || {
        let _ = broker.start();
    });
    assert!(
        wait_for(Duration::from_secs(10), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "broker did not start"
    );
}

/// One message a subscriber saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
}

/// A rumqttc subscriber on `filter`, on its own thread; returns once the broker has acknowledged
/// the subscription. Messages arrive on the channel.
pub fn subscribe(port: u16, filter: &str) -> std::sync::mpsc::Receiver<Seen> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let filter = filter.to_string();
    let id = format!("observer-{}", free_port());
    std::thread::spawn(move || {
        let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = rumqttc::Client::new(o, 100);
        client.subscribe(filter, rumqttc::QoS::AtLeastOnce).unwrap();
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let seen = Seen {
                        topic: p.topic.clone(),
                        payload: String::from_utf8_lossy(&p.payload).into(),
                        retain: p.retain,
                    };
                    if tx.send(seen).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("subscription acknowledged");
    rx
}

/// The next message on `topic`, skipping others; panics after `limit`.
pub fn next_on(rx: &std::sync::mpsc::Receiver<Seen>, topic: &str, limit: Duration) -> Seen {
    let end = Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(s) if s.topic == topic => return s,
            Ok(_) => continue,
            Err(_) => panic!("nothing on {topic} within {limit:?}"),
        }
    }
}

// ---- a meter -------------------------------------------------------------------------------

/// A one-meter script with `names.len()` number lines (2 decimals) under prefix `EON`, at 9600 8N1.
pub fn script(names: &[&str]) -> Script {
    let mut text = String::from(">D\n>M 1\n+1,3,o,0,9600,EON\n");
    for (i, n) in names.iter().enumerate() {
        text.push_str(&format!("1,1-0:{}.8.0(@1,{n},,{n},2\n", i + 1));
    }
    text.push_str("#\n");
    sml::script::compile(text.as_bytes())
        .script
        .expect("test script compiles")
}

/// Plain-text telegrams: one line of blank-separated numbers, the n-th for entry n.
#[derive(Default)]
pub struct LineDecoder {
    buf: Vec<u8>,
    events: std::collections::VecDeque<DecodeEvent>,
    stats: DecodeStats,
}

impl Decoder for LineDecoder {
    fn handle_bytes(&mut self, _now: std::time::Instant, bytes: &[u8]) {
        self.stats.bytes_in += bytes.len() as u64;
        for &b in bytes {
            if b != b'\n' {
                self.buf.push(b);
                continue;
            }
            let line = String::from_utf8_lossy(&self.buf).to_string();
            self.buf.clear();
            let readings: Option<Vec<Reading>> = line
                .split_whitespace()
                .enumerate()
                .map(|(i, w)| {
                    w.parse().ok().map(|v| Reading {
                        entry: i as EntryNo + 1,
                        value: Value::Number(v),
                    })
                })
                .collect();
            match readings {
                Some(readings) if !readings.is_empty() => {
                    self.stats.telegrams += 1;
                    self.events
                        .push_back(DecodeEvent::Telegram(Telegram { readings }));
                }
                _ => {
                    self.stats.bytes_skipped += line.len() as u64 + 1;
                    self.events.push_back(DecodeEvent::Discarded {
                        bytes: line.len() + 1,
                    });
                }
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

pub fn line_decoders() -> DecoderFactory {
    Arc::new(|_m| Ok(Box::new(LineDecoder::default())))
}

/// Write `bytes` to the master side of a pty at 9600 8N1's pace (960 bytes/s), as a meter does.
pub fn send_at_9600(master: &mut serialport::TTYPort, bytes: &[u8]) {
    for chunk in bytes.chunks(16) {
        master.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_micros(16 * 1_000_000 / 960));
    }
    master.flush().unwrap();
}

/// `payload` with its `"Time":"..."` value replaced by `T`, after checking Tasmota's time format.
pub fn without_time(payload: &str) -> String {
    let start = payload.find("\"Time\":\"").expect("a Time key") + 8;
    let time = &payload[start..start + 19];
    assert!(
        chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%dT%H:%M:%S").is_ok(),
        "Time {time:?} in {payload}"
    );
    assert_eq!(&payload[start + 19..start + 20], "\"", "{payload}");
    format!("{}T{}", &payload[..start], &payload[start + 19..])
}

// ---- sml in this process ---------------------------------------------------------------------

/// `sml run` on its own thread and runtime, stopped cleanly or killed (no DISCONNECT, no goodbye).
pub struct Running {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Option<sml::runner::RunReport>>>,
}

pub fn start_sml(config: sml::runner::RunConfig) -> Running {
    start_sml_with(config, sml::runner::Frontends::default())
}

/// [`start_sml`] with the HTTP server and discovery (`run_with`).
pub fn start_sml_with(
    config: sml::runner::RunConfig,
    frontends: sml::runner::Frontends,
) -> Running {
    // sml's log goes to the test's output (shown when a test fails).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "sml=debug".into()),
        )
        .with_test_writer()
        .try_init();
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let run = rt.spawn(sml::runner::run_with(config, frontends, async {
            let _ = shutdown_rx.await;
        }));
        let outcome = rt.block_on(async {
            tokio::select! {
                r = run => Some(r.expect("run task").expect("sml run")),
                _ = kill_rx => None,
            }
        });
        // Killed: every task and socket is dropped as it stands.
        rt.shutdown_background();
        outcome
    });
    Running {
        shutdown: Some(shutdown_tx),
        kill: Some(kill_tx),
        thread: Some(thread),
    }
}

impl Running {
    /// Stop as Ctrl-C does; the report of the run.
    pub fn stop(mut self) -> sml::runner::RunReport {
        let _ = self.shutdown.take().unwrap().send(());
        self.thread
            .take()
            .unwrap()
            .join()
            .unwrap()
            .expect("a clean stop")
    }

    /// Wait for the run to end by itself (all links were replays).
    pub fn join(mut self) -> sml::runner::RunReport {
        self.thread
            .take()
            .unwrap()
            .join()
            .unwrap()
            .expect("a clean end")
    }

    /// Drop everything mid-flight, as a crash or `kill -9` would.
    pub fn kill(mut self) {
        let _ = self.kill.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn mqtt_config(port: u16, topic: &str) -> sml::publish::mqtt::MqttConfig {
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
        topics: sml::publish::topics::Topics::new("home1/%prefix%/%topic%/", topic).unwrap(),
        qos: rumqttc::QoS::AtLeastOnce,
        keep_alive: Duration::from_secs(30),
        retry_cap: Duration::from_secs(2),
        queue_capacity: 1000,
        spool: None,
    }
}

/// A run of `script(names)` with meter 1 bound to `source`, publishing every telegram.
pub fn run_config(
    names: &[&str],
    source: sml::link::Source,
    sink: sml::runner::SinkConfig,
) -> sml::runner::RunConfig {
    sml::runner::RunConfig {
        script: script(names),
        bindings: vec![sml::link::Binding { meter: 1, source }],
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

// ---- a real mosquitto ----------------------------------------------------------------------

/// A mosquitto broker on 127.0.0.1, killed when dropped. (rumqttd 0.19 neither refuses a password
/// with a CONNACK nor keeps retained messages as Home Assistant's brokers do; mosquitto does both.)
pub struct Mosquitto {
    child: std::process::Child,
    /// Its config and password file.
    pub dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// mosquitto on `port`, anonymous or with one `(user, password)`; `None` when it is not installed
/// (`.ci/run` installs it).
pub fn start_mosquitto(port: u16, login: Option<(&str, &str)>) -> Option<Mosquitto> {
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    let find = |name: &str| {
        ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
            .iter()
            .map(|d| PathBuf::from(d).join(name))
            .find(|p| p.exists())
    };
    let mosquitto = find("mosquitto")?;
    let dir = tempfile::tempdir().unwrap();
    let access = match login {
        None => "allow_anonymous true\n".to_string(),
        Some((user, password)) => {
            let passwords = dir.path().join("passwords");
            let made = Command::new(find("mosquitto_passwd")?)
                .arg("-b")
                .arg("-c")
                .arg(&passwords)
                .args([user, password])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(made.success(), "mosquitto_passwd failed");
            format!(
                "allow_anonymous false\npassword_file {}\n",
                passwords.display()
            )
        }
    };
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\n{access}persistence false\n\
             # As root, stay root: the files above are root's.\nuser root\n"
        ),
    )
    .unwrap();
    let child = Command::new(mosquitto)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "mosquitto did not start"
    );
    Some(Mosquitto { child, dir })
}
