/*!
The MQTT sink: Tasmota's topics on a broker, with nothing lost while the broker is away.

This is the thin adapter between [`Delivery`] (what to send, when to connect: no I/O) and rumqttc:
each connection is a fresh rumqttc client and event loop polled on its own task, which reports
CONNACK, each publish written (with its packet id), PUBACK and the end of the connection, tagged
with the connection's generation so that a dead connection's late events are ignored. The engine's
side, [`MqttSink`], only pushes into a channel; the spool's disk writes happen on their own thread
([`super::spool`]). See [`super::delivery`] for why sml, not rumqttc, keeps the unacknowledged
payloads.

With several brokers (`--broker` repeated) the adapter keeps one set of rumqttc options per broker,
under the index [`Delivery`] names in [`Transmit::Connect`]; which one to try is delivery's choice.
*/

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, warn};

use super::delivery::{Delivery, DeliveryConfig, Transmit, MAX_REQUESTS};
use super::outbox::Outbox;
use super::topics::Topics;
use super::{PublishError, Sink};
use crate::backoff::Backoff;
use crate::engine::scheduler::Publication;

pub use super::delivery::MqttReport;

/// The first reconnect delay; they double up to [`MqttConfig::retry_cap`].
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// `url` with anything between the scheme and the last `@` (user name, password) as `***`:
/// what a message may quote of a broker URL.
fn redacted(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_string();
    };
    let start = url
        .find("://")
        .map(|i| i + 3)
        .filter(|&i| i <= at)
        .unwrap_or(0);
    format!("{}***{}", &url[..start], &url[at..])
}

impl FromStr for BrokerUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains('@') {
            // A host never holds '@': this is user:password@host, which shows in `ps`, in shell
            // history and in logs. The message quotes it redacted.
            return Err(format!(
                "'{}': credentials do not go in the broker URL (it shows in `ps` and in logs); \
                 give the user name with --user and the password with --password-file",
                redacted(s)
            ));
        }
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
        if host.is_empty() || port == 0 || host.contains('/') {
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
    /// More brokers of the same cluster, tried after `broker` in this order and round-robin when
    /// a connection fails (see [`super::delivery`]); same client id, credentials, TLS files.
    pub more_brokers: Vec<BrokerUrl>,
    pub tls: TlsFiles,
    pub client_id: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub topics: Topics,
    pub qos: QoS,
    pub keep_alive: Duration,
    /// Reconnect delays double from 1 s up to this (Tasmota's MqttRetry, default 10 s), as
    /// [`Backoff`] does for every reconnect.
    pub retry_cap: Duration,
    pub queue_capacity: usize,
    pub spool: Option<PathBuf>,
}

/// The engine's side: pushes publications to the MQTT task, never waiting.
pub struct MqttSink {
    tx: mpsc::UnboundedSender<Publication>,
    /// Why the task stopped, when the broker refused sml for good.
    refused: Arc<OnceLock<String>>,
    /// Payloads in the outbox, waiting for the broker (for `/metrics`).
    queued: Arc<AtomicUsize>,
}

impl MqttSink {
    /// The number of payloads waiting for the broker, kept up to date by the MQTT task.
    pub fn queue_gauge(&self) -> Arc<AtomicUsize> {
        self.queued.clone()
    }
}

impl Sink for MqttSink {
    fn publish(&mut self, p: Publication) -> Result<(), PublishError> {
        self.tx.send(p).map_err(|_| match self.refused.get() {
            Some(why) => PublishError::BrokerRefused(why.clone()),
            None => PublishError::MqttGone,
        })
    }
}

/// Start the MQTT task. Dropping the [`MqttSink`] makes it drain, say `Offline` and stop; the join
/// handle gives its report. The watch says whether the broker is connected now.
///
/// The task also ends by itself when the broker refuses the login for good: its report then has
/// [`MqttReport::fatal`], and [`MqttSink::publish`] returns [`PublishError::BrokerRefused`].
impl MqttConfig {
    /// `broker` then `more_brokers`: the order delivery tries them in.
    pub fn brokers(&self) -> Vec<&BrokerUrl> {
        std::iter::once(&self.broker)
            .chain(&self.more_brokers)
            .collect()
    }
}

pub fn start(
    config: MqttConfig,
) -> Result<(MqttSink, watch::Receiver<bool>, JoinHandle<MqttReport>), PublishError> {
    start_with_outbox(config.clone(), outbox_for(&config)?)
}

/// The outbox, with its spool when one is given. A spool on a disk that is read-only, full or
/// failing is one clear error and an in-memory outbox (the meters go on); a spool that is unsafe
/// or cannot be made (a wrong path, no permission) is a configuration error.
fn outbox_for(config: &MqttConfig) -> Result<Outbox, PublishError> {
    let Some(dir) = &config.spool else {
        return Ok(Outbox::new(config.queue_capacity));
    };
    match Outbox::with_spool(config.queue_capacity, dir, &config.topics.sensor) {
        Err(PublishError::Spool { path, source })
            if matches!(
                source.raw_os_error(),
                Some(libc::EROFS | libc::ENOSPC | libc::EDQUOT | libc::EIO)
            ) =>
        {
            error!("spool {path}: {source}; payloads are kept in memory only");
            Ok(Outbox::new(config.queue_capacity))
        }
        result => result,
    }
}

fn start_with_outbox(
    config: MqttConfig,
    outbox: Outbox,
) -> Result<(MqttSink, watch::Receiver<bool>, JoinHandle<MqttReport>), PublishError> {
    let options = config
        .brokers()
        .into_iter()
        .map(|b| mqtt_options(&config, b))
        .collect::<Result<Vec<_>, _>>()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let (connected_tx, connected_rx) = watch::channel(false);
    let (conn_tx, conn_rx) = mpsc::unbounded_channel();
    let refused = Arc::new(OnceLock::new());
    let queued = Arc::new(AtomicUsize::new(0));
    let delivery = Delivery::new(
        DeliveryConfig {
            qos: config.qos,
            topics: config.topics.clone(),
            reconnect: Backoff {
                first: FIRST_RETRY,
                cap: config.retry_cap.max(FIRST_RETRY),
            },
            brokers: config
                .brokers()
                .iter()
                .map(|b| format!("{}:{}", b.host, b.port))
                .collect(),
        },
        outbox,
    );
    let task = MqttTask {
        delivery,
        options,
        commands: rx,
        commands_open: true,
        conn: None,
        generation: 0,
        conn_tx,
        conn_rx,
        connected_tx,
        refused: refused.clone(),
        queued: queued.clone(),
    };
    Ok((
        MqttSink {
            tx,
            refused,
            queued,
        },
        connected_rx,
        tokio::spawn(task.run()),
    ))
}

fn mqtt_options(config: &MqttConfig, broker: &BrokerUrl) -> Result<MqttOptions, PublishError> {
    let mut o = MqttOptions::new(config.client_id.clone(), broker.host.clone(), broker.port);
    // Keep-alive below 1 s is refused by rumqttc (a panic); 0 turns pings off.
    let keep_alive = if config.keep_alive.is_zero() {
        Duration::ZERO
    } else {
        config.keep_alive.max(Duration::from_secs(1))
    };
    o.set_keep_alive(keep_alive);
    // sml re-sends from its own outbox; a broker-side session would only add duplicates.
    o.set_clean_session(true);
    // Room for the window and the connection's own messages, so rumqttc never holds one back.
    o.set_inflight(MAX_REQUESTS as u16 + 4);
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
    if broker.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_config(&config.tls)?),
        )));
    }
    Ok(o)
}

/// A rustls client configuration with the `ring` provider: the CA file or the system's roots, and
/// the client certificate when one is given.
pub fn tls_config(files: &TlsFiles) -> Result<rustls::ClientConfig, PublishError> {
    use rustls::pki_types::pem::{self, PemObject};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = PublishError::Tls;
    let pem_err = |path: &PathBuf, e: pem::Error| match e {
        // The file itself, not "I/O error: ...".
        pem::Error::Io(e) => tls_err(format!("{}: {e}", path.display())),
        e => tls_err(format!("{}: {e}", path.display())),
    };
    let read_certs = |path: &PathBuf| -> Result<Vec<CertificateDer<'static>>, PublishError> {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| pem_err(path, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(path, e))?;
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
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
                pem::Error::NoItemsFound => {
                    tls_err(format!("{}: no PEM private key in it", key.display()))
                }
                e => pem_err(key, e),
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
    Connected {
        session_present: bool,
    },
    /// A publish went out with this packet id (0 for QoS 0).
    Written(u16),
    Acked(u16),
    /// Our DISCONNECT went out.
    Closed,
    Refused(rumqttc::ConnectReturnCode),
    Lost(String),
}

struct Connection {
    client: AsyncClient,
    task: JoinHandle<()>,
}

struct MqttTask {
    delivery: Delivery,
    /// One per broker, in delivery's order.
    options: Vec<MqttOptions>,
    commands: mpsc::UnboundedReceiver<Publication>,
    commands_open: bool,
    conn: Option<Connection>,
    generation: u64,
    conn_tx: mpsc::UnboundedSender<(u64, ConnEvent)>,
    conn_rx: mpsc::UnboundedReceiver<(u64, ConnEvent)>,
    connected_tx: watch::Sender<bool>,
    refused: Arc<OnceLock<String>>,
    queued: Arc<AtomicUsize>,
}

impl MqttTask {
    async fn run(mut self) -> MqttReport {
        loop {
            self.carry_out();
            self.queued
                .store(self.delivery.outbox().len(), Ordering::Relaxed);
            let up = self.delivery.is_connected();
            self.connected_tx.send_if_modified(|was| {
                let changed = *was != up;
                *was = up;
                changed
            });
            if self.delivery.is_finished() {
                break;
            }
            let deadline = self.delivery.poll_timeout().map(Instant::from_std);
            tokio::select! {
                cmd = self.commands.recv(), if self.commands_open => {
                    let now = std::time::Instant::now();
                    match cmd {
                        Some(p) => self.delivery.handle_publication(now, p),
                        None => {
                            self.commands_open = false;
                            self.delivery.handle_close(now);
                        }
                    }
                }
                Some((generation, ev)) = self.conn_rx.recv() => {
                    if generation == self.generation {
                        self.handle_conn_event(ev);
                    }
                }
                _ = crate::timer::sleep_until_opt(deadline) => {
                    self.delivery.handle_timeout(std::time::Instant::now());
                }
            }
        }
        if let Some(c) = self.conn.take() {
            c.task.abort();
        }
        let report = self.delivery.report();
        if let Some(why) = &report.fatal {
            let _ = self.refused.set(why.clone());
        }
        // The spool's last lines, off the runtime thread (a dead disk waits a few seconds).
        let mut delivery = self.delivery;
        let closed = tokio::task::spawn_blocking(move || {
            delivery.outbox_mut().close_spool();
        });
        if let Err(e) = closed.await {
            warn!("closing the spool: {e}");
        }
        report
    }

    /// Do what delivery asks: connect, publish, disconnect.
    fn carry_out(&mut self) {
        while let Some(t) = self.delivery.poll_transmit() {
            match t {
                Transmit::Connect { broker } => self.connect(broker),
                Transmit::Publish(m) => {
                    let handed = self.conn.as_ref().is_some_and(|c| {
                        c.client
                            .try_publish(m.topic, m.qos, m.retain, m.payload)
                            .is_ok()
                    });
                    if !handed {
                        // The channel holds all delivery can ask for at once
                        // (MAX_REQUESTS): failing, the connection's task is gone.
                        self.lose_connection("the connection stopped taking requests".into());
                    }
                }
                Transmit::Disconnect => {
                    if let Some(c) = &self.conn {
                        let _ = c.client.try_disconnect();
                    }
                }
            }
        }
    }

    fn connect(&mut self, broker: usize) {
        if let Some(old) = self.conn.take() {
            old.task.abort();
        }
        self.generation += 1;
        let options = self.options[broker].clone();
        let (client, eventloop) = AsyncClient::new(options, MAX_REQUESTS + 2);
        let task = tokio::spawn(drive_connection(
            self.generation,
            eventloop,
            self.conn_tx.clone(),
        ));
        self.conn = Some(Connection { client, task });
    }

    fn lose_connection(&mut self, why: String) {
        if let Some(c) = self.conn.take() {
            c.task.abort();
        }
        // Events still on their way from it are of an old generation now.
        self.generation += 1;
        self.delivery
            .handle_disconnected(std::time::Instant::now(), &why);
    }

    fn handle_conn_event(&mut self, ev: ConnEvent) {
        let now = std::time::Instant::now();
        match ev {
            ConnEvent::Connected { session_present } => {
                self.delivery.handle_connected(now, session_present)
            }
            ConnEvent::Written(pkid) => self.delivery.handle_written(now, pkid),
            ConnEvent::Acked(pkid) => self.delivery.handle_puback(now, pkid),
            ConnEvent::Closed => self.delivery.handle_disconnect_sent(),
            ConnEvent::Refused(code) => {
                self.conn = None;
                self.delivery.handle_refused(now, code);
            }
            ConnEvent::Lost(why) => self.lose_connection(why),
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
            Ok(Event::Incoming(Packet::ConnAck(ack))) => ConnEvent::Connected {
                session_present: ack.session_present,
            },
            Ok(Event::Incoming(Packet::PubAck(ack))) => ConnEvent::Acked(ack.pkid),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => ConnEvent::Written(pkid),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => ConnEvent::Closed,
            Ok(_) => continue,
            Err(ConnectionError::ConnectionRefused(code)) => {
                let _ = tx.send((generation, ConnEvent::Refused(code)));
                return;
            }
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
    fn a_password_in_the_broker_url_is_refused_and_never_quoted() {
        for url in [
            "mqtt://sml:S3cretPW@broker",
            "mqtts://sml:S3cretPW@broker:8883",
            "mqtt://sml:S3c@retPW@broker",
            "mqtt://S3cretPW@broker",
            "sml:S3cretPW@broker",
            "tcp://sml:S3cretPW@broker",
            "mqtt://sml:S3cretPW@broker:notaport",
            "mqtt://sml:S3cr/etPW@broker/",
        ] {
            let e = url.parse::<BrokerUrl>().unwrap_err();
            for part in ["S3cret", "etPW", "S3c@"] {
                assert!(!e.contains(part), "{url}: {e}");
            }
            assert!(e.contains("--password-file"), "{url}: {e}");
            assert!(e.contains("***@broker"), "{url}: {e}");
        }
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

    #[test]
    fn a_ca_file_without_a_certificate_and_a_key_file_without_a_key_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not PEM\n").unwrap();
        let files = TlsFiles {
            ca: Some(empty.clone()),
            ..Default::default()
        };
        let e = tls_config(&files).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        // A key file that holds no key (the CA check passes on the system's roots, or fails
        // first saying so: either way the message names a file).
        let files = TlsFiles {
            ca: None,
            cert: Some(empty.clone()),
            key: Some(empty.clone()),
        };
        let e = tls_config(&files).unwrap_err().to_string();
        assert!(e.contains("empty.pem") || e.contains("no system CA"), "{e}");
    }

    /// A tmpfs of `size` mounted on a new directory, unmounted on drop; None where sml's tests
    /// cannot mount (not root, or no mount namespace rights).
    struct Tmpfs {
        dir: tempfile::TempDir,
    }

    impl Tmpfs {
        fn mount(options: &str) -> Option<Tmpfs> {
            let dir = tempfile::tempdir().unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", options, "tmpfs"])
                .arg(dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(Tmpfs { dir })
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.dir.path())
                .status();
        }
    }

    fn config_with_spool(spool: std::path::PathBuf) -> MqttConfig {
        MqttConfig {
            broker: BrokerUrl {
                host: "127.0.0.1".into(),
                port: 1,
                tls: false,
            },
            more_brokers: vec![],
            tls: TlsFiles::default(),
            client_id: "sml-t".into(),
            user: None,
            password: None,
            topics: Topics::new("%prefix%/%topic%/", "t").unwrap(),
            qos: QoS::AtLeastOnce,
            keep_alive: Duration::from_secs(30),
            retry_cap: Duration::from_secs(2),
            queue_capacity: 100,
            spool: Some(spool),
        }
    }

    #[test]
    fn a_spool_on_a_read_only_disk_leaves_an_in_memory_outbox() {
        let Some(fs) = Tmpfs::mount("ro,size=64k") else {
            eprintln!("skipped: cannot mount a tmpfs");
            return;
        };
        let mut outbox = outbox_for(&config_with_spool(fs.dir.path().join("spool"))).unwrap();
        outbox.push("tele/t/SENSOR".into(), "1".into());
        assert_eq!(outbox.len(), 1);
    }

    #[test]
    fn a_spool_that_cannot_be_made_is_a_configuration_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let e = outbox_for(&config_with_spool(file.path().join("spool")))
            .err()
            .expect("a spool under a file is refused")
            .to_string();
        assert!(e.contains(&file.path().display().to_string()), "{e}");
    }

    /// The disk fills up under a running spool: the queue goes on in memory, and once there is
    /// room again the journal is rewritten whole (with what was queued meanwhile).
    #[test]
    fn a_full_disk_keeps_the_queue_in_memory_and_the_journal_catches_up() {
        let Some(fs) = Tmpfs::mount("size=64k") else {
            eprintln!("skipped: cannot mount a tmpfs");
            return;
        };
        let spool = fs.dir.path().join("spool");
        let journal = spool.join(crate::publish::spool::JOURNAL);
        let mut outbox = outbox_for(&config_with_spool(spool.clone())).unwrap();
        outbox.push("tele/t/SENSOR".into(), "before".into());
        // Fill the disk.
        let filler = fs.dir.path().join("filler");
        let mut f = File::create(&filler).unwrap();
        while f.write_all(&[0; 4096]).is_ok() {}
        drop(f);
        // Lines longer than the page the journal already has, so that they need new blocks.
        let long = "x".repeat(1000);
        for n in 0..20 {
            outbox.push("tele/t/SENSOR".into(), format!("full {n} {long}"));
        }
        assert_eq!(outbox.len(), 21, "nothing is lost in memory");
        // The writer failed and emptied the journal (it would have holes otherwise).
        let emptied = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::metadata(&journal).unwrap().len() == 0
        });
        assert!(emptied, "the journal was emptied on the failure");
        std::fs::remove_file(&filler).unwrap();
        // The next rewrite is due RESYNC_EVERY after the last try.
        std::thread::sleep(crate::publish::spool::RESYNC_EVERY + Duration::from_millis(100));
        outbox.push("tele/t/SENSOR".into(), "after".into());
        outbox.close_spool();
        let text = std::fs::read_to_string(&journal).unwrap();
        assert_eq!(text.lines().count(), 22, "{text}");
        assert!(text.contains("full 19") && text.contains("after"), "{text}");
    }

    // ---- a blocked spool disk, with a real broker ----------------------------------------------

    use crate::publish::spool::{JournalFile, SpoolWriter};
    use std::fs::File;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// rumqttd on 127.0.0.1:`port`, in this process.
    fn start_broker(port: u16) {
        let server = rumqttd::ServerSettings {
            name: "v4".into(),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            tls: None,
            next_connection_delay_ms: 1,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: 10_000,
                max_payload_size: 1 << 20,
                max_inflight_count: 200,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        };
        let config = rumqttd::Config {
            id: 0,
            router: rumqttd::RouterConfig {
                max_connections: 100,
                max_outgoing_packet_count: 1000,
                max_segment_size: 10 * 1024 * 1024,
                max_segment_count: 10,
                ..Default::default()
            },
            v4: Some(std::collections::HashMap::from([(
                "v4".to_string(),
                server,
            )])),
            ..Default::default()
        };
        let mut broker = rumqttd::Broker::new(config);
        std::thread::spawn(move || {
            let _ = broker.start();
        });
        let started = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(started, "broker did not start");
    }

    /// Payloads published on `filter`, from a subscriber on its own thread.
    fn subscribe(port: u16, filter: &str) -> std::sync::mpsc::Receiver<(String, Instant)> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut o = MqttOptions::new(format!("observer-{port}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut conn) = rumqttc::Client::new(o, 100);
        client.subscribe(filter, QoS::AtLeastOnce).unwrap();
        std::thread::spawn(move || {
            let _client = client;
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let payload = String::from_utf8_lossy(&p.payload).into();
                        if tx.send((payload, Instant::now())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("subscription acknowledged");
        rx
    }

    /// A journal on a pipe that is full and that nobody reads: a write blocks in the kernel
    /// until the read end is closed, as on a disk that hangs.
    struct StuckJournal {
        pipe: File,
        stuck: Arc<AtomicBool>,
    }

    impl JournalFile for StuckJournal {
        fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
            self.stuck.store(true, Ordering::SeqCst);
            let r = self.pipe.write_all(line);
            self.stuck.store(false, Ordering::SeqCst);
            r
        }
        fn sync(&mut self) -> std::io::Result<()> {
            Ok(())
        }
        fn replace(&mut self, content: &[u8]) -> std::io::Result<()> {
            self.append(content)
        }
    }

    /// (read end, write end): the pipe's buffer is full, its write end blocking.
    fn full_pipe() -> (File, File) {
        use std::os::fd::FromRawFd;
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors; each is owned by one File below.
        let (read, mut write) = unsafe {
            assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK), 0);
            (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
        };
        let chunk = [b'x'; 4096];
        while write.write(&chunk).is_ok() {}
        // SAFETY: fds[1] is open (owned by `write`); F_SETFL only changes its flags.
        unsafe { assert_eq!(libc::fcntl(fds[1], libc::F_SETFL, 0), 0) };
        (read, write)
    }

    /// The spool's disk writes are off the runtime thread, which every meter task shares: with
    /// the spool's disk hanging, a meter's timer on that runtime is never late by 50 ms, and its
    /// payloads reach the broker.
    #[test]
    fn a_blocked_spool_writer_does_not_delay_another_meters_payloads() {
        let port = free_port();
        start_broker(port);
        let seen = subscribe(port, "tele/stuck/SENSOR");
        let (reader, writer) = full_pipe();
        let stuck = Arc::new(AtomicBool::new(false));
        let journal = StuckJournal {
            pipe: writer,
            stuck: stuck.clone(),
        };
        let spool = SpoolWriter::with_journal("stuck".into(), Box::new(journal)).unwrap();
        let config = MqttConfig {
            broker: BrokerUrl {
                host: "127.0.0.1".into(),
                port,
                tls: false,
            },
            more_brokers: vec![],
            tls: TlsFiles::default(),
            client_id: "sml-stuck".into(),
            user: None,
            password: None,
            topics: Topics::new("%prefix%/%topic%/", "stuck").unwrap(),
            qos: QoS::AtLeastOnce,
            keep_alive: Duration::from_secs(30),
            retry_cap: Duration::from_secs(2),
            queue_capacity: 1000,
            spool: None,
        };
        const PAYLOADS: usize = 50;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (worst, got, still_stuck, report) = rt.block_on(async {
            let outbox = Outbox::with_writer(1000, spool);
            let (mut sink, mut connected, task) = start_with_outbox(config, outbox).unwrap();
            tokio::time::timeout(Duration::from_secs(10), async {
                while !*connected.borrow_and_update() {
                    connected.changed().await.unwrap();
                }
            })
            .await
            .expect("connected");
            // Another meter on the same runtime: how late does its timer fire?
            let meter = tokio::spawn(async {
                let mut worst = Duration::ZERO;
                for _ in 0..(PAYLOADS + 20) {
                    let due = Instant::now() + Duration::from_millis(10);
                    tokio::time::sleep_until(due).await;
                    worst = worst.max(Instant::now() - due);
                }
                worst
            });
            let mut sent_at = Vec::new();
            for n in 0..PAYLOADS {
                sent_at.push(Instant::now());
                sink.publish(Publication::Sensor(format!("{{\"n\":{n}}}")))
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let worst = meter.await.unwrap();
            let mut got = Vec::new();
            let until = Instant::now() + Duration::from_secs(10);
            while got.len() < PAYLOADS && Instant::now() < until {
                got.extend(seen.try_iter());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let still_stuck = stuck.load(Ordering::SeqCst);
            // For the record, not asserted (it is the broker's and the machine's speed too).
            let slowest = got
                .iter()
                .zip(&sent_at)
                .map(|((_, at), sent)| *at - *sent)
                .max()
                .unwrap_or_default();
            eprintln!(
                "with the spool stuck, the slowest payload reached a subscriber in {slowest:?}"
            );
            let got: Vec<String> = got.into_iter().map(|(p, _)| p).collect();
            // The disk comes back (as an error): the spool lets go and the run ends cleanly.
            drop(reader);
            drop(sink);
            eprintln!("with the spool stuck, a meter's timer was at worst {worst:?} late");
            (worst, got, still_stuck, task.await.unwrap())
        });
        assert!(still_stuck, "the spool writer was blocked all along");
        let want: Vec<String> = (0..PAYLOADS).map(|n| format!("{{\"n\":{n}}}")).collect();
        assert_eq!(got, want);
        // A spool write on the runtime would hold the timer for as long as the pipe stays full
        // (the whole test); 1 s leaves a loaded machine's scheduling out of the verdict.
        assert!(
            worst < Duration::from_secs(1),
            "a meter's timer was {worst:?} late"
        );
        assert_eq!((report.delivered, report.left_queued), (PAYLOADS as u64, 0));
    }
}
