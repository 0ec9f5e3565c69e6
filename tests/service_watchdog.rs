//! The watchdog pings come from the engine loop itself: while the loop is stuck, they stop (so
//! systemd restarts a hung sml), and they resume when it runs again. A decoder that blocks the
//! runtime's one thread for 3 s stands in for a hang; the pings go to a `$NOTIFY_SOCKET` the test
//! binds.
//!
//! One test in its own binary: it sets `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` for
//! this process, as systemd does for a service.

mod common;
mod service_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use service_support::NotifySocket;
use sml::decode::{DecodeEvent, DecodeStats, Decoder};
use sml::link::Source;
use sml::publish::RecordingSink;
use sml::runner::SinkConfig;

const STALL: Duration = Duration::from_secs(3);

/// The plain-text line decoder, but a `stall` line blocks the thread it runs on.
#[derive(Default)]
struct Stalling(LineDecoder);

impl Decoder for Stalling {
    fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.windows(5).any(|w| w == b"stall") {
            std::thread::sleep(STALL);
            return;
        }
        self.0.handle_bytes(now, bytes)
    }
    fn poll_event(&mut self) -> Option<DecodeEvent> {
        self.0.poll_event()
    }
    fn stats(&self) -> DecodeStats {
        self.0.stats()
    }
}

#[test]
fn a_stuck_engine_loop_stops_the_watchdog_pings_and_they_resume_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    std::env::set_var("NOTIFY_SOCKET", &notify.path);
    std::env::set_var("WATCHDOG_USEC", "200000");
    std::env::set_var("WATCHDOG_PID", std::process::id().to_string());

    let (mut meter, pty) = service_support::pty_meter();
    let mut config = run_config(
        &["E"],
        Source::Serial(pty.into()),
        SinkConfig::Recording(RecordingSink::default()),
    );
    config.decoders = Arc::new(|_m| Ok(Box::new(Stalling::default())));
    let sml = start_sml(config);
    notify.wait_for(Duration::from_secs(20), |l| l == "READY=1");
    // Pings every 100 ms while the loop runs.
    for _ in 0..3 {
        notify.wait_for(Duration::from_secs(10), |l| l == "WATCHDOG=1");
    }
    service_support::send(&mut meter, b"stall\n");

    // The longest silence between two pings around the stall: at least most of it.
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    let until = Instant::now() + STALL + Duration::from_secs(10);
    while longest < STALL - Duration::from_millis(500) && Instant::now() < until {
        notify.wait_for(Duration::from_secs(20), |l| l == "WATCHDOG=1");
        longest = longest.max(last.elapsed());
        last = Instant::now();
    }
    assert!(
        longest >= STALL - Duration::from_millis(500),
        "the pings went on while the loop was stuck (longest gap {longest:?})"
    );
    // The loop runs again: so do the pings.
    for _ in 0..3 {
        notify.wait_for(Duration::from_secs(10), |l| l == "WATCHDOG=1");
    }
    sml.stop();
}
