/*!
Getting every SENSOR payload to the broker once, in order, across outages: a state machine with no
I/O and no clock of its own (as quinn-proto's `Connection` and rumqttc's `MqttState`). The MQTT
adapter ([`super::mqtt`]) feeds it what happened (`handle_*`, with the time) and carries out what
it asks for ([`Delivery::poll_transmit`]), waking it at [`Delivery::poll_timeout`]. Tests drive it
with made-up events: an outage, acknowledgements out of order, an unknown packet id, a broker with
and without a session.

**Why sml owns delivery.** rumqttc keeps unacknowledged publishes across a reconnect only while
the broker keeps the session; a restarted broker has none, and rumqttc then clears them, while
requests still in its channel would be sent after ours were re-sent. So every payload stays in the
[`Outbox`] until the broker acknowledges it (QoS 1) or it is written (QoS 0). Each connection is
new (a fresh rumqttc client, clean session) and is handed at most [`WINDOW`] payloads at a time;
when it dies, everything it held dies with it and the next connection re-sends the outbox from the
oldest payload. A broker that says it kept a session changes nothing: a fresh client has nothing of
its own to re-send, so sml re-sends from the outbox all the same. Order is kept and nothing is
published twice, except a payload the broker took but could not acknowledge before the line dropped
(what QoS 1 allows).

**The connection's own messages.** On connect, `Online` on the retained LWT topic (the broker
publishes the will, `Offline`, when the connection dies without a DISCONNECT); a clean exit waits
up to [`DRAIN_ON_EXIT`] for the outbox to empty, then publishes `Offline` itself and disconnects.
STATE is sent only while connected (an old uptime is worth nothing).

**Several brokers** (`--broker` given more than once): one connection at a time, to the broker at
`current`. A connection that drops is retried on the same broker after the backoff's first delay (a
broker restart is the common outage); when that attempt fails, or any connect attempt fails (refused,
timed out), delivery moves on to the next broker of the list, round-robin, at once while some broker
of the list has not been tried since the last connection worked, and after the backoff's next delay
once every one has. Nothing else changes on a move: the new connection is handed the outbox from the
oldest payload not acknowledged, so the QoS 1 publishes the old broker took but never acknowledged are
published again on the new one (at-least-once: a subscriber may see such a payload twice, never zero
times), and `Online` goes to the new broker's LWT topic (the old one publishes the will, `Offline`,
when it notices the dead connection, if it still runs).

**A refused login ends delivery**: a broker that answers bad user name or password, not authorized,
an unacceptable client id or protocol version will answer the same on every retry. Tasmota retries
forever; sml reports it ([`MqttReport::fatal`]) so that the run can end with a clear error instead of
a service that looks alive and publishes nothing. The outbox (and its spool) keeps the payloads. With
several brokers the decision is per broker: one that refuses is left out of the rotation for the rest
of the run (its user database may differ from the others'; an error says so), and delivery ends only
when every broker of the list has refused.
*/

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rumqttc::{ConnectReturnCode, QoS};
use tracing::{debug, error, info, warn};

use super::outbox::Outbox;
use super::topics::Topics;
use crate::backoff::{Backoff, Retry};
use crate::engine::scheduler::Publication;

/// Outbox payloads handed to a connection at once (its in-flight window).
pub const WINDOW: usize = 32;
/// The connection's own messages (LWT, STATE) handed over and not yet written, at most; a STATE
/// past this is dropped (the socket is stalled, and a later STATE will say more).
pub const CONTROL_LIMIT: usize = 4;
/// Requests a connection may have waiting at once: what its request channel must hold.
pub const MAX_REQUESTS: usize = WINDOW + CONTROL_LIMIT + 2;
/// A clean exit waits this long for the outbox to empty.
pub const DRAIN_ON_EXIT: Duration = Duration::from_secs(5);
/// ... and this long for `Offline` and DISCONNECT to go out.
pub const GOODBYE_WAIT: Duration = Duration::from_secs(2);

/// What the MQTT task did, for the log at exit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttReport {
    pub delivered: u64,
    pub dropped: u64,
    pub connects: u64,
    pub left_queued: usize,
    /// Moves to another broker of the list after a failure (0 with one broker).
    pub failovers: u64,
    /// The broker refused the connection for a reason retrying will not fix (bad user name or
    /// password, not authorized): delivery stopped. The run should end with this, non-zero.
    pub fatal: Option<String>,
}

/// One publish for the adapter to hand to the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: String,
    pub qos: QoS,
    pub retain: bool,
}

/// What [`Delivery`] asks the adapter to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Open a new connection to `brokers[broker]`; the previous one, if any, is dropped.
    Connect { broker: usize },
    /// Hand this publish to the connection; its packet id comes back in `handle_written`.
    Publish(Message),
    /// Send DISCONNECT (the broker then drops the will) and close.
    Disconnect,
}

/// How delivery behaves.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub qos: QoS,
    pub topics: Topics,
    pub reconnect: Backoff,
    /// The brokers to try, in order (at least one): `host:port`, for the log; the adapter keeps
    /// the addresses under the same index.
    pub brokers: Vec<String>,
}

/// A publish handed to the connection, until its packet id is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handed {
    Entry(u64),
    /// LWT and STATE: not in the outbox.
    Control,
}

/// One connection's view: what was handed to it and what it still owes.
#[derive(Debug, Default)]
struct Session {
    /// Handed over, in order, and not yet written (no packet id yet).
    handed: VecDeque<Handed>,
    /// Written with QoS 1 and not yet acknowledged.
    by_pkid: HashMap<u16, Handed>,
    /// Outbox entries handed over and not done.
    in_flight: usize,
    /// Control messages handed over and not yet written.
    controls_unwritten: usize,
    /// The next outbox sequence number to hand over.
    next_seq: u64,
}

#[derive(Debug)]
enum Link {
    /// No connection; the next attempt is due then.
    Waiting {
        reconnect_at: Instant,
    },
    /// A connection was asked for; no CONNACK yet.
    Connecting,
    Up(Session),
    /// The broker refused the login for good, or the goodbye is done.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Open,
    /// The sink is gone: deliver what is queued until then.
    Draining {
        until: Instant,
    },
    /// `Offline` and DISCONNECT are handed over; done when they are written or then.
    Goodbye {
        until: Instant,
    },
    Finished,
}

pub struct Delivery {
    config: DeliveryConfig,
    outbox: Outbox,
    link: Link,
    retry: Retry,
    closing: Closing,
    transmits: VecDeque<Transmit>,
    report: MqttReport,
    /// Connection attempts since the last success, for the log's level.
    failed_attempts: u64,
    /// The broker connected to, or tried next: an index into `config.brokers`.
    current: usize,
    /// Connect attempts failed in a row since the last connection worked or the last full round:
    /// once every usable broker has failed, the next attempt waits the backoff's delay.
    failed_in_round: usize,
    /// Why each broker refused the login, if it did: such a broker is not tried again.
    refused: Vec<Option<&'static str>>,
}

impl Delivery {
    /// Delivery of `outbox` (which may hold payloads from a spool); asks to connect at once.
    pub fn new(config: DeliveryConfig, outbox: Outbox) -> Delivery {
        assert!(!config.brokers.is_empty(), "delivery needs a broker");
        let retry = config.reconnect.retry();
        let refused = vec![None; config.brokers.len()];
        Delivery {
            config,
            outbox,
            link: Link::Connecting,
            retry,
            closing: Closing::Open,
            transmits: VecDeque::from([Transmit::Connect { broker: 0 }]),
            report: MqttReport::default(),
            failed_attempts: 0,
            current: 0,
            failed_in_round: 0,
            refused,
        }
    }

    /// The engine published something.
    pub fn handle_publication(&mut self, now: Instant, p: Publication) {
        match p {
            Publication::Sensor(payload) => {
                let topic = self.config.topics.sensor.clone();
                if self.outbox.push(topic, payload).is_some() {
                    let dropped = self.outbox.dropped();
                    if dropped == 1 || dropped % 100 == 0 {
                        warn!(
                            "MQTT outbox full ({} payloads): dropped the oldest ({dropped} dropped \
                             so far)",
                            self.outbox.len()
                        );
                    }
                }
                self.fill();
            }
            Publication::State(payload) => {
                let topic = self.config.topics.state.clone();
                if !self.hand_control(topic, payload, false) {
                    debug!("broker not connected (or not taking): STATE not sent");
                }
            }
            Publication::Script { topic, payload } => {
                if !self.hand_control(topic, payload, false) {
                    debug!("broker not connected (or not taking): the script's publish not sent");
                }
            }
        }
        self.advance_closing(now);
    }

    /// CONNACK with success. `session_present` is logged only: see the module doc.
    pub fn handle_connected(&mut self, now: Instant, session_present: bool) {
        if !matches!(self.link, Link::Connecting) {
            return;
        }
        self.report.connects += 1;
        self.failed_attempts = 0;
        self.failed_in_round = 0;
        self.retry.reset();
        if session_present {
            debug!("the broker kept a session; sml re-sends from its outbox all the same");
        }
        // Whatever an earlier connection held is gone with it: start from the oldest.
        self.link = Link::Up(Session::default());
        let lwt = self.config.topics.lwt.clone();
        self.hand_control(lwt, "Online".into(), true);
        info!(
            "MQTT connected to {}; {} payloads queued",
            self.broker(),
            self.outbox.len()
        );
        self.fill();
        self.advance_closing(now);
    }

    /// A publish left with this packet id (0 for QoS 0), in the order it was handed over.
    pub fn handle_written(&mut self, now: Instant, pkid: u16) {
        let Link::Up(s) = &mut self.link else { return };
        let Some(h) = s.handed.pop_front() else {
            return;
        };
        if h == Handed::Control {
            s.controls_unwritten = s.controls_unwritten.saturating_sub(1);
        }
        if pkid == 0 {
            self.complete(h);
        } else {
            s.by_pkid.insert(pkid, h);
        }
        self.fill();
        self.advance_closing(now);
    }

    /// PUBACK. An id this connection is not waiting for (a broker's mistake, or an ack for an
    /// earlier connection) completes nothing.
    pub fn handle_puback(&mut self, now: Instant, pkid: u16) {
        let Link::Up(s) = &mut self.link else { return };
        let Some(h) = s.by_pkid.remove(&pkid) else {
            debug!("PUBACK for packet id {pkid}, which is not in flight: ignored");
            return;
        };
        self.complete(h);
        self.fill();
        self.advance_closing(now);
    }

    /// The connection is gone (or never came up). Its publishes not acknowledged stay queued.
    pub fn handle_disconnected(&mut self, now: Instant, why: &str) {
        if matches!(self.link, Link::Stopped) {
            return;
        }
        let was_up = matches!(self.link, Link::Up(_));
        if let Closing::Goodbye { .. } = self.closing {
            self.link = Link::Stopped;
            self.closing = Closing::Finished;
            return;
        }
        self.failed_attempts += 1;
        let failed = self.broker().to_string();
        let delay = if was_up {
            // The same broker first, after the first delay: it may only be restarting.
            self.failed_in_round = 0;
            self.retry.next_delay()
        } else {
            self.move_on()
        };
        let next = if self.broker() == failed {
            String::new()
        } else {
            format!(" on {}", self.broker())
        };
        // Said loudly when a working connection drops, the first attempt fails or delivery moves
        // on in the first round after it; the retries of brokers that stay away go to the debug
        // log.
        let first_round = self.failed_attempts <= self.config.brokers.len() as u64;
        if was_up
            || (!next.is_empty() && first_round)
            || (self.report.connects == 0 && self.failed_attempts == 1)
        {
            warn!(
                "MQTT {failed}: {why}; retrying{next} in {delay:?}, {} payloads queued",
                self.outbox.len()
            );
        } else {
            debug!(
                "MQTT {failed}: {why}; retrying{next} in {delay:?}, {} payloads queued",
                self.outbox.len()
            );
        }
        self.transmits.clear();
        self.link = Link::Waiting {
            reconnect_at: now + delay,
        };
        self.advance_closing(now);
    }

    /// CONNACK with a refusal.
    pub fn handle_refused(&mut self, now: Instant, code: ConnectReturnCode) {
        let why = match code {
            ConnectReturnCode::BadUserNamePassword => {
                "bad user name or password (check --user and --password-file)"
            }
            ConnectReturnCode::NotAuthorized => {
                "not authorized (check --user and --password-file, and the broker's access list)"
            }
            ConnectReturnCode::BadClientId => "client id rejected (check --client-id)",
            ConnectReturnCode::RefusedProtocolVersion => "the broker does not speak MQTT 3.1.1",
            ConnectReturnCode::ServiceUnavailable | ConnectReturnCode::Success => {
                return self.handle_disconnected(now, "the broker is unavailable");
            }
        };
        self.refused[self.current] = Some(why);
        if self.refused.iter().any(Option::is_none) {
            error!(
                "MQTT: the broker {} refused the connection: {why}; it is not tried again, the \
                 other brokers are",
                self.broker()
            );
            return self.handle_disconnected(now, "refused the login");
        }
        let fatal = match self.config.brokers.as_slice() {
            [one] => format!("the broker {one} refused the connection: {why}"),
            all => {
                let each: Vec<String> = all
                    .iter()
                    .zip(&self.refused)
                    .map(|(b, why)| format!("{b}: {}", why.unwrap_or_default()))
                    .collect();
                format!("every broker refused the connection ({})", each.join("; "))
            }
        };
        error!("MQTT: {fatal}; not retrying");
        self.report.fatal = Some(fatal);
        self.transmits.clear();
        self.link = Link::Stopped;
        self.closing = Closing::Finished;
    }

    /// The DISCONNECT of the goodbye went out.
    pub fn handle_disconnect_sent(&mut self) {
        if let Closing::Goodbye { .. } = self.closing {
            self.link = Link::Stopped;
            self.closing = Closing::Finished;
        }
    }

    /// Nothing more will be published: drain, say goodbye, finish.
    pub fn handle_close(&mut self, now: Instant) {
        if self.closing == Closing::Open {
            self.closing = Closing::Draining {
                until: now + DRAIN_ON_EXIT,
            };
        }
        self.advance_closing(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Link::Waiting { reconnect_at } = self.link {
            if now >= reconnect_at {
                self.link = Link::Connecting;
                self.transmits.push_back(Transmit::Connect {
                    broker: self.current,
                });
            }
        }
        self.advance_closing(now);
    }

    /// When [`Delivery::handle_timeout`] is due next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let reconnect = match self.link {
            Link::Waiting { reconnect_at } => Some(reconnect_at),
            _ => None,
        };
        let closing = match self.closing {
            Closing::Draining { until } | Closing::Goodbye { until } => Some(until),
            Closing::Open | Closing::Finished => None,
        };
        match (reconnect, closing) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next thing for the adapter to do.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Up(_))
    }

    /// Delivery is over: the goodbye is done, or the broker refused sml for good.
    pub fn is_finished(&self) -> bool {
        self.closing == Closing::Finished
    }

    pub fn report(&self) -> MqttReport {
        MqttReport {
            dropped: self.outbox.dropped(),
            left_queued: self.outbox.len(),
            ..self.report.clone()
        }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// The broker connected to, or tried next (`host:port`).
    pub fn broker(&self) -> &str {
        &self.config.brokers[self.current]
    }

    /// A connect attempt failed: the next broker that has not refused, and how long to wait for
    /// it (nothing while the round is not done).
    fn move_on(&mut self) -> Duration {
        let n = self.config.brokers.len();
        let usable = self.refused.iter().filter(|r| r.is_none()).count();
        let from = self.current;
        // A broker that refused the login is out of the round, not a failure of it.
        if self.refused[from].is_none() {
            self.failed_in_round += 1;
        }
        if let Some(next) = (1..=n)
            .map(|step| (from + step) % n)
            .find(|&i| self.refused[i].is_none())
        {
            self.current = next;
        }
        if self.current != from {
            self.report.failovers += 1;
        }
        if self.failed_in_round >= usable {
            self.failed_in_round = 0;
            self.retry.next_delay()
        } else {
            Duration::ZERO
        }
    }

    /// Hand a control message to an up connection; false if not up or too many are waiting.
    fn hand_control(&mut self, topic: String, payload: String, retain: bool) -> bool {
        let Link::Up(s) = &mut self.link else {
            return false;
        };
        if s.controls_unwritten >= CONTROL_LIMIT {
            return false;
        }
        s.controls_unwritten += 1;
        s.handed.push_back(Handed::Control);
        self.transmits.push_back(Transmit::Publish(Message {
            topic,
            payload,
            qos: self.config.qos,
            retain,
        }));
        true
    }

    /// Hand the oldest payloads not yet handed over, up to the window.
    fn fill(&mut self) {
        let Link::Up(s) = &mut self.link else { return };
        while s.in_flight < WINDOW {
            let Some(e) = self.outbox.first_from(s.next_seq) else {
                break;
            };
            s.handed.push_back(Handed::Entry(e.seq));
            s.in_flight += 1;
            s.next_seq = e.seq + 1;
            self.transmits.push_back(Transmit::Publish(Message {
                topic: e.topic.clone(),
                payload: e.payload.clone(),
                qos: self.config.qos,
                retain: false,
            }));
        }
    }

    fn complete(&mut self, h: Handed) {
        let Handed::Entry(seq) = h else { return };
        if let Link::Up(s) = &mut self.link {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
        // An entry dropped from a full outbox meanwhile is no longer there to count.
        if self.outbox.complete(seq).is_some() {
            self.report.delivered += 1;
        }
    }

    fn advance_closing(&mut self, now: Instant) {
        match self.closing {
            Closing::Draining { until } if self.outbox.is_empty() || now >= until => {
                if let Link::Up(_) = self.link {
                    let lwt = self.config.topics.lwt.clone();
                    // Offline goes out even past the control limit: it is the last word.
                    if let Link::Up(s) = &mut self.link {
                        s.controls_unwritten = s.controls_unwritten.min(CONTROL_LIMIT - 1);
                    }
                    self.hand_control(lwt, "Offline".into(), true);
                    self.transmits.push_back(Transmit::Disconnect);
                    self.closing = Closing::Goodbye {
                        until: now + GOODBYE_WAIT,
                    };
                } else {
                    self.transmits.clear();
                    self.link = Link::Stopped;
                    self.closing = Closing::Finished;
                }
            }
            Closing::Goodbye { until } if now >= until => {
                self.link = Link::Stopped;
                self.closing = Closing::Finished;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENSOR: &str = "tele/m/SENSOR";
    const LWT: &str = "tele/m/LWT";

    fn delivery(qos: QoS) -> Delivery {
        Delivery::new(
            DeliveryConfig {
                qos,
                topics: Topics::new("%prefix%/%topic%/", "m").unwrap(),
                reconnect: Backoff {
                    first: Duration::from_secs(1),
                    cap: Duration::from_secs(8),
                },
                brokers: vec!["test:1883".into()],
            },
            Outbox::new(100),
        )
    }

    /// Delivery over brokers `a`, `b`, `c`, connected to `a` with `Online` acknowledged.
    fn three_brokers(now: Instant) -> Delivery {
        let mut d = Delivery::new(
            DeliveryConfig {
                qos: QoS::AtLeastOnce,
                topics: Topics::new("%prefix%/%topic%/", "m").unwrap(),
                reconnect: Backoff {
                    first: Duration::from_secs(1),
                    cap: Duration::from_secs(8),
                },
                brokers: vec!["a:1883".into(), "b:1883".into(), "c:1883".into()],
            },
            Outbox::new(100),
        );
        assert_eq!(d.poll_transmit(), Some(Transmit::Connect { broker: 0 }));
        connect(&mut d, now, false);
        d
    }

    fn sensor(d: &mut Delivery, now: Instant, n: u32) {
        d.handle_publication(now, Publication::Sensor(n.to_string()));
    }

    /// Everything asked for now.
    fn transmits(d: &mut Delivery) -> Vec<Transmit> {
        std::iter::from_fn(|| d.poll_transmit()).collect()
    }

    /// The payloads of SENSOR publishes asked for now.
    fn sent(d: &mut Delivery) -> Vec<String> {
        transmits(d)
            .into_iter()
            .filter_map(|t| match t {
                Transmit::Publish(m) if m.topic == SENSOR => Some(m.payload),
                _ => None,
            })
            .collect()
    }

    /// Connected, with `Online` written as packet 1 (acknowledged).
    fn connect(d: &mut Delivery, now: Instant, session_present: bool) {
        d.handle_connected(now, session_present);
        let Some(Transmit::Publish(m)) = d.poll_transmit() else {
            panic!("Online first")
        };
        assert_eq!(
            (m.topic.as_str(), m.payload.as_str(), m.retain),
            (LWT, "Online", true)
        );
        d.handle_written(now, 1);
        d.handle_puback(now, 1);
    }

    fn up(now: Instant) -> Delivery {
        let mut d = delivery(QoS::AtLeastOnce);
        assert_eq!(d.poll_transmit(), Some(Transmit::Connect { broker: 0 }));
        connect(&mut d, now, false);
        d
    }

    #[test]
    fn a_payload_leaves_the_outbox_only_when_acknowledged() {
        let t = Instant::now();
        let mut d = up(t);
        sensor(&mut d, t, 1);
        assert_eq!(sent(&mut d), ["1"]);
        d.handle_written(t, 2);
        assert_eq!(d.outbox().len(), 1);
        d.handle_puback(t, 2);
        assert_eq!(d.outbox().len(), 0);
        assert_eq!(d.report().delivered, 1);
    }

    #[test]
    fn with_qos_0_a_payload_is_done_once_written() {
        let t = Instant::now();
        let mut d = delivery(QoS::AtMostOnce);
        transmits(&mut d);
        d.handle_connected(t, false);
        transmits(&mut d);
        d.handle_written(t, 0);
        sensor(&mut d, t, 1);
        assert_eq!(sent(&mut d), ["1"]);
        d.handle_written(t, 0);
        assert_eq!((d.outbox().len(), d.report().delivered), (0, 1));
    }

    #[test]
    fn no_more_than_the_window_is_handed_over_at_once() {
        let t = Instant::now();
        let mut d = up(t);
        for n in 0..WINDOW as u32 + 10 {
            sensor(&mut d, t, n);
        }
        assert_eq!(sent(&mut d).len(), WINDOW);
        d.handle_written(t, 2);
        d.handle_puback(t, 2);
        assert_eq!(sent(&mut d), [WINDOW.to_string()]);
    }

    #[test]
    fn acknowledgements_out_of_order_complete_the_right_payloads() {
        let t = Instant::now();
        let mut d = up(t);
        for n in 1..=3 {
            sensor(&mut d, t, n);
        }
        assert_eq!(sent(&mut d), ["1", "2", "3"]);
        for pkid in [10, 11, 12] {
            d.handle_written(t, pkid);
        }
        d.handle_puback(t, 12);
        d.handle_puback(t, 10);
        let left: Vec<_> = (0..d.outbox().len())
            .map(|i| d.outbox().get(i).unwrap().payload.clone())
            .collect();
        assert_eq!(left, ["2"]);
        assert_eq!(d.report().delivered, 2);
    }

    #[test]
    fn a_puback_for_an_unknown_id_completes_nothing() {
        let t = Instant::now();
        let mut d = up(t);
        sensor(&mut d, t, 1);
        sent(&mut d);
        d.handle_written(t, 2);
        d.handle_puback(t, 99);
        d.handle_puback(t, 1); // Online's, already acknowledged
        assert_eq!((d.outbox().len(), d.report().delivered), (1, 0));
        d.handle_puback(t, 2);
        assert_eq!((d.outbox().len(), d.report().delivered), (0, 1));
        // Twice is once.
        d.handle_puback(t, 2);
        assert_eq!(d.report().delivered, 1);
    }

    /// An outage: what was in flight and what came meanwhile go out on the next connection, in
    /// order, from the oldest; reconnects back off and the delay resets once connected.
    fn an_outage(session_present: bool) {
        let t0 = Instant::now();
        let mut d = up(t0);
        for n in 1..=3 {
            sensor(&mut d, t0, n);
        }
        assert_eq!(sent(&mut d), ["1", "2", "3"]);
        d.handle_written(t0, 2);
        d.handle_written(t0, 3);
        d.handle_puback(t0, 2); // "1" is done; "2" was written, "3" not even that
        d.handle_disconnected(t0, "connection reset");
        assert!(!d.is_connected());
        for n in 4..=5 {
            sensor(&mut d, t0, n);
        }
        assert_eq!(transmits(&mut d), [], "nothing while down");
        // Backing off: 1 s, then 2 s.
        assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        d.handle_timeout(t0 + Duration::from_millis(999));
        assert_eq!(transmits(&mut d), []);
        let t1 = t0 + Duration::from_secs(1);
        d.handle_timeout(t1);
        assert_eq!(transmits(&mut d), [Transmit::Connect { broker: 0 }]);
        d.handle_disconnected(t1, "connection refused");
        assert_eq!(d.poll_timeout(), Some(t1 + Duration::from_secs(2)));
        let t2 = t1 + Duration::from_secs(2);
        d.handle_timeout(t2);
        assert_eq!(transmits(&mut d), [Transmit::Connect { broker: 0 }]);
        // A late PUBACK of the old connection's packet 3 must not complete anything now.
        d.handle_puback(t2, 3);
        connect(&mut d, t2, session_present);
        assert_eq!(sent(&mut d), ["2", "3", "4", "5"]);
        for (pkid, _) in (2..).zip(0..4) {
            d.handle_written(t2, pkid);
            d.handle_puback(t2, pkid);
        }
        assert_eq!(d.outbox().len(), 0);
        let r = d.report();
        assert_eq!((r.delivered, r.connects), (5, 2));
        // Connected again, the back-off starts from the first delay.
        d.handle_disconnected(t2, "gone");
        assert_eq!(d.poll_timeout(), Some(t2 + Duration::from_secs(1)));
    }

    #[test]
    fn after_an_outage_a_broker_without_a_session_gets_everything_not_acknowledged_in_order() {
        an_outage(false);
    }

    #[test]
    fn after_an_outage_a_broker_with_a_session_gets_the_same() {
        an_outage(true);
    }

    #[test]
    fn a_lost_connection_is_retried_on_the_same_broker_first() {
        let t = Instant::now();
        let mut d = three_brokers(t);
        d.handle_disconnected(t, "connection reset");
        assert_eq!(d.poll_timeout(), Some(t + Duration::from_secs(1)));
        d.handle_timeout(t + Duration::from_secs(1));
        assert_eq!(transmits(&mut d), [Transmit::Connect { broker: 0 }]);
        assert_eq!(d.report().failovers, 0);
    }

    #[test]
    fn a_broker_not_back_within_the_first_retry_is_left_for_the_next_with_the_unacknowledged_payloads(
    ) {
        let t0 = Instant::now();
        let mut d = three_brokers(t0);
        for n in 1..=3 {
            sensor(&mut d, t0, n);
        }
        assert_eq!(sent(&mut d), ["1", "2", "3"]);
        for pkid in 2..=4 {
            d.handle_written(t0, pkid);
        }
        d.handle_puback(t0, 2); // a took "1"; "2" and "3" were written, never acknowledged
        d.handle_disconnected(t0, "connection reset");
        sensor(&mut d, t0, 4);
        let t1 = t0 + Duration::from_secs(1);
        d.handle_timeout(t1);
        assert_eq!(transmits(&mut d), [Transmit::Connect { broker: 0 }]);
        d.handle_disconnected(t1, "connection refused");
        // b is tried at once: it has not failed since a worked.
        assert_eq!(d.poll_timeout(), Some(t1));
        d.handle_timeout(t1);
        assert_eq!(transmits(&mut d), [Transmit::Connect { broker: 1 }]);
        assert_eq!(d.broker(), "b:1883");
        connect(&mut d, t1, false);
        assert_eq!(sent(&mut d), ["2", "3", "4"], "re-sent to b, in order");
        for pkid in 2..=4 {
            d.handle_written(t1, pkid);
            d.handle_puback(t1, pkid);
        }
        let r = d.report();
        assert_eq!((r.delivered, r.left_queued, r.failovers), (4, 0, 1));
    }

    #[test]
    fn brokers_are_tried_round_robin_and_a_full_round_of_failures_backs_off() {
        let t = Instant::now();
        let mut d = three_brokers(t);
        let mut tried = Vec::new();
        let mut waits = Vec::new();
        let mut now = t;
        // a drops; then every attempt fails.
        d.handle_disconnected(now, "gone");
        for _ in 0..7 {
            let due = d.poll_timeout().unwrap();
            waits.push((due - now).as_secs());
            now = due;
            d.handle_timeout(now);
            let Some(Transmit::Connect { broker }) = d.poll_transmit() else {
                panic!("a connect is due")
            };
            tried.push(broker);
            d.handle_disconnected(now, "connection refused");
        }
        assert_eq!(tried, [0, 1, 2, 0, 1, 2, 0]);
        // 1 s for a's restart; b and c at once; then the backoff doubles per round.
        assert_eq!(waits, [1, 0, 0, 2, 0, 0, 4]);
    }

    #[test]
    fn a_broker_that_refuses_the_login_is_skipped_and_the_others_still_serve() {
        let t = Instant::now();
        let mut d = three_brokers(t);
        d.handle_disconnected(t, "gone");
        d.handle_timeout(t + Duration::from_secs(1));
        transmits(&mut d);
        d.handle_refused(
            t + Duration::from_secs(1),
            ConnectReturnCode::BadUserNamePassword,
        );
        assert!(!d.is_finished(), "b and c may still take sml");
        assert_eq!(d.report().fatal, None);
        let mut tried = Vec::new();
        for _ in 0..4 {
            let now = d.poll_timeout().unwrap();
            d.handle_timeout(now);
            let Some(Transmit::Connect { broker }) = d.poll_transmit() else {
                panic!("a connect is due")
            };
            tried.push(broker);
            d.handle_disconnected(now, "connection refused");
        }
        assert_eq!(tried, [1, 2, 1, 2], "a is not tried again");
    }

    #[test]
    fn delivery_ends_when_every_broker_has_refused_the_login() {
        let t = Instant::now();
        let mut d = three_brokers(t);
        d.handle_disconnected(t, "gone");
        for _ in 0..3 {
            let now = d.poll_timeout().unwrap();
            d.handle_timeout(now);
            transmits(&mut d);
            d.handle_refused(now, ConnectReturnCode::NotAuthorized);
        }
        assert!(d.is_finished());
        let fatal = d.report().fatal.unwrap();
        assert!(fatal.starts_with("every broker refused"), "{fatal}");
        for b in ["a:1883", "b:1883", "c:1883"] {
            assert!(fatal.contains(b), "{fatal}");
        }
    }

    #[test]
    fn state_is_sent_only_while_connected_and_not_piled_up() {
        let t = Instant::now();
        let mut d = delivery(QoS::AtLeastOnce);
        transmits(&mut d);
        d.handle_publication(t, Publication::State("{}".into()));
        assert_eq!(transmits(&mut d), [], "not connected");
        d.handle_connected(t, false);
        transmits(&mut d); // Online, never written: the socket is stalled
        for _ in 0..10 {
            d.handle_publication(t, Publication::State("{}".into()));
        }
        assert_eq!(transmits(&mut d).len(), CONTROL_LIMIT - 1);
    }

    #[test]
    fn a_refused_login_stops_delivery_and_says_why() {
        let t = Instant::now();
        let mut d = delivery(QoS::AtLeastOnce);
        transmits(&mut d);
        sensor(&mut d, t, 1);
        d.handle_refused(t, ConnectReturnCode::NotAuthorized);
        assert!(d.is_finished());
        assert_eq!(d.poll_timeout(), None, "no retry");
        let r = d.report();
        assert!(r.fatal.unwrap().contains("not authorized"));
        assert_eq!(r.left_queued, 1, "the payload is kept");
    }

    #[test]
    fn an_unavailable_broker_is_retried() {
        let t = Instant::now();
        let mut d = delivery(QoS::AtLeastOnce);
        transmits(&mut d);
        d.handle_refused(t, ConnectReturnCode::ServiceUnavailable);
        assert!(!d.is_finished());
        assert_eq!(d.report().fatal, None);
        assert_eq!(d.poll_timeout(), Some(t + Duration::from_secs(1)));
    }

    #[test]
    fn a_clean_exit_drains_then_says_offline_and_disconnects() {
        let t = Instant::now();
        let mut d = up(t);
        sensor(&mut d, t, 1);
        sent(&mut d);
        d.handle_close(t);
        assert_eq!(transmits(&mut d), [], "waits for the outbox");
        d.handle_written(t, 2);
        d.handle_puback(t, 2);
        let goodbye = transmits(&mut d);
        assert_eq!(
            goodbye,
            [
                Transmit::Publish(Message {
                    topic: LWT.into(),
                    payload: "Offline".into(),
                    qos: QoS::AtLeastOnce,
                    retain: true
                }),
                Transmit::Disconnect
            ]
        );
        assert!(!d.is_finished());
        d.handle_disconnect_sent();
        assert!(d.is_finished());
    }

    #[test]
    fn a_clean_exit_without_a_broker_gives_up_after_the_drain_time() {
        let t = Instant::now();
        let mut d = delivery(QoS::AtLeastOnce);
        transmits(&mut d);
        d.handle_disconnected(t, "refused");
        sensor(&mut d, t, 1);
        d.handle_close(t);
        assert!(!d.is_finished());
        d.handle_timeout(t + DRAIN_ON_EXIT);
        assert!(d.is_finished());
        assert_eq!(d.report().left_queued, 1);
    }
}
