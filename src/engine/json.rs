/*!
Tasmota's SENSOR JSON, byte for byte: `{"Time":"2024-03-04T11:25:20","EON":{"volts_l1":233.9}}`.

Numbers are printed fixed-point with the line's decimals (`dtostrfd` in Tasmota): `233.9`, `22803.012`,
`0`. Non-finite numbers would make invalid JSON (Tasmota prints `nan`): sml leaves such a value out.
*/

use std::fmt::Write;

use crate::decode::Value;

/// Tasmota's timestamp form: local time, no zone, seconds resolution.
pub fn format_time(t: &chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// A number as Tasmota prints it with `decimals` digits; `None` when it is not finite.
pub fn format_number(v: f64, decimals: u8) -> Option<String> {
    if !v.is_finite() {
        return None;
    }
    let s = format!("{:.*}", usize::from(decimals), v);
    // "-0" and "-0.00" are what C prints too, but consumers read them as 0: print 0 as Tasmota's
    // own ftoa does for a zero that rounds from a tiny negative.
    if s.starts_with('-') && s[1..].bytes().all(|b| b == b'0' || b == b'.') {
        return Some(s[1..].to_string());
    }
    Some(s)
}

/// Append `"key"` with JSON escapes.
pub fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Whether the value can be printed as JSON (a number must be finite).
pub fn is_publishable(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_finite(),
        Value::Text(_) => true,
    }
}

/// Append a value in JSON; returns false (and appends nothing) for a non-finite number.
pub fn push_value(out: &mut String, v: &Value, decimals: u8) -> bool {
    match v {
        Value::Number(n) => match format_number(*n, decimals) {
            Some(s) => {
                out.push_str(&s);
                true
            }
            None => false,
        },
        Value::Text(t) => {
            push_string(out, t);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_fixed_point_with_the_lines_precision() {
        assert_eq!(format_number(233.9, 1).unwrap(), "233.9");
        assert_eq!(format_number(22803.012, 3).unwrap(), "22803.012");
        assert_eq!(format_number(1.5, 3).unwrap(), "1.500");
        assert_eq!(format_number(0.0, 0).unwrap(), "0");
        assert_eq!(format_number(-0.0001, 2).unwrap(), "0.00");
        assert_eq!(format_number(-356.1, 1).unwrap(), "-356.1");
        assert_eq!(format_number(f64::NAN, 2), None);
    }

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        push_string(&mut s, "a\"b\\c\u{1}");
        assert_eq!(s, r#""a\"b\\c\u0001""#);
    }
}
