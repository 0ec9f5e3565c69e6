/*!
What the HTTP side shows: the latest values (for `Status 10`, `/metrics` and the page), a bounded
history per value (the page's 24 h charts) and per-meter counters.

The engine is pure and is not shared with the server, so the run loop keeps this view up to date
beside it, under a mutex the handlers lock only to copy out what they answer (one thread: the run
is a current-thread runtime). The values come from a [`ValueTable`] fed the same telegrams, ticks
and link drops as the engine's, so `Status 10` is the same object, byte for byte, that a teleperiod
would publish now, `=m`/`=d` lines included.
*/

// A second table costs one more table update per telegram while `--http` is on. Asking the engine
// loop instead (a request channel answered between telegrams) would avoid it; left for later.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::decode::{Telegram, Value};
use crate::engine::freshness::StaleAfter;
use crate::engine::json;
use crate::engine::values::ValueTable;
use crate::script::model::{EntryNo, LineNo, MeterIndex, Script};

/// One chart point per this many seconds: a value read every second keeps 1440 points a day.
pub const HISTORY_STEP_SECS: i64 = 60;
/// Points kept per value: 24 h at one per [`HISTORY_STEP_SECS`].
pub const HISTORY_POINTS: usize = 24 * 3600 / HISTORY_STEP_SECS as usize;

/// A line of the page, in script order: a value or an `=h` line.
#[derive(Debug, Clone)]
pub enum Row {
    Value(ValueRow),
    /// An `=h` line's HTML, shown as the script wrote it (as Tasmota does: it is the operator's).
    Html(String),
}

#[derive(Debug, Clone)]
pub struct ValueRow {
    pub entry: EntryNo,
    /// Web label; hidden on the page when `*` (still in JSON and /metrics).
    pub label: String,
    pub unit: String,
    pub name: String,
    pub decimals: u8,
}

/// A meter as the page and /metrics name it.
#[derive(Debug, Clone)]
pub struct MeterView {
    pub index: MeterIndex,
    /// The JSON prefix (`EON`); meters without one publish nothing and show nothing.
    pub prefix: Option<String>,
    pub rows: Vec<Row>,
}

impl MeterView {
    /// The `meter` label of /metrics: the prefix, or the index for a meter without one.
    pub fn label(&self) -> String {
        self.prefix
            .clone()
            .unwrap_or_else(|| self.index.to_string())
    }
}

/// Rejected telegrams by reason, per meter, counted by the decoder wrapper ([`super::metrics`]).
#[derive(Debug, Default)]
pub struct DecodeCounts {
    pub crc: AtomicU64,
    /// A telegram without a CRC from a meter that has sent CRCs.
    pub missing_crc: AtomicU64,
    pub truncated: AtomicU64,
    pub too_long: AtomicU64,
    pub malformed: AtomicU64,
}

/// The view the handlers read.
pub struct Live {
    pub meters: Vec<MeterView>,
    table: ValueTable,
    /// Telegrams and link drops per meter.
    pub telegrams: HashMap<MeterIndex, u64>,
    pub link_drops: HashMap<MeterIndex, u64>,
    pub decode: Arc<HashMap<MeterIndex, DecodeCounts>>,
    /// Payloads waiting for the broker (the MQTT outbox), when there is a broker.
    pub mqtt_queue: Option<Arc<AtomicUsize>>,
    /// `(unix seconds, value)` per numeric entry, oldest first, at most [`HISTORY_POINTS`].
    history: HashMap<EntryNo, VecDeque<(i64, f64)>>,
    /// The wall time of the latest change, for the page's `Time`.
    pub last_time: Option<chrono::NaiveDateTime>,
}

impl Live {
    /// `stale_after` as the engine's, so a silent meter's values are left out here too.
    pub fn new(script: &Script, stale_after: StaleAfter, now: Instant) -> Live {
        let meters = script
            .meters
            .iter()
            .map(|m| {
                // Value lines and `=h` lines interleaved by their line in the script.
                let mut rows: Vec<(LineNo, Row)> = m
                    .outputs()
                    .into_iter()
                    .map(|o| {
                        (
                            o.line,
                            Row::Value(ValueRow {
                                entry: o.entry,
                                label: o.label.clone(),
                                unit: o.unit.clone(),
                                name: o.name.clone(),
                                decimals: o.precision.decimals,
                            }),
                        )
                    })
                    .collect();
                rows.extend(m.html.iter().map(|h| (h.line, Row::Html(h.html.clone()))));
                rows.sort_by_key(|(line, _)| *line);
                MeterView {
                    index: m.index,
                    prefix: m.prefix.clone(),
                    rows: rows.into_iter().map(|(_, r)| r).collect(),
                }
            })
            .collect();
        let decode = script
            .meters
            .iter()
            .map(|m| (m.index, DecodeCounts::default()))
            .collect();
        Live {
            meters,
            table: ValueTable::new(script).with_stale_after(stale_after, now),
            telegrams: HashMap::new(),
            link_drops: HashMap::new(),
            decode: Arc::new(decode),
            mqtt_queue: None,
            history: HashMap::new(),
            last_time: None,
        }
    }

    /// A telegram, as the engine got it; `unix` is the wall clock in seconds for the charts.
    pub fn handle_telegram(
        &mut self,
        now: Instant,
        wall: &chrono::NaiveDateTime,
        unix: i64,
        meter: MeterIndex,
        t: &Telegram,
    ) {
        *self.telegrams.entry(meter).or_default() += 1;
        self.table.handle_telegram(now, meter, t);
        self.last_time = Some(*wall);
        // Every value of the meter, including `=m` lines the telegram changed.
        let entries: Vec<EntryNo> = self
            .meters
            .iter()
            .filter(|m| m.index == meter)
            .flat_map(|m| &m.rows)
            .filter_map(|r| match r {
                Row::Value(v) => Some(v.entry),
                Row::Html(_) => None,
            })
            .collect();
        for e in entries {
            if let Some(Value::Number(v)) = self.table.get(e) {
                if v.is_finite() {
                    record(self.history.entry(e).or_default(), unix, *v);
                }
            }
        }
    }

    /// A meter's link dropped: its values are gone until it sends again, as in the engine.
    pub fn handle_link_down(&mut self, meter: MeterIndex) {
        *self.link_drops.entry(meter).or_default() += 1;
        self.table.forget_meter(meter);
    }

    /// The SENSOR object a teleperiod would publish at `wall`: `{"Time":..,"EON":{..}}`, or only
    /// the time when nothing has been read yet.
    pub fn sensor_json(&self, now: Instant, wall: &chrono::NaiveDateTime) -> String {
        match self.table.sensor_payload(now, wall) {
            Some(p) => p.0,
            None => {
                let mut out = String::from("{\"Time\":");
                json::push_string(&mut out, &json::format_time(wall));
                out.push('}');
                out
            }
        }
    }

    /// A value as SENSOR prints it (`233.9`), or the text of a text line; `None` when unknown or
    /// no longer fresh (its meter went silent).
    pub fn shown(&self, row: &ValueRow, now: Instant) -> Option<String> {
        if !self.table.is_fresh(row.entry, now) {
            return None;
        }
        match self.table.get(row.entry)? {
            Value::Number(n) => json::format_number(*n, row.decimals),
            Value::Text(t) => Some(t.clone()),
        }
    }

    /// The number behind a value, for /metrics; `None` for text, unknown or stale values.
    pub fn number(&self, entry: EntryNo, now: Instant) -> Option<f64> {
        if !self.table.is_fresh(entry, now) {
            return None;
        }
        match self.table.get(entry)? {
            Value::Number(n) if n.is_finite() => Some(*n),
            _ => None,
        }
    }

    /// A value's chart points after `since` (unix seconds).
    pub fn history_since(&self, entry: EntryNo, since: i64) -> Vec<(i64, f64)> {
        self.history
            .get(&entry)
            .map(|h| h.iter().filter(|(t, _)| *t > since).copied().collect())
            .unwrap_or_default()
    }
}

/// Add a point: a value in the same step as the last point replaces it (the chart shows the latest
/// of each minute); the oldest points go beyond [`HISTORY_POINTS`] or 24 h.
fn record(h: &mut VecDeque<(i64, f64)>, unix: i64, v: f64) {
    match h.back_mut() {
        Some((t, last)) if *t / HISTORY_STEP_SECS == unix / HISTORY_STEP_SECS => {
            *t = unix;
            *last = v;
        }
        _ => h.push_back((unix, v)),
    }
    while h.len() > HISTORY_POINTS || h.front().is_some_and(|(t, _)| *t <= unix - 24 * 3600) {
        h.pop_front();
    }
}

/// Lock the view; a handler that panicked while holding it left nothing half-written that matters.
pub fn lock(live: &std::sync::Mutex<Live>) -> std::sync::MutexGuard<'_, Live> {
    live.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read a gauge the MQTT task keeps.
pub fn queue_len(g: &AtomicUsize) -> usize {
    g.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_keeps_one_point_a_minute_for_a_day_at_most() {
        let mut h = VecDeque::new();
        for s in 0..(3 * 24 * 3600) {
            record(&mut h, s, s as f64);
        }
        assert!(h.len() <= HISTORY_POINTS, "{}", h.len());
        assert_eq!(h.back().unwrap().0, 3 * 24 * 3600 - 1);
        assert!(h.front().unwrap().0 > 2 * 24 * 3600 - 1);
    }

    #[test]
    fn a_value_in_the_same_minute_replaces_the_last_point() {
        let mut h = VecDeque::new();
        record(&mut h, 120, 1.0);
        record(&mut h, 150, 2.0);
        record(&mut h, 180, 3.0);
        assert_eq!(h, VecDeque::from([(150, 2.0), (180, 3.0)]));
    }
}
