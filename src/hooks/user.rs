/*!
Users' own post-processing in Rhai (`--rhai FILE`, `rhai = "FILE"`): the file defines

- `fn before_publish(payload)`: `payload` is the SENSOR object as a Rhai map with the JSON's own keys
  (`Time`, then each prefix -> its names and values); it returns the map to publish, or `()` to
  publish nothing;
- optionally `fn on_telegram(meter, values)`: called with each telegram's values (name -> number)
  for state across telegrams (derived values, moving averages).

Both see `this`, one map kept for the whole run, for that state (`this.max = ...`): Rhai functions
see no variable from outside themselves. The engine is the hooks' sandbox (no file, network or
process access; operations, call depth, string and array sizes limited). A call that fails is
reported once per distinct error with the user's file and line, and the payload goes out as it
was before the call.

Rhai maps are sorted by key, so the JSON is written back in the payload's own key order (new keys
after, sorted), and a number the function left unchanged is written as it came (`1.500` stays
`1.500`); a changed one keeps its key's decimals, a new one gets up to 3, and one that is not finite
is left out rather than published as `null`.
*/

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, Map, Scope, AST};
use serde_json::value::RawValue;

use super::host::{sandboxed_engine, Limits};

#[derive(Debug, thiserror::Error)]
pub enum UserRhaiError {
    #[error("--rhai {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: error: {message}")]
    Compile {
        path: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error(
        "{path}: defines no `fn before_publish(payload)` and no `fn on_telegram(meter, values)`"
    )]
    Empty { path: String },
}

/// The user's compiled file and its state.
pub struct UserRhai {
    engine: Engine,
    ast: AST,
    path: String,
    before_publish: bool,
    on_telegram: bool,
    state: Dynamic,
    reported: BTreeSet<String>,
    errors: u64,
}

impl UserRhai {
    pub fn load(path: &Path) -> Result<UserRhai, UserRhaiError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| UserRhaiError::Read {
            path: shown.clone(),
            source,
        })?;
        UserRhai::from_source(&shown, &text)
    }

    /// Compile `text`; `path` names it in errors.
    pub fn from_source(path: &str, text: &str) -> Result<UserRhai, UserRhaiError> {
        let engine = sandboxed_engine(Limits::default());
        let ast = engine.compile(text).map_err(|e| UserRhaiError::Compile {
            path: path.to_string(),
            line: e.position().line().unwrap_or(0),
            col: e.position().position().unwrap_or(0),
            message: e.err_type().to_string(),
        })?;
        let has = |name: &str, arity: usize| {
            ast.iter_functions()
                .any(|f| f.name == name && f.params.len() == arity)
        };
        let (before_publish, on_telegram) = (has("before_publish", 1), has("on_telegram", 2));
        if !before_publish && !on_telegram {
            return Err(UserRhaiError::Empty {
                path: path.to_string(),
            });
        }
        Ok(UserRhai {
            engine,
            ast,
            path: path.to_string(),
            before_publish,
            on_telegram,
            state: Dynamic::from_map(Map::new()),
            reported: BTreeSet::new(),
            errors: 0,
        })
    }

    /// Whether the file has `on_telegram` (the engine builds each telegram's values only then).
    pub fn wants_telegrams(&self) -> bool {
        self.on_telegram
    }

    /// Every failed call so far, repeated ones included.
    pub fn error_count(&self) -> u64 {
        self.errors
    }

    /// The payload to publish (`None`: nothing), and an error to report (the first time only).
    /// On an error the payload is the one given.
    pub fn before_publish(&mut self, payload: &str) -> (Option<String>, Option<String>) {
        if !self.before_publish {
            return (Some(payload.to_string()), None);
        }
        let Some(original) = Node::parse(payload) else {
            return (Some(payload.to_string()), None);
        };
        match self.call("before_publish", (original.to_dynamic(),)) {
            Ok(result) if result.is_unit() => (None, None),
            Ok(result) => match result.try_cast::<Map>() {
                Some(map) => {
                    let mut out = String::with_capacity(payload.len() + 32);
                    write_map(&mut out, &map, Some(&original));
                    (Some(out), None)
                }
                None => {
                    let e = self.first_time(format!(
                        "{}: before_publish returned neither a map nor (): the payload goes out as it was",
                        self.path
                    ));
                    (Some(payload.to_string()), e)
                }
            },
            Err(e) => (Some(payload.to_string()), self.error(&e)),
        }
    }

    /// `on_telegram(meter, values)` with the telegram's payload (its names and values, flattened
    /// across prefixes); an error to report, the first time.
    pub fn on_telegram(&mut self, meter: u16, payload: &str) -> Option<String> {
        if !self.on_telegram {
            return None;
        }
        let mut values = Map::new();
        if let Some(Node::Object(entries)) = Node::parse(payload) {
            for (key, node) in entries {
                if let Node::Object(inner) = node {
                    for (name, v) in inner {
                        values.insert(name.into(), v.to_dynamic());
                    }
                } else if key != "Time" {
                    values.insert(key.into(), node.to_dynamic());
                }
            }
        }
        match self.call(
            "on_telegram",
            (
                Dynamic::from_int(i64::from(meter)),
                Dynamic::from_map(values),
            ),
        ) {
            Ok(_) => None,
            Err(e) => self.error(&e),
        }
    }

    fn call(
        &mut self,
        function: &str,
        args: impl rhai::FuncArgs,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let options = CallFnOptions::new()
            .eval_ast(false)
            .rewind_scope(true)
            .bind_this_ptr(&mut self.state);
        self.engine
            .call_fn_with_options(options, &mut Scope::new(), &self.ast, function, args)
    }

    fn error(&mut self, e: &EvalAltResult) -> Option<String> {
        let mut inner = e;
        while let EvalAltResult::ErrorInFunctionCall(_, _, next, _) = inner {
            inner = next;
        }
        let line = inner
            .position()
            .line()
            .or_else(|| e.position().line())
            .map_or(String::new(), |l| format!(":{l}"));
        let mut message = inner.to_string();
        if let Some(i) = message.rfind(" (line ") {
            message.truncate(i);
        }
        self.first_time(format!("{}{line}: error: {message}", self.path))
    }

    fn first_time(&mut self, text: String) -> Option<String> {
        self.errors += 1;
        self.reported.insert(text.clone()).then_some(text)
    }
}

/// A JSON value with its object keys in order and its numbers as written.
#[derive(Debug, Clone)]
enum Node {
    Object(Vec<(String, Node)>),
    /// A number, its value and its text.
    Number(f64, String),
    /// Any other value (string, bool, null, array).
    Other(serde_json::Value),
}

impl Node {
    fn parse(json: &str) -> Option<Node> {
        let raw: &RawValue = serde_json::from_str(json).ok()?;
        Node::from_raw(raw)
    }

    fn from_raw(raw: &RawValue) -> Option<Node> {
        let text = raw.get().trim();
        if text.starts_with('{') {
            let entries: Vec<(String, &RawValue)> =
                serde_json::from_str::<OrderedObject>(text).ok()?.0;
            let mut out = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                out.push((k, Node::from_raw(v)?));
            }
            return Some(Node::Object(out));
        }
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        Some(match value.as_f64() {
            Some(n) if value.is_number() => Node::Number(n, text.to_string()),
            _ => Node::Other(value),
        })
    }

    fn to_dynamic(&self) -> Dynamic {
        match self {
            Node::Object(entries) => Dynamic::from_map(
                entries
                    .iter()
                    .map(|(k, v)| (k.as_str().into(), v.to_dynamic()))
                    .collect(),
            ),
            Node::Number(n, _) => Dynamic::from_float(*n),
            Node::Other(v) => json_to_dynamic(v),
        }
    }

    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// An object's entries in the order written, values left raw.
struct OrderedObject<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for OrderedObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = OrderedObject<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(OrderedObject(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// Write `map` as JSON: `original`'s keys first, in its order, then the new ones.
fn write_map(out: &mut String, map: &Map, original: Option<&Node>) {
    out.push('{');
    let mut first = true;
    let mut keys: Vec<&str> = Vec::with_capacity(map.len());
    if let Some(Node::Object(entries)) = original {
        keys.extend(
            entries
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| map.contains_key(*k)),
        );
    }
    let known: BTreeSet<&str> = keys.iter().copied().collect();
    keys.extend(
        map.keys()
            .map(|k| k.as_str())
            .filter(|k| !known.contains(k)),
    );
    for key in keys {
        let value = &map[key];
        let before = original.and_then(|o| o.get(key));
        let mut item = String::new();
        if !write_value(&mut item, value, before) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&serde_json::to_string(key).expect("a string serializes"));
        out.push(':');
        out.push_str(&item);
    }
    out.push('}');
}

/// Write one value; false when it has no JSON form worth publishing (a number not finite).
fn write_value(out: &mut String, value: &Dynamic, before: Option<&Node>) -> bool {
    if let Some(map) = value.read_lock::<Map>() {
        write_map(out, &map, before);
        return true;
    }
    let number = value
        .as_float()
        .ok()
        .or_else(|| value.as_int().ok().map(|i| i as f64));
    if let Some(n) = number {
        if !n.is_finite() {
            return false;
        }
        match before {
            Some(Node::Number(old, text)) if *old == n => out.push_str(text),
            Some(Node::Number(_, text)) => {
                let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
                let _ = write!(out, "{n:.decimals$}");
            }
            _ => {
                let s = format!("{n:.3}");
                let s = s.trim_end_matches('0').trim_end_matches('.');
                out.push_str(if s == "-0" { "0" } else { s });
            }
        }
        return true;
    }
    if value.is_unit() {
        out.push_str("null");
        return true;
    }
    if let Ok(b) = value.as_bool() {
        out.push_str(if b { "true" } else { "false" });
    } else if let Some(items) = value.read_lock::<rhai::Array>() {
        out.push('[');
        let mut first = true;
        for item in items.iter() {
            let mut one = String::new();
            if write_value(&mut one, item, None) {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&one);
            }
        }
        out.push(']');
    } else {
        // Strings, and anything else as its text.
        let text = value.to_string();
        out.push_str(&serde_json::to_string(&text).expect("a string serializes"));
    }
    true
}

fn json_to_dynamic(v: &serde_json::Value) -> Dynamic {
    match v {
        serde_json::Value::Null => Dynamic::UNIT,
        serde_json::Value::Bool(b) => Dynamic::from_bool(*b),
        serde_json::Value::Number(n) => Dynamic::from_float(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Dynamic::from(s.clone()),
        serde_json::Value::Array(a) => Dynamic::from_array(a.iter().map(json_to_dynamic).collect()),
        serde_json::Value::Object(m) => Dynamic::from_map(
            m.iter()
                .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str =
        r#"{"Time":"2024-03-04T11:25:20","EON":{"pwr_imp":1.500,"pwr_exp":0.250}}"#;

    #[test]
    fn a_map_returned_unchanged_is_the_payload_as_it_came() {
        let mut u = UserRhai::from_source("u.rhai", "fn before_publish(p) { p }").unwrap();
        assert_eq!(u.before_publish(PAYLOAD), (Some(PAYLOAD.to_string()), None));
    }

    #[test]
    fn a_new_key_goes_after_the_payloads_own_keys() {
        let mut u = UserRhai::from_source(
            "u.rhai",
            "fn before_publish(p) { p.EON.net = p.EON.pwr_imp - p.EON.pwr_exp; p }",
        )
        .unwrap();
        let (out, err) = u.before_publish(PAYLOAD);
        assert_eq!(err, None);
        assert_eq!(
            out.unwrap(),
            r#"{"Time":"2024-03-04T11:25:20","EON":{"pwr_imp":1.500,"pwr_exp":0.250,"net":1.25}}"#
        );
    }

    #[test]
    fn unit_publishes_nothing() {
        let mut u = UserRhai::from_source("u.rhai", "fn before_publish(p) { () }").unwrap();
        assert_eq!(u.before_publish(PAYLOAD), (None, None));
    }

    #[test]
    fn an_error_names_the_users_file_and_line_once_and_the_payload_goes_out_as_it_was() {
        let mut u =
            UserRhai::from_source("u.rhai", "fn before_publish(p) {\n  p.x = 1 / 0;\n  p\n}")
                .unwrap();
        let (out, err) = u.before_publish(PAYLOAD);
        assert_eq!(out.as_deref(), Some(PAYLOAD));
        let err = err.expect("reported");
        assert!(err.starts_with("u.rhai:2: error:"), "{err}");
        assert_eq!(u.before_publish(PAYLOAD), (Some(PAYLOAD.to_string()), None));
        assert_eq!(u.error_count(), 2);
    }

    #[test]
    fn an_endless_loop_is_stopped() {
        let mut u =
            UserRhai::from_source("u.rhai", "fn before_publish(p) {\n  loop { }\n}").unwrap();
        let (out, err) = u.before_publish(PAYLOAD);
        assert_eq!(out.as_deref(), Some(PAYLOAD));
        assert!(err.is_some());
    }

    #[test]
    fn a_syntax_error_is_given_at_its_line_and_column() {
        let e = UserRhai::from_source("u.rhai", "fn before_publish(p) {\n  p +\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("u.rhai:"), "{e}");
    }

    #[test]
    fn state_kept_in_this_survives_between_telegrams() {
        let mut u = UserRhai::from_source(
            "u.rhai",
            "fn on_telegram(m, v) { this.n = (this.n ?? 0) + v.pwr_imp; }\nfn before_publish(p) { p.EON.sum = this.n; p }",
        )
        .unwrap();
        assert_eq!(u.on_telegram(1, PAYLOAD), None);
        assert_eq!(u.on_telegram(1, PAYLOAD), None);
        let out = u.before_publish(PAYLOAD).0.unwrap();
        assert!(out.ends_with(r#""sum":3}}"#), "{out}");
    }
}
