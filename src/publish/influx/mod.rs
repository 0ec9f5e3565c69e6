/*!
The InfluxDB sink (`--influx URL`): SENSOR payloads straight into InfluxDB 1.x or 2.x as line
protocol, without mqttwarn in between, and with the MQTT sink's no-loss guarantee.

Three parts: [`line_protocol`] turns a SENSOR payload into points; [`delivery`] decides what to
write when and what an answer means (no I/O); this module is the thin adapter, a thread of its own
that sends the writes over HTTP(S) with a blocking client (`ureq`, rustls) and waits between them,
so neither the network nor the spool's disk ever holds up the runtime that serves the meters.
The engine's side, [`InfluxSink`], only pushes into a channel.

Each point's timestamp is when its meter's latest telegram was read (the runner tells the sink
through [`Sink::handle_read`]), so a teleperiod's SENSOR repeats a telegram's point with the same
timestamp instead of inventing a sample; values no telegram brought (none read yet) take the
publication's time. A point that waited for InfluxDB (an outage, a restart of sml with `--spool`)
keeps its timestamp.
*/

pub mod delivery;
pub mod line_protocol;

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{error, warn};

use self::delivery::{Answer, InfluxDelivery, OUTBOX_TOPIC};
use self::line_protocol::{sensor_to_lines, MeterTags};
use super::mqtt::{Secret, TlsFiles};
use super::outbox::Outbox;
use super::{PublishError, Sink};
use crate::backoff::Backoff;
use crate::engine::scheduler::Publication;
use crate::script::model::{MeterIndex, Script};

pub use self::delivery::InfluxReport;

/// The first retry delay; they double up to [`InfluxConfig::retry_cap`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// A clean exit waits this long for the queue to empty (the spool keeps the rest).
pub const DRAIN_ON_EXIT: Duration = Duration::from_secs(5);
/// One write's HTTP exchange at most.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The spool's subdirectory for the sink's journal: a file of its own beside MQTT's.
pub const SPOOL_SUBDIR: &str = "influx";

/// `http://host[:port][/path]` or `https://...`: where InfluxDB's HTTP API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfluxUrl {
    /// Without a trailing `/`.
    pub base: String,
    pub tls: bool,
}

impl FromStr for InfluxUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "'{s}': expected http://host:8086 or https://host:8086"
            ));
        };
        if rest.contains('@') {
            // Shown without the part that may hold a password.
            return Err(format!(
                "'{}://***@...': credentials do not go in the URL (it shows in `ps` and in logs); \
                 use --influx-user with --influx-password-file (1.x) or --influx-token-file (2.x)",
                if tls { "https" } else { "http" }
            ));
        }
        if rest.contains(['?', '#']) {
            return Err(format!(
                "'{s}': give the server's address only; the database goes in --influx-db (1.x) \
                 or --influx-bucket (2.x)"
            ));
        }
        let rest = rest.trim_end_matches('/');
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty() || host.starts_with(':') {
            return Err(format!("'{s}': no host"));
        }
        Ok(InfluxUrl {
            base: format!("{}://{rest}", if tls { "https" } else { "http" }),
            tls,
        })
    }
}

/// Where the points go, with the server generation's own API and credentials.
#[derive(Debug, Clone)]
pub enum Target {
    /// `/write?db=...`, Basic authentication when a user is given.
    V1 {
        database: String,
        user: Option<String>,
        password: Option<Secret>,
    },
    /// `/api/v2/write?org=...&bucket=...`, `Authorization: Token ...`.
    V2 {
        org: String,
        bucket: String,
        token: Secret,
    },
}

#[derive(Debug, Clone)]
pub struct InfluxConfig {
    pub url: InfluxUrl,
    pub target: Target,
    pub tls: TlsFiles,
    /// Tasmota's %topic%: the points' `topic` tag.
    pub topic: String,
    /// Retry delays double from 1 s up to this.
    pub retry_cap: Duration,
    /// SENSOR payloads kept while InfluxDB is away (oldest dropped beyond).
    pub queue_capacity: usize,
    /// `--spool DIR`: the journal goes to `DIR/influx/outbox.jsonl`.
    pub spool: Option<PathBuf>,
}

/// What the engine's side hands to the sink's thread.
enum Message {
    /// A meter's telegram was read then.
    Read(MeterIndex, SystemTime),
    /// A SENSOR payload, published then.
    Sensor(SystemTime, String),
}

/// The engine's side: hands SENSOR payloads and telegram read times over, never waiting.
pub struct InfluxSink {
    tx: Sender<Message>,
}

impl Sink for InfluxSink {
    fn publish(&mut self, p: Publication) -> Result<(), PublishError> {
        match p {
            Publication::Sensor(payload) => self
                .tx
                .send(Message::Sensor(SystemTime::now(), payload))
                .map_err(|_| PublishError::InfluxGone),
            // STATE is about sml's uptime and the link, not a meter's values.
            Publication::State(_) | Publication::Script { .. } => Ok(()),
        }
    }

    fn handle_read(&mut self, meter: MeterIndex, at: SystemTime) {
        // A gone thread shows at the next publish.
        let _ = self.tx.send(Message::Read(meter, at));
    }
}

/// The sink's thread. Dropping the [`InfluxSink`] makes it write what is queued (for at most
/// [`DRAIN_ON_EXIT`]) and stop; `join` gives its report.
pub struct InfluxTask(JoinHandle<InfluxReport>);

impl InfluxTask {
    /// Blocks until the thread has drained: call it off the runtime thread. `Err` with the panic's
    /// message when the thread panicked.
    pub fn join(self) -> Result<InfluxReport, String> {
        self.0.join().map_err(|payload| {
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into())
        })
    }
}

/// Start the sink's thread for `script`'s meters.
pub fn start(
    config: InfluxConfig,
    script: &Script,
) -> Result<(InfluxSink, InfluxTask), PublishError> {
    let client = Client::new(&config)?;
    let outbox = outbox_for(&config)?;
    let meters = MeterTags::from_script(script);
    let prefixes: HashMap<MeterIndex, String> = script
        .meters
        .iter()
        .filter_map(|m| Some((m.index, m.prefix.clone()?)))
        .collect();
    let (tx, rx) = mpsc::channel();
    let reconnect = Backoff {
        first: FIRST_RETRY,
        cap: config.retry_cap.max(FIRST_RETRY),
    };
    let server = config.url.base.clone();
    let topic = config.topic.clone();
    let handle = std::thread::Builder::new()
        .name("sml-influx".into())
        .spawn(move || {
            let delivery = InfluxDelivery::new(outbox, reconnect, server, Instant::now());
            Worker {
                delivery,
                client,
                meters,
                prefixes,
                read_at: HashMap::new(),
                topic,
                bad_payloads: 0,
            }
            .run(rx)
        })
        .map_err(|e| PublishError::Spool {
            path: "(the InfluxDB sink's thread)".into(),
            source: e,
        })?;
    Ok((InfluxSink { tx }, InfluxTask(handle)))
}

/// As the MQTT sink: a spool on a failing disk is one error and memory only; an unsafe or
/// impossible one is a configuration error.
fn outbox_for(config: &InfluxConfig) -> Result<Outbox, PublishError> {
    let Some(dir) = &config.spool else {
        return Ok(Outbox::new(config.queue_capacity));
    };
    let dir = dir.join(SPOOL_SUBDIR);
    match Outbox::with_spool(config.queue_capacity, &dir, OUTBOX_TOPIC) {
        Err(PublishError::Spool { path, source })
            if matches!(
                source.raw_os_error(),
                Some(libc::EROFS | libc::ENOSPC | libc::EDQUOT | libc::EIO)
            ) =>
        {
            error!("spool {path}: {source}; InfluxDB points are kept in memory only");
            Ok(Outbox::new(config.queue_capacity))
        }
        result => result,
    }
}

struct Worker {
    delivery: InfluxDelivery,
    client: Client,
    meters: MeterTags,
    /// Each meter's prefix, and when a telegram of that prefix was last read.
    prefixes: HashMap<MeterIndex, String>,
    read_at: HashMap<String, SystemTime>,
    topic: String,
    bad_payloads: u64,
}

impl Worker {
    fn run(mut self, rx: Receiver<Message>) -> InfluxReport {
        let mut drain_until: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if let Some(write) = self.delivery.poll_write(now) {
                let answer = self.client.write(&write.body);
                self.delivery.handle_answer(Instant::now(), answer);
                // Take what arrived meanwhile before the next write.
                while let Ok(message) = rx.try_recv() {
                    self.take(message);
                }
                continue;
            }
            if let Some(until) = drain_until {
                if self.delivery.is_idle() || now >= until {
                    break;
                }
            }
            let mut wait = self
                .delivery
                .poll_timeout()
                .map_or(Duration::from_secs(3600), |t| {
                    t.saturating_duration_since(now)
                });
            if let Some(until) = drain_until {
                wait = wait.min(until.saturating_duration_since(now));
            }
            if drain_until.is_some() {
                std::thread::sleep(wait);
                continue;
            }
            match rx.recv_timeout(wait) {
                Ok(message) => self.take(message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    drain_until = Some(Instant::now() + DRAIN_ON_EXIT);
                    self.delivery.handle_flush();
                }
            }
        }
        let report = self.delivery.report();
        if report.left_queued > 0 {
            warn!(
                "InfluxDB: {} payloads not written at exit{}",
                report.left_queued,
                if self.client.spooled {
                    " (kept in the spool)"
                } else {
                    ""
                }
            );
        }
        self.delivery.outbox_mut().close_spool();
        report
    }

    fn take(&mut self, message: Message) {
        let (published, payload) = match message {
            Message::Read(meter, at) => {
                if let Some(prefix) = self.prefixes.get(&meter) {
                    self.read_at.insert(prefix.clone(), at);
                }
                return;
            }
            Message::Sensor(at, payload) => (at, payload),
        };
        let ns = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128)
        };
        let stamp = |prefix: &str| ns(self.read_at.get(prefix).copied().unwrap_or(published));
        let mut lines = String::new();
        match sensor_to_lines(&payload, &self.topic, &self.meters, stamp, &mut lines) {
            Ok(_) => self.delivery.handle_points(Instant::now(), lines),
            Err(e) => {
                // The engine makes these payloads: this is a bug, said once in a while.
                self.bad_payloads += 1;
                if self.bad_payloads == 1 || self.bad_payloads % 1000 == 0 {
                    error!("InfluxDB: {e} ({} so far); not written", self.bad_payloads);
                }
            }
        }
    }
}

/// InfluxDB's write endpoint, with its query and credentials.
struct Client {
    agent: ureq::Agent,
    url: String,
    query: Vec<(&'static str, String)>,
    authorization: Option<Secret>,
    /// For the exit message only.
    spooled: bool,
}

impl Client {
    fn new(config: &InfluxConfig) -> Result<Client, PublishError> {
        let mut agent = ureq::AgentBuilder::new().timeout(WRITE_TIMEOUT);
        if config.url.tls {
            agent = agent.tls_config(Arc::new(super::mqtt::tls_config(&config.tls)?));
        }
        let (path, query, authorization) = match &config.target {
            Target::V1 {
                database,
                user,
                password,
            } => {
                use base64::Engine;
                let auth = user.as_ref().map(|u| {
                    let pw = password.as_ref().map_or("", Secret::expose);
                    let encoded =
                        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{pw}"));
                    Secret::new(format!("Basic {encoded}"))
                });
                ("/write", vec![("db", database.clone())], auth)
            }
            Target::V2 { org, bucket, token } => (
                "/api/v2/write",
                vec![("org", org.clone()), ("bucket", bucket.clone())],
                Some(Secret::new(format!("Token {}", token.expose()))),
            ),
        };
        let mut query = query;
        query.push(("precision", "ns".into()));
        Ok(Client {
            agent: agent.build(),
            url: format!("{}{path}", config.url.base),
            query,
            authorization,
            spooled: config.spool.is_some(),
        })
    }

    fn write(&self, body: &str) -> Answer {
        let mut request = self
            .agent
            .post(&self.url)
            .set("Content-Type", "text/plain; charset=utf-8");
        for (k, v) in &self.query {
            request = request.query(k, v);
        }
        if let Some(auth) = &self.authorization {
            request = request.set("Authorization", auth.expose());
        }
        match request.send_string(body) {
            Ok(_) => Answer::Written,
            Err(ureq::Error::Status(status, response)) => {
                let message = server_message(&response.into_string().unwrap_or_default());
                match status {
                    401 | 403 | 404 | 408 | 429 | 500..=599 => {
                        Answer::Unavailable(format!("HTTP {status}: {message}"))
                    }
                    _ => Answer::Refused { status, message },
                }
            }
            // Not the error's Display: it quotes the URL. Its causes say what went wrong (a
            // refused connection, a certificate from an unknown issuer).
            Err(ureq::Error::Transport(t)) => {
                let mut why = match t.message() {
                    Some(m) => format!("{}: {m}", t.kind()),
                    None => t.kind().to_string(),
                };
                let mut cause = std::error::Error::source(&t);
                while let Some(c) = cause {
                    why.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                Answer::Unavailable(why)
            }
        }
    }
}

/// The message in InfluxDB's error body: `{"error": ...}` (1.x) or `{"message": ...}` (2.x).
fn server_message(body: &str) -> String {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let field = json.as_ref().and_then(|j| {
        j.get("error")
            .or_else(|| j.get("message"))
            .and_then(|m| m.as_str())
    });
    let text = field.unwrap_or(body).trim();
    match text.char_indices().nth(500) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_influx_url_is_http_or_https_with_a_host() {
        let u: InfluxUrl = "http://127.0.0.1:8086/".parse().unwrap();
        assert_eq!(u.base, "http://127.0.0.1:8086");
        assert!(!u.tls);
        assert!(
            "https://db.example/influx"
                .parse::<InfluxUrl>()
                .unwrap()
                .tls
        );
        assert!("mqtt://x".parse::<InfluxUrl>().is_err());
        assert!("http://".parse::<InfluxUrl>().is_err());
        assert!("http://x:8086/write?db=a".parse::<InfluxUrl>().is_err());
    }

    #[test]
    fn a_url_with_credentials_is_refused_without_quoting_them() {
        let e = "http://admin:hunter2@x:8086"
            .parse::<InfluxUrl>()
            .unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("--influx-password-file"), "{e}");
    }

    #[test]
    fn the_servers_message_is_taken_from_either_generations_error_body() {
        assert_eq!(
            server_message(r#"{"error":"partial write: x"}"#),
            "partial write: x"
        );
        assert_eq!(
            server_message(r#"{"code":"invalid","message":"partial write: y"}"#),
            "partial write: y"
        );
        assert_eq!(server_message("plain text\n"), "plain text");
    }
}
