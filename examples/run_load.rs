//! Load of `sml run`: N simulated SML meters on pseudo-terminals, each sending one telegram a
//! second (staggered over the second), all read by sml in this process on one single-threaded
//! runtime and published per telegram to MQTT. Prints CPU share of one core and peak RSS of this
//! process, minus the simulated meters' own thread (measured apart and subtracted: it runs here
//! only so the ptys need no second process).
//!
//!     mosquitto -p 18830 &
//!     cargo run --release --example run_load -- 18830 1 60      # 1 meter, 60 s
//!     cargo run --release --example run_load -- 18830 1000 30    # 1000 meters, 30 s
//!
//! All N meters are in one script, as `sml run` would carry them: one engine, one MQTT connection.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use sml::runner::{RunConfig, SinkConfig};

fn cpu_secs(path: &str) -> f64 {
    // The first field of schedstat: nanoseconds this thread ran on a CPU.
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    stat.split_whitespace()
        .next()
        .and_then(|ns| ns.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1e9
}

fn status(key: &str) -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .unwrap_or("")
        .trim()
        .to_string()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: run_load BROKER_PORT METERS SECONDS");
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let secs: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(60);
    let telegram = common::telegram();

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
            ..Default::default()
        },
        replay_speed: sml::link::ReplaySpeed::RealTime,
        link_backoff: Default::default(),
        sink: SinkConfig::Mqtt(Box::new(common::mqtt(port, "load"))),
        decoders: sml::runner::default_decoders(),
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
    std::thread::sleep(Duration::from_secs(2));
    let tid = {
        // The sml thread is the most recent one besides this; find it by name-less scan: the
        // process's threads minus this one, at start there are only main and sml (+ subscriber-free).
        let me = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        let mut others: Vec<i32> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|t| *t != me)
            .collect();
        others.sort();
        others
    };
    let stat_sml: Vec<String> = tid
        .iter()
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
    println!(
        "{n} meters, {sent} telegrams in {wall:.1} s: sml threads {:.2}% of one core; {}; {}",
        100.0 * cpu / wall,
        status("VmHWM"),
        status("VmRSS")
    );
    drop(sml_thread);
}
