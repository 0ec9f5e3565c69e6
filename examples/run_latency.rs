//! Latency from the last byte of a telegram on a pty to the SENSOR payload at an MQTT subscriber,
//! per-telegram mode, over 1,000 telegrams (one at a time, 20 ms apart).
//!
//!     mosquitto -p 18830 &
//!     cargo run --release --example run_latency -- 18830
//!     cargo run --release --example run_latency -- 18830 1000 hooks
//!
//! With `hooks`, the script also has `>F` (every 100 ms) and `>S` sections working on `sml[n]`, and
//! every payload goes through a user's `before_publish` (`--rhai`), so the figure includes them.
//!
//! sml runs in this process on its own single-threaded runtime, as `sml run` does.
//! `SML_HTTP=1` turns `--http` on (loopback, a free port) with the live page open: `/api/live`
//! fetched every 2 s, as the page does, and `/metrics` every 15 s, as Prometheus does.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use sml::runner::{RunConfig, SinkConfig};

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: run_latency BROKER_PORT");
    let count: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let with_hooks = std::env::args().nth(3).is_some_and(|a| a == "hooks");
    let telegram = common::telegram();
    let (mut master, slave) = serialport::TTYPort::pair().unwrap();
    let path = serialport::SerialPort::name(&slave).unwrap();

    // The subscriber.
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (client, mut conn) = rumqttc::Client::new(
            rumqttc::MqttOptions::new("latency-observer", "127.0.0.1", port),
            100,
        );
        client
            .subscribe("tele/latency/SENSOR", rumqttc::QoS::AtMostOnce)
            .unwrap();
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    ready_tx.send(()).unwrap()
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(_))) => {
                    tx.send(Instant::now()).unwrap()
                }
                Ok(_) => {}
                Err(e) => panic!("subscriber: {e}"),
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("subscribed");

    // sml.
    let engine = sml::engine::scheduler::EngineConfig {
        every_telegram: true,
        teleperiod: Duration::from_secs(3600),
        ..Default::default()
    };
    let mut script = common::sml_script(1);
    let mut hooks = sml::runner::HooksConfig::default();
    if with_hooks {
        script = hooked_script();
        let dir = std::env::temp_dir().join(format!("run_latency-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("post.rhai");
        std::fs::write(
            &file,
            "fn before_publish(p) {\n  p.M1.net = p.M1.power - 100.0;\n  this.max = if p.M1.net > (this.max ?? -1e9) { p.M1.net } else { this.max };\n  p.M1.max = this.max;\n  p\n}\n",
        )
        .unwrap();
        hooks.user_rhai = Some(file);
    }
    let config = RunConfig {
        script,
        bindings: vec![format!("1={path}").parse().unwrap()],
        engine,
        replay_speed: sml::link::ReplaySpeed::RealTime,
        link_backoff: Default::default(),
        sink: SinkConfig::Mqtt(Box::new(common::mqtt(port, "latency"))),
        decoders: sml::runner::default_decoders(),
        hooks,
    };
    let mut frontends = sml::runner::Frontends::default();
    if std::env::var_os("SML_HTTP").is_some() {
        let http = sml::http::HttpConfig::bind("127.0.0.1:0", None).unwrap();
        let addr = http.listener.local_addr().unwrap();
        frontends.http = Some(http);
        std::thread::spawn(move || {
            for i in 0u64.. {
                get(addr, "/api/live?since=0");
                if i % 8 == 0 {
                    get(addr, "/metrics");
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        });
        println!("--http on {addr}, polled");
    }
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(sml::runner::run_with(
            config,
            frontends,
            std::future::pending(),
        ))
        .unwrap();
    });
    // Past the first teleperiod (5 s after connecting), whose payload is not a telegram's.
    std::thread::sleep(Duration::from_secs(7));
    while rx.try_recv().is_ok() {}

    let mut lat = Vec::with_capacity(count);
    // A first telegram to settle the connection, not counted.
    for i in 0..=count {
        // Taken just before the write: the bound includes the write(2) of the telegram's bytes.
        let sent = Instant::now();
        master.write_all(&telegram).unwrap();
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("payload within 5 s");
        if i > 0 {
            lat.push(got.duration_since(sent));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "{} telegrams: p50 {:?}, p99 {:?}, max {:?}, min {:?}",
        lat.len(),
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1],
        lat[0]
    );
    // Peak RSS of the whole process (sml, the subscriber and this driver).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ?");
    println!("peak RSS {}", hwm.trim_start_matches("VmHWM:").trim());
}

/// One GET, the whole answer read and dropped.
fn get(addr: std::net::SocketAddr, path: &str) {
    use std::io::Read;
    if let Ok(mut s) = std::net::TcpStream::connect(addr) {
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
}

/// `common::sml_script(1)` with sections that run every 100 ms and every second.
fn hooked_script() -> sml::script::model::Script {
    let text = ">D\nn=0\navg=0\nt:tm=5\n>F\nn=n+1\nif n>50\nthen\nn=0\nendif\n>S\navg=(avg*9+sml[2])/10\nif tm==0\nthen\ntm=5\nprint %avg%\nendif\n>M 1\n+1,3,s,0,9600,M1\n1,77070100010800ff@1000,Import,kWh,import,4\n1,77070100100700ff@1,Power,W,power,1\n#\n";
    sml::script::compile(text.as_bytes())
        .script
        .expect("the hooked script compiles")
}
