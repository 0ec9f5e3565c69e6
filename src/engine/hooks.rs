/*!
The script's sections as the engine runs them: when each one is due, what its commands do to the
engine, and what the run loop must do for it (the [`HookAction`]s), so the engine stays pure.

Timing, as Tasmota's: `>B` once at start (on the engine's first call), `>S` every second, `>F` every
100 ms (only for a script that has `>F`: a thousand-meter run with no `>F` is not woken ten times a
second for nothing), `>J` and `>T` with each teleperiod, `>R` at shutdown.

A hook that fails is reported once per distinct error, with the script's path and line, and the
engine goes on: the payload goes out as it would have without the hook.

What the engine does itself: `teleperiod N`/`tper=N`, `sensor53 r`'s forgetting of the values
(the decoders' reset is the meter task's, an action), the `delay()` queue. Everything touching a
port, the log, the broker or the disk is an action for the run loop.
*/

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::TimeZone;

use crate::hooks::{HookContext, HookError, Hooks, HostCommand, Readings};
use crate::script::model::Script;

/// `>F`'s period.
pub const FAST_TICK: Duration = Duration::from_millis(100);
/// At most this many distinct ignored (ESP-only) commands are logged; the rest silently.
const MAX_IGNORED_LOGGED: usize = 64;

/// What the run loop must do for the script, in the order the script asked.
#[derive(Debug, Clone, PartialEq)]
pub enum HookAction {
    /// A hook failed (first time for this error), rendered `path:line: error in >S: message`.
    Error(String),
    /// `print`, `=>` echoes, commands ignored off the ESP: for the log.
    Log(String),
    /// `sensor53 r`: the meter tasks reset their decoders (the engine forgot the values already).
    ResetMeters,
    /// `sensor53 d<m>`: log meter m's raw bytes (0: stop).
    DumpRaw { meter: u32 },
    /// `sml(m 0 baud)`, `sml(-m 1 "2400:8E1")`, `sml(m 1 "hex")`, `sml(m 3 ...)`: for meter m's task.
    Link(HostCommand),
    /// `publish topic payload`: already checked to be under one of the allowed prefixes.
    Publish { topic: String, payload: String },
    /// `svars`, `>R`, shutdown: save the `p:` variables.
    SavePermanent(serde_json::Map<String, serde_json::Value>),
}

/// The hooks with their clock and pending commands.
pub struct ScriptHooks {
    hooks: Hooks,
    path: String,
    started: Instant,
    booted: bool,
    next_fast: Option<Instant>,
    /// Commands after a `delay()`, with when they are due, in due order.
    delayed: Vec<(Instant, HostCommand)>,
    actions: Vec<HookAction>,
    /// Topics `publish` may use: each must start with one of these (empty: `publish` is refused).
    publish_prefixes: Vec<String>,
    ignored_logged: BTreeSet<String>,
}

impl ScriptHooks {
    /// The script's hooks, or `None` when it has no section to run. A translation error (which
    /// `sml check` and `sml run` report before) leaves the hooks off and says so once.
    pub fn new(script: &Script, now: Instant) -> (Option<ScriptHooks>, Option<HookAction>) {
        if script.sections.is_empty() {
            return (None, None);
        }
        match Hooks::new(script) {
            Ok(hooks) => (
                Some(ScriptHooks {
                    next_fast: hooks.has_section(">F").then_some(now + FAST_TICK),
                    hooks,
                    path: "script".into(),
                    started: now,
                    booted: false,
                    delayed: Vec::new(),
                    actions: Vec::new(),
                    publish_prefixes: Vec::new(),
                    ignored_logged: BTreeSet::new(),
                }),
                None,
            ),
            Err(errors) => {
                let first = errors.first().map(|d| d.to_string()).unwrap_or_default();
                let action = HookAction::Error(format!(
                    "the script's sections are not run: they do not translate ({first})"
                ));
                (None, Some(action))
            }
        }
    }

    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    pub fn hooks_mut(&mut self) -> &mut Hooks {
        &mut self.hooks
    }

    /// The script's path as errors name it.
    pub fn set_path(&mut self, path: &str) {
        self.path = path.to_string();
    }

    pub fn set_publish_prefixes(&mut self, prefixes: Vec<String>) {
        self.publish_prefixes = prefixes;
    }

    /// Whether the meters' values may be published (`smlj` bit 0; Tasmota's default is 1).
    pub fn publishes_meters(&self) -> bool {
        self.hooks.smlj() & 1 == 1
    }

    /// The earliest time something is due: the next `>F` or a delayed command.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let delayed = self.delayed.first().map(|(at, _)| *at);
        match (self.next_fast, delayed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `>B` on the first call. Returns what the script asked of the engine.
    pub fn ensure_booted(
        &mut self,
        now: Instant,
        wall: &chrono::NaiveDateTime,
        readings: &dyn Readings,
    ) -> Vec<HostCommand> {
        if self.booted {
            return Vec::new();
        }
        self.booted = true;
        let ctx = self.context(now, wall, readings);
        let errors = self.hooks.run_boot(&ctx);
        for e in errors {
            self.error(e);
        }
        self.commands(now)
    }

    /// `>F` if due, and the delayed commands now due.
    pub fn handle_fast(
        &mut self,
        now: Instant,
        wall: &chrono::NaiveDateTime,
        readings: &dyn Readings,
    ) -> Vec<HostCommand> {
        let mut out = self.due_delayed(now);
        if let Some(due) = self.next_fast.filter(|d| now >= *d) {
            let ctx = self.context(now, wall, readings);
            if let Some(e) = self.hooks.run_every_100ms(&ctx) {
                self.error(e);
            }
            self.next_fast = Some(next_on_grid(due, FAST_TICK, now));
            out.extend(self.commands(now));
        }
        out
    }

    /// Timers, then `>S`.
    pub fn handle_second(
        &mut self,
        now: Instant,
        wall: &chrono::NaiveDateTime,
        readings: &dyn Readings,
    ) -> Vec<HostCommand> {
        let ctx = self.context(now, wall, readings);
        if let Some(e) = self.hooks.run_every_second(&ctx) {
            self.error(e);
        }
        self.commands(now)
    }

    /// `>J`'s text, to append to the SENSOR JSON (empty when the script has no `>J` or it failed).
    pub fn json_append(
        &mut self,
        now: Instant,
        wall: &chrono::NaiveDateTime,
        readings: &dyn Readings,
    ) -> String {
        let ctx = self.context(now, wall, readings);
        let (text, error) = self.hooks.json_append(&ctx);
        if let Some(e) = error {
            self.error(e);
        }
        text
    }

    /// `>T`, after the teleperiod's SENSOR (`sensor`: that JSON, if one was published).
    pub fn handle_teleperiod(
        &mut self,
        now: Instant,
        wall: &chrono::NaiveDateTime,
        readings: &dyn Readings,
        sensor: Option<&str>,
    ) -> Vec<HostCommand> {
        if !self.hooks.has_section(">T") {
            return Vec::new();
        }
        let json = sensor
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(serde_json::Value::Null);
        let ctx = self.context(now, wall, readings);
        if let Some(e) = self.hooks.run_teleperiod(&ctx, &json) {
            self.error(e);
        }
        self.commands(now)
    }

    /// `>R`, then the `p:` variables to save. Delayed commands still waiting are dropped.
    pub fn handle_shutdown(
        &mut self,
        now: Instant,
        wall: &chrono::NaiveDateTime,
        readings: &dyn Readings,
    ) -> Vec<HostCommand> {
        let ctx = self.context(now, wall, readings);
        if let Some(e) = self.hooks.run_restart(&ctx) {
            self.error(e);
        }
        let out = self.commands(now);
        self.delayed.clear();
        if self.hooks.has_permanent() {
            self.actions
                .push(HookAction::SavePermanent(self.hooks.permanent_values()));
        }
        out
    }

    /// A command the engine does not apply itself becomes an action for the run loop.
    pub fn act(&mut self, command: HostCommand) {
        let action = match command {
            HostCommand::DumpRaw { meter } => HookAction::DumpRaw { meter },
            HostCommand::Publish { topic, payload } => {
                if self.publish_allowed(&topic) {
                    HookAction::Publish { topic, payload }
                } else {
                    let why = if self.publish_prefixes.is_empty() {
                        format!("`publish {topic}` ignored: there is no broker to publish to (--broker)")
                    } else {
                        format!(
                            "`publish {topic}` refused: a topic to publish on has no wildcards \
                             (`+`, `#`) or control characters{}",
                            match self.publish_prefixes.as_slice() {
                                [all] if all.is_empty() => String::new(),
                                some => format!(" and starts with {}", some.join(" or ")),
                            }
                        )
                    };
                    match self.first_time(why) {
                        Some(w) => HookAction::Error(w),
                        None => return,
                    }
                }
            }
            c @ (HostCommand::SetBaud { .. }
            | HostCommand::SetMode { .. }
            | HostCommand::Send { .. }
            | HostCommand::Queue { .. }) => HookAction::Link(c),
            HostCommand::SavePermanent => HookAction::SavePermanent(self.hooks.permanent_values()),
            HostCommand::Log(text) => HookAction::Log(format!("{}: {text}", self.path)),
            // The run loop sets the count in the counters' store.
            c @ HostCommand::SetCounter { .. } => HookAction::Link(c),
            HostCommand::Unsupported(text) => {
                match self.first_time(format!("`{text}` ignored: it has no meaning off the ESP")) {
                    Some(w) => HookAction::Log(w),
                    None => return,
                }
            }
            // Applied by the engine; never reach here.
            HostCommand::RestartMeters => HookAction::ResetMeters,
            HostCommand::SetTeleperiod { .. } | HostCommand::Delay(_) => return,
        };
        self.actions.push(action);
    }

    pub fn take_actions(&mut self) -> Vec<HookAction> {
        std::mem::take(&mut self.actions)
    }

    /// The topic is under an allowed prefix and names one topic (no wildcard, no control character).
    fn publish_allowed(&self, topic: &str) -> bool {
        !topic.is_empty()
            && !topic.contains(['+', '#'])
            && !topic.chars().any(char::is_control)
            && self
                .publish_prefixes
                .iter()
                .any(|p| topic.starts_with(p.as_str()))
    }

    /// `path: text`, the first time this text comes (bounded, so a flood of distinct texts stops).
    fn first_time(&mut self, text: String) -> Option<String> {
        if self.ignored_logged.len() >= MAX_IGNORED_LOGGED
            || !self.ignored_logged.insert(text.clone())
        {
            return None;
        }
        Some(format!("{}: {text}", self.path))
    }

    fn error(&mut self, e: HookError) {
        self.actions.push(HookAction::Error(e.render(&self.path)));
    }

    /// The commands the last call queued, up to its first `delay()`; the rest wait.
    fn commands(&mut self, now: Instant) -> Vec<HostCommand> {
        let mut due = now;
        let mut out = Vec::new();
        for c in self.hooks.take_commands() {
            match c {
                HostCommand::Delay(d) => due += d,
                c if due > now => self.delayed.push((due, c)),
                c => out.push(c),
            }
        }
        // Stable: commands due at the same time keep the script's order.
        self.delayed.sort_by_key(|(at, _)| *at);
        out
    }

    fn due_delayed(&mut self, now: Instant) -> Vec<HostCommand> {
        let n = self.delayed.iter().take_while(|(at, _)| *at <= now).count();
        self.delayed.drain(..n).map(|(_, c)| c).collect()
    }

    fn context<'a>(
        &self,
        now: Instant,
        wall: &chrono::NaiveDateTime,
        readings: &'a dyn Readings,
    ) -> HookContext<'a> {
        HookContext {
            uptime: now.saturating_duration_since(self.started),
            local: *wall,
            epoch: epoch_of(wall),
            readings,
        }
    }
}

/// Unix seconds of a local wall time (the earlier one in a DST fold; UTC when it does not exist).
fn epoch_of(wall: &chrono::NaiveDateTime) -> i64 {
    chrono::Local
        .from_local_datetime(wall)
        .earliest()
        .map(|t| t.timestamp())
        .unwrap_or_else(|| wall.and_utc().timestamp())
}

/// The next deadline after `due`, on the same grid, skipping periods missed.
fn next_on_grid(due: Instant, period: Duration, now: Instant) -> Instant {
    let next = due + period;
    if next > now {
        next
    } else {
        now + period
    }
}
