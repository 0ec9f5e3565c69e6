/*!
The value table: the latest value of every entry (Tasmota's `sml[n]`), and the SENSOR payload built
from it.

Entries not yet received are left out of the payload, as recent Tasmota builds do. Two meters with
the same prefix are merged into one JSON object (Tasmota would print the key twice, which most JSON
readers resolve by keeping only the last).
*/

use crate::script::model::MeterIndex;
use std::time::Instant;

use crate::decode::{Telegram, Value};
use crate::engine::json;
use crate::script::model::{DerivedKind, EntryNo, MathOp, Operand, Script};

/// Where an entry goes in JSON.
#[derive(Debug, Clone)]
struct Slot {
    meter: MeterIndex,
    prefix: Option<String>,
    name: String,
    decimals: u8,
    publish_each: bool,
    value: Option<Value>,
    /// When the value was last read: a silent meter's values are not republished as fresh.
    at: Option<Instant>,
}

/// An `=m` or `=d` line, computed from other entries.
#[derive(Debug, Clone)]
struct DerivedSlot {
    entry: EntryNo,
    kind: DerivedKind,
    divisor: f64,
    /// `=d`: the counter value and time at the start of the current interval.
    last: Option<(f64, Instant)>,
}

#[derive(Debug, Clone)]
pub struct ValueTable {
    /// Index = entry number - 1.
    slots: Vec<Slot>,
    derived: Vec<DerivedSlot>,
}

/// A payload to publish on the SENSOR topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorPayload(pub String);

impl ValueTable {
    pub fn new(script: &Script) -> Self {
        let mut slots = Vec::new();
        for (meter, out) in script.outputs() {
            debug_assert_eq!(
                usize::from(out.entry),
                slots.len() + 1,
                "entries are numbered densely"
            );
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
        let derived = script
            .meters
            .iter()
            .flat_map(|m| &m.derived)
            .map(|d| DerivedSlot {
                entry: d.output.entry,
                kind: d.kind.clone(),
                divisor: d.divisor,
                last: None,
            })
            .collect();
        ValueTable { slots, derived }
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
        self.update_math(now);
        each
    }

    /// Recompute the `=m` lines (Tasmota does it about once a second; after every telegram is the
    /// same values, sooner). A line whose operands are not all known yet stays unset.
    fn update_math(&mut self, now: Instant) {
        for i in 0..self.derived.len() {
            let DerivedKind::Math { first, ops } = &self.derived[i].kind else {
                continue;
            };
            let operand = |o: &Operand| match o {
                Operand::Constant(c) => Some(*c),
                Operand::Entry(e) => self.number(*e),
            };
            // Strictly left to right, as Tasmota evaluates: no operator precedence.
            let mut acc = operand(first);
            for (op, o) in ops {
                acc = match (acc, operand(o)) {
                    (Some(a), Some(b)) => Some(match op {
                        MathOp::Add => a + b,
                        MathOp::Sub => a - b,
                        MathOp::Mul => a * b,
                        MathOp::Div => a / b,
                    }),
                    _ => None,
                };
            }
            let (entry, divisor) = (self.derived[i].entry, self.derived[i].divisor);
            if let Some(v) = acc {
                self.set(entry, now, apply_divisor(v, divisor));
            }
        }
    }

    /// Advance the `=d` lines: every interval, the change of the counter entry as an hourly rate
    /// x 1000 (a kWh counter gives W), divided by the line's scale; valid from the second interval.
    pub fn handle_tick(&mut self, now: Instant) {
        for i in 0..self.derived.len() {
            let DerivedKind::Difference {
                entry: source,
                interval_s,
            } = self.derived[i].kind
            else {
                continue;
            };
            let Some(current) = self.number(source) else {
                continue;
            };
            match self.derived[i].last {
                None => self.derived[i].last = Some((current, now)),
                Some((prev, at)) => {
                    let elapsed = now.duration_since(at).as_secs_f64();
                    if elapsed + 1e-3 < f64::from(interval_s.max(1)) {
                        continue;
                    }
                    let rate = (current - prev) * 3600.0 * 1000.0 / elapsed;
                    let (entry, divisor) = (self.derived[i].entry, self.derived[i].divisor);
                    self.set(entry, now, apply_divisor(rate, divisor));
                    self.derived[i].last = Some((current, now));
                }
            }
        }
    }

    fn number(&self, entry: EntryNo) -> Option<f64> {
        match self.get(entry) {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        }
    }

    fn set(&mut self, entry: EntryNo, now: Instant, v: f64) {
        if let Some(slot) = self.slots.get_mut(usize::from(entry).wrapping_sub(1)) {
            slot.value = Some(Value::Number(v));
            slot.at = Some(now);
        }
    }

    pub fn get(&self, entry: EntryNo) -> Option<&Value> {
        self.slots
            .get(usize::from(entry).wrapping_sub(1))
            .and_then(|s| s.value.as_ref())
    }

    /// Forget a meter's values (its link went silent): they are not republished as if fresh.
    pub fn forget_meter(&mut self, meter: MeterIndex) {
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
    pub fn sensor_payload_for(
        &self,
        time: &chrono::NaiveDateTime,
        entries: &[EntryNo],
    ) -> Option<SensorPayload> {
        self.payload(time, |e| entries.contains(&e))
    }

    fn payload(
        &self,
        time: &chrono::NaiveDateTime,
        include: impl Fn(EntryNo) -> bool,
    ) -> Option<SensorPayload> {
        // Group by prefix in first-appearance order, values in entry order.
        let mut groups: Vec<(&str, String)> = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            let entry = (i + 1) as EntryNo;
            let (Some(prefix), Some(v)) = (s.prefix.as_deref(), s.value.as_ref()) else {
                continue;
            };
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

fn apply_divisor(v: f64, divisor: f64) -> f64 {
    if divisor == 0.0 {
        v
    } else {
        v / divisor
    }
}
