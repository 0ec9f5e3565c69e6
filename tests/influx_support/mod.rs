//! Real parts for the `influx_*` tests: a Debian `influxd` 1.x started with its own directories on
//! loopback ports (stopped and started again on the same data), and its HTTP query API.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// sml's log lines, for the tests that check what it said.
pub static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn capture_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("sml=debug")
        .with_ansi(false)
        .with_writer(|| LogWriter)
        .try_init();
}

pub fn log_lines_with(needle: &str) -> Vec<String> {
    String::from_utf8_lossy(&LOG.lock().unwrap())
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Whether `influxd` is installed; tests skip (with a line saying so) when it is not.
pub fn have_influxd() -> bool {
    let found = Command::new("influxd")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipped: influxd (Debian package influxdb) is not installed");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Influxd {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    child: Option<Child>,
    /// `https` when started with a certificate.
    scheme: &'static str,
    agent: ureq::Agent,
    /// `Authorization` for the test's own queries when the server checks logins.
    admin: Option<String>,
}

/// A server certificate for 127.0.0.1 and the CA that signed it, made with `openssl`.
pub struct TestPki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `None` (and a line saying so) when `openssl` is not installed.
pub fn make_pki(dir: &Path) -> Option<TestPki> {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let made = run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=sml test CA",
    ]) && run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    if !made {
        eprintln!("skipped: openssl is not installed (or failed) to make test certificates");
        return None;
    }
    Some(TestPki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    })
}

impl Influxd {
    /// A fresh server with database `db`.
    pub fn start(db: &str) -> Influxd {
        Influxd::start_with(db, None, None)
    }

    /// A fresh server with database `db`, serving HTTPS with `pki`'s certificate when given, and
    /// checking logins with `admin` (user, password) as its administrator when given.
    pub fn start_with(db: &str, pki: Option<&TestPki>, admin: Option<(&str, &str)>) -> Influxd {
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let rpc_port = free_port();
        let d = dir.path();
        std::fs::write(
            d.join("influxdb.conf"),
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc_port}\"\n\
                 [meta]\n  dir = \"{meta}\"\n\
                 [data]\n  dir = \"{data}\"\n  wal-dir = \"{wal}\"\n  query-log-enabled = false\n\
                 [http]\n  bind-address = \"127.0.0.1:{http_port}\"\n  log-enabled = false\n\
                 auth-enabled = {auth}\n{tls}",
                auth = admin.is_some(),
                tls = pki.map_or(String::new(), |p| format!(
                    "  https-enabled = true\n  https-certificate = \"{}\"\n  \
                     https-private-key = \"{}\"\n",
                    p.cert.display(),
                    p.key.display()
                )),
                meta = d.join("meta").display(),
                data = d.join("data").display(),
                wal = d.join("wal").display(),
            ),
        )
        .unwrap();
        let agent = match pki {
            None => ureq::agent(),
            Some(p) => {
                let files = sml::publish::mqtt::TlsFiles {
                    ca: Some(p.ca.clone()),
                    ..Default::default()
                };
                let tls = sml::publish::mqtt::tls_config(&files).unwrap();
                ureq::AgentBuilder::new()
                    .tls_config(std::sync::Arc::new(tls))
                    .build()
            }
        };
        let mut s = Influxd {
            dir,
            http_port,
            child: None,
            scheme: if pki.is_some() { "https" } else { "http" },
            agent,
            admin: None,
        };
        s.resume();
        if let Some((user, password)) = admin {
            // The first user may be made without logging in, and must be an administrator.
            s.query(
                "",
                &format!("CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES"),
            );
            use base64::Engine;
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            s.admin = Some(format!("Basic {basic}"));
        }
        s.query("", &format!("CREATE DATABASE \"{db}\""));
        s
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.http_port)
    }

    /// Start the server (again) on the same directories and port; waits until it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "influxd is running already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("influxd.log"))
            .unwrap();
        self.child = Some(
            Command::new("influxd")
                .arg("-config")
                .arg(self.dir.path().join("influxdb.conf"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("influxd starts"),
        );
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if self
                .agent
                .get(&format!("{}/ping", self.url()))
                .call()
                .is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("influxd did not answer within 60 s: {}", self.log());
    }

    /// Stop the server as systemd does (SIGTERM) and wait for it to exit.
    pub fn pause(&mut self) {
        let mut child = self.child.take().expect("influxd is running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child.wait().unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("influxd.log")).unwrap_or_default()
    }

    /// An InfluxQL statement; the JSON answer (timestamps in nanoseconds).
    pub fn query(&self, db: &str, q: &str) -> Value {
        let mut request = self.agent.post(&format!("{}/query", self.url()));
        if let Some(auth) = &self.admin {
            request = request.set("Authorization", auth);
        }
        let answer = request
            .query("db", db)
            .query("epoch", "ns")
            .send_form(&[("q", q)])
            .unwrap_or_else(|e| panic!("query {q}: {e}"));
        let json: Value = serde_json::from_str(&answer.into_string().unwrap()).unwrap();
        if let Some(err) = json["results"][0].get("error") {
            panic!("query {q}: {err}");
        }
        json
    }

    /// The rows of a query's first series as (column name -> value) maps.
    pub fn rows(&self, db: &str, q: &str) -> Vec<serde_json::Map<String, Value>> {
        let json = self.query(db, q);
        let Some(series) = json["results"][0]["series"].as_array() else {
            return vec![];
        };
        let mut rows = vec![];
        for s in series {
            let columns: Vec<String> = s["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            for v in s["values"].as_array().unwrap() {
                let mut row = serde_json::Map::new();
                for (c, x) in columns.iter().zip(v.as_array().unwrap()) {
                    row.insert(c.clone(), x.clone());
                }
                rows.push(row);
            }
        }
        rows
    }

    /// Line protocol straight into `db` (to set a field's type before sml writes).
    pub fn write(&self, db: &str, lines: &str) {
        self.agent
            .post(&format!("{}/write", self.url()))
            .query("db", db)
            .send_string(lines)
            .unwrap_or_else(|e| panic!("write {lines}: {e}"));
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A script compiled from its text (panics with the diagnostics when it does not compile).
pub fn compile(text: &str) -> sml::script::model::Script {
    let c = sml::script::compile(text.as_bytes());
    c.script
        .unwrap_or_else(|| panic!("script does not compile: {:?}", c.diagnostics))
}
