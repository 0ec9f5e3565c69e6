/*!
The engine's clock and what it publishes: telegrams in, publications out, driven with `now` (and the
local wall time for `Time`), never touching a port or a broker, so it is tested with no network.

Tasmota's timing, which consumers and scripts rely on:
- every second a tick (`=d` lines advance; the `>S` hooks will run here);
- the teleperiod (default 300 s, 10..3600) publishes SENSOR with every value received so far and
  STATE with the uptime; the first comes 5 s after the first broker connect (Tasmota presets its
  counter), or one teleperiod after start if the broker never answers;
- a line with precision + 16 publishes `{"Time":..,"<prefix>":{"<name>":v}}` each time it is decoded;
- `--every-telegram` (sml's own) publishes the whole SENSOR payload on every telegram, instead of the
  per-line payloads, which it contains.
*/

use crate::script::model::MeterIndex;
use std::time::{Duration, Instant};

use crate::decode::Telegram;
use crate::engine::json;
use crate::engine::values::ValueTable;
use crate::script::model::Script;

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            teleperiod: TELEPERIOD_DEFAULT,
            every_telegram: false,
        }
    }
}

/// Something to publish; the sink decides the topic (`tele/<topic>/SENSOR`, `.../STATE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publication {
    Sensor(String),
    State(String),
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
}

impl Engine {
    pub fn new(script: &Script, config: EngineConfig, now: Instant) -> Engine {
        Engine {
            table: ValueTable::new(script),
            config,
            started: now,
            next_tick: now + TICK,
            next_teleperiod: now + config.teleperiod,
            connected_once: false,
            stats: EngineStats::default(),
        }
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
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

    /// A meter's telegram: store its values; publish per `--every-telegram` or per +16 line.
    pub fn handle_telegram(
        &mut self,
        now: Instant,
        wall: &chrono::NaiveDateTime,
        t: &Telegram,
    ) -> Vec<Publication> {
        self.stats.telegrams += 1;
        let each = self.table.handle_telegram(now, t);
        if self.config.every_telegram {
            return self
                .table
                .sensor_payload(wall)
                .map(|p| Publication::Sensor(p.0))
                .into_iter()
                .collect();
        }
        each.iter()
            .filter_map(|e| self.table.sensor_payload_for(wall, std::slice::from_ref(e)))
            .map(|p| Publication::Sensor(p.0))
            .collect()
    }

    /// A meter's link dropped: its values are forgotten until it sends again.
    pub fn handle_link_down(&mut self, meter: MeterIndex) {
        self.stats.link_drops += 1;
        self.table.forget_meter(meter);
    }

    /// When [`Engine::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick.min(self.next_teleperiod)
    }

    /// Run the ticks and the teleperiod that are due at `now`.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        wall: &chrono::NaiveDateTime,
    ) -> Vec<Publication> {
        let mut out = Vec::new();
        if now >= self.next_tick {
            self.table.handle_tick(now);
            // Hook point: the `>S` section runs here once hooks exist.
            self.next_tick = advance(self.next_tick, TICK, now);
        }
        if now >= self.next_teleperiod {
            self.stats.teleperiods += 1;
            // Tasmota publishes SENSOR only when it has something to say; STATE always.
            if let Some(p) = self.table.sensor_payload(wall) {
                out.push(Publication::Sensor(p.0));
            }
            out.push(Publication::State(self.state_payload(now, wall)));
            self.next_teleperiod = advance(self.next_teleperiod, self.config.teleperiod, now);
        }
        out
    }

    /// Tasmota's STATE, the part that means something off the ESP:
    /// `{"Time":"2024-03-04T11:25:20","Uptime":"0T00:01:00","UptimeSec":60}`.
    pub fn state_payload(&self, now: Instant, wall: &chrono::NaiveDateTime) -> String {
        let secs = now.saturating_duration_since(self.started).as_secs();
        let mut out = String::from("{\"Time\":");
        json::push_string(&mut out, &json::format_time(wall));
        out.push_str(&format!(
            ",\"Uptime\":\"{}T{:02}:{:02}:{:02}\",\"UptimeSec\":{}}}",
            secs / 86400,
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60,
            secs
        ));
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

    /// Entry 1 `enrg` (3 decimals), entry 2 `pwr` (1 decimal, +16: published on every decode).
    fn script() -> Script {
        let text = ">D\n>M 1\n+1,3,o,0,9600,EON\n1,1-0:1.8.0(@1,Energy,kWh,enrg,3\n1,1-0:2.8.0(@1,Power,kW,pwr,17\n#\n";
        crate::script::compile(text.as_bytes())
            .script
            .expect("test script compiles")
    }

    fn telegram(enrg: f64, pwr: f64) -> Telegram {
        Telegram {
            readings: vec![
                Reading {
                    entry: 1,
                    value: Value::Number(enrg),
                },
                Reading {
                    entry: 2,
                    value: Value::Number(pwr),
                },
            ],
        }
    }

    #[test]
    fn a_plus_16_line_publishes_itself_on_every_telegram() {
        let t0 = Instant::now();
        let mut e = Engine::new(&script(), EngineConfig::default(), t0);
        let out = e.handle_telegram(t0, &wall(), &telegram(1.5, 230.26));
        assert_eq!(
            out,
            vec![Publication::Sensor(
                r#"{"Time":"2024-03-04T11:25:20","EON":{"pwr":230.3}}"#.into()
            )]
        );
    }

    #[test]
    fn every_telegram_publishes_the_whole_payload_instead() {
        let t0 = Instant::now();
        let mut e = Engine::new(
            &script(),
            EngineConfig {
                every_telegram: true,
                ..Default::default()
            },
            t0,
        );
        let out = e.handle_telegram(t0, &wall(), &telegram(1.5, 230.26));
        assert_eq!(
            out,
            vec![Publication::Sensor(
                r#"{"Time":"2024-03-04T11:25:20","EON":{"enrg":1.500,"pwr":230.3}}"#.into()
            )]
        );
    }

    #[test]
    fn the_first_teleperiod_comes_five_seconds_after_the_first_connect_then_every_period() {
        let t0 = Instant::now();
        let cfg = EngineConfig {
            teleperiod: Duration::from_secs(10),
            every_telegram: false,
        };
        let mut e = Engine::new(&script(), cfg, t0);
        e.handle_telegram(t0, &wall(), &telegram(1.5, 230.26));
        e.handle_connected(t0 + Duration::from_secs(1));
        assert_eq!(e.poll_timeout(), t0 + Duration::from_secs(1));
        assert!(e
            .handle_timeout(t0 + Duration::from_secs(1), &wall())
            .is_empty());
        let at = t0 + Duration::from_secs(6);
        let out = e.handle_timeout(at, &wall());
        assert_eq!(
            out,
            vec![
                Publication::Sensor(
                    r#"{"Time":"2024-03-04T11:25:20","EON":{"enrg":1.500,"pwr":230.3}}"#.into()
                ),
                Publication::State(
                    r#"{"Time":"2024-03-04T11:25:20","Uptime":"0T00:00:06","UptimeSec":6}"#.into()
                ),
            ]
        );
        // A reconnect does not move it again; the next is one period later.
        e.handle_connected(at);
        assert!(e
            .handle_timeout(t0 + Duration::from_secs(15), &wall())
            .is_empty());
        assert_eq!(
            e.handle_timeout(t0 + Duration::from_secs(16), &wall())
                .len(),
            2
        );
    }

    #[test]
    fn a_dropped_link_leaves_its_values_out_and_state_still_publishes() {
        let t0 = Instant::now();
        let mut e = Engine::new(&script(), EngineConfig::default(), t0);
        e.handle_telegram(t0, &wall(), &telegram(1.5, 230.26));
        e.handle_link_down(1);
        let out = e.handle_timeout(t0 + TELEPERIOD_DEFAULT, &wall());
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(matches!(&out[0], Publication::State(s) if s.contains(r#""UptimeSec":300"#)));
    }

    #[test]
    fn uptime_is_days_t_hours_minutes_seconds() {
        let t0 = Instant::now();
        let e = Engine::new(&script(), EngineConfig::default(), t0);
        let s = e.state_payload(
            t0 + Duration::from_secs(2 * 86400 + 3 * 3600 + 4 * 60 + 5),
            &wall(),
        );
        assert!(
            s.contains(r#""Uptime":"2T03:04:05","UptimeSec":183845"#),
            "{s}"
        );
    }
}
