/*!
The sandboxed Rhai engine and the built-ins the translated sections call.

Sandbox: no file, network or process access exists in the engine at all (a raw engine with the pure
standard package, no module resolver, `eval` disabled); operations, call depth, expression depth,
string, array and map sizes are limited, so an endless loop, a runaway recursion or a huge string
stops the hook with an error instead of stopping the program.

Built-ins never do I/O either: they read a snapshot of the host's world ([`HostState`]: clock, meter
values, the `>T` JSON) and push what the script asks for ([`HostCommand`]: `sensor53 r`, sends, publish,
delays) onto a queue that the engine drains after each call, in order. That keeps the hooks sans-IO like
the decoders: the engine decides when and how commands reach links and the broker.
*/

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rhai::packages::{Package, StandardPackage};
use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map};

use crate::script::model::Parity;

/// Limits of one hook call. The defaults are far above what any community script needs (the largest
/// runs a few thousand operations per second) and far below what would stall the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rhai operations per hook call (an endless `>S` loop stops here).
    pub operations: u64,
    /// Nested function calls (subroutines calling themselves).
    pub call_levels: usize,
    /// Bytes in one string.
    pub string_size: usize,
    /// Elements in one array or map.
    pub collection_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            operations: 1_000_000,
            call_levels: 32,
            string_size: 64 * 1024,
            collection_size: 10_000,
        }
    }
}

/// What a script asked the program to do, in the order it asked.
#[derive(Debug, Clone, PartialEq)]
pub enum HostCommand {
    /// `sensor53 r`: rebuild meters from `>M` with the current variables; values read 0 until the next
    /// telegram.
    RestartMeters,
    /// `sensor53 d<m>`: dump meter m's raw bytes to the log (0: stop).
    DumpRaw { meter: u32 },
    /// `sensor53 c<n> <v>`: set counter n.
    SetCounter { counter: u32, value: f64 },
    /// `publish topic payload`.
    Publish { topic: String, payload: String },
    /// `tper=N` (clamped 10..300) or the `teleperiod N` command.
    SetTeleperiod { seconds: u32 },
    /// `sml(m 0 baud)`.
    SetBaud { meter: u32, baud: u32 },
    /// `sml(-m 1 "2400:8E1")`: reopen the port; the transmit queue must drain first.
    SetMode {
        meter: u32,
        baud: u32,
        parity: Parity,
    },
    /// `sml(m 1 "hex")`: these bytes, before the meter type's framing.
    Send { meter: u32, bytes: Vec<u8> },
    /// `sml(m 3 svar)`: a request string (Modbus write, CAN frame) queued for the meter.
    Queue { meter: u32, text: String },
    /// `delay(ms)`: the commands after it wait this long (only the hook's own queue waits).
    Delay(Duration),
    /// `svars`: save the permanent variables now.
    SavePermanent,
    /// `print` text and `=>` command echoes, for the log.
    Log(String),
    /// A command with no meaning off the ESP, logged and ignored.
    Unsupported(String),
}

/// Meter values as the engine holds them (Tasmota's `sml[n]`), 1-based across all meters.
pub trait Readings {
    /// Number of entries (`sml[0]`).
    fn count(&self) -> usize;
    /// The value of entry n (1-based).
    fn value(&self, entry: usize) -> f64;
    /// True once entry n was decoded (`smlv[n]`).
    fn valid(&self, entry: usize) -> bool {
        let _ = entry;
        true
    }
    /// Number of meters (for `smls[m]`).
    fn meter_count(&self) -> usize {
        0
    }
    /// `smls[m]`: the meter id text of meter m (1-based).
    fn meter_id(&self, meter: usize) -> String {
        let _ = meter;
        String::new()
    }
}

/// A plain list of values is a [`Readings`] (tests, replay).
impl Readings for Vec<f64> {
    fn count(&self) -> usize {
        self.len()
    }
    fn value(&self, entry: usize) -> f64 {
        self.get(entry.wrapping_sub(1)).copied().unwrap_or(0.0)
    }
}

/// The world as a hook sees it during one call.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostState {
    pub upsecs: f64,
    /// Local wall clock: year, month, day, hours, mins, secs, weekday (Sunday = 1), day of year.
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hours: u32,
    pub mins: u32,
    pub secs: u32,
    pub wday: u32,
    pub epoch: i64,
    pub values: Vec<f64>,
    pub valid: Vec<bool>,
    pub meter_ids: Vec<String>,
    pub json: Option<serde_json::Value>,
    pub commands: Vec<HostCommand>,
    pub smlj: u32,
    pub tper: u32,
    pub dp: u8,
    pub topic: String,
    pub arrays: BTreeMap<String, TArray>,
    pub is: Vec<String>,
    pub rng: u32,
    /// The last loop or subroutine call entered (`at()`), for errors Rhai gives no position for.
    pub at: u32,
}

/// `M:`/`m:` arrays with Tasmota's index rules: `[0]` the ring index, `[-1]` length, `[-2]` average,
/// `[-3]` sum; elements 1-based; out of range reads element 1 and writes nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TArray {
    pub values: Vec<f32>,
    /// Next slot written by `arr=x` (0-based).
    pub index: usize,
    /// `m:` arrays read as their median, `M:` as their average.
    pub median: bool,
}

impl TArray {
    pub fn new(len: usize, initial: f32, median: bool) -> Self {
        TArray {
            values: vec![initial; len.max(1)],
            index: 0,
            median,
        }
    }

    fn sum(&self) -> f32 {
        self.values.iter().sum()
    }

    fn average(&self) -> f32 {
        self.sum() / self.values.len() as f32
    }

    /// Reading the array by its name.
    pub fn value(&self) -> f32 {
        if self.median {
            let mut v = self.values.clone();
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        } else {
            self.average()
        }
    }

    pub fn get(&self, i: f64) -> f32 {
        match i as i64 {
            0 => self.index as f32,
            -1 => self.values.len() as f32,
            -2 => self.average(),
            -3 => self.sum(),
            n if n >= 1 && (n as usize) <= self.values.len() => self.values[n as usize - 1],
            _ => self.values[0],
        }
    }

    pub fn set(&mut self, i: f64, v: f32) {
        match i as i64 {
            0 => self.index = (v.max(0.0) as usize) % self.values.len(),
            n if n >= 1 && (n as usize) <= self.values.len() => self.values[n as usize - 1] = v,
            _ => {}
        }
    }

    /// `arr=x`: into the ring at the index, which moves on.
    pub fn push(&mut self, v: f32) {
        let n = self.values.len();
        self.values[self.index % n] = v;
        self.index = (self.index + 1) % n;
    }
}

pub(crate) type Shared = Arc<Mutex<HostState>>;

pub(crate) fn lock(s: &Shared) -> MutexGuard<'_, HostState> {
    // A built-in never panics while holding the lock; recover the data if one ever did.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// Round to single precision, as Tasmota's `float` holds every number.
pub fn r32(x: f64) -> f64 {
    x as f32 as f64
}

/// A sandboxed engine without the script built-ins: what every hook (translated or hand-written) runs on.
pub fn sandboxed_engine(limits: Limits) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(StandardPackage::new().as_shared_module());
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.set_max_modules(0);
    engine.disable_symbol("eval");
    engine.set_max_operations(limits.operations);
    engine.set_max_call_levels(limits.call_levels);
    engine.set_max_expr_depths(64, 64);
    engine.set_max_string_size(limits.string_size);
    engine.set_max_array_size(limits.collection_size);
    engine.set_max_map_size(limits.collection_size);
    engine.set_strict_variables(true);
    engine
}

/// Format a number with fixed decimals, as Tasmota's `%var%` (NaN and infinity print `null`).
pub fn format_number(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "null".into();
    }
    format!("{:.*}", decimals, v as f32)
}

/// Tasmota's string-to-number: a leading decimal number, junk gives 0 (no exponent).
pub fn parse_number(s: &str) -> f64 {
    let t = s.trim_start();
    let mut end = 0;
    let b = t.as_bytes();
    if end < b.len() && (b[end] == b'-' || b[end] == b'+') {
        end += 1;
    }
    while end < b.len() && (b[end].is_ascii_digit() || b[end] == b'.') {
        end += 1;
    }
    match t[..end].parse::<f32>() {
        Ok(v) => v as f64,
        Err(_) => match t.to_ascii_uppercase().as_str() {
            "ON" => 1.0,
            _ => 0.0,
        },
    }
}

/// Register the built-ins of translated Tasmota sections on `engine`.
pub(crate) fn register_builtins(engine: &mut Engine, shared: &Shared) {
    // Arithmetic in single precision.
    engine.register_fn("r32", r32);
    engine.register_fn("div32", |a: f64, b: f64| -> RhaiResult<f64> {
        if b == 0.0 {
            return Err(format!("division by zero ({} / 0)", format_number(a, 2)).into());
        }
        Ok(r32(a / b))
    });
    engine.register_fn("mod32", |a: f64, b: f64| -> RhaiResult<f64> {
        if b == 0.0 {
            return Err(format!("modulo by zero ({} % 0)", format_number(a, 2)).into());
        }
        Ok(((a as f32) % (b as f32)) as f64)
    });
    let u = |x: f64| x as i64 as u32;
    engine.register_fn("band", move |a: f64, b: f64| (u(a) & u(b)) as f64);
    engine.register_fn("bor", move |a: f64, b: f64| (u(a) | u(b)) as f64);
    engine.register_fn("bxor", move |a: f64, b: f64| (u(a) ^ u(b)) as f64);
    engine.register_fn("shl", move |a: f64, b: f64| u(a).wrapping_shl(u(b)) as f64);
    engine.register_fn("shr", move |a: f64, b: f64| u(a).wrapping_shr(u(b)) as f64);
    engine.register_fn("floor32", |x: f64| r32(x.floor()));
    engine.register_fn("ceil32", |x: f64| r32(x.ceil()));
    engine.register_fn("round32", |x: f64| r32(x.round()));
    engine.register_fn("abs32", |x: f64| x.abs());
    engine.register_fn("sqrt32", |x: f64| r32(x.sqrt()));
    engine.register_fn("pow32", |a: f64, b: f64| r32(a.powf(b)));
    engine.register_fn("mp", |x: f64, rules: rhai::Array| -> f64 {
        // (direction, bound, result) triples: `<a r` gives r below a, `>b r` gives r above b.
        for rule in rules.chunks(3) {
            let f = |i: usize| rule.get(i).and_then(|d| d.as_float().ok()).unwrap_or(0.0);
            let (dir, bound, result) = (f(0), f(1), f(2));
            if (dir < 0.0 && x < bound) || (dir > 0.0 && x > bound) {
                return result;
            }
        }
        x
    });

    // Strings.
    engine.register_fn("cap", |s: ImmutableString, n: f64| -> ImmutableString {
        // Tasmota cuts every string to the declared capacity, silently.
        let n = n as usize;
        if s.chars().count() <= n {
            s
        } else {
            s.chars().take(n).collect::<String>().into()
        }
    });
    engine.register_fn("str_of", |v: Dynamic| -> String {
        match v.as_float() {
            Ok(f) => format_number(f, 6),
            Err(_) => v.to_string(),
        }
    });
    engine.register_fn("num_of", |v: Dynamic| -> f64 {
        if let Ok(f) = v.as_float() {
            return r32(f);
        }
        if let Ok(b) = v.as_bool() {
            return if b { 1.0 } else { 0.0 };
        }
        if v.is_unit() {
            return 0.0;
        }
        parse_number(&v.to_string())
    });
    engine.register_fn("hn", |x: f64| -> String {
        if (0.0..=255.0).contains(&x) {
            format!("{:02X}", x as u32)
        } else {
            "00".into()
        }
    });
    engine.register_fn("hx", |x: f64| format!("{:08X}", x as i64 as u32));
    engine.register_fn("hd", |s: &str| {
        u32::from_str_radix(s.trim(), 16)
            .map(|v| v as f64)
            .unwrap_or(0.0)
    });
    engine.register_fn("sl", |s: &str| s.chars().count() as f64);
    engine.register_fn("ins", |a: &str, b: &str| match a.find(b) {
        Some(i) => a[..i].chars().count() as f64,
        None => -1.0,
    });
    engine.register_fn("st", |s: &str, delim: &str, n: f64| -> String {
        // The n-th token (1-based); beyond the last: empty.
        let d = delim.chars().next().unwrap_or(' ');
        s.split(d)
            .nth((n as usize).saturating_sub(1))
            .unwrap_or("")
            .to_string()
    });
    engine.register_fn("sb", |s: &str, from: f64, n: f64| -> String {
        // Substring from position `from` (0-based; negative counts from the end), n characters.
        let chars: Vec<char> = s.chars().collect();
        let start = if from < 0.0 {
            chars.len().saturating_sub((-from) as usize)
        } else {
            (from as usize).min(chars.len())
        };
        chars[start..].iter().take(n.max(0.0) as usize).collect()
    });

    let sh = shared.clone();
    engine.register_fn("fmt", move |v: f64, decimals: f64| -> String {
        let d = if decimals < 0.0 {
            lock(&sh).dp as usize
        } else {
            decimals as usize
        };
        format_number(v, d)
    });
    engine.register_fn("fmt_width", |v: f64, width: f64, decimals: f64| -> String {
        if !v.is_finite() {
            return "null".into();
        }
        format!(
            "{:0w$.d$}",
            v as f32,
            w = width as usize,
            d = decimals as usize
        )
    });
    let sh = shared.clone();
    engine.register_fn("set_dp", move |d: f64| {
        lock(&sh).dp = d.clamp(0.0, 9.0) as u8
    });

    // Clock: a snapshot taken when the call started.
    macro_rules! clock {
        ($name:literal, |$s:ident| $e:expr) => {{
            let sh = shared.clone();
            engine.register_fn($name, move || -> f64 {
                let $s = lock(&sh);
                r32($e)
            });
        }};
    }
    clock!("upsecs", |s| s.upsecs);
    clock!("uptime", |s| (s.upsecs / 60.0).floor());
    clock!("time", |s| (s.hours * 60 + s.mins) as f64);
    clock!("hours", |s| s.hours as f64);
    clock!("mins", |s| s.mins as f64);
    clock!("secs", |s| s.secs as f64);
    clock!("day", |s| s.day as f64);
    clock!("wday", |s| s.wday as f64);
    clock!("month", |s| s.month as f64);
    clock!("year", |s| s.year as f64);
    // Tasmota's epoch counts from 2019-01-01 so that it fits a float.
    clock!("epoch", |s| (s.epoch - 1_546_300_800) as f64);
    clock!("tper", |s| s.tper as f64);
    clock!("smlj", |s| s.smlj as f64);
    let sh = shared.clone();
    engine.register_fn("tstamp", move || -> String {
        let s = lock(&sh);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            s.year, s.month, s.day, s.hours, s.mins, s.secs
        )
    });
    let sh = shared.clone();
    engine.register_fn("topic", move || -> String { lock(&sh).topic.clone() });

    let sh = shared.clone();
    engine.register_fn("set_smlj", move |v: f64| {
        lock(&sh).smlj = v as i64 as u32;
    });
    let sh = shared.clone();
    engine.register_fn("set_tper", move |v: f64| {
        let mut s = lock(&sh);
        let seconds = (v as i64).clamp(10, 300) as u32;
        s.tper = seconds;
        s.commands.push(HostCommand::SetTeleperiod { seconds });
    });

    // Meter values: `sml[n]` out of range reads line 1, as Tasmota.
    let sh = shared.clone();
    engine.register_fn("sml_value", move |n: f64| -> f64 {
        let s = lock(&sh);
        let n = n as i64;
        if n == 0 {
            return s.values.len() as f64;
        }
        let i = if n >= 1 && (n as usize) <= s.values.len() {
            n as usize - 1
        } else {
            0
        };
        r32(s.values.get(i).copied().unwrap_or(0.0))
    });
    let sh = shared.clone();
    engine.register_fn("sml_text", move |n: f64| -> String {
        let s = lock(&sh);
        let n = n as i64;
        if n < 0 {
            // `smls[-n]`: the value as text, keeping double precision.
            let v = s.values.get((-n) as usize - 1).copied().unwrap_or(0.0);
            return format!("{:.*}", s.dp as usize, v);
        }
        s.meter_ids
            .get((n as usize).wrapping_sub(1))
            .cloned()
            .unwrap_or_default()
    });
    let sh = shared.clone();
    engine.register_fn("sml_valid", move |n: f64| -> f64 {
        let mut s = lock(&sh);
        let n = n as i64;
        if n == 0 {
            s.valid.iter_mut().for_each(|v| *v = false);
            return 0.0;
        }
        let ok = n >= 1 && s.valid.get(n as usize - 1).copied().unwrap_or(false);
        if ok {
            1.0
        } else {
            0.0
        }
    });
    let meter = |m: f64| m.abs() as u32;
    let sh = shared.clone();
    engine.register_fn("sml_baud", move |m: f64, baud: f64| -> f64 {
        lock(&sh).commands.push(HostCommand::SetBaud {
            meter: meter(m),
            baud: baud as u32,
        });
        1.0
    });
    let sh = shared.clone();
    engine.register_fn("sml_send", move |m: f64, hex: &str| -> RhaiResult<f64> {
        let bytes = crate::hex::decode(hex.trim().as_bytes())
            .map_err(|e| format!("sml({} 1 \"{hex}\"): {e}", meter(m)))?;
        lock(&sh).commands.push(HostCommand::Send {
            meter: meter(m),
            bytes,
        });
        Ok(1.0)
    });
    let sh = shared.clone();
    engine.register_fn("sml_mode", move |m: f64, mode: &str| -> RhaiResult<f64> {
        let (baud, parity) = parse_mode(mode).ok_or_else(|| {
            format!(
                "sml(-{} 1 \"{mode}\"): expected `baud:8N1`, `baud:8E1` or `baud:8O1`",
                meter(m)
            )
        })?;
        lock(&sh).commands.push(HostCommand::SetMode {
            meter: meter(m),
            baud,
            parity,
        });
        Ok(1.0)
    });
    let sh = shared.clone();
    engine.register_fn("sml_queue", move |m: f64, text: &str| -> f64 {
        lock(&sh).commands.push(HostCommand::Queue {
            meter: meter(m),
            text: text.to_string(),
        });
        1.0
    });
    engine.register_fn("sml_read", |_m: f64| -> String { String::new() });

    let sh = shared.clone();
    engine.register_fn("at", move |line: f64| lock(&sh).at = line as u32);

    // Commands and effects.
    let sh = shared.clone();
    engine.register_fn("cmd_silent", move |c: &str| run_command(&mut lock(&sh), c));
    let sh = shared.clone();
    engine.register_fn("cmd", move |c: &str| {
        let mut s = lock(&sh);
        s.commands
            .push(HostCommand::Log(format!("SCR: performs \"{c}\"")));
        run_command(&mut s, c)
    });
    let sh = shared.clone();
    engine.register_fn("cmd_recursive", move |c: &str| {
        let mut s = lock(&sh);
        s.commands
            .push(HostCommand::Log(format!("SCR: performs \"{c}\"")));
        run_command(&mut s, c)
    });
    let sh = shared.clone();
    engine.register_fn("svars", move || {
        lock(&sh).commands.push(HostCommand::SavePermanent)
    });
    let sh = shared.clone();
    engine.register_fn("delay", move |ms: f64| {
        lock(&sh).commands.push(HostCommand::Delay(
            Duration::from_millis(ms.max(0.0) as u64),
        ))
    });
    let sh = shared.clone();
    engine.on_print(move |text| lock(&sh).commands.push(HostCommand::Log(text.to_string())));
    engine.on_debug(|_, _, _| {});

    // `>T`: keys of the JSON in scope, `A#B#C`, case-insensitive; `()` when absent (keep the old value).
    let sh = shared.clone();
    engine.register_fn("tele", move |path: &str| -> Dynamic {
        let s = lock(&sh);
        let Some(json) = &s.json else {
            return Dynamic::UNIT;
        };
        let mut at = json;
        for key in path.split('#') {
            let found = at
                .as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)));
            match found {
                Some((_, v)) => at = v,
                None => return Dynamic::UNIT,
            }
        }
        match at {
            serde_json::Value::Number(n) => Dynamic::from_float(r32(n.as_f64().unwrap_or(0.0))),
            serde_json::Value::String(t) => match t.as_str() {
                "ON" => Dynamic::from_float(1.0),
                "OFF" => Dynamic::from_float(0.0),
                _ => Dynamic::from(t.clone()),
            },
            serde_json::Value::Bool(b) => Dynamic::from_float(if *b { 1.0 } else { 0.0 }),
            _ => Dynamic::UNIT,
        }
    });

    // Arrays and `is` string arrays, kept host-side.
    let sh = shared.clone();
    engine.register_fn("arr_get", move |name: &str, i: f64| -> f64 {
        lock(&sh)
            .arrays
            .get(name)
            .map(|a| a.get(i) as f64)
            .unwrap_or(0.0)
    });
    let sh = shared.clone();
    engine.register_fn("arr_set", move |name: &str, i: f64, v: f64| {
        if let Some(a) = lock(&sh).arrays.get_mut(name) {
            a.set(i, v as f32)
        }
    });
    let sh = shared.clone();
    engine.register_fn("arr_push", move |name: &str, v: f64| {
        if let Some(a) = lock(&sh).arrays.get_mut(name) {
            a.push(v as f32)
        }
    });
    let sh = shared.clone();
    engine.register_fn("arr_value", move |name: &str| -> f64 {
        lock(&sh)
            .arrays
            .get(name)
            .map(|a| a.value() as f64)
            .unwrap_or(0.0)
    });
    let sh = shared.clone();
    engine.register_fn("is_set", move |list: &str| -> f64 {
        let mut s = lock(&sh);
        s.is = list
            .split('|')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        s.is.len() as f64
    });
    let sh = shared.clone();
    engine.register_fn("is_get", move |i: f64| -> String {
        let s = lock(&sh);
        s.is.get((i as usize).wrapping_sub(1))
            .cloned()
            .unwrap_or_default()
    });
    let sh = shared.clone();
    engine.register_fn("rnd", move |n: f64| -> f64 {
        // xorshift: scripts use rnd() for test data, not for anything that needs real randomness.
        let mut s = lock(&sh);
        let mut x = if s.rng == 0 { 0x2545_f491 } else { s.rng };
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        s.rng = x;
        if n <= 0.0 {
            0.0
        } else {
            (x % (n as u32).max(1)) as f64
        }
    });

    // `chg[v]`: 1 when v differs from its shadow copy, which is then updated.
    engine.register_fn("chg", |this: &mut Map, name: &str| -> f64 {
        let key = format!("\u{1}chg:{name}");
        let now = this
            .get(name)
            .and_then(|v| v.as_float().ok())
            .unwrap_or(0.0);
        let before = this.get(key.as_str()).and_then(|v| v.as_float().ok());
        this.insert(key.into(), Dynamic::from_float(now));
        match before {
            Some(b) if b == now => 0.0,
            _ => 1.0,
        }
    });
}

/// `2400:8E1` -> (2400, Even).
fn parse_mode(mode: &str) -> Option<(u32, Parity)> {
    let (baud, frame) = mode.trim().split_once(':')?;
    let baud = baud.parse().ok()?;
    let parity = match frame.chars().nth(1)?.to_ascii_uppercase() {
        'N' => Parity::None,
        'E' => Parity::Even,
        'O' => Parity::Odd,
        _ => return None,
    };
    Some((baud, parity))
}

/// A Tasmota command from `->`/`=>`: the ones that mean something off the ESP become host commands.
fn run_command(s: &mut HostState, command: &str) {
    let command = command.trim();
    let (word, rest) = command
        .split_once(char::is_whitespace)
        .unwrap_or((command, ""));
    let rest = rest.trim();
    match word.to_ascii_lowercase().as_str() {
        "backlog" | "backlog0" => {
            for part in rest.split(';') {
                run_command(s, part);
            }
        }
        "sensor53" => {
            let mut it = rest.split_whitespace();
            let arg = it.next().unwrap_or("");
            if arg == "r" {
                s.commands.push(HostCommand::RestartMeters);
            } else if let Some(m) = arg.strip_prefix('d').and_then(|m| m.parse().ok()) {
                s.commands.push(HostCommand::DumpRaw { meter: m });
            } else if let Some(c) = arg.strip_prefix('c').and_then(|c| c.parse().ok()) {
                let value = it.next().map(parse_number).unwrap_or(0.0);
                s.commands
                    .push(HostCommand::SetCounter { counter: c, value });
            } else {
                s.commands
                    .push(HostCommand::Unsupported(command.to_string()));
            }
        }
        "publish" | "publish2" => {
            let (topic, payload) = rest.split_once(' ').unwrap_or((rest, ""));
            s.commands.push(HostCommand::Publish {
                topic: topic.to_string(),
                payload: payload.to_string(),
            });
        }
        "teleperiod" => match rest.parse::<u32>() {
            Ok(v) => {
                let seconds = v.clamp(10, 3600);
                s.tper = seconds;
                s.commands.push(HostCommand::SetTeleperiod { seconds });
            }
            Err(_) => s
                .commands
                .push(HostCommand::Unsupported(command.to_string())),
        },
        "" => {}
        _ => s
            .commands
            .push(HostCommand::Unsupported(command.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_array_reads_element_one_out_of_range_and_writes_nothing() {
        let mut a = TArray::new(3, 0.0, false);
        a.set(2.0, 5.0);
        a.set(9.0, 7.0);
        assert_eq!(a.get(2.0), 5.0);
        assert_eq!(a.get(9.0), 0.0);
        assert_eq!(a.get(-1.0), 3.0);
        assert_eq!(a.get(-3.0), 5.0);
    }

    #[test]
    fn strings_parse_as_their_leading_number() {
        assert_eq!(parse_number("12.5kWh"), 12.5);
        assert_eq!(parse_number("abc"), 0.0);
        assert_eq!(parse_number("1e5"), 1.0);
    }

    #[test]
    fn backlog_runs_each_command_in_turn() {
        let mut s = HostState::default();
        run_command(&mut s, "Backlog sensor53 r;publish a/b 1");
        assert_eq!(
            s.commands,
            vec![
                HostCommand::RestartMeters,
                HostCommand::Publish {
                    topic: "a/b".into(),
                    payload: "1".into()
                }
            ]
        );
    }
}
