/*!
Tasmota's script sections (`>B`, `>S`, `>F`, `>T`, `>R`, `>J`, `#subroutines`) run off the ESP, by
translation to Rhai rather than by a second interpreter (../shared/spec/tasmota-script-to-rhai.md,
section 6): [`parse`] reads each line with `grammar/statements.pest` into the tree of [`ast`],
[`translate`] emits Rhai with Tasmota's evaluation order and float precision spelled out, and
[`host`] runs it in a sandboxed engine whose built-ins only read a snapshot of the world and queue
commands. [`check`] gives `sml check` the translation's diagnostics.

The engine drives [`Hooks`] sans-IO, like a decoder: it hands in a [`HookContext`] (uptime, wall clock,
meter values) and takes back [`HostCommand`]s. Call order per tick:

1. once after start: [`Hooks::run_boot`] (`>B`, then `>BS`), then apply [`Hooks::take_commands`];
2. every 100 ms: [`Hooks::run_every_100ms`] (`>F`);
3. every second: [`Hooks::run_every_second`] (timers, then `>S`), even when the script has no `>S`;
4. at teleperiod: build the SENSOR JSON with the meters' object only if `smlj() & 1`, append
   [`Hooks::json_append`] (`>J`), publish if not empty, then [`Hooks::run_teleperiod`] with that JSON;
5. on shutdown: [`Hooks::run_restart`] (`>R`), then save [`Hooks::permanent_values`];
6. after every call: [`Hooks::take_commands`], in order (a `Delay` delays only the commands after it).

A hook that fails stops at once; the error comes back once per distinct (line, message) with the
script's line, and the next tick runs as usual.
*/

pub mod ast;
pub mod check;
pub mod host;
pub mod parse;
pub mod state;
pub mod translate;
pub mod user;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Datelike, NaiveDateTime, Timelike};
use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, Map, Scope, AST};

use crate::script::model::{LineNo, Literal, Script, VarKind};
use crate::script::{Diagnostic, Severity};
use host::{lock, HostState, Shared};
pub use host::{HostCommand, Limits, Readings, TArray};
pub use translate::{translate, Translation};

/// What a hook sees of the world during one call.
#[derive(Clone, Copy)]
pub struct HookContext<'a> {
    /// Time since the program started (Tasmota's `upsecs`, `uptime`).
    pub uptime: Duration,
    /// Local wall-clock time (`time`, `hours`, `day`, ...).
    pub local: NaiveDateTime,
    /// Unix seconds, UTC (`epoch`).
    pub epoch: i64,
    /// Meter values (`sml[n]`).
    pub readings: &'a dyn Readings,
}

/// A hook stopped with an error, at the script's own line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: error in {section}: {message}")]
pub struct HookError {
    pub line: LineNo,
    /// The section or subroutine holding the line (`>S`, `#readmeter`).
    pub section: String,
    pub message: String,
}

impl HookError {
    /// `path:line: error in >S: message`.
    pub fn render(&self, path: &str) -> String {
        format!(
            "{path}:{}: error in {}: {}",
            self.line, self.section, self.message
        )
    }
}

/// The translated sections of one script, their variables and their sandbox.
pub struct Hooks {
    engine: Engine,
    ast: AST,
    translation: Translation,
    /// Tasmota's global variables, bound as `this` in every section.
    vars: Dynamic,
    shared: Shared,
    limits: Limits,
    timers: Vec<String>,
    counters: Vec<String>,
    permanent: Vec<String>,
    /// Uptime at the last `run_every_second`, for the timers' real elapsed time.
    last_second: Duration,
    reported: BTreeSet<(LineNo, String)>,
    error_count: u64,
}

impl Hooks {
    /// Translate and compile a script's sections with the default limits. Errors are the script's
    /// (`sml check` shows the same ones); warnings are dropped here.
    pub fn new(script: &Script) -> Result<Hooks, Vec<Diagnostic>> {
        Hooks::with_limits(script, Limits::default())
    }

    pub fn with_limits(script: &Script, limits: Limits) -> Result<Hooks, Vec<Diagnostic>> {
        let translation = translate(script);
        let errors: Vec<Diagnostic> = translation
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .cloned()
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        let shared: Shared = Arc::new(Mutex::new(HostState {
            smlj: 1,
            tper: 300,
            dp: 2,
            ..HostState::default()
        }));
        let mut engine = host::sandboxed_engine(limits);
        host::register_builtins(&mut engine, &shared);
        let ast = engine.compile(&translation.rhai).map_err(|e| {
            let line = e
                .position()
                .line()
                .and_then(|l| translation.script_line(l))
                .unwrap_or(0);
            vec![Diagnostic {
                severity: Severity::Error,
                line,
                col: 1,
                message: format!("internal: the generated Rhai does not compile ({e}); please report this script"),
                source_line: String::new(),
            }]
        })?;

        let mut vars = Map::new();
        let mut timers = Vec::new();
        let mut counters = Vec::new();
        let mut permanent = Vec::new();
        {
            let mut state = lock(&shared);
            for d in &script.declarations {
                let is_array = d
                    .kinds
                    .iter()
                    .any(|k| matches!(k, VarKind::Median | VarKind::MovingAverage));
                let initial = match &d.initial {
                    Literal::Number(n) => Dynamic::from_float(host::r32(*n)),
                    Literal::Text(t) => Dynamic::from(
                        t.chars()
                            .take(script.string_capacity as usize)
                            .collect::<String>(),
                    ),
                };
                if is_array {
                    let median = d.kinds.contains(&VarKind::Median);
                    let len = d
                        .array_len
                        .map(|l| l as usize)
                        .unwrap_or(if median { 5 } else { 8 })
                        .min(limits.collection_size);
                    let v = initial.as_float().unwrap_or(0.0) as f32;
                    state
                        .arrays
                        .insert(d.name.clone(), TArray::new(len, v, median));
                } else {
                    vars.insert(d.name.as_str().into(), initial.clone());
                }
                if d.kinds.contains(&VarKind::Timer) {
                    timers.push(d.name.clone());
                }
                if d.kinds.contains(&VarKind::AutoIncrement) {
                    counters.push(d.name.clone());
                }
                if d.kinds.contains(&VarKind::Permanent) {
                    permanent.push(d.name.clone());
                }
            }
        }
        // `chg[v]` compares with the declared value first.
        for name in &translation.chg_vars {
            if let Some(v) = vars.get(name.as_str()).cloned() {
                vars.insert(format!("\u{1}chg:{name}").into(), v);
            }
        }
        Ok(Hooks {
            engine,
            ast,
            translation,
            vars: Dynamic::from_map(vars),
            shared,
            limits,
            timers,
            counters,
            permanent,
            last_second: Duration::ZERO,
            reported: BTreeSet::new(),
            error_count: 0,
        })
    }

    /// Whether the script has this section (`">F"`, `">T"`, `">J"`...): the engine wakes every
    /// 100 ms only for a script with `>F`, and builds `>T`'s JSON only when someone reads it.
    pub fn has_section(&self, section: &str) -> bool {
        let function = format!("on_{}", section.trim_start_matches('>'));
        self.translation.functions.contains(&function)
    }

    /// Whether the script declares `p:` variables to save and restore.
    pub fn has_permanent(&self) -> bool {
        !self.permanent.is_empty()
    }

    /// The generated Rhai (for `sml check --emit-rhai`).
    pub fn rhai(&self) -> &str {
        &self.translation.rhai
    }

    /// `>B` then `>BS`: once at start (and again after the script is reloaded).
    pub fn run_boot(&mut self, ctx: &HookContext<'_>) -> Vec<HookError> {
        let mut errors = Vec::new();
        errors.extend(self.call("on_B", ">B", ctx, None));
        errors.extend(self.call("on_BS", ">BS", ctx, None));
        errors
    }

    /// Every second: `t:` timers count down and `i:` counters up by the real elapsed time, then `>S`.
    pub fn run_every_second(&mut self, ctx: &HookContext<'_>) -> Option<HookError> {
        let elapsed = ctx.uptime.saturating_sub(self.last_second).as_secs_f64();
        self.last_second = ctx.uptime;
        if let Some(map) = self.vars.write_lock::<Map>().as_deref_mut() {
            for t in &self.timers {
                if let Some(v) = map.get_mut(t.as_str()) {
                    let now = v.as_float().unwrap_or(0.0);
                    *v = Dynamic::from_float(host::r32((now - elapsed).max(0.0)));
                }
            }
            for c in &self.counters {
                if let Some(v) = map.get_mut(c.as_str()) {
                    let now = v.as_float().unwrap_or(0.0);
                    if now >= 0.0 {
                        *v = Dynamic::from_float(host::r32(now + elapsed));
                    }
                }
            }
        }
        self.call("on_S", ">S", ctx, None)
    }

    /// Every 100 ms: `>F`.
    pub fn run_every_100ms(&mut self, ctx: &HookContext<'_>) -> Option<HookError> {
        self.call("on_F", ">F", ctx, None)
    }

    /// After a teleperiod SENSOR payload (or a `>T` cycle): `>T` with that JSON in scope.
    pub fn run_teleperiod(
        &mut self,
        ctx: &HookContext<'_>,
        sensor_json: &serde_json::Value,
    ) -> Option<HookError> {
        self.call("on_T", ">T", ctx, Some(sensor_json.clone()))
    }

    /// Before the program stops or reloads the script: `>R`.
    pub fn run_restart(&mut self, ctx: &HookContext<'_>) -> Option<HookError> {
        self.call("on_R", ">R", ctx, None)
    }

    /// `>J`: the text appended to the SENSOR JSON (its lines start with `,"key":...`). Empty without
    /// `>J`, and when it fails (the error comes back the first time, as from the other hooks).
    pub fn json_append(&mut self, ctx: &HookContext<'_>) -> (String, Option<HookError>) {
        if !self.translation.functions.contains("on_J") {
            return (String::new(), None);
        }
        self.snapshot(ctx, None);
        match self.invoke("on_J") {
            Ok(v) => (v.into_string().unwrap_or_default(), None),
            Err(e) => (String::new(), self.report(">J", &e)),
        }
    }

    /// Tasmota's `smlj`: bit 0 set = the meters' object goes into the SENSOR JSON.
    pub fn smlj(&self) -> u32 {
        lock(&self.shared).smlj
    }

    /// The teleperiod the engine uses, so the script's `tper` reads it.
    pub fn set_teleperiod(&mut self, seconds: u32) {
        lock(&self.shared).tper = seconds;
    }

    /// The MQTT topic, for `%topic%`.
    pub fn set_topic(&mut self, topic: &str) {
        lock(&self.shared).topic = topic.to_string();
    }

    /// What the script asked for since the last call, in order.
    pub fn take_commands(&mut self) -> Vec<HostCommand> {
        std::mem::take(&mut lock(&self.shared).commands)
    }

    /// Every hook error so far, repeated ones included.
    pub fn error_count(&self) -> u64 {
        self.error_count
    }

    /// A number variable's value.
    pub fn number(&self, name: &str) -> Option<f64> {
        let map = self.vars.read_lock::<Map>()?;
        map.get(name)?.as_float().ok()
    }

    /// A string variable's value.
    pub fn text(&self, name: &str) -> Option<String> {
        let map = self.vars.read_lock::<Map>()?;
        map.get(name)?.clone().into_string().ok()
    }

    /// An array variable.
    pub fn array(&self, name: &str) -> Option<TArray> {
        lock(&self.shared).arrays.get(name).cloned()
    }

    /// The `p:` variables as JSON (numbers, strings, arrays of numbers), for the engine to save.
    pub fn permanent_values(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for name in &self.permanent {
            if let Some(a) = self.array(name) {
                out.insert(name.clone(), serde_json::json!(a.values));
            } else if let Some(n) = self.number(name) {
                out.insert(name.clone(), serde_json::json!(n));
            } else if let Some(t) = self.text(name) {
                out.insert(name.clone(), serde_json::json!(t));
            }
        }
        out
    }

    /// Restore saved `p:` variables; a missing or mistyped value keeps the declared one (Tasmota: a
    /// stored NaN means "use the declared value").
    pub fn restore_permanent(&mut self, saved: &serde_json::Map<String, serde_json::Value>) {
        for name in &self.permanent {
            let Some(v) = saved.get(name) else { continue };
            if let (Some(list), Some(a)) = (v.as_array(), lock(&self.shared).arrays.get_mut(name)) {
                for (slot, x) in a.values.iter_mut().zip(list) {
                    if let Some(x) = x.as_f64() {
                        *slot = x as f32;
                    }
                }
                continue;
            }
            let Some(mut map) = self.vars.write_lock::<Map>() else {
                return;
            };
            let Some(cur) = map.get_mut(name.as_str()) else {
                continue;
            };
            match (cur.is_float(), v) {
                (true, serde_json::Value::Number(n)) => {
                    *cur = Dynamic::from_float(host::r32(n.as_f64().unwrap_or(0.0)))
                }
                (false, serde_json::Value::String(s)) if cur.is_string() => {
                    *cur = Dynamic::from(s.clone())
                }
                _ => {}
            }
        }
    }

    fn snapshot(&mut self, ctx: &HookContext<'_>, json: Option<serde_json::Value>) {
        let mut s = lock(&self.shared);
        s.upsecs = ctx.uptime.as_secs() as f64;
        s.year = ctx.local.year();
        s.month = ctx.local.month();
        s.day = ctx.local.day();
        s.hours = ctx.local.hour();
        s.mins = ctx.local.minute();
        s.secs = ctx.local.second();
        s.wday = ctx.local.weekday().number_from_sunday();
        s.epoch = ctx.epoch;
        let n = ctx.readings.count().min(self.limits.collection_size);
        s.values.clear();
        s.valid.clear();
        for i in 1..=n {
            s.values.push(ctx.readings.value(i));
            s.valid.push(ctx.readings.valid(i));
        }
        s.meter_ids = (1..=ctx.readings.meter_count().min(self.limits.collection_size))
            .map(|m| ctx.readings.meter_id(m))
            .collect();
        s.json = json;
        s.at = 0;
    }

    fn invoke(&mut self, function: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        let options = CallFnOptions::new()
            .eval_ast(false)
            .rewind_scope(true)
            .bind_this_ptr(&mut self.vars);
        self.engine
            .call_fn_with_options(options, &mut Scope::new(), &self.ast, function, ())
    }

    fn call(
        &mut self,
        function: &str,
        section: &str,
        ctx: &HookContext<'_>,
        json: Option<serde_json::Value>,
    ) -> Option<HookError> {
        if !self.translation.functions.contains(function) {
            return None;
        }
        self.snapshot(ctx, json);
        let result = self.invoke(function);
        lock(&self.shared).json = None;
        match result {
            Ok(_) => None,
            Err(e) => self.report(section, &e),
        }
    }

    /// Count the error; give it back only the first time this (line, message) occurs.
    fn report(&mut self, section: &str, e: &EvalAltResult) -> Option<HookError> {
        self.error_count += 1;
        let inner = innermost(e);
        // Limit errors (operations, call depth) carry no position: use the last loop or call entered.
        let line = inner
            .position()
            .line()
            .and_then(|l| self.translation.script_line(l))
            .or_else(|| Some(lock(&self.shared).at).filter(|&l| l != 0))
            .unwrap_or(0);
        let section = self
            .translation
            .section_at(line)
            .unwrap_or(section)
            .to_string();
        let message = self.message(inner);
        if !self.reported.insert((line, message.clone())) {
            return None;
        }
        Some(HookError {
            line,
            section,
            message,
        })
    }

    fn message(&self, e: &EvalAltResult) -> String {
        match e {
            EvalAltResult::ErrorTooManyOperations(_) => format!(
                "stopped after {} operations (an endless loop?)",
                self.limits.operations
            ),
            EvalAltResult::ErrorStackOverflow(_) => format!(
                "stopped: subroutines nested deeper than {} calls (a recursion without end?)",
                self.limits.call_levels
            ),
            EvalAltResult::ErrorDataTooLarge(what, _) => format!(
                "stopped: {} grew past the limit ({} bytes for a string, {} elements for an array)",
                what.to_lowercase(),
                self.limits.string_size,
                self.limits.collection_size
            ),
            EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
            other => {
                let text = other.to_string();
                // Rhai appends `(line N, position M)` of the generated code; the script line is given apart.
                match text.rfind(" (line ") {
                    Some(i) => text[..i].to_string(),
                    None => text,
                }
            }
        }
    }
}

/// The innermost error of a chain of function calls.
fn innermost(e: &EvalAltResult) -> &EvalAltResult {
    match e {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => innermost(inner),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_can_move_to_the_engine_task() {
        fn is_send<T: Send>() {}
        is_send::<Hooks>();
    }
}
