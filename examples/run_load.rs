//! Load of `sml run`: N simulated SML meters on pseudo-terminals, each sending one telegram a
//! second (staggered over the second), all read by sml in this process on one single-threaded
//! runtime and published per telegram to MQTT, and a subscriber counting what reaches the broker's
//! other side. Prints the CPU share of one core taken by sml's threads, the peak and current RSS of
//! this process (sml, the subscriber and the simulated meters together), and how many of the
//! expected payloads (one per telegram) the subscriber got.
//!
//!     mosquitto -p 18830 &
//!     cargo run --release --example run_load -- 18830 1 60      # 1 meter, 60 s
//!     cargo run --release --example run_load -- 18830 1000 30    # 1000 meters, 30 s
//!
//! All N meters are in one script, as `sml run` would carry them: one engine, one MQTT connection.
//! The simulated meters run on this process's main thread and the subscriber on its own thread;
//! neither is counted in the CPU share.

mod common;

use common::{cpu_secs, gettid, status};

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sml::runner::{RunConfig, SinkConfig};

const USAGE: &str = "usage: run_load BROKER_PORT [METERS (1)] [SECONDS (60)]";

/// A subscriber on its own thread counting the payloads on `topic`; returns the count and the
/// thread's id (to leave it out of sml's CPU).
fn count_payloads(port: u16, topic: &str) -> (Arc<AtomicU64>, i32) {
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    let topic = topic.to_string();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut options = rumqttc::MqttOptions::new("load-observer", "127.0.0.1", port);
        // A teleperiod payload of thousands of meters is far over rumqttc's 10 KiB default.
        options.set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut conn) = rumqttc::Client::new(options, 10_000);
        client.subscribe(&topic, rumqttc::QoS::AtLeastOnce).unwrap();
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    let _ = ready_tx.send(gettid());
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(_))) => {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("subscriber: {e}");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    });
    let tid = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the subscriber reaches the broker within 10 s");
    (count, tid)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|a| a.parse().ok()).expect(USAGE);
    let n: usize = args.get(2).map_or(1, |a| a.parse().expect(USAGE));
    let secs: u64 = args.get(3).map_or(60, |a| a.parse().expect(USAGE));
    let telegram = common::telegram();

    let mut masters = Vec::new();
    let mut paths = Vec::new();
    for _ in 0..n {
        let (m, s) = serialport::TTYPort::pair().unwrap();
        paths.push(serialport::SerialPort::name(&s).unwrap());
        masters.push(m);
        drop(s);
    }

    let (delivered, subscriber_tid) = count_payloads(port, "tele/load/SENSOR");
    let config = RunConfig {
        script: common::sml_script(n as u16),
        bindings: paths
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}={p}", i + 1).parse().unwrap())
            .collect(),
        engine: sml::engine::scheduler::EngineConfig {
            every_telegram: true,
            // Only the first teleperiod (5 s after connecting, before any telegram: STATE only)
            // falls in the run, so every SENSOR counted is a telegram's.
            teleperiod: sml::engine::scheduler::TELEPERIOD_MAX,
            ..Default::default()
        },
        replay_speed: sml::link::ReplaySpeed::RealTime,
        link_backoff: Default::default(),
        sink: SinkConfig::Mqtt(Box::new(common::mqtt(port, "load"))),
        decoders: sml::runner::default_decoders(),
        hooks: Default::default(),
    };
    let sml_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            sml::runner::run(config, std::future::pending())
                .await
                .unwrap();
        });
    });
    // Past the first teleperiod, 5 s after sml connects.
    std::thread::sleep(Duration::from_secs(7));
    let me = gettid();
    // sml's threads: every thread of this process but this one (the meters) and the subscriber.
    let stat_sml: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|t| *t != me && *t != subscriber_tid)
        .map(|t| format!("/proc/self/task/{t}/schedstat"))
        .collect();
    let before = delivered.load(Ordering::Relaxed);
    let cpu_start: f64 = stat_sml.iter().map(|p| cpu_secs(p)).sum();
    let start = Instant::now();
    let gap = Duration::from_secs(1).as_secs_f64() / n as f64;
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let second = Instant::now();
        for (i, m) in masters.iter_mut().enumerate() {
            let due = second + Duration::from_secs_f64(gap * i as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            m.write_all(&telegram).unwrap();
            sent += 1;
        }
        if let Some(wait) = (second + Duration::from_secs(1)).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu: f64 = stat_sml.iter().map(|p| cpu_secs(p)).sum::<f64>() - cpu_start;
    let (hwm, rss) = (status("VmHWM"), status("VmRSS"));

    // Let what is in flight arrive: until nothing more comes for 2 s (at most 30 s).
    let drain_until = Instant::now() + Duration::from_secs(30);
    let mut last = delivered.load(Ordering::Relaxed);
    while Instant::now() < drain_until {
        std::thread::sleep(Duration::from_secs(2));
        let now = delivered.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let got = delivered.load(Ordering::Relaxed) - before;
    println!(
        "{n} meters, {sent} telegrams in {wall:.1} s: sml threads {:.2}% of one core; {hwm}; {rss}; \
         payloads delivered {got} of {sent} expected ({:.1}%)",
        100.0 * cpu / wall,
        100.0 * got as f64 / sent.max(1) as f64,
    );
    drop(sml_thread);
}
