//! Real parts for the `service_*` tests: systemd's side of `$NOTIFY_SOCKET` (a Unix datagram socket
//! the test binds), the `sml` binary started as the unit starts it (`WATCHDOG_PID` is the process's
//! own pid, as systemd sets it), a broker (mosquitto when installed, else the in-process rumqttd),
//! a TCP gate in front of it that keeps the broker away until opened, and an OBIS text meter on a
//! pty whose every telegram has its own value.
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common;

/// One meter, one value: `E1` (or the name given) from `1-0:1.8.0`, 3 decimals.
pub fn meter_script(name: &str) -> String {
    format!(">D\n>M 1\n+1,3,o,0,9600,EON\n1,1-0:1.8.0(@1,Energy,kWh,{name},3\n#\n")
}

/// An OBIS text telegram (IEC 62056-21 style, no checksum) carrying `value`.
pub fn telegram(value: f64) -> Vec<u8> {
    format!("/ABC5SIM01\r\n\r\n1-0:1.8.0({value:010.3}*kWh)\r\n!\r\n").into_bytes()
}

/// systemd's end of `$NOTIFY_SOCKET`.
pub struct NotifySocket {
    pub path: PathBuf,
    socket: UnixDatagram,
    /// Every datagram received so far, in order.
    pub seen: Vec<String>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifySocket {
            path,
            socket,
            seen: Vec::new(),
        }
    }

    /// The next datagram with a line for which `want` holds; panics after `limit`, showing what came.
    pub fn wait_for(&mut self, limit: Duration, want: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + limit;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                self.seen.push(text.clone());
                if text.lines().any(&want) {
                    return text;
                }
            }
        }
        panic!("not notified within {limit:?}; got {:#?}", self.seen);
    }
}

/// `sml run ARGS` as the unit runs it: `$NOTIFY_SOCKET`, and with `watchdog`, `$WATCHDOG_USEC` with
/// `$WATCHDOG_PID` set to the process's own pid (a shell that `exec`s keeps its pid). stderr is
/// piped; `env` adds variables.
pub fn start_sml(
    notify: &Path,
    watchdog: Option<Duration>,
    args: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("WATCHDOG_PID=${WATCHDOG_PID:-$$}; export WATCHDOG_PID; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_sml"))
        .args(args)
        .env("NOTIFY_SOCKET", notify)
        .env_remove("WATCHDOG_USEC")
        .env_remove("JOURNAL_STREAM")
        .env_remove("SML_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(w) = watchdog {
        cmd.env("WATCHDOG_USEC", w.as_micros().to_string());
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// Wait for the child's exit within `limit`; its exit code and stderr. Kills it after `limit`.
pub fn exit_within(mut child: Child, limit: Duration) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sml did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    (code, reader.join().unwrap(), took)
}

/// A broker on a free port: mosquitto when installed (`.ci/run` installs it), else rumqttd in
/// this process. Keep the returned guard alive.
pub fn broker() -> (u16, Option<common::Mosquitto>) {
    let port = common::free_port();
    match common::start_mosquitto(port, None) {
        Some(m) => (port, Some(m)),
        None => {
            common::start_broker(port);
            (port, None)
        }
    }
}

/// A TCP gate to the broker: while closed it accepts and drops every connection (the broker is
/// away, as a dead network looks to a client); once opened it forwards them.
pub struct Gate {
    pub port: u16,
    open: Arc<AtomicBool>,
}

impl Gate {
    pub fn to(broker: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(false));
        let is_open = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !is_open.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", broker)) else {
                    continue;
                };
                pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(server, client);
            }
        });
        Gate { port, open }
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

/// A pty meter: the master side to write telegrams to, and the slave's device path for `--port`.
pub fn pty_meter() -> (serialport::TTYPort, String) {
    use serialport::SerialPort;
    let (master, slave) = serialport::TTYPort::pair().unwrap();
    let path = slave.name().unwrap();
    // The slave stays open in this process, so the pty lives while sml reopens it on a reload.
    std::mem::forget(slave);
    (master, path)
}

pub fn send(master: &mut serialport::TTYPort, bytes: &[u8]) {
    master.write_all(bytes).unwrap();
    master.flush().unwrap();
}
