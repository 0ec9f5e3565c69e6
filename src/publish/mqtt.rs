/*!
The MQTT sink: Tasmota's topics on a broker, with nothing lost while the broker is away.

rumqttc keeps unacknowledged publishes across a reconnect only while the broker keeps the session;
a restarted broker has none, and rumqttc then clears them, while requests still in its channel
would be sent after ours were re-sent. So sml owns delivery: every SENSOR payload stays in the
[`Outbox`] until the broker acknowledges it (QoS 1) or it is written (QoS 0). Each connection gets
a fresh rumqttc client and event loop (its own task), fed at most [`WINDOW`] payloads at a time;
when it dies, its client and queues die with it and the next connection re-sends the outbox from
the oldest payload. Order is kept and nothing is published twice, except a payload the broker took
but could not acknowledge before the line dropped (what QoS 1 allows).

On connect sml publishes `Online` on the retained LWT topic; the broker publishes the will
(`Offline`, retained) when the connection dies without a DISCONNECT. A clean exit publishes
`Offline` itself. STATE is sent only while connected (an old uptime is worth nothing).
*/

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration,
    Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::outbox::Outbox;
use super::topics::Topics;
use super::{PublishError, Sink};
use crate::engine::scheduler::Publication;

/// Payloads handed to rumqttc at once (its in-flight window).
pub const WINDOW: usize = 32;
/// A clean exit waits this long for the outbox to empty.
const DRAIN_ON_EXIT: Duration = Duration::from_secs(5);

/// `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl FromStr for BrokerUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("'{s}': expected mqtt://host[:port] or mqtts://host[:port]");
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let rest = rest.trim_end_matches('/');
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && !p.contains(']') => {
                (h, p.parse().map_err(|_| bad())?)
            }
            _ => (rest, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 || host.contains(['/', '@']) {
            return Err(bad());
        }
        Ok(BrokerUrl {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

/// A password: never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates (PEM) to trust; the system's roots when absent.
    pub ca: Option<PathBuf>,
    /// Client certificate chain and key (PEM), for brokers that ask for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub broker: BrokerUrl,
    pub tls: TlsFiles,
    pub client_id: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub topics: Topics,
    pub qos: QoS,
    pub keep_alive: Duration,
    /// Reconnect delays double from 1 s up to this (Tasmota's MqttRetry, default 10 s).
    pub retry_cap: Duration,
    pub queue_capacity: usize,
    pub spool: Option<PathBuf>,
}

/// What the MQTT task did, for the log at exit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MqttReport {
    pub delivered: u64,
    pub dropped: u64,
    pub connects: u64,
    pub left_queued: usize,
}

/// The engine's side: pushes publications to the MQTT task, never waiting.
pub struct MqttSink {
    tx: mpsc::UnboundedSender<Publication>,
}

impl Sink for MqttSink {
    fn publish(&mut self, p: Publication) -> Result<(), PublishError> {
        self.tx.send(p).map_err(|_| PublishError::MqttGone)
    }
}

/// Start the MQTT task. Dropping the [`MqttSink`] makes it drain, say `Offline` and stop; the join
/// handle gives its report. The watch says whether the broker is connected now.
pub fn start(
    config: MqttConfig,
) -> Result<(MqttSink, watch::Receiver<bool>, JoinHandle<MqttReport>), PublishError> {
    let outbox = match &config.spool {
        Some(dir) => Outbox::with_spool(config.queue_capacity, dir)?,
        None => Outbox::new(config.queue_capacity),
    };
    if !outbox.is_empty() {
        info!(
            "{} payloads from the spool wait for the broker",
            outbox.len()
        );
    }
    let options = mqtt_options(&config)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let (connected_tx, connected_rx) = watch::channel(false);
    let (conn_tx, conn_rx) = mpsc::unbounded_channel();
    let task = MqttTask {
        qos: config.qos,
        topics: config.topics.clone(),
        retry_cap: config.retry_cap.max(Duration::from_secs(1)),
        options,
        outbox,
        commands: rx,
        conn: None,
        generation: 0,
        conn_tx,
        conn_rx,
        retry: Duration::from_secs(1),
        reconnect_at: None,
        connected_tx,
        report: MqttReport::default(),
    };
    Ok((MqttSink { tx }, connected_rx, tokio::spawn(task.run())))
}

fn mqtt_options(config: &MqttConfig) -> Result<MqttOptions, PublishError> {
    let mut o = MqttOptions::new(
        config.client_id.clone(),
        config.broker.host.clone(),
        config.broker.port,
    );
    // Keep-alive below 1 s is refused by rumqttc (a panic); 0 turns pings off.
    let keep_alive = if config.keep_alive.is_zero() {
        Duration::ZERO
    } else {
        config.keep_alive.max(Duration::from_secs(1))
    };
    o.set_keep_alive(keep_alive);
    // sml re-sends from its own outbox; a broker-side session would only add duplicates.
    o.set_clean_session(true);
    o.set_inflight((WINDOW + 8) as u16);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_last_will(LastWill::new(
        config.topics.lwt.clone(),
        "Offline",
        config.qos,
        true,
    ));
    if let Some(user) = &config.user {
        let password = config
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        o.set_credentials(user.clone(), password);
    }
    if config.broker.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_config(&config.tls)?),
        )));
    }
    Ok(o)
}

/// A rustls client configuration with the `ring` provider: the CA file or the system's roots, and
/// the client certificate when one is given.
pub fn tls_config(files: &TlsFiles) -> Result<rustls::ClientConfig, PublishError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = PublishError::Tls;
    let read_certs = |path: &PathBuf| -> Result<Vec<CertificateDer<'static>>, PublishError> {
        let f =
            std::fs::File::open(path).map_err(|e| tls_err(format!("{}: {e}", path.display())))?;
        let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_err(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(tls_err(format!(
                "{}: no PEM certificate in it",
                path.display()
            )));
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca {
        Some(ca) => {
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| tls_err(format!("{}: {e}", ca.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(tls_err(
                    "no system CA certificates found; give one with --ca-file".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots);
    match (&files.cert, &files.key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let f =
                std::fs::File::open(key).map_err(|e| tls_err(format!("{}: {e}", key.display())))?;
            let key_der: PrivateKeyDer<'static> =
                rustls_pemfile::private_key(&mut std::io::BufReader::new(f))
                    .map_err(|e| tls_err(format!("{}: {e}", key.display())))?
                    .ok_or_else(|| {
                        tls_err(format!("{}: no PEM private key in it", key.display()))
                    })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| tls_err(e.to_string()))
        }
        _ => Err(tls_err("--cert-file and --key-file go together".into())),
    }
}

/// What a connection's event-loop task reports, tagged with its generation.
#[derive(Debug)]
enum ConnEvent {
    Connected,
    /// A publish went out with this packet id (0 for QoS 0).
    Written(u16),
    Acked(u16),
    Closed,
    Lost(String),
}

/// A publish handed to rumqttc, in order, until its `Written` event names its packet id.
#[derive(Debug, Clone, Copy)]
enum Handed {
    Entry(u64),
    /// LWT and STATE: not in the outbox.
    Control,
}

struct Connection {
    client: AsyncClient,
    task: JoinHandle<()>,
    up: bool,
    handed: VecDeque<Handed>,
    by_pkid: HashMap<u16, Handed>,
    /// Outbox entries handed over and not yet done.
    in_flight: usize,
    /// The next outbox sequence number to hand over.
    next_seq: u64,
}

struct MqttTask {
    qos: QoS,
    topics: Topics,
    retry_cap: Duration,
    options: MqttOptions,
    outbox: Outbox,
    commands: mpsc::UnboundedReceiver<Publication>,
    conn: Option<Connection>,
    generation: u64,
    conn_tx: mpsc::UnboundedSender<(u64, ConnEvent)>,
    conn_rx: mpsc::UnboundedReceiver<(u64, ConnEvent)>,
    retry: Duration,
    reconnect_at: Option<Instant>,
    connected_tx: watch::Sender<bool>,
    report: MqttReport,
}

impl MqttTask {
    async fn run(mut self) -> MqttReport {
        self.connect();
        let mut closing_until: Option<Instant> = None;
        loop {
            if let Some(until) = closing_until {
                // Wait (a little) for a broker that is away: what it takes now, no spool must keep.
                if self.outbox.is_empty() || Instant::now() >= until {
                    break;
                }
            }
            tokio::select! {
                cmd = self.commands.recv(), if closing_until.is_none() => match cmd {
                    Some(p) => self.queue(p),
                    None => closing_until = Some(Instant::now() + DRAIN_ON_EXIT),
                },
                Some((generation, ev)) = self.conn_rx.recv() => {
                    if generation == self.generation {
                        self.handle_conn_event(ev);
                    }
                }
                _ = sleep_until_opt(self.reconnect_at) => self.connect(),
                _ = sleep_until_opt(closing_until) => {}
            }
        }
        self.say_goodbye().await;
        self.report.dropped = self.outbox.dropped();
        self.report.left_queued = self.outbox.len();
        self.report
    }

    fn is_up(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.up)
    }

    fn connect(&mut self) {
        self.reconnect_at = None;
        if let Some(old) = self.conn.take() {
            old.task.abort();
        }
        self.generation += 1;
        let (client, eventloop) = AsyncClient::new(self.options.clone(), WINDOW + 8);
        let task = tokio::spawn(drive_connection(
            self.generation,
            eventloop,
            self.conn_tx.clone(),
        ));
        self.conn = Some(Connection {
            client,
            task,
            up: false,
            handed: VecDeque::new(),
            by_pkid: HashMap::new(),
            in_flight: 0,
            next_seq: 0,
        });
    }

    fn queue(&mut self, p: Publication) {
        match p {
            Publication::Sensor(payload) => {
                if self
                    .outbox
                    .push(self.topics.sensor.clone(), payload)
                    .is_some()
                {
                    let dropped = self.outbox.dropped();
                    if dropped == 1 || dropped % 100 == 0 {
                        warn!("MQTT outbox full ({} payloads): dropped the oldest ({dropped} dropped so far)", self.outbox.len());
                    }
                }
                self.fill();
            }
            Publication::State(payload) => {
                let (qos, topic) = (self.qos, self.topics.state.clone());
                match self.conn.as_mut() {
                    Some(c) if c.up => {
                        if c.client.try_publish(topic, qos, false, payload).is_ok() {
                            c.handed.push_back(Handed::Control);
                        }
                    }
                    _ => debug!("broker not connected: STATE not sent"),
                }
            }
        }
    }

    /// Hand the oldest payloads not yet handed over to rumqttc, up to the window.
    fn fill(&mut self) {
        let Some(c) = self.conn.as_mut() else { return };
        while c.up && c.in_flight < WINDOW {
            let Some(e) = self.outbox.first_from(c.next_seq) else {
                break;
            };
            if c.client
                .try_publish(e.topic.clone(), self.qos, false, e.payload.clone())
                .is_err()
            {
                break;
            }
            c.handed.push_back(Handed::Entry(e.seq));
            c.in_flight += 1;
            c.next_seq = e.seq + 1;
        }
    }

    fn complete(&mut self, h: Handed) {
        if let Handed::Entry(seq) = h {
            if let Some(c) = self.conn.as_mut() {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
            if self.outbox.complete(seq).is_some() {
                self.report.delivered += 1;
            }
        }
    }

    fn handle_conn_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Connected => {
                self.report.connects += 1;
                self.retry = Duration::from_secs(1);
                let (qos, lwt) = (self.qos, self.topics.lwt.clone());
                if let Some(c) = self.conn.as_mut() {
                    c.up = true;
                    if c.client.try_publish(lwt, qos, true, "Online").is_ok() {
                        c.handed.push_back(Handed::Control);
                    }
                }
                info!(
                    "MQTT connected to {}; {} payloads queued",
                    self.broker(),
                    self.outbox.len()
                );
                let _ = self.connected_tx.send(true);
                self.fill();
            }
            ConnEvent::Written(pkid) => {
                let Some(c) = self.conn.as_mut() else { return };
                let Some(h) = c.handed.pop_front() else {
                    return;
                };
                if pkid == 0 {
                    self.complete(h);
                    self.fill();
                } else {
                    c.by_pkid.insert(pkid, h);
                }
            }
            ConnEvent::Acked(pkid) => {
                let Some(h) = self.conn.as_mut().and_then(|c| c.by_pkid.remove(&pkid)) else {
                    return;
                };
                self.complete(h);
                self.fill();
            }
            ConnEvent::Closed => {}
            ConnEvent::Lost(why) => {
                let was_up = self.is_up();
                self.conn = None;
                let _ = self.connected_tx.send(false);
                if was_up || self.report.connects == 0 && self.generation == 1 {
                    warn!(
                        "MQTT {}: {why}; retrying in {:?}, {} payloads queued",
                        self.broker(),
                        self.retry,
                        self.outbox.len()
                    );
                } else {
                    debug!(
                        "MQTT {}: {why}; retrying in {:?}, {} payloads queued",
                        self.broker(),
                        self.retry,
                        self.outbox.len()
                    );
                }
                self.reconnect_at = Some(Instant::now() + self.retry);
                self.retry = (self.retry * 2).min(self.retry_cap);
            }
        }
    }

    fn broker(&self) -> String {
        let (host, port) = self.options.broker_address();
        format!("{host}:{port}")
    }

    /// A clean exit: `Offline` on the LWT topic (the broker drops the will on DISCONNECT), then
    /// DISCONNECT, waiting briefly for both to go out.
    async fn say_goodbye(&mut self) {
        let Some(c) = self.conn.as_mut() else { return };
        if c.up {
            let _ = c
                .client
                .try_publish(self.topics.lwt.clone(), self.qos, true, "Offline");
            let _ = c.client.try_disconnect();
            let generation = self.generation;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some((g, ev)) = self.conn_rx.recv().await {
                    if g == generation && matches!(ev, ConnEvent::Closed | ConnEvent::Lost(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        if let Some(c) = self.conn.take() {
            c.task.abort();
        }
    }
}

/// One connection's rumqttc event loop, polled without ever being cancelled mid-way.
async fn drive_connection(
    generation: u64,
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<(u64, ConnEvent)>,
) {
    loop {
        let ev = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => ConnEvent::Connected,
            Ok(Event::Incoming(Packet::PubAck(ack))) => ConnEvent::Acked(ack.pkid),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => ConnEvent::Written(pkid),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => ConnEvent::Closed,
            Ok(_) => continue,
            Err(e) => {
                let _ = tx.send((generation, ConnEvent::Lost(e.to_string())));
                return;
            }
        };
        let last = matches!(ev, ConnEvent::Closed);
        if tx.send((generation, ev)).is_err() || last {
            return;
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_name_scheme_host_and_port() {
        assert_eq!(
            "mqtt://localhost".parse(),
            Ok(BrokerUrl {
                host: "localhost".into(),
                port: 1883,
                tls: false
            })
        );
        assert_eq!(
            "mqtts://b.example:8884".parse(),
            Ok(BrokerUrl {
                host: "b.example".into(),
                port: 8884,
                tls: true
            })
        );
        assert_eq!(
            "mqtt://[::1]:1884".parse(),
            Ok(BrokerUrl {
                host: "::1".into(),
                port: 1884,
                tls: false
            })
        );
        assert!("tcp://x".parse::<BrokerUrl>().is_err());
        assert!("mqtt://".parse::<BrokerUrl>().is_err());
        assert!("mqtt://u:p@host".parse::<BrokerUrl>().is_err());
    }

    #[test]
    fn a_secret_is_not_printed() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2".into())),
            "Secret(***)"
        );
    }

    #[test]
    fn a_missing_ca_file_is_a_clear_tls_error() {
        let files = TlsFiles {
            ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = tls_config(&files).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let files = TlsFiles {
            ca: None,
            cert: Some("c.pem".into()),
            key: None,
        };
        assert!(tls_config(&files).is_err());
    }
}
