/*!
The value table: the latest value of every entry (Tasmota's `sml[n]`), and the SENSOR payload built
from it.

Entries not yet received are left out of the payload, as recent Tasmota builds do. Two meters with
the same prefix are merged into one JSON object (Tasmota would print the key twice, which most JSON
readers resolve by keeping only the last).
*/

use std::time::Instant;

use crate::decode::{Telegram, Value};
use crate::engine::json;
use crate::script::model::{EntryNo, Script};

/// Where an entry goes in JSON.
#[derive(Debug, Clone)]
struct Slot {
    meter: u8,
    prefix: Option<String>,
    name: String,
    decimals: u8,
    publish_each: bool,
    value: Option<Value>,
    /// When the value was last read: a silent meter's values are not republished as fresh.
    at: Option<Instant>,
}

#[derive(Debug, Clone)]
pub struct ValueTable {
    /// Index = entry number - 1.
    slots: Vec<Slot>,
}

/// A payload to publish on the SENSOR topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorPayload(pub String);

impl ValueTable {
    pub fn new(script: &Script) -> Self {
        let mut slots = Vec::new();
        for (meter, out) in script.outputs() {
            debug_assert_eq!(usize::from(out.entry), slots.len() + 1, "entries are numbered densely");
            slots.push(Slot {
                meter: meter.index,
                prefix: meter.prefix.clone(),
                name: out.name.clone(),
                decimals: out.precision.decimals,
                publish_each: out.precision.publish_each,
                value: None,
                at: None,
            });
        }
        ValueTable { slots }
    }

    /// Store a telegram's readings; returns the entries whose lines ask to be published on every
    /// decode (precision + 16).
    pub fn handle_telegram(&mut self, now: Instant, t: &Telegram) -> Vec<EntryNo> {
        let mut each = Vec::new();
        for r in &t.readings {
            if let Some(slot) = self.slots.get_mut(usize::from(r.entry).wrapping_sub(1)) {
                slot.value = Some(r.value.clone());
                slot.at = Some(now);
                if slot.publish_each {
                    each.push(r.entry);
                }
            }
        }
        each
    }

    pub fn get(&self, entry: EntryNo) -> Option<&Value> {
        self.slots.get(usize::from(entry).wrapping_sub(1)).and_then(|s| s.value.as_ref())
    }

    /// Forget a meter's values (its link went silent): they are not republished as if fresh.
    pub fn forget_meter(&mut self, meter: u8) {
        for s in self.slots.iter_mut().filter(|s| s.meter == meter) {
            s.value = None;
            s.at = None;
        }
    }

    /// The SENSOR payload with every value received so far; `None` when there is none.
    pub fn sensor_payload(&self, time: &chrono::NaiveDateTime) -> Option<SensorPayload> {
        self.payload(time, |_| true)
    }

    /// The payload for the given entries only (the per-line +16 publish).
    pub fn sensor_payload_for(&self, time: &chrono::NaiveDateTime, entries: &[EntryNo]) -> Option<SensorPayload> {
        self.payload(time, |e| entries.contains(&e))
    }

    fn payload(&self, time: &chrono::NaiveDateTime, include: impl Fn(EntryNo) -> bool) -> Option<SensorPayload> {
        // Group by prefix in first-appearance order, values in entry order.
        let mut groups: Vec<(&str, String)> = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            let entry = (i + 1) as EntryNo;
            let (Some(prefix), Some(v)) = (s.prefix.as_deref(), s.value.as_ref()) else { continue };
            if !include(entry) {
                continue;
            }
            let mut item = String::new();
            json::push_string(&mut item, &s.name);
            item.push(':');
            if !json::push_value(&mut item, v, s.decimals) {
                continue;
            }
            match groups.iter_mut().find(|(p, _)| *p == prefix) {
                Some((_, body)) => {
                    body.push(',');
                    body.push_str(&item);
                }
                None => groups.push((prefix, item)),
            }
        }
        if groups.is_empty() {
            return None;
        }
        let mut out = String::from("{\"Time\":");
        json::push_string(&mut out, &json::format_time(time));
        for (prefix, body) in groups {
            out.push(',');
            json::push_string(&mut out, prefix);
            out.push_str(":{");
            out.push_str(&body);
            out.push('}');
        }
        out.push('}');
        Some(SensorPayload(out))
    }
}
