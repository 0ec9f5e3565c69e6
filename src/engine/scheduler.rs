/*!
The engine's clock and what it publishes: telegrams in, publications out, driven with `now` (and the
local wall time for `Time`), never touching a port or a broker, so it is tested with no network.

Tasmota's timing, which consumers and scripts rely on:
- every second a tick: the script's timers and `>S` (see [`crate::engine::hooks`] for `>B`, `>F`,
  `>J`, `>T`, `>R` and what their commands do);
- `smlj` (Tasmota's default 1): while its bit 0 is 0, the meters' values are not published, neither
  at the teleperiod nor per telegram (the seed script holds them back for 22 s after a start);
- the teleperiod (default 300 s, 10..3600) publishes SENSOR with the values received so far and
  STATE with the uptime; the first comes 5 s after the first broker connect (Tasmota presets its
  counter), or one teleperiod after start if the broker never answers;
- a line with precision + 16 publishes `{"Time":..,"<prefix>":{"<name>":v}}` each time it is decoded
  (or, for `=m`/`=d`, computed);
- `--every-telegram` (sml's own) publishes, on every telegram, that telegram's payload instead of the
  per-line payloads: `{"Time":..,"<prefix>":{..}}` with what the telegram held and the `=m`/`=d`
  lines computed from it, so the cost of a telegram does not grow with the number of meters.

Where sml differs, so that an old value is never published as a new one
([`crate::engine::freshness`]):
- a value not refreshed within its meter's stale window (`--stale-after`) is left out of SENSOR;
  a dropped link forgets its meter's values at once;
- STATE says which meters are silent (not heard from within their window), as a key after
  Tasmota's: `{"Time":..,"Uptime":"0T00:01:00","UptimeSec":60,"Silent":[2,5]}`, always present,
  `[]` when every meter is sending, meter numbers as in the script (`+2`), ascending;
- when every link has ended (a finite replay), [`Engine::handle_end`] gives the last teleperiod's
  SENSOR, so a replay shorter than a teleperiod still publishes.
*/

use std::time::{Duration, Instant};

use crate::decode::Telegram;
use crate::engine::hooks::{HookAction, ScriptHooks};
use crate::engine::json;
use crate::engine::values::ValueTable;
use crate::hooks::user::UserRhai;
use crate::hooks::HostCommand;
use crate::script::model::{MeterIndex, Script};

pub use crate::engine::freshness::StaleAfter;

/// Tasmota's TelePeriod range and default.
pub const TELEPERIOD_MIN: Duration = Duration::from_secs(10);
pub const TELEPERIOD_MAX: Duration = Duration::from_secs(3600);
pub const TELEPERIOD_DEFAULT: Duration = Duration::from_secs(300);
/// Tasmota publishes the first teleperiod this long after the first MQTT connect.
pub const FIRST_TELEPERIOD_AFTER_CONNECT: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    pub teleperiod: Duration,
    pub every_telegram: bool,
    /// When a value is too old to publish (`--stale-after`).
    pub stale_after: StaleAfter,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            teleperiod: TELEPERIOD_DEFAULT,
            every_telegram: false,
            stale_after: StaleAfter::Auto,
        }
    }
}

/// Something to publish; the sink decides the topic (`tele/<topic>/SENSOR`, `.../STATE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publication {
    Sensor(String),
    State(String),
    /// A script's `publish topic payload`: sent while the broker is connected, not queued (as
    /// Tasmota sends it).
    Script {
        topic: String,
        payload: String,
    },
}

/// Counters for the log and the final report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub telegrams: u64,
    pub teleperiods: u64,
    pub link_drops: u64,
}

pub struct Engine {
    table: ValueTable,
    config: EngineConfig,
    started: Instant,
    next_tick: Instant,
    next_teleperiod: Instant,
    connected_once: bool,
    stats: EngineStats,
    /// The script's sections; `None` for a script without any.
    hooks: Option<ScriptHooks>,
    /// Actions of the engine's own (a script whose sections do not translate).
    actions: Vec<HookAction>,
    /// The user's own post-processing (`--rhai FILE`).
    user: Option<UserRhai>,
    /// Meters another host runs (`--shard`): never heard here, and not silent for that.
    elsewhere: Vec<MeterIndex>,
}

impl Engine {
    pub fn new(script: &Script, config: EngineConfig, now: Instant) -> Engine {
        let (mut hooks, failure) = ScriptHooks::new(script, now);
        if let Some(h) = &mut hooks {
            h.hooks_mut()
                .set_teleperiod(config.teleperiod.as_secs() as u32);
        }
        Engine {
            hooks,
            actions: failure.into_iter().collect(),
            user: None,
            table: ValueTable::new(script).with_stale_after(config.stale_after, now),
            config,
            started: now,
            next_tick: now + TICK,
            next_teleperiod: now + config.teleperiod,
            connected_once: false,
            stats: EngineStats::default(),
            elsewhere: Vec::new(),
        }
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The script's hooks, to restore `p:` variables before the first call or to set `%topic%`.
    pub fn hooks_mut(&mut self) -> Option<&mut ScriptHooks> {
        self.hooks.as_mut()
    }

    /// What the run loop must do for the script since the last call (log, meter tasks, disk).
    pub fn take_actions(&mut self) -> Vec<HookAction> {
        let mut out = std::mem::take(&mut self.actions);
        if let Some(h) = &mut self.hooks {
            out.extend(h.take_actions());
        }
        out
    }

    /// Run every SENSOR payload through the user's `before_publish`, and each telegram through
    /// `on_telegram`.
    pub fn set_user_rhai(&mut self, user: UserRhai) {
        self.user = Some(user);
    }

    /// The user's `before_publish`: the payload to publish, if any. A failure publishes the
    /// payload as it was and is reported once.
    fn post_process(&mut self, payload: String) -> Option<String> {
        let Some(user) = &mut self.user else {
            return Some(payload);
        };
        let (out, error) = user.before_publish(&payload);
        if let Some(e) = error {
            self.actions.push(HookAction::Error(e));
        }
        out
    }

    /// Whether the meters' values are published now (`smlj` bit 0).
    fn publishes_meters(&self) -> bool {
        self.hooks
            .as_ref()
            .is_none_or(ScriptHooks::publishes_meters)
    }

    /// `>B`, once, on the engine's first call.
    fn boot(&mut self, now: Instant, wall: &chrono::NaiveDateTime) {
        if let Some(h) = &mut self.hooks {
            let commands = h.ensure_booted(now, wall, &self.table);
            self.apply(now, commands);
        }
    }

    /// Apply what a hook asked: what is the engine's own here, the rest becomes an action.
    fn apply(&mut self, now: Instant, commands: Vec<HostCommand>) {
        for c in commands {
            match c {
                HostCommand::RestartMeters => {
                    // The values read 0 and are not published until the meters send again.
                    for m in self.table.meter_indices() {
                        self.table.forget_meter(m);
                    }
                    if let Some(h) = &mut self.hooks {
                        h.act(HostCommand::RestartMeters);
                    }
                }
                HostCommand::SetTeleperiod { seconds } => {
                    let period = Duration::from_secs(u64::from(seconds))
                        .clamp(TELEPERIOD_MIN, TELEPERIOD_MAX);
                    self.config.teleperiod = period;
                    self.next_teleperiod = now + period;
                    if let Some(h) = &mut self.hooks {
                        h.hooks_mut().set_teleperiod(period.as_secs() as u32);
                    }
                }
                other => {
                    if let Some(h) = &mut self.hooks {
                        h.act(other);
                    }
                }
            }
        }
    }

    /// The teleperiod's SENSOR: the fresh values (if `smlj` allows), then `>J`'s text.
    fn sensor(&mut self, now: Instant, wall: &chrono::NaiveDateTime) -> Option<String> {
        let meters = if self.publishes_meters() {
            self.table.sensor_payload(now, wall).map(|p| p.0)
        } else {
            None
        };
        let extra = match &mut self.hooks {
            Some(h) if h.hooks().has_section(">J") => h.json_append(now, wall, &self.table),
            _ => String::new(),
        };
        let extra = extra.trim();
        if extra.is_empty() {
            return meters;
        }
        let mut out = meters.clone().unwrap_or_else(|| {
            let mut s = String::from("{\"Time\":");
            json::push_string(&mut s, &json::format_time(wall));
            s.push('}');
            s
        });
        out.pop();
        if !extra.starts_with(',') {
            out.push(',');
        }
        out.push_str(extra);
        out.push('}');
        // `>J` is the script's own text: what is not JSON is not published as if it were.
        if serde_json::from_str::<serde_json::Value>(&out).is_err() {
            let why = format!("`>J` gave text that is not JSON, left out: {extra}");
            self.actions.push(HookAction::Error(why));
            return meters;
        }
        Some(out)
    }

    /// The program stops: `>R`, then the `p:` variables to save (as actions).
    pub fn handle_shutdown(&mut self, now: Instant, wall: &chrono::NaiveDateTime) {
        self.boot(now, wall);
        if let Some(h) = &mut self.hooks {
            let commands = h.handle_shutdown(now, wall, &self.table);
            self.apply(now, commands);
        }
    }

    /// The sink reached its broker (or, for stdout, is ready). The first time, the first
    /// teleperiod is brought forward to 5 s later, as Tasmota does.
    pub fn handle_connected(&mut self, now: Instant) {
        if !self.connected_once {
            self.connected_once = true;
            self.next_teleperiod = self
                .next_teleperiod
                .min(now + FIRST_TELEPERIOD_AFTER_CONNECT);
        }
    }

    /// Meter `meter`'s telegram: store its values; publish what it refreshed (`--every-telegram`)
    /// or its +16 lines, each on its own. Costs O(lines it refreshed), not O(meters).
    pub fn handle_telegram(
        &mut self,
        now: Instant,
        wall: &chrono::NaiveDateTime,
        meter: MeterIndex,
        t: &Telegram,
    ) -> Vec<Publication> {
        self.stats.telegrams += 1;
        self.boot(now, wall);
        let refreshed = self.table.handle_telegram(now, meter, t);
        if let Some(user) = self.user.as_mut().filter(|u| u.wants_telegrams()) {
            if let Some(p) = self.table.payload_for(wall, &refreshed) {
                if let Some(e) = user.on_telegram(meter, &p.0) {
                    self.actions.push(HookAction::Error(e));
                }
            }
        }
        if !self.publishes_meters() {
            return Vec::new();
        }
        let payloads: Vec<String> = if self.config.every_telegram {
            self.table
                .payload_for(wall, &refreshed)
                .map(|p| p.0)
                .into_iter()
                .collect()
        } else {
            refreshed
                .iter()
                .filter(|e| self.table.publishes_each(**e))
                .filter_map(|e| self.table.payload_for(wall, std::slice::from_ref(e)))
                .map(|p| p.0)
                .collect()
        };
        payloads
            .into_iter()
            .filter_map(|p| self.post_process(p))
            .map(Publication::Sensor)
            .collect()
    }

    /// A meter's link dropped: its values are forgotten until it sends again.
    pub fn handle_link_down(&mut self, meter: MeterIndex) {
        self.stats.link_drops += 1;
        self.table.forget_meter(meter);
    }

    /// Every link has ended (a finite replay): the SENSOR a teleperiod would publish now, with
    /// the fresh values; nothing with `--every-telegram`, where each telegram was published.
    pub fn handle_end(&mut self, now: Instant, wall: &chrono::NaiveDateTime) -> Vec<Publication> {
        self.boot(now, wall);
        if !self.publishes_meters() {
            // A short capture of a script that holds its values back at start (the seed's 22 s):
            // say why nothing came out, whatever the mode.
            self.actions.push(HookAction::Log(
                "the script's smlj is 0: the meters' values were held back, as the script asks"
                    .into(),
            ));
        }
        if self.config.every_telegram {
            return Vec::new();
        }
        self.sensor(now, wall)
            .and_then(|p| self.post_process(p))
            .map(Publication::Sensor)
            .into_iter()
            .collect()
    }

    /// The meters not heard from within their stale window, ascending (for STATE and the log).
    pub fn silent_meters(&self, now: Instant) -> Vec<MeterIndex> {
        let mut silent = self.table.silent_meters(now);
        silent.retain(|m| !self.elsewhere.contains(m));
        silent
    }

    /// These meters are run by another host (`--shard`): STATE does not name them silent.
    pub fn set_meters_elsewhere(&mut self, meters: Vec<MeterIndex>) {
        self.elsewhere = meters;
    }

    /// When [`Engine::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Instant {
        let due = self.next_tick.min(self.next_teleperiod);
        match self.hooks.as_ref().and_then(ScriptHooks::poll_timeout) {
            Some(hooks) => due.min(hooks),
            None => due,
        }
    }

    /// Run the ticks and the teleperiod that are due at `now`.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        wall: &chrono::NaiveDateTime,
    ) -> Vec<Publication> {
        let mut out = Vec::new();
        self.boot(now, wall);
        if let Some(h) = &mut self.hooks {
            let commands = h.handle_fast(now, wall, &self.table);
            self.apply(now, commands);
        }
        if now >= self.next_tick {
            if let Some(h) = &mut self.hooks {
                let commands = h.handle_second(now, wall, &self.table);
                self.apply(now, commands);
            }
            self.next_tick = advance(self.next_tick, TICK, now);
        }
        if now >= self.next_teleperiod {
            self.stats.teleperiods += 1;
            // Tasmota publishes SENSOR only when it has something to say; STATE always.
            let sensor = self.sensor(now, wall).and_then(|p| self.post_process(p));
            if let Some(p) = &sensor {
                out.push(Publication::Sensor(p.clone()));
            }
            out.push(Publication::State(self.state_payload(now, wall)));
            self.next_teleperiod = advance(self.next_teleperiod, self.config.teleperiod, now);
            if let Some(h) = &mut self.hooks {
                let commands = h.handle_teleperiod(now, wall, &self.table, sensor.as_deref());
                self.apply(now, commands);
            }
        }
        out
    }

    /// Tasmota's STATE, the part that means something off the ESP, and the silent meters:
    /// `{"Time":"2024-03-04T11:25:20","Uptime":"0T00:01:00","UptimeSec":60,"Silent":[]}`.
    pub fn state_payload(&self, now: Instant, wall: &chrono::NaiveDateTime) -> String {
        let secs = now.saturating_duration_since(self.started).as_secs();
        let mut out = String::from("{\"Time\":");
        json::push_string(&mut out, &json::format_time(wall));
        out.push_str(&format!(
            ",\"Uptime\":\"{}T{:02}:{:02}:{:02}\",\"UptimeSec\":{},\"Silent\":[",
            secs / 86400,
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60,
            secs
        ));
        let silent: Vec<String> = self.silent_meters(now).iter().map(u16::to_string).collect();
        out.push_str(&silent.join(","));
        out.push_str("]}");
        out
    }
}

/// The next deadline after `due`, on the same grid, skipping periods missed (a suspended machine).
fn advance(due: Instant, period: Duration, now: Instant) -> Instant {
    let next = due + period;
    if next > now {
        next
    } else {
        now + period
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Reading, Value};

    fn wall() -> chrono::NaiveDateTime {
        chrono::NaiveDateTime::parse_from_str("2024-03-04T11:25:20", "%Y-%m-%dT%H:%M:%S").unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Entry 1 `enrg` (3 decimals), entry 2 `pwr` (1 decimal, +16: published on every decode).
    fn script() -> Script {
        let text = ">D\n>M 1\n+1,3,o,0,9600,EON\n1,1-0:1.8.0(@1,Energy,kWh,enrg,3\n1,1-0:2.8.0(@1,Power,kW,pwr,17\n#\n";
        compile(text)
    }

    /// Meters 1 (`A`: entry 1 `a`) and 2 (`B`: entry 2 `b`).
    fn two_meters() -> Script {
        compile(
            ">D\n>M 2\n+1,3,o,0,9600,A\n+2,4,o,0,9600,B\n1,1.8.0(@1,a,,a,0\n2,1.8.0(@1,b,,b,0\n#\n",
        )
    }

    fn compile(text: &str) -> Script {
        crate::script::compile(text.as_bytes())
            .script
            .expect("test script compiles")
    }

    fn readings(values: &[(u16, f64)]) -> Telegram {
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

    fn telegram(enrg: f64, pwr: f64) -> Telegram {
        readings(&[(1, enrg), (2, pwr)])
    }

    fn every_telegram() -> EngineConfig {
        EngineConfig {
            every_telegram: true,
            ..Default::default()
        }
    }

    fn sensor(json: &str) -> Publication {
        Publication::Sensor(json.to_string())
    }

    /// The teleperiod's SENSOR and STATE at `at` (the first teleperiod is made due then).
    fn teleperiod(e: &mut Engine, at: Instant) -> Vec<Publication> {
        e.next_teleperiod = at;
        e.handle_timeout(at, &wall())
    }

    #[test]
    fn a_plus_16_line_publishes_itself_on_every_telegram() {
        let t0 = Instant::now();
        let mut e = Engine::new(&script(), EngineConfig::default(), t0);
        let out = e.handle_telegram(t0, &wall(), 1, &telegram(1.5, 230.26));
        assert_eq!(
            out,
            vec![sensor(
                r#"{"Time":"2024-03-04T11:25:20","EON":{"pwr":230.3}}"#
            )]
        );
    }

    #[test]
    fn every_telegram_publishes_the_telegrams_payload_instead() {
        let t0 = Instant::now();
        let mut e = Engine::new(&script(), every_telegram(), t0);
        let out = e.handle_telegram(t0, &wall(), 1, &telegram(1.5, 230.26));
        assert_eq!(
            out,
            vec![sensor(
                r#"{"Time":"2024-03-04T11:25:20","EON":{"enrg":1.500,"pwr":230.3}}"#
            )]
        );
    }

    #[test]
    fn every_telegram_publishes_only_the_meter_that_sent() {
        let t0 = Instant::now();
        let mut e = Engine::new(&two_meters(), every_telegram(), t0);
        e.handle_telegram(t0, &wall(), 1, &readings(&[(1, 7.0)]));
        let out = e.handle_telegram(t0 + secs(1), &wall(), 2, &readings(&[(2, 8.0)]));
        assert_eq!(
            out,
            vec![sensor(r#"{"Time":"2024-03-04T11:25:20","B":{"b":8}}"#)]
        );
        // The teleperiod still has both.
        let out = teleperiod(&mut e, t0 + secs(2));
        assert_eq!(
            out[0],
            sensor(r#"{"Time":"2024-03-04T11:25:20","A":{"a":7},"B":{"b":8}}"#)
        );
    }

    #[test]
    fn an_empty_telegram_publishes_nothing_in_per_telegram_mode() {
        let t0 = Instant::now();
        let mut e = Engine::new(&script(), every_telegram(), t0);
        e.handle_telegram(t0, &wall(), 1, &telegram(1.5, 230.26));
        let out = e.handle_telegram(t0 + secs(1), &wall(), 1, &Telegram::default());
        assert_eq!(out, vec![]);
    }

    #[test]
    fn a_telegram_with_one_of_two_values_publishes_only_that_one() {
        let t0 = Instant::now();
        let mut e = Engine::new(&script(), every_telegram(), t0);
        e.handle_telegram(t0, &wall(), 1, &telegram(1.5, 230.26));
        let out = e.handle_telegram(t0 + secs(1), &wall(), 1, &readings(&[(1, 1.6)]));
        assert_eq!(
            out,
            vec![sensor(
                r#"{"Time":"2024-03-04T11:25:20","EON":{"enrg":1.600}}"#
            )]
        );
    }

    #[test]
    fn readings_of_another_meters_entries_are_ignored() {
        let t0 = Instant::now();
        let mut e = Engine::new(&two_meters(), every_telegram(), t0);
        let out = e.handle_telegram(t0, &wall(), 1, &readings(&[(2, 8.0)]));
        assert_eq!(out, vec![]);
        assert_eq!(
            e.handle_telegram(t0, &wall(), 9, &readings(&[(1, 8.0)])),
            vec![]
        );
    }

    #[test]
    fn a_meter_that_stops_sending_is_left_out_and_named_silent() {
        let t0 = Instant::now();
        let mut e = Engine::new(&two_meters(), EngineConfig::default(), t0);
        // Both every 2 s (window: the 10 s floor), then meter 2 stops after 4 s.
        for s in (0..=20).step_by(2) {
            e.handle_telegram(t0 + secs(s), &wall(), 1, &readings(&[(1, s as f64)]));
            if s <= 4 {
                e.handle_telegram(t0 + secs(s), &wall(), 2, &readings(&[(2, 1.0)]));
            }
        }
        assert!(e.silent_meters(t0 + secs(14)).is_empty());
        assert_eq!(e.silent_meters(t0 + secs(15)), vec![2]);
        // On a host of another shard meter 2 is not silent: it is not read there at all.
        e.set_meters_elsewhere(vec![2]);
        assert!(e.silent_meters(t0 + secs(15)).is_empty());
        e.set_meters_elsewhere(vec![]);
        let out = teleperiod(&mut e, t0 + secs(20));
        assert_eq!(
            out,
            vec![
                sensor(r#"{"Time":"2024-03-04T11:25:20","A":{"a":20}}"#),
                Publication::State(
                    r#"{"Time":"2024-03-04T11:25:20","Uptime":"0T00:00:20","UptimeSec":20,"Silent":[2]}"#
                        .into()
                ),
            ]
        );
        // It sends again: fresh again.
        e.handle_telegram(t0 + secs(21), &wall(), 2, &readings(&[(2, 2.0)]));
        assert!(e.silent_meters(t0 + secs(21)).is_empty());
        assert_eq!(
            teleperiod(&mut e, t0 + secs(21))[0],
            sensor(r#"{"Time":"2024-03-04T11:25:20","A":{"a":20},"B":{"b":2}}"#)
        );
    }

    #[test]
    fn the_window_is_three_of_the_meters_own_intervals() {
        let t0 = Instant::now();
        let mut e = Engine::new(&two_meters(), EngineConfig::default(), t0);
        // Meter 1 every 60 s: its values stay for 180 s.
        for s in [0, 60, 120] {
            e.handle_telegram(t0 + secs(s), &wall(), 1, &readings(&[(1, 1.0)]));
        }
        assert!(
            teleperiod(&mut e, t0 + secs(300))[0]
                == sensor(r#"{"Time":"2024-03-04T11:25:20","A":{"a":1}}"#)
        );
        let out = teleperiod(&mut e, t0 + secs(301));
        assert_eq!(out.len(), 1, "only STATE: {out:?}");
    }

    #[test]
    fn a_fixed_stale_after_applies_to_every_meter_and_never_keeps_everything() {
        let t0 = Instant::now();
        let fixed = EngineConfig {
            stale_after: StaleAfter::After(secs(3)),
            ..Default::default()
        };
        let mut e = Engine::new(&two_meters(), fixed, t0);
        e.handle_telegram(t0, &wall(), 1, &readings(&[(1, 1.0)]));
        assert_eq!(teleperiod(&mut e, t0 + secs(3)).len(), 2);
        assert_eq!(teleperiod(&mut e, t0 + secs(4)).len(), 1);
        assert_eq!(e.silent_meters(t0 + secs(4)), vec![1, 2]);

        let never = EngineConfig {
            stale_after: StaleAfter::Never,
            ..Default::default()
        };
        let mut e = Engine::new(&two_meters(), never, t0);
        e.handle_telegram(t0, &wall(), 1, &readings(&[(1, 1.0)]));
        let day = t0 + secs(86_400);
        assert_eq!(teleperiod(&mut e, day).len(), 2);
        assert!(e.silent_meters(day).is_empty());
    }

    #[test]
    fn a_meter_never_heard_from_is_silent_after_the_floor() {
        let t0 = Instant::now();
        let e = Engine::new(&two_meters(), EngineConfig::default(), t0);
        assert!(e.silent_meters(t0 + secs(10)).is_empty());
        assert_eq!(e.silent_meters(t0 + secs(11)), vec![1, 2]);
    }

    #[test]
    fn the_end_of_a_replay_publishes_the_teleperiods_sensor() {
        let t0 = Instant::now();
        let mut e = Engine::new(&script(), EngineConfig::default(), t0);
        e.handle_telegram(t0, &wall(), 1, &telegram(1.5, 230.26));
        assert_eq!(
            e.handle_end(t0 + secs(1), &wall()),
            vec![sensor(
                r#"{"Time":"2024-03-04T11:25:20","EON":{"enrg":1.500,"pwr":230.3}}"#
            )]
        );
        // Nothing received, nothing to say.
        let mut e = Engine::new(&script(), EngineConfig::default(), t0);
        assert_eq!(e.handle_end(t0 + secs(1), &wall()), vec![]);
    }

    #[test]
    fn the_end_of_a_replay_publishes_nothing_more_in_per_telegram_mode() {
        let t0 = Instant::now();
        let mut e = Engine::new(&script(), every_telegram(), t0);
        e.handle_telegram(t0, &wall(), 1, &telegram(1.5, 230.26));
        assert_eq!(e.handle_end(t0 + secs(1), &wall()), vec![]);
    }

    #[test]
    fn the_first_teleperiod_comes_five_seconds_after_the_first_connect_then_every_period() {
        let t0 = Instant::now();
        let cfg = EngineConfig {
            teleperiod: secs(10),
            ..Default::default()
        };
        let mut e = Engine::new(&script(), cfg, t0);
        e.handle_telegram(t0, &wall(), 1, &telegram(1.5, 230.26));
        e.handle_connected(t0 + secs(1));
        assert_eq!(e.poll_timeout(), t0 + secs(1));
        assert!(e.handle_timeout(t0 + secs(1), &wall()).is_empty());
        let at = t0 + secs(6);
        let out = e.handle_timeout(at, &wall());
        assert_eq!(
            out,
            vec![
                sensor(r#"{"Time":"2024-03-04T11:25:20","EON":{"enrg":1.500,"pwr":230.3}}"#),
                Publication::State(
                    r#"{"Time":"2024-03-04T11:25:20","Uptime":"0T00:00:06","UptimeSec":6,"Silent":[]}"#
                        .into()
                ),
            ]
        );
        // A reconnect does not move it again; the next is one period later.
        e.handle_connected(at);
        assert!(e.handle_timeout(t0 + secs(15), &wall()).is_empty());
        e.handle_telegram(t0 + secs(15), &wall(), 1, &telegram(1.5, 230.26));
        assert_eq!(e.handle_timeout(t0 + secs(16), &wall()).len(), 2);
    }

    #[test]
    fn a_dropped_link_leaves_its_values_out_and_state_still_publishes() {
        let t0 = Instant::now();
        let never = EngineConfig {
            stale_after: StaleAfter::Never,
            ..Default::default()
        };
        let mut e = Engine::new(&two_meters(), never, t0);
        e.handle_telegram(t0, &wall(), 1, &readings(&[(1, 1.0)]));
        e.handle_telegram(t0, &wall(), 2, &readings(&[(2, 2.0)]));
        e.handle_link_down(1);
        let out = e.handle_timeout(t0 + TELEPERIOD_DEFAULT, &wall());
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(
            out[0],
            sensor(r#"{"Time":"2024-03-04T11:25:20","B":{"b":2}}"#)
        );
        assert!(matches!(&out[1], Publication::State(s) if s.contains(r#""UptimeSec":300"#)));
        assert_eq!(e.stats().link_drops, 1);
    }

    #[test]
    fn uptime_is_days_t_hours_minutes_seconds() {
        let t0 = Instant::now();
        let e = Engine::new(&script(), EngineConfig::default(), t0);
        let s = e.state_payload(t0 + secs(2 * 86400 + 3 * 3600 + 4 * 60 + 5), &wall());
        assert!(
            s.contains(r#""Uptime":"2T03:04:05","UptimeSec":183845"#),
            "{s}"
        );
    }
}
