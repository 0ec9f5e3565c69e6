//! Load of `sml run --influx`: `run_load`'s N simulated SML meters (one telegram a second each,
//! staggered), read by sml in this process and written per telegram to InfluxDB 1.x by the
//! InfluxDB sink alone (no MQTT). Prints the CPU share of one core taken by sml's threads (the
//! engine's runtime and the sink's writer thread), the peak and current RSS of this process (sml
//! and the simulated meters), and how many of the points sent InfluxDB holds afterwards, with the
//! points per second written. Set beside `run_load` (MQTT only) for the same N.
//!
//!     influxd -config ...   # a 1.x server with database `load` (see tests/e2e/run.sh)
//!     cargo run --release --example influx_load -- http://127.0.0.1:8086 load 1000 30
//!
//! The database should be empty: points are counted with `count(power)` over every meter.
//!
//! Measured on the 2-core development machine (other builds running), release, 30 s: 1,000
//! meters, MQTT only 6.8 % of one core, RSS 19.8 MB; InfluxDB only 5.4 %, RSS 21.0 MB, 30,000 of
//! 30,000 points written (1,000 points/s; influxd itself 0.35 s of CPU). 2,000 meters for 20 s
//! (before the sink learnt read times): MQTT only 11.8 %, 33.9 MB; InfluxDB only 8.8 %, 35.7 MB,
//! 40,000 of 40,000 points (2,000 points/s).

mod common;

use common::{cpu_secs, gettid, status};

use std::io::Write;
use std::time::{Duration, Instant};

use sml::publish::influx::{InfluxConfig, Target};
use sml::runner::{RunConfig, SinkConfig};

const USAGE: &str = "usage: influx_load INFLUX_URL DATABASE [METERS (1)] [SECONDS (60)]";

/// Points InfluxDB holds: `count(power)` summed over the meters' measurements.
fn points_in(url: &str, db: &str) -> u64 {
    let answer = ureq::get(&format!("{url}/query"))
        .query("db", db)
        .query("q", "SELECT count(power) FROM /^M[0-9]+$/")
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    json["results"][0]["series"].as_array().map_or(0, |s| {
        s.iter().filter_map(|s| s["values"][0][1].as_u64()).sum()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect(USAGE).clone();
    let db = args.get(2).expect(USAGE).clone();
    let n: usize = args.get(3).map_or(1, |a| a.parse().expect(USAGE));
    let secs: u64 = args.get(4).map_or(60, |a| a.parse().expect(USAGE));
    let telegram = common::telegram();
    let already = points_in(&url, &db);

    let mut masters = Vec::new();
    let mut paths = Vec::new();
    for _ in 0..n {
        let (m, s) = serialport::TTYPort::pair().unwrap();
        paths.push(serialport::SerialPort::name(&s).unwrap());
        masters.push(m);
        drop(s);
    }
    let config = RunConfig {
        script: common::sml_script(n as u16),
        bindings: paths
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}={p}", i + 1).parse().unwrap())
            .collect(),
        engine: sml::engine::scheduler::EngineConfig {
            every_telegram: true,
            teleperiod: sml::engine::scheduler::TELEPERIOD_MAX,
            ..Default::default()
        },
        replay_speed: sml::link::ReplaySpeed::RealTime,
        link_backoff: Default::default(),
        sink: SinkConfig::Influx {
            influx: Box::new(InfluxConfig {
                url: url.parse().expect(USAGE),
                target: Target::V1 {
                    database: db.clone(),
                    user: None,
                    password: None,
                },
                tls: Default::default(),
                topic: "load".into(),
                retry_cap: Duration::from_secs(2),
                queue_capacity: 100_000,
                spool: None,
            }),
            mqtt: None,
        },
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
    // As run_load: past the first teleperiod (5 s after start, before any telegram).
    std::thread::sleep(Duration::from_secs(7));
    let me = gettid();
    let stat_sml: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|t| *t != me)
        .map(|t| format!("/proc/self/task/{t}/schedstat"))
        .collect();
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

    // What is still batching (1 s) or in flight: until the count stops growing (at most 30 s).
    let drain_until = Instant::now() + Duration::from_secs(30);
    let mut last = points_in(&url, &db);
    while Instant::now() < drain_until {
        std::thread::sleep(Duration::from_secs(2));
        let now = points_in(&url, &db);
        if now == last {
            break;
        }
        last = now;
    }
    let got = last - already;
    println!(
        "{n} meters, {sent} telegrams in {wall:.1} s: sml threads {:.2}% of one core; {hwm}; {rss}; \
         points in InfluxDB {got} of {sent} ({:.1}%), {:.0} points/s",
        100.0 * cpu / wall,
        100.0 * got as f64 / sent.max(1) as f64,
        got as f64 / wall,
    );
    drop(sml_thread);
}
