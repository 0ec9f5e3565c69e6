//! A simulated GPIO line for the `c` counter tests: the meter's side (a reed contact or an S0
//! output), speaking the edge records of `sml::decode::counter` (`[level][timestamp ns u64 BE]`)
//! over a TCP socket, which the meter task reads through its `tcp://` link exactly as it reads a
//! line through `gpio:CHIP:LINE`. This test machine's kernel has no `gpio-sim` module (and no
//! configfs), so the kernel side (`sml::link::gpio`) is tested on its own and this stands for the
//! line.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sml::decode::counter::Edge;

const MS: u64 = 1_000_000;

/// Edges of a line idle high with a pulse (low for `low_ms`) every `period_ms`, the first at
/// `start_ms`; `bounce` adds a 2 ms chatter after each fall, as a reed contact does.
pub fn pulses(count: usize, start_ms: u64, period_ms: u64, low_ms: u64, bounce: bool) -> Vec<Edge> {
    let mut edges = vec![Edge {
        high: true,
        at_ns: 0,
    }];
    for i in 0..count as u64 {
        let fall = (start_ms + i * period_ms) * MS;
        edges.push(Edge {
            high: false,
            at_ns: fall,
        });
        if bounce {
            edges.push(Edge {
                high: true,
                at_ns: fall + 2 * MS,
            });
            edges.push(Edge {
                high: false,
                at_ns: fall + 4 * MS,
            });
        }
        edges.push(Edge {
            high: true,
            at_ns: fall + low_ms * MS,
        });
    }
    edges
}

pub fn encode(edges: &[Edge]) -> Vec<u8> {
    edges.iter().flat_map(|e| e.encode()).collect()
}

/// A line that sends `bytes` to the first client half a second after it connects, then stays quiet (and connected) until
/// stopped, so the link is not reopened and the edges not seen twice.
pub struct Line {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Line {
    pub fn start(bytes: Vec<u8>) -> Line {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let mut client = None;
            while !stopped.load(Ordering::Relaxed) {
                if client.is_none() {
                    if let Ok((mut s, _)) = listener.accept() {
                        // After the run has booted (`>B` may set the count first, as on the ESP).
                        std::thread::sleep(Duration::from_millis(500));
                        s.write_all(&bytes).unwrap();
                        client = Some(s);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Line {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
