/*!
SENSOR JSON to InfluxDB line protocol. The sink reads the payload the engine made for MQTT rather
than a structure of its own, so both paths carry the very same numbers (the line's precision is
already applied there) and the engine stays untouched.

One point per meter prefix: measurement = the prefix (`EON`), tags `topic` (Tasmota's %topic%) and
`meter` (the meter number, or numbers joined with `+` when meters share a prefix), fields = the JSON
names, numbers as floats, `@#` captures as strings, timestamp in nanoseconds (given per prefix by
the caller: when the prefix's latest telegram was read).
*/

use std::collections::HashMap;
use std::fmt::Write;

use serde_json::Value;

use crate::script::model::Script;

/// Which meter(s) write under each prefix: the `meter` tag's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterTags(HashMap<String, String>);

impl MeterTags {
    pub fn from_script(script: &Script) -> MeterTags {
        let mut by_prefix: HashMap<String, Vec<String>> = HashMap::new();
        for m in &script.meters {
            if let Some(p) = &m.prefix {
                by_prefix
                    .entry(p.clone())
                    .or_default()
                    .push(m.index.to_string());
            }
        }
        MeterTags(
            by_prefix
                .into_iter()
                .map(|(p, numbers)| (p, numbers.join("+")))
                .collect(),
        )
    }

    pub fn insert(&mut self, prefix: &str, meter: &str) {
        self.0.insert(prefix.to_string(), meter.to_string());
    }
}

/// Why a SENSOR payload gave no point.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineError {
    #[error("SENSOR payload is not JSON ({0})")]
    NotJson(String),
    #[error("SENSOR payload is not a JSON object")]
    NotObject,
}

/// The points of one SENSOR payload, one line each (`\n`-terminated), each prefix's stamped with
/// `timestamp_ns(prefix)`; the number of points.
pub fn sensor_to_lines(
    payload: &str,
    topic: &str,
    meters: &MeterTags,
    timestamp_ns: impl Fn(&str) -> i128,
    out: &mut String,
) -> Result<usize, LineError> {
    let json: Value =
        serde_json::from_str(payload).map_err(|e| LineError::NotJson(e.to_string()))?;
    let Value::Object(top) = json else {
        return Err(LineError::NotObject);
    };
    let mut points = 0;
    for (prefix, values) in &top {
        // "Time" is Tasmota's wall-clock string: the point's timestamp says it better.
        let Value::Object(values) = values else {
            continue;
        };
        let start = out.len();
        escape(out, prefix, &[',', ' ']);
        // A tag with an empty value is invalid line protocol: a prefix no meter owns has none.
        if let Some(meter) = meters.0.get(prefix) {
            out.push_str(",meter=");
            escape(out, meter, TAG);
        }
        out.push_str(",topic=");
        escape(out, topic, TAG);
        out.push(' ');
        let mut fields = 0;
        for (name, v) in values {
            let before = out.len();
            if fields > 0 {
                out.push(',');
            }
            escape(out, name, TAG);
            out.push('=');
            match v {
                // serde_json prints the shortest text that reads back as the same f64: the
                // JSON's digits, less trailing zeros. Without an `i` suffix, InfluxDB reads a
                // whole number as a float too, so `0` and `0.5` make one field type.
                Value::Number(n) => match n.as_f64() {
                    Some(f) if f.is_finite() => out.push_str(&n.to_string()),
                    _ => {
                        out.truncate(before);
                        continue;
                    }
                },
                Value::String(s) => {
                    out.push('"');
                    escape(out, s, &['"', '\\']);
                    out.push('"');
                }
                Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                // Nothing sml publishes; skipped rather than guessed at.
                Value::Null | Value::Array(_) | Value::Object(_) => {
                    out.truncate(before);
                    continue;
                }
            }
            fields += 1;
        }
        if fields == 0 {
            // A point needs a field: a prefix with nothing publishable writes nothing.
            out.truncate(start);
            continue;
        }
        let _ = writeln!(out, " {}", timestamp_ns(prefix));
        points += 1;
    }
    Ok(points)
}

/// Tag keys, tag values and field keys escape these.
const TAG: &[char] = &[',', '=', ' '];

fn escape(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        // A line break would end the line: line protocol cannot carry one, not even escaped.
        out.push(if c == '\n' || c == '\r' { ' ' } else { c });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags() -> MeterTags {
        let mut t = MeterTags::default();
        t.insert("EON", "1");
        t
    }

    fn lines(payload: &str) -> String {
        let mut out = String::new();
        sensor_to_lines(
            payload,
            "myelectricmeter",
            &tags(),
            |_| 1_700_000_000_123_456_789,
            &mut out,
        )
        .unwrap();
        out
    }

    #[test]
    fn a_sensor_payload_becomes_one_point_per_prefix_with_its_numbers_as_floats() {
        // Fields in name order (InfluxDB does not keep their order either).
        assert_eq!(
            lines(
                r#"{"Time":"2024-03-04T11:25:20","EON":{"volts_l1":233.9,"enrg_imp":22803.012,"tariff":2}}"#
            ),
            "EON,meter=1,topic=myelectricmeter enrg_imp=22803.012,tariff=2,volts_l1=233.9 \
             1700000000123456789\n"
        );
    }

    #[test]
    fn text_captures_are_quoted_strings_with_quotes_and_backslashes_escaped() {
        assert_eq!(
            lines(r#"{"EON":{"meter_id":"1ESY \"x\" \\1"}}"#),
            "EON,meter=1,topic=myelectricmeter meter_id=\"1ESY \\\"x\\\" \\\\1\" 1700000000123456789\n"
        );
    }

    #[test]
    fn names_with_spaces_commas_and_equals_are_escaped() {
        let mut out = String::new();
        let mut t = MeterTags::default();
        t.insert("a b,c", "2+3");
        sensor_to_lines(r#"{"a b,c":{"x=y z":1.5}}"#, "t o", &t, |_| 5, &mut out).unwrap();
        assert_eq!(out, "a\\ b\\,c,meter=2+3,topic=t\\ o x\\=y\\ z=1.5 5\n");
    }

    #[test]
    fn a_prefix_with_nothing_publishable_writes_no_point() {
        assert_eq!(lines(r#"{"Time":"x","EON":{}}"#), "");
        assert_eq!(lines(r#"{"EON":{"a":null}}"#), "");
    }

    #[test]
    fn a_payload_that_is_not_json_is_an_error_not_a_point() {
        let mut out = String::new();
        let e = sensor_to_lines("{nope", "t", &tags(), |_| 0, &mut out).unwrap_err();
        assert!(matches!(e, LineError::NotJson(_)), "{e}");
        assert!(out.is_empty());
        assert_eq!(
            sensor_to_lines("[1]", "t", &tags(), |_| 0, &mut out),
            Err(LineError::NotObject)
        );
    }
}
