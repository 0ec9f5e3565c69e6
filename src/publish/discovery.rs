/*!
Discovery: so that Home Assistant shows sml's values without a hand-written YAML sensor per value.

Two schemes, each a flag, both off by default:
- **Home Assistant MQTT discovery** (`--ha-discovery`): one retained config per metric line at
  `<ha-prefix>/sensor/<node id>/<object id>/config`, reading its value from the SENSOR JSON with a
  `value_template`, its unit from the script, and `device_class`/`state_class` inferred from the unit
  so that the Energy dashboard accepts energy and gas counters. One HA device per meter.
- **Tasmota discovery** (`--tasmota-discovery`): `tasmota/discovery/<mac>/config` and `.../sensors`,
  the two retained messages Home Assistant's Tasmota integration reads to adopt a Tasmota device;
  the MAC is a stable pseudo-MAC made from the topic (locally administered, so it is no real
  vendor's).

**Which configs are sml's, and which vanished.** A metric line removed from the script must lose its
HA entity, so its retained config is replaced with an empty payload. What was announced is read back
from the broker (a subscription to this node's config topics returns the retained ones), not kept in
a state file: the broker is what Home Assistant reads, so it is the one truth; it works without
`--spool`; and a state file lost or copied to another machine would leave entities behind or delete
someone else's. Only configs under this node id whose `unique_id` starts with this node's are
removed.

The announcements go over a short connection of their own (client id `<client id>-discovery`, no
will), so they never mix with the SENSOR delivery's ordering and packet ids
([`super::delivery`]), and a failure here never holds a SENSOR payload back.
*/

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::{json, Value as Json};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::mqtt::{tls_config, MqttConfig};
use crate::backoff::Backoff;
use crate::decode::{Telegram, Value};
use crate::script::model::{Decoding, EntryNo, Meter, MeterIndex, Metric, Script, ValueSpec};

pub const DEFAULT_HA_PREFIX: &str = "homeassistant";
/// How long the broker gets to return the retained configs before sml gives up reading them.
const READ_BACK_LIMIT: Duration = Duration::from_secs(10);
/// How long one announcement may take (connect, read back, publish, acknowledgements).
const ANNOUNCE_LIMIT: Duration = Duration::from_secs(30);

/// What to announce, from `sml run`'s flags.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// `--ha-discovery`: the HA prefix (`--ha-prefix`, default `homeassistant`).
    pub ha_prefix: Option<String>,
    /// `--tasmota-discovery`.
    pub tasmota: bool,
    /// Tasmota's %topic% (the device topic), for the node id and the pseudo-MAC.
    pub topic: String,
    /// Tasmota's FullTopic, for Tasmota discovery's `ft`.
    pub full_topic: String,
}

/// One retained message to publish; an empty payload removes a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub topic: String,
    pub payload: String,
}

/// A value line as discovery sees it.
struct Line<'a> {
    meter: &'a Meter,
    prefix: &'a str,
    label: &'a str,
    unit: &'a str,
    name: &'a str,
    text: bool,
}

/// Every line that appears in SENSOR (a meter without a prefix publishes nothing).
fn lines(script: &Script) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    for m in &script.meters {
        let Some(prefix) = m.prefix.as_deref() else {
            continue;
        };
        let texts = text_entries(m);
        for o in m.outputs() {
            out.push(Line {
                meter: m,
                prefix,
                label: &o.label,
                unit: &o.unit,
                name: &o.name,
                text: texts.contains(&o.entry),
            });
        }
    }
    out
}

/// The entries of a meter's `@#` (text) lines: the first one is taken as its serial number.
fn text_entries(m: &Meter) -> Vec<EntryNo> {
    fn texts<P>(v: &[Metric<P>]) -> Vec<EntryNo> {
        v.iter()
            .filter(|x| matches!(x.value, ValueSpec::Text { .. }))
            .map(|x| x.output.entry)
            .collect()
    }
    match &m.decoding {
        Decoding::Obis(v) => texts(v),
        Decoding::Sml(v) => texts(v),
        Decoding::Modbus(v)
        | Decoding::Ebus(v)
        | Decoding::Kamstrup(v)
        | Decoding::Can(v)
        | Decoding::Pzem(v)
        | Decoding::Raw { metrics: v, .. } => texts(v),
        Decoding::Vbus(v) => texts(v),
        Decoding::Counter { metrics, .. } => texts(metrics),
    }
}

/// HA ids allow `[a-zA-Z0-9_-]`; anything else becomes `_`.
pub fn ha_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `device_class` and `state_class` for a unit, as Home Assistant's Energy dashboard wants them;
/// `(None, None)` for a unit sml cannot place. The unit is returned as HA spells it (`m3` -> `m³`).
pub fn classes(unit: &str) -> (Option<&'static str>, Option<&'static str>, String) {
    let u = unit.trim();
    let (dc, sc, shown) = match u {
        "Wh" | "kWh" | "MWh" => (Some("energy"), Some("total_increasing"), u),
        "W" | "kW" => (Some("power"), Some("measurement"), u),
        "VA" | "kVA" => (Some("apparent_power"), Some("measurement"), u),
        "var" | "kvar" => (Some("reactive_power"), Some("measurement"), u),
        "varh" | "kvarh" => (Some("reactive_energy"), Some("total_increasing"), u),
        "V" => (Some("voltage"), Some("measurement"), u),
        "A" => (Some("current"), Some("measurement"), u),
        "Hz" => (Some("frequency"), Some("measurement"), u),
        // A smart-meter script's m³ is a gas counter far more often than water; HA's Energy
        // dashboard takes gas in m³ with total_increasing.
        "m³" | "m3" => (Some("gas"), Some("total_increasing"), "m³"),
        "°C" | "C" => (Some("temperature"), Some("measurement"), "°C"),
        // A percentage could be humidity, a battery or a power factor: no class, but a graph.
        "%" => (None, Some("measurement"), u),
        _ => (None, None, u),
    };
    (dc, sc, shown.to_string())
}

/// The node id (from the topic) under which this sml's HA configs live.
pub fn node_id(topic: &str) -> String {
    ha_id(topic)
}

/// The HA device of a meter: its serial when the script captures one and it has been read,
/// else the topic and prefix (stable across restarts either way).
fn device(topic: &str, m: &Meter, prefix: &str, serial: Option<&str>) -> Json {
    let id = match serial {
        Some(s) => format!("sml_{}", ha_id(s)),
        None => format!("sml_{}_{}", ha_id(topic), ha_id(prefix)),
    };
    let mut d = json!({
        "identifiers": [id],
        "name": format!("{topic} {prefix}"),
        "manufacturer": "sml",
        "model": format!("Tasmota SML meter {} ({})", m.index, m.decoding.type_letter()),
    });
    if let Some(s) = serial {
        d["serial_number"] = json!(s);
    }
    d
}

/// The HA config topic of a line.
fn ha_topic(prefix: &str, node: &str, object: &str) -> String {
    format!("{prefix}/sensor/{node}/{object}/config")
}

/// The template that reads a line's value from the SENSOR JSON. Bracket form, so any name works.
pub fn value_template(prefix: &str, name: &str) -> String {
    let q = |s: &str| s.replace('\\', "\\\\").replace('\'', "\\'");
    format!("{{{{ value_json['{}']['{}'] }}}}", q(prefix), q(name))
}

/// The HA configs of `meter` (all meters when `None`), given the serials read so far.
pub fn ha_configs(
    script: &Script,
    config: &DiscoveryConfig,
    ha_prefix: &str,
    topics: &super::topics::Topics,
    meter: Option<MeterIndex>,
    serials: &HashMap<MeterIndex, String>,
) -> Vec<Announcement> {
    let node = node_id(&config.topic);
    let mut out = Vec::new();
    for l in lines(script) {
        if meter.is_some_and(|m| m != l.meter.index) {
            continue;
        }
        let object = format!("{}_{}", ha_id(l.prefix), ha_id(l.name));
        let unique_id = format!("{node}_{object}");
        let label = if l.label.is_empty() || l.label == "*" {
            l.name
        } else {
            l.label
        };
        let mut c = json!({
            "name": label,
            "unique_id": unique_id,
            "object_id": unique_id,
            "state_topic": topics.sensor,
            "value_template": value_template(l.prefix, l.name),
            "availability_topic": topics.lwt,
            "payload_available": "Online",
            "payload_not_available": "Offline",
            "device": device(&config.topic, l.meter, l.prefix, serials.get(&l.meter.index).map(String::as_str)),
        });
        if !l.text {
            let (dc, sc, unit) = classes(l.unit);
            if !unit.is_empty() {
                c["unit_of_measurement"] = json!(unit);
            }
            if let Some(dc) = dc {
                c["device_class"] = json!(dc);
            }
            if let Some(sc) = sc {
                c["state_class"] = json!(sc);
            }
        }
        out.push(Announcement {
            topic: ha_topic(ha_prefix, &node, &object),
            payload: c.to_string(),
        });
    }
    out
}

/// A stable, locally administered pseudo-MAC from the topic (FNV-1a): `02xxxxxxxxxx`, upper case
/// hex without separators, as Tasmota writes its MAC in discovery topics.
pub fn pseudo_mac(topic: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let bytes = h.to_be_bytes();
    // Locally administered, unicast: 0x02 in the first octet, so it is nobody's vendor prefix.
    let mac = [0x02u8, bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]];
    crate::hex::encode_upper(&mac)
}

/// Tasmota discovery's two retained messages: the device (`config`) and its sensors (`sensors`),
/// with the shape Home Assistant's Tasmota integration reads (`hass-tasmota`'s schema).
pub fn tasmota_configs(script: &Script, config: &DiscoveryConfig) -> Vec<Announcement> {
    let mac = pseudo_mac(&config.topic);
    let device = json!({
        "ip": "127.0.0.1",
        "dn": config.topic,
        "fn": [config.topic, null, null, null, null, null, null, null],
        "hn": format!("sml-{}", ha_id(&config.topic)),
        "mac": mac,
        "md": "sml",
        "ty": 0,
        "if": 0,
        "ofln": "Offline",
        "onln": "Online",
        "state": ["OFF", "ON", "TOGGLE", "HOLD"],
        "sw": env!("CARGO_PKG_VERSION"),
        "t": config.topic,
        "ft": config.full_topic,
        "tp": ["cmnd", "stat", "tele"],
        "rl": [0, 0, 0, 0, 0, 0, 0, 0],
        "swc": [-1, -1, -1, -1, -1, -1, -1, -1],
        "swn": [null, null, null, null, null, null, null, null],
        "btn": [0, 0, 0, 0, 0, 0, 0, 0],
        "so": {"4": 0, "11": 0, "13": 0, "17": 0, "20": 0, "30": 0, "68": 0, "73": 0, "82": 0, "114": 0, "117": 0},
        "lk": 0,
        "lt_st": 0,
        "sho": [],
        "sht": [],
        "ver": 1
    });
    // The sensors message lists what SENSOR holds; values are placeholders (HA reads the keys).
    let mut sn = serde_json::Map::new();
    sn.insert("Time".into(), json!("1970-01-01T00:00:00"));
    let mut groups: BTreeMap<&str, serde_json::Map<String, Json>> = BTreeMap::new();
    for l in lines(script) {
        let v = if l.text { json!("") } else { json!(0) };
        groups
            .entry(l.prefix)
            .or_default()
            .insert(l.name.to_string(), v);
    }
    for (prefix, values) in groups {
        sn.insert(prefix.to_string(), Json::Object(values));
    }
    vec![
        Announcement {
            topic: format!("tasmota/discovery/{mac}/config"),
            payload: device.to_string(),
        },
        Announcement {
            topic: format!("tasmota/discovery/{mac}/sensors"),
            payload: json!({"sn": sn, "ver": 1}).to_string(),
        },
    ]
}

/// The retained configs to clear: those read back under this node that are not announced now
/// and that sml made (their `unique_id` starts with the node id).
pub fn removals(
    node: &str,
    read_back: &BTreeMap<String, String>,
    announced: &BTreeSet<String>,
) -> Vec<Announcement> {
    read_back
        .iter()
        .filter(|(topic, payload)| {
            !payload.is_empty()
                && !announced.contains(*topic)
                && serde_json::from_str::<Json>(payload).is_ok_and(|j| {
                    j["unique_id"]
                        .as_str()
                        .is_some_and(|u| u.starts_with(&format!("{node}_")))
                })
        })
        .map(|(topic, _)| Announcement {
            topic: topic.clone(),
            payload: String::new(),
        })
        .collect()
}

/// Picks each meter's serial from its telegrams, once, for the meters whose HA device waits for it.
#[derive(Debug, Default)]
pub struct SerialWatch {
    /// The serial (first text) entry of each meter still waiting.
    waiting: HashMap<MeterIndex, EntryNo>,
}

impl SerialWatch {
    pub fn new(script: &Script) -> SerialWatch {
        let waiting = script
            .meters
            .iter()
            .filter(|m| m.prefix.is_some())
            .filter_map(|m| text_entries(m).first().map(|e| (m.index, *e)))
            .collect();
        SerialWatch { waiting }
    }

    pub fn is_waiting(&self, meter: MeterIndex) -> bool {
        self.waiting.contains_key(&meter)
    }

    /// The meter's serial, the first time a telegram carries a non-empty one.
    pub fn handle_telegram(&mut self, meter: MeterIndex, t: &Telegram) -> Option<String> {
        let entry = *self.waiting.get(&meter)?;
        let serial = t.readings.iter().find_map(|r| match &r.value {
            Value::Text(s) if r.entry == entry && !s.trim().is_empty() => {
                Some(s.trim().to_string())
            }
            _ => None,
        })?;
        self.waiting.remove(&meter);
        Some(serial)
    }
}

/// What the discovery task needs: the script, the flags, the broker.
pub struct Discovery {
    pub script: Arc<Script>,
    pub config: DiscoveryConfig,
    pub mqtt: MqttConfig,
    pub backoff: Backoff,
}

impl Discovery {
    /// Announce every meter that does not wait for its serial (and clear the vanished configs) at
    /// once, then each waiting meter when `serials` brings its serial. Ends when `serials` closes.
    pub async fn run(self, mut serials: mpsc::UnboundedReceiver<(MeterIndex, String)>) {
        let watch = SerialWatch::new(&self.script);
        let mut known = HashMap::new();
        let first: Vec<MeterIndex> = self
            .script
            .meters
            .iter()
            .map(|m| m.index)
            .filter(|m| !watch.is_waiting(*m))
            .collect();
        let mut batch = self.tasmota_and_ha(&first, &known);
        let mut clear = true;
        loop {
            if !batch.is_empty() || clear {
                self.announce(&batch, clear).await;
                clear = false;
            }
            let Some((meter, serial)) = serials.recv().await else {
                return;
            };
            info!("meter {meter}: serial {serial}; announcing it to Home Assistant");
            known.insert(meter, serial);
            batch = self.ha(Some(meter), &known);
        }
    }

    fn ha(
        &self,
        meter: Option<MeterIndex>,
        serials: &HashMap<MeterIndex, String>,
    ) -> Vec<Announcement> {
        match &self.config.ha_prefix {
            Some(p) => ha_configs(
                &self.script,
                &self.config,
                p,
                &self.mqtt.topics,
                meter,
                serials,
            ),
            None => Vec::new(),
        }
    }

    fn tasmota_and_ha(
        &self,
        meters: &[MeterIndex],
        serials: &HashMap<MeterIndex, String>,
    ) -> Vec<Announcement> {
        let mut out = Vec::new();
        if self.config.tasmota {
            out.extend(tasmota_configs(&self.script, &self.config));
        }
        for m in meters {
            out.extend(self.ha(Some(*m), serials));
        }
        out
    }

    /// Every HA config topic sml announces for this script, whatever is announced now.
    fn all_ha_topics(&self) -> BTreeSet<String> {
        self.ha(None, &HashMap::new())
            .into_iter()
            .map(|a| a.topic)
            .collect()
    }

    /// Publish `batch` retained (and, with `clear`, remove the vanished configs first), retrying
    /// with the reconnect policy until the broker has acknowledged all of it.
    async fn announce(&self, batch: &[Announcement], clear: bool) {
        let mut retry = self.backoff.retry();
        loop {
            match tokio::time::timeout(ANNOUNCE_LIMIT, self.announce_once(batch, clear)).await {
                Ok(Ok(n)) => {
                    info!("discovery: {n} retained configs published");
                    return;
                }
                Ok(Err(why)) => warn!("discovery: {why}; retrying"),
                Err(_) => {
                    warn!("discovery: no answer from the broker in {ANNOUNCE_LIMIT:?}; retrying")
                }
            }
            tokio::time::sleep(retry.next_delay()).await;
        }
    }

    async fn announce_once(&self, batch: &[Announcement], clear: bool) -> Result<usize, String> {
        let (client, mut events) = AsyncClient::new(self.options()?, 64);
        let node = node_id(&self.config.topic);
        let mut to_send: Vec<Announcement> = Vec::new();
        let ha_filter = self
            .config
            .ha_prefix
            .as_ref()
            .map(|p| format!("{p}/sensor/{node}/+/config"));
        if let (true, Some(filter)) = (clear, &ha_filter) {
            // Read back what is retained under this node: the broker sends the retained configs on
            // subscribe, then our own probe, which marks their end.
            let probe = format!("sml/discovery-probe/{}", ha_id(&self.mqtt.client_id));
            client
                .subscribe(filter.clone(), QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string())?;
            client
                .subscribe(probe.clone(), QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string())?;
            let mut subacks = 0;
            let mut read_back = BTreeMap::new();
            let until = tokio::time::Instant::now() + READ_BACK_LIMIT;
            loop {
                let ev = tokio::time::timeout_at(until, events.poll())
                    .await
                    .map_err(|_| "the broker did not return the retained configs".to_string())?
                    .map_err(|e| e.to_string())?;
                match ev {
                    Event::Incoming(Packet::SubAck(_)) => {
                        subacks += 1;
                        if subacks == 2 {
                            client
                                .publish(probe.clone(), QoS::AtLeastOnce, false, "probe")
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                    }
                    Event::Incoming(Packet::Publish(p)) if p.topic == probe => break,
                    Event::Incoming(Packet::Publish(p)) if p.retain => {
                        let payload = String::from_utf8_lossy(&p.payload).into_owned();
                        read_back.insert(p.topic.clone(), payload);
                    }
                    _ => {}
                }
            }
            client
                .unsubscribe(filter.clone())
                .await
                .map_err(|e| e.to_string())?;
            client.unsubscribe(probe).await.map_err(|e| e.to_string())?;
            let gone = removals(&node, &read_back, &self.all_ha_topics());
            for g in &gone {
                info!(
                    "discovery: {} is no longer in the script; removing it",
                    g.topic
                );
            }
            to_send.extend(gone);
        }
        to_send.extend(batch.iter().cloned());
        let total = to_send.len();
        let mut sent = to_send.into_iter();
        // One at a time in flight keeps within the client's request queue, whatever the count.
        let mut acked = 0;
        let mut in_flight = false;
        loop {
            if !in_flight {
                match sent.next() {
                    Some(a) => {
                        debug!("discovery: {} ({} bytes)", a.topic, a.payload.len());
                        client
                            .publish(a.topic, QoS::AtLeastOnce, true, a.payload)
                            .await
                            .map_err(|e| e.to_string())?;
                        in_flight = true;
                    }
                    None => break,
                }
            }
            match events.poll().await.map_err(|e| e.to_string())? {
                Event::Incoming(Packet::PubAck(_)) => {
                    acked += 1;
                    in_flight = false;
                }
                Event::Incoming(Packet::ConnAck(c))
                    if c.code != rumqttc::ConnectReturnCode::Success =>
                {
                    return Err(format!("the broker refused the connection: {:?}", c.code));
                }
                _ => {}
            }
        }
        let _ = client.disconnect().await;
        // Let the DISCONNECT go out.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while events.poll().await.is_ok() {}
        })
        .await;
        debug_assert_eq!(acked, total);
        Ok(total)
    }

    /// The broker options of the SENSOR connection, without its will (this connection's end says
    /// nothing about sml's).
    fn options(&self) -> Result<MqttOptions, String> {
        let m = &self.mqtt;
        let mut o = MqttOptions::new(
            format!("{}-discovery", m.client_id),
            m.broker.host.clone(),
            m.broker.port,
        );
        o.set_keep_alive(Duration::from_secs(30));
        o.set_clean_session(true);
        o.set_max_packet_size(1 << 20, 1 << 20);
        if let Some(user) = &m.user {
            let password = m
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            o.set_credentials(user.clone(), password);
        }
        if m.broker.tls {
            let tls = tls_config(&m.tls).map_err(|e| e.to_string())?;
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(tls),
            )));
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_map_to_classes_the_energy_dashboard_accepts() {
        assert_eq!(classes("kWh").0, Some("energy"));
        assert_eq!(classes("kWh").1, Some("total_increasing"));
        assert_eq!(classes("W").0, Some("power"));
        assert_eq!(classes("W").1, Some("measurement"));
        assert_eq!(
            classes("m3"),
            (Some("gas"), Some("total_increasing"), "m³".into())
        );
        assert_eq!(classes("furlongs"), (None, None, "furlongs".into()));
    }

    #[test]
    fn the_pseudo_mac_is_stable_and_locally_administered() {
        let a = pseudo_mac("myelectricmeter");
        assert_eq!(a, pseudo_mac("myelectricmeter"));
        assert_ne!(a, pseudo_mac("othermeter"));
        assert_eq!(a.len(), 12);
        let first = u8::from_str_radix(&a[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02, "{a}");
    }

    #[test]
    fn only_configs_sml_made_under_its_node_are_removed() {
        let mut back = BTreeMap::new();
        back.insert(
            "ha/sensor/n/EON_old/config".to_string(),
            r#"{"unique_id":"n_EON_old"}"#.to_string(),
        );
        back.insert(
            "ha/sensor/n/EON_kept/config".to_string(),
            r#"{"unique_id":"n_EON_kept"}"#.to_string(),
        );
        back.insert(
            "ha/sensor/n/other/config".to_string(),
            r#"{"unique_id":"zigbee_x"}"#.to_string(),
        );
        back.insert("ha/sensor/n/EON_cleared/config".to_string(), String::new());
        let now: BTreeSet<String> = ["ha/sensor/n/EON_kept/config".to_string()].into();
        let r = removals("n", &back, &now);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].topic, "ha/sensor/n/EON_old/config");
        assert!(r[0].payload.is_empty());
    }

    #[test]
    fn templates_quote_names_that_are_not_identifiers() {
        assert_eq!(
            value_template("EON", "1.8.0"),
            "{{ value_json['EON']['1.8.0'] }}"
        );
        assert_eq!(value_template("E'N", "x"), "{{ value_json['E\\'N']['x'] }}");
    }
}
