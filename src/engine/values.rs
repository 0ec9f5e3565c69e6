/*!
The value table: the latest value of every entry (Tasmota's `sml[n]`), when it was read, and the
SENSOR payloads built from it.

Two payloads, two costs:
- a telegram's own payload ([`ValueTable::handle_telegram`] then [`ValueTable::payload_for`]) holds
  only what that telegram refreshed: its readings and the `=m`/`=d` lines computed from them. It costs
  O(lines touched), whatever the number of meters, and never carries an older value as if it were new;
- the teleperiod payload ([`ValueTable::sensor_payload`]) holds every line's latest value that is
  still fresh (see [`crate::engine::freshness`]), O(lines).

The prefix groups (which JSON object each line goes in, and the escaped keys) are worked out once in
[`ValueTable::new`]. Entries not yet received are left out, as recent Tasmota builds do. Two meters
with the same prefix are merged into one JSON object (Tasmota would print the key twice, which most
JSON readers resolve by keeping only the last).

Derived lines, computed when a telegram refreshes what they read (Tasmota computes them while it
decodes the meter, so the values are the same):
- `=m`: strictly left to right, no precedence (`2+3*4` is 20); `#n` is a constant. It is unset until
  every entry it reads has a number, and a result that is not finite (a division by zero) unsets it:
  nothing is published for it rather than Tasmota's `inf`/`nan`. It is as fresh as the oldest value
  it reads.
- `=d n s`: once at least `s` seconds (less 5 %, for telegram jitter) separate two readings of entry
  `n`, the change between them as an hourly rate x 1000 (a kWh counter gives W), timed by when the
  readings arrived. The first reading is only the baseline, so the first rate comes one interval
  later (Tasmota: "valid from the second interval"). It is as fresh as its counter.
*/

use std::time::Instant;

use crate::decode::{Telegram, Value};
use crate::engine::freshness::{within, MeterActivity, StaleAfter};
use crate::engine::json;
use crate::script::model::{DerivedKind, EntryNo, MathOp, MeterIndex, Operand, Script};

/// A `=d` interval counts when it is at least this share of the written one (telegrams jitter).
const DIFFERENCE_INTERVAL_SLACK: f64 = 0.95;

/// One entry: where it goes in JSON and its latest value.
#[derive(Debug, Clone)]
struct Slot {
    /// Position of the owning meter in [`ValueTable::meters`].
    meter: usize,
    /// The JSON object it goes in; `None` for a meter with prefix `*`.
    group: Option<usize>,
    /// `"name":`, escaped once.
    key: String,
    decimals: u8,
    publish_each: bool,
    value: Option<Value>,
    /// When the value was read or computed.
    at: Option<Instant>,
    /// How often this line is read: a meter asked block by block (Modbus) refreshes each line
    /// once per round, less often than it sends telegrams.
    activity: MeterActivity,
    /// For an `=m`/`=d` line: its index in [`ValueTable::derived`].
    derived: Option<usize>,
    /// The derived lines that read this entry (`=m` operands, `=d` counters).
    readers: Vec<usize>,
    /// The last telegram that refreshed this entry (a stamp, so one telegram lists it once).
    touched: u64,
}

/// An `=m` or `=d` line.
#[derive(Debug, Clone)]
struct DerivedLine {
    entry: EntryNo,
    kind: DerivedKind,
    divisor: f64,
    /// The metric entries it depends on, through other derived lines: it is fresh when they are.
    roots: Vec<EntryNo>,
    /// `=d`: the counter reading the current interval started with, and when it arrived.
    baseline: Option<(f64, Instant)>,
}

/// A JSON object of the payload: `"EON":{`, and its entries in entry order.
#[derive(Debug, Clone)]
struct PrefixGroup {
    open: String,
    entries: Vec<EntryNo>,
}

#[derive(Debug, Clone)]
struct MeterState {
    index: MeterIndex,
    activity: MeterActivity,
    /// Every entry of this meter (metric and derived lines).
    entries: Vec<EntryNo>,
}

#[derive(Debug, Clone)]
pub struct ValueTable {
    /// Index = entry number - 1.
    slots: Vec<Slot>,
    derived: Vec<DerivedLine>,
    groups: Vec<PrefixGroup>,
    meters: Vec<MeterState>,
    /// Meter index -> position in `meters`.
    meter_pos: Vec<Option<usize>>,
    stale_after: StaleAfter,
    /// Meters never heard from are silent from this time on.
    started: Option<Instant>,
    telegram_stamp: u64,
}

/// A payload to publish on the SENSOR topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorPayload(pub String);

impl ValueTable {
    /// A table that keeps values for ever ([`StaleAfter::Never`]); see [`ValueTable::with_stale_after`].
    pub fn new(script: &Script) -> Self {
        let mut meters = Vec::with_capacity(script.meters.len());
        let mut meter_pos = Vec::new();
        for (pos, m) in script.meters.iter().enumerate() {
            let i = usize::from(m.index);
            if meter_pos.len() <= i {
                meter_pos.resize(i + 1, None);
            }
            meter_pos[i] = Some(pos);
            meters.push(MeterState {
                index: m.index,
                activity: MeterActivity::default(),
                entries: Vec::new(),
            });
        }

        let mut slots: Vec<Slot> = Vec::new();
        let mut groups: Vec<PrefixGroup> = Vec::new();
        let mut group_of_prefix: std::collections::HashMap<&str, usize> = Default::default();
        for (meter, out) in script.outputs() {
            debug_assert_eq!(
                usize::from(out.entry),
                slots.len() + 1,
                "entries are numbered densely"
            );
            let pos = meter_pos[usize::from(meter.index)].expect("every meter has a position");
            meters[pos].entries.push(out.entry);
            let group = meter.prefix.as_deref().map(|prefix| {
                let g = *group_of_prefix.entry(prefix).or_insert_with(|| {
                    let mut open = String::new();
                    json::push_string(&mut open, prefix);
                    open.push_str(":{");
                    groups.push(PrefixGroup {
                        open,
                        entries: Vec::new(),
                    });
                    groups.len() - 1
                });
                groups[g].entries.push(out.entry);
                g
            });
            let mut key = String::new();
            json::push_string(&mut key, &out.name);
            key.push(':');
            slots.push(Slot {
                meter: pos,
                group,
                key,
                decimals: out.precision.decimals,
                publish_each: out.precision.publish_each,
                value: None,
                at: None,
                activity: MeterActivity::default(),
                derived: None,
                readers: Vec::new(),
                touched: 0,
            });
        }

        let mut derived: Vec<DerivedLine> = script
            .meters
            .iter()
            .flat_map(|m| &m.derived)
            .map(|d| DerivedLine {
                entry: d.output.entry,
                kind: d.kind.clone(),
                divisor: d.divisor,
                roots: Vec::new(),
                baseline: None,
            })
            .collect();
        for (i, d) in derived.iter().enumerate() {
            if let Some(s) = slot_mut(&mut slots, d.entry) {
                s.derived = Some(i);
            }
            for e in reads(&d.kind) {
                if let Some(s) = slot_mut(&mut slots, e) {
                    if !s.readers.contains(&i) {
                        s.readers.push(i);
                    }
                }
            }
        }
        let roots: Vec<Vec<EntryNo>> = derived
            .iter()
            .map(|d| roots_of(&slots, &derived, d.entry))
            .collect();
        for (d, r) in derived.iter_mut().zip(roots) {
            d.roots = r;
        }

        let mut table = ValueTable {
            slots,
            derived,
            groups,
            meters,
            meter_pos,
            stale_after: StaleAfter::Never,
            started: None,
            telegram_stamp: 0,
        };
        // Lines of constants only (`=m #3*#4`) read no telegram: their value is known now.
        for i in 0..table.derived.len() {
            if reads(&table.derived[i].kind).next().is_none() {
                table.recompute(i, None);
            }
        }
        table
    }

    /// Leave values out once they are older than `policy` allows; meters not heard from since
    /// `now` count as silent once their window has passed.
    pub fn with_stale_after(mut self, policy: StaleAfter, now: Instant) -> Self {
        self.stale_after = policy;
        self.started = Some(now);
        self
    }

    /// Store meter `meter`'s telegram and compute the derived lines that read it. Returns what the
    /// telegram refreshed and is fresh now: its readings, then the derived lines computed from them
    /// (which may belong to other meters).
    ///
    /// Readings of entries that are not `meter`'s are ignored (a decoder never makes them).
    pub fn handle_telegram(
        &mut self,
        now: Instant,
        meter: MeterIndex,
        t: &Telegram,
    ) -> Vec<EntryNo> {
        let Some(pos) = self.position(meter) else {
            return Vec::new();
        };
        self.meters[pos].activity.heard(now);
        self.telegram_stamp += 1;
        let stamp = self.telegram_stamp;
        let mut refreshed = Vec::with_capacity(t.readings.len());
        for r in &t.readings {
            let Some(slot) = slot_mut(&mut self.slots, r.entry) else {
                continue;
            };
            if slot.meter != pos || slot.derived.is_some() {
                continue;
            }
            slot.value = Some(r.value.clone());
            slot.at = Some(now);
            if slot.touched != stamp {
                slot.activity.heard(now);
                slot.touched = stamp;
                refreshed.push(r.entry);
            }
        }
        // Derived lines reading what changed, and the lines reading those, each once.
        let mut next = 0;
        while next < refreshed.len() {
            let source = refreshed[next];
            next += 1;
            let readers = self.slots[usize::from(source) - 1].readers.clone();
            for d in readers {
                let entry = self.derived[d].entry;
                if self.slots[usize::from(entry) - 1].touched == stamp {
                    continue;
                }
                if self.recompute(d, Some(now)) {
                    self.slots[usize::from(entry) - 1].touched = stamp;
                    refreshed.push(entry);
                }
            }
        }
        refreshed.retain(|e| self.is_fresh(*e, now));
        refreshed
    }

    /// Compute derived line `d`; true when it has a new value. `now` is `None` at start-up.
    fn recompute(&mut self, d: usize, now: Option<Instant>) -> bool {
        let line = &self.derived[d];
        let (entry, divisor) = (line.entry, line.divisor);
        match &line.kind {
            DerivedKind::Math { first, ops } => {
                let result = self.evaluate(first, ops).map(|v| apply_divisor(v, divisor));
                let result = result.filter(|v| v.is_finite());
                if let Some(slot) = slot_mut(&mut self.slots, entry) {
                    slot.value = result.map(Value::Number);
                    slot.at = result.and(now);
                }
                result.is_some()
            }
            DerivedKind::Difference {
                entry: source,
                interval_s,
            } => {
                let interval = f64::from((*interval_s).max(1)) * DIFFERENCE_INTERVAL_SLACK;
                let (Some(counter), Some(read_at)) = (self.number(*source), self.at(*source))
                else {
                    return false;
                };
                let Some((base, base_at)) = self.derived[d].baseline else {
                    self.derived[d].baseline = Some((counter, read_at));
                    return false;
                };
                let elapsed = read_at.saturating_duration_since(base_at).as_secs_f64();
                if elapsed < interval {
                    return false;
                }
                self.derived[d].baseline = Some((counter, read_at));
                let rate = apply_divisor((counter - base) * 3600.0 * 1000.0 / elapsed, divisor);
                let rate = Some(rate).filter(|r| r.is_finite());
                if let Some(slot) = slot_mut(&mut self.slots, entry) {
                    slot.value = rate.map(Value::Number);
                    slot.at = rate.map(|_| read_at);
                }
                rate.is_some()
            }
        }
    }

    /// `=m` arithmetic, strictly left to right as Tasmota evaluates: no operator precedence.
    fn evaluate(&self, first: &Operand, ops: &[(MathOp, Operand)]) -> Option<f64> {
        let operand = |o: &Operand| match o {
            Operand::Constant(c) => Some(*c),
            Operand::Entry(e) => self.number(*e),
        };
        ops.iter().try_fold(operand(first)?, |acc, (op, o)| {
            let b = operand(o)?;
            Some(match op {
                MathOp::Add => acc + b,
                MathOp::Sub => acc - b,
                MathOp::Mul => acc * b,
                MathOp::Div => acc / b,
            })
        })
    }

    fn position(&self, meter: MeterIndex) -> Option<usize> {
        self.meter_pos.get(usize::from(meter)).copied().flatten()
    }

    fn slot(&self, entry: EntryNo) -> Option<&Slot> {
        self.slots.get(usize::from(entry).wrapping_sub(1))
    }

    fn number(&self, entry: EntryNo) -> Option<f64> {
        match self.get(entry) {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        }
    }

    fn at(&self, entry: EntryNo) -> Option<Instant> {
        self.slot(entry).and_then(|s| s.at)
    }

    /// The latest value of an entry, fresh or not.
    pub fn get(&self, entry: EntryNo) -> Option<&Value> {
        self.slot(entry).and_then(|s| s.value.as_ref())
    }

    /// Whether the entry has a value that is not older than its meter's window: for a metric line
    /// its own reading, for a derived line every metric line it is computed from.
    pub fn is_fresh(&self, entry: EntryNo, now: Instant) -> bool {
        let Some(slot) = self.slot(entry) else {
            return false;
        };
        if slot.value.is_none() {
            return false;
        }
        match slot.derived {
            None => self.read_recently(slot, now),
            Some(d) => self.derived[d].roots.iter().all(|r| {
                self.slot(*r)
                    .is_some_and(|s| s.value.is_some() && self.read_recently(s, now))
            }),
        }
    }

    /// A metric line's window is its meter's, widened to the line's own pace: three of the
    /// meter's telegram intervals, or three of the line's own read intervals where those are
    /// longer (a Modbus block read once per round of requests).
    fn read_recently(&self, slot: &Slot, now: Instant) -> bool {
        let meter = self.meters[slot.meter].activity.window(self.stale_after);
        let line = slot.activity.window(self.stale_after);
        let window = match (meter, line) {
            (Some(m), Some(l)) => Some(m.max(l)),
            _ => None,
        };
        slot.at.is_some_and(|at| within(window, at, now))
    }

    /// Whether the line asks to be published each time it is read (precision + 16).
    pub fn publishes_each(&self, entry: EntryNo) -> bool {
        self.slot(entry).is_some_and(|s| s.publish_each)
    }

    /// The meters not heard from within their window (never heard: since the table started).
    pub fn silent_meters(&self, now: Instant) -> Vec<MeterIndex> {
        self.meters
            .iter()
            .filter(|m| {
                let window = m.activity.window(self.stale_after);
                match m.activity.last_heard().or(self.started) {
                    Some(since) => !within(window, since, now),
                    None => false,
                }
            })
            .map(|m| m.index)
            .collect()
    }

    /// A meter's link dropped: forget its values (they are not republished as if fresh), and
    /// restart the `=d` lines counting them.
    pub fn forget_meter(&mut self, meter: MeterIndex) {
        let Some(pos) = self.position(meter) else {
            return;
        };
        self.meters[pos].activity.link_down();
        for i in 0..self.meters[pos].entries.len() {
            let entry = self.meters[pos].entries[i];
            let slot = &mut self.slots[usize::from(entry) - 1];
            slot.value = None;
            slot.at = None;
            slot.activity.link_down();
            for d in slot.readers.clone() {
                self.derived[d].baseline = None;
            }
        }
    }

    /// The script's meter numbers, in order.
    pub fn meter_indices(&self) -> Vec<MeterIndex> {
        self.meters.iter().map(|m| m.index).collect()
    }

    /// The teleperiod's SENSOR payload: every line's latest value that is still fresh; `None` when
    /// there is none.
    pub fn sensor_payload(
        &self,
        now: Instant,
        time: &chrono::NaiveDateTime,
    ) -> Option<SensorPayload> {
        let mut w = PayloadWriter::new(time);
        for (g, group) in self.groups.iter().enumerate() {
            for entry in &group.entries {
                if self.is_fresh(*entry, now) {
                    w.push(&self.groups, g, &self.slots[usize::from(*entry) - 1]);
                }
            }
        }
        w.finish()
    }

    /// The payload of the given entries only, e.g. what one telegram refreshed or one +16 line;
    /// entries are taken as given (their freshness is the caller's). O(entries).
    pub fn payload_for(
        &self,
        time: &chrono::NaiveDateTime,
        entries: &[EntryNo],
    ) -> Option<SensorPayload> {
        // Prefix groups in first-appearance order (their numbering), entries in entry order.
        let mut placed: Vec<(usize, EntryNo)> = entries
            .iter()
            .filter_map(|e| Some((self.slot(*e)?.group?, *e)))
            .collect();
        placed.sort_unstable();
        placed.dedup();
        let mut w = PayloadWriter::new(time);
        for (g, e) in placed {
            w.push(&self.groups, g, &self.slots[usize::from(e) - 1]);
        }
        w.finish()
    }
}

/// `sml[n]` for the script's hooks: the latest value of entry n, fresh or not, as Tasmota keeps it;
/// 0 before the first reading and for a text value.
impl crate::hooks::Readings for ValueTable {
    fn count(&self) -> usize {
        self.slots.len()
    }

    fn value(&self, entry: usize) -> f64 {
        match self
            .slots
            .get(entry.wrapping_sub(1))
            .and_then(|s| s.value.as_ref())
        {
            Some(Value::Number(n)) => *n,
            _ => 0.0,
        }
    }

    fn valid(&self, entry: usize) -> bool {
        self.slots
            .get(entry.wrapping_sub(1))
            .is_some_and(|s| s.value.is_some())
    }
}

/// Builds `{"Time":"..","A":{"x":1,"y":2},"B":{..}}`, opening a prefix object when the group
/// changes; values that would not be valid JSON (not finite) are left out.
struct PayloadWriter {
    out: String,
    open_group: Option<usize>,
}

impl PayloadWriter {
    fn new(time: &chrono::NaiveDateTime) -> Self {
        let mut out = String::with_capacity(128);
        out.push_str("{\"Time\":");
        json::push_string(&mut out, &json::format_time(time));
        PayloadWriter {
            out,
            open_group: None,
        }
    }

    fn push(&mut self, groups: &[PrefixGroup], group: usize, slot: &Slot) {
        let Some(v) = slot.value.as_ref().filter(|v| json::is_publishable(v)) else {
            return;
        };
        if self.open_group == Some(group) {
            self.out.push(',');
        } else {
            if self.open_group.is_some() {
                self.out.push('}');
            }
            self.out.push(',');
            self.out.push_str(&groups[group].open);
            self.open_group = Some(group);
        }
        self.out.push_str(&slot.key);
        json::push_value(&mut self.out, v, slot.decimals);
    }

    fn finish(mut self) -> Option<SensorPayload> {
        self.open_group?;
        self.out.push_str("}}");
        Some(SensorPayload(self.out))
    }
}

fn slot_mut(slots: &mut [Slot], entry: EntryNo) -> Option<&mut Slot> {
    slots.get_mut(usize::from(entry).wrapping_sub(1))
}

/// The entries a derived line reads directly.
fn reads(kind: &DerivedKind) -> impl Iterator<Item = EntryNo> + '_ {
    let (first, ops, source) = match kind {
        DerivedKind::Math { first, ops } => (Some(first), &ops[..], None),
        DerivedKind::Difference { entry, .. } => (None, &[][..], Some(*entry)),
    };
    first
        .into_iter()
        .chain(ops.iter().map(|(_, o)| o))
        .filter_map(|o| match o {
            Operand::Entry(e) => Some(*e),
            Operand::Constant(_) => None,
        })
        .chain(source)
}

/// The metric entries `entry` is computed from, through derived lines (a line that reads itself,
/// directly or not, adds nothing: it never gets a value anyway).
fn roots_of(slots: &[Slot], derived: &[DerivedLine], entry: EntryNo) -> Vec<EntryNo> {
    let mut roots = Vec::new();
    let mut seen = vec![entry];
    let mut todo = vec![entry];
    while let Some(e) = todo.pop() {
        let Some(d) = slots
            .get(usize::from(e).wrapping_sub(1))
            .and_then(|s| s.derived)
        else {
            continue;
        };
        for r in reads(&derived[d].kind) {
            if seen.contains(&r) {
                continue;
            }
            seen.push(r);
            match slots.get(usize::from(r).wrapping_sub(1)) {
                Some(s) if s.derived.is_some() => todo.push(r),
                Some(_) => roots.push(r),
                None => {}
            }
        }
    }
    roots.sort_unstable();
    roots
}

fn apply_divisor(v: f64, divisor: f64) -> f64 {
    if divisor == 0.0 {
        v
    } else {
        v / divisor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Reading;
    use std::time::Duration;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn wall() -> chrono::NaiveDateTime {
        chrono::NaiveDateTime::parse_from_str("2024-03-04T11:25:20", "%Y-%m-%dT%H:%M:%S").unwrap()
    }

    /// Meter 1 (`M`): entries 1 `a`, 2 `b`, 3 `c`, then
    /// 4 `sum` = a+b*c, 5 `q` = a/b (2 decimals), 6 `k` = a*#3 /100 (2 decimals),
    /// 7 `rate` = `=d` of a over 10 s.
    /// Meter 2 (`N`): entry 8 `x`, and 9 `both` = a+x.
    fn table() -> ValueTable {
        let text = ">D\n>M 2\n+1,3,o,0,9600,M\n+2,4,o,0,9600,N\n\
            1,1.8.1(@1,a,,a,0\n1,1.8.2(@1,b,,b,0\n1,1.8.3(@1,c,,c,0\n\
            1,=m 1+2*3 @1,sum,,sum,0\n1,=m 1/2 @1,q,,q,2\n1,=m 1*#3 @100,k,,k,2\n\
            1,=d 1 10 @1,rate,,rate,0\n\
            2,1.8.0(@1,x,,x,0\n2,=m 1+8 @1,both,,both,0\n#\n";
        let compiled = crate::script::compile(text.as_bytes());
        let script = compiled.script.expect("test script compiles");
        assert_eq!(script.outputs().len(), 9, "{:?}", compiled.diagnostics);
        ValueTable::new(&script)
    }

    fn readings(values: &[(EntryNo, f64)]) -> Telegram {
        Telegram {
            readings: values
                .iter()
                .map(|(entry, v)| Reading {
                    entry: *entry,
                    value: Value::Number(*v),
                })
                .collect(),
        }
    }

    fn payload(t: &ValueTable, entries: &[EntryNo]) -> Option<String> {
        t.payload_for(&wall(), entries)
            .map(|p| p.0.replace(r#""Time":"2024-03-04T11:25:20","#, ""))
    }

    #[test]
    fn a_line_read_once_per_round_of_requests_stays_fresh_for_three_rounds() {
        // A meter asked block by block: a telegram every 2 s, five blocks in turn; line a is in
        // the first block only, so it is read every 10 s.
        let t0 = Instant::now();
        let mut t = table().with_stale_after(StaleAfter::Auto, t0);
        for round in 0..4u64 {
            for block in 0..5u64 {
                let at = t0 + secs(round * 10 + block * 2);
                let entry = if block == 0 { 1 } else { 2 };
                t.handle_telegram(at, 1, &readings(&[(entry, round as f64)]));
            }
        }
        // a was last read at 30 s; the meter's own window is 10 s (the floor), a's is 30 s.
        assert!(t.is_fresh(1, t0 + secs(55)), "within three of a's rounds");
        assert!(!t.is_fresh(1, t0 + secs(61)), "past three of a's rounds");
    }

    #[test]
    fn math_is_strictly_left_to_right() {
        let mut t = table();
        let now = Instant::now();
        let fresh = t.handle_telegram(now, 1, &readings(&[(1, 2.0), (2, 3.0), (3, 4.0)]));
        assert_eq!(t.get(4), Some(&Value::Number(20.0)));
        assert_eq!(
            payload(&t, &fresh).as_deref(),
            Some(r#"{"M":{"a":2,"b":3,"c":4,"sum":20,"q":0.67,"k":0.06}}"#)
        );
    }

    #[test]
    fn a_hash_constant_is_a_number_and_the_scale_divides() {
        let mut t = table();
        t.handle_telegram(Instant::now(), 1, &readings(&[(1, 250.0)]));
        // 250 * 3 / 100
        assert_eq!(t.get(6), Some(&Value::Number(7.5)));
    }

    #[test]
    fn a_line_whose_operand_has_not_arrived_publishes_nothing() {
        let mut t = table();
        let fresh = t.handle_telegram(Instant::now(), 1, &readings(&[(1, 2.0), (2, 3.0)]));
        assert_eq!(t.get(4), None, "c is missing");
        assert!(!fresh.contains(&4));
        assert_eq!(
            payload(&t, &fresh).as_deref(),
            Some(r#"{"M":{"a":2,"b":3,"q":0.67,"k":0.06}}"#)
        );
    }

    #[test]
    fn a_division_by_zero_publishes_nothing_not_even_the_last_value() {
        let mut t = table();
        let t0 = Instant::now();
        t.handle_telegram(t0, 1, &readings(&[(1, 2.0), (2, 4.0), (3, 1.0)]));
        assert_eq!(t.get(5), Some(&Value::Number(0.5)));
        let fresh = t.handle_telegram(t0 + secs(1), 1, &readings(&[(1, 2.0), (2, 0.0)]));
        assert_eq!(t.get(5), None);
        assert!(!fresh.contains(&5));
        let all = t.sensor_payload(t0 + secs(1), &wall()).unwrap().0;
        assert!(!all.contains(r#""q""#), "{all}");
    }

    #[test]
    fn a_difference_is_the_hourly_rate_over_its_window_from_the_second_interval() {
        let mut t = table();
        let t0 = Instant::now();
        // A kWh counter read every 5 s, 0.01 kWh per 5 s: 7.2 kW.
        let mut rates = Vec::new();
        for (i, s) in [0u64, 5, 10, 15, 20].iter().enumerate() {
            let fresh =
                t.handle_telegram(t0 + secs(*s), 1, &readings(&[(1, 100.0 + 0.01 * i as f64)]));
            rates.push(fresh.contains(&7).then(|| t.get(7).cloned()).flatten());
        }
        let got: Vec<Option<f64>> = rates
            .iter()
            .map(|r| match r {
                Some(Value::Number(n)) => Some((n * 1000.0).round() / 1000.0),
                _ => None,
            })
            .collect();
        // The first reading is the baseline; a rate every 10 s after it, and only then.
        assert_eq!(got, vec![None, None, Some(7200.0), None, Some(7200.0)]);
    }

    #[test]
    fn a_difference_allows_a_little_jitter_but_not_a_short_interval() {
        let mut t = table();
        let t0 = Instant::now();
        t.handle_telegram(t0, 1, &readings(&[(1, 1.0)]));
        let early = t.handle_telegram(t0 + Duration::from_millis(9_000), 1, &readings(&[(1, 1.0)]));
        assert!(!early.contains(&7));
        let jitter =
            t.handle_telegram(t0 + Duration::from_millis(9_600), 1, &readings(&[(1, 2.0)]));
        assert!(jitter.contains(&7));
        // 1 kWh in 9.6 s
        assert_eq!(t.get(7), Some(&Value::Number(3_600_000.0 / 9.6)));
    }

    #[test]
    fn derived_lines_are_as_fresh_as_what_they_read() {
        let t0 = Instant::now();
        let mut t = table().with_stale_after(StaleAfter::After(secs(10)), t0);
        t.handle_telegram(t0, 1, &readings(&[(1, 1.0), (2, 1.0), (3, 1.0)]));
        t.handle_telegram(t0 + secs(10), 1, &readings(&[(1, 1.5), (2, 1.0), (3, 1.0)]));
        // Meter 2 sends later: `both` reads meter 1's `a` and its own `x`.
        let fresh = t.handle_telegram(t0 + secs(15), 2, &readings(&[(8, 3.0)]));
        assert_eq!(fresh, vec![8, 9]);
        assert!(t.is_fresh(7, t0 + secs(20)), "the rate, as fresh as a");
        assert!(t.is_fresh(9, t0 + secs(20)));
        // Meter 1 falls silent: its values, the rate of a, and `both` go; `x` stays.
        let later = t0 + secs(21);
        for e in 1..=9 {
            assert_eq!(t.is_fresh(e, later), e == 8, "entry {e}");
        }
        assert_eq!(
            t.sensor_payload(later, &wall()).unwrap().0,
            r#"{"Time":"2024-03-04T11:25:20","N":{"x":3}}"#
        );
    }

    #[test]
    fn a_telegram_publishes_the_derived_lines_of_other_meters_it_feeds() {
        let mut t = table();
        let t0 = Instant::now();
        t.handle_telegram(t0, 2, &readings(&[(8, 3.0)]));
        let fresh = t.handle_telegram(t0, 1, &readings(&[(1, 2.0)]));
        assert_eq!(
            payload(&t, &fresh).as_deref(),
            Some(r#"{"M":{"a":2,"k":0.06},"N":{"both":5}}"#)
        );
    }

    #[test]
    fn a_forgotten_meter_restarts_its_differences() {
        let mut t = table();
        let t0 = Instant::now();
        t.handle_telegram(t0, 1, &readings(&[(1, 1.0)]));
        t.forget_meter(1);
        assert_eq!(t.get(1), None);
        // 10 s after the first reading, but the first after the drop: a new baseline.
        let fresh = t.handle_telegram(t0 + secs(10), 1, &readings(&[(1, 2.0)]));
        assert!(!fresh.contains(&7));
        let fresh = t.handle_telegram(t0 + secs(20), 1, &readings(&[(1, 2.0)]));
        assert!(fresh.contains(&7));
        assert_eq!(t.get(7), Some(&Value::Number(0.0)));
    }

    #[test]
    fn a_non_finite_reading_is_left_out_and_no_empty_object_is_published() {
        let mut t = table();
        let fresh = t.handle_telegram(Instant::now(), 2, &readings(&[(8, f64::NAN)]));
        assert_eq!(payload(&t, &fresh), None);
    }

    #[test]
    fn prefix_groups_keep_first_appearance_order_and_merge_a_shared_prefix() {
        let text = ">D\n>M 3\n+1,3,o,0,9600,Z\n+2,4,o,0,9600,A\n+3,5,o,0,9600,Z\n\
            1,1.8.0(@1,a,,a,0\n2,1.8.0(@1,b,,b,0\n3,1.8.0(@1,c,,c,0\n#\n";
        let script = crate::script::compile(text.as_bytes()).script.unwrap();
        let mut t = ValueTable::new(&script);
        let t0 = Instant::now();
        for (m, e) in [(3u16, 3u16), (2, 2), (1, 1)] {
            t.handle_telegram(t0, m, &readings(&[(e, f64::from(e))]));
        }
        assert_eq!(
            t.sensor_payload(t0, &wall()).unwrap().0,
            r#"{"Time":"2024-03-04T11:25:20","Z":{"a":1,"c":3},"A":{"b":2}}"#
        );
        assert_eq!(
            payload(&t, &[3, 2]).as_deref(),
            Some(r#"{"Z":{"c":3},"A":{"b":2}}"#)
        );
    }
}
