//! `sml decode --explain CAPTURE`: every M-Bus long frame in a capture, record by record, with a
//! ready Tasmota metric line, so a user can write an `r` script for a meter nobody has scripted.

use std::fmt::Write as _;

use super::{check_long_frame, long_header, records, RecordValue};
use crate::decode::Explained;

/// Explain every long frame in `bytes`; bytes outside frames are skipped (and counted).
pub fn explain(bytes: &[u8]) -> Explained {
    let mut out = Explained::default();
    let mut at = 0;
    let mut skipped = 0;
    let mut lines = String::new();
    let mut n = 0;
    while at < bytes.len() {
        let Some(Ok(total)) = long_header(&bytes[at..]) else {
            at += 1;
            skipped += 1;
            continue;
        };
        match check_long_frame(&bytes[at..]) {
            Ok(frame) => {
                n += 1;
                out.good += 1;
                frame_report(&mut out.text, &mut lines, frame, at, n);
                at += total;
            }
            Err(e) => {
                out.bad += 1;
                let _ = writeln!(out.text, "byte {at}: not a good M-Bus frame: {e}");
                at += 1;
                skipped += 1;
            }
        }
    }
    if skipped > 0 {
        let _ = writeln!(out.text, "{skipped} bytes outside good long frames skipped");
    }
    if out.good == 0 {
        let _ = writeln!(
            out.text,
            "no good M-Bus long frame (68 L L 68 ... CS 16) found"
        );
    } else if !lines.is_empty() {
        let _ = writeln!(
            out.text,
            "\nA script for this meter (M-Bus is 2400 baud 8E1 by default; rename the values, \
             keep the lines you want):\n>M 1\n+1,3,rE1,0,2400,MBUS\n1,=so3,256\n{lines}#"
        );
    }
    out
}

fn frame_report(text: &mut String, lines: &mut String, frame: &[u8], at: usize, n: usize) {
    let walked = records(frame);
    let _ = write!(
        text,
        "frame {n} at byte {at}: {} bytes, C {:02X}, A {:02X}, CI {:02X}, checksum ok",
        frame.len(),
        frame[4],
        frame[5],
        walked.ci
    );
    if let Some(h) = &walked.header {
        let _ = write!(text, "; id {}", h.id.as_deref().unwrap_or("-"));
        if let Some(m) = &h.manufacturer {
            let _ = write!(text, ", manufacturer {m}");
        }
        if let Some(medium) = h.medium {
            let _ = write!(text, ", medium {medium:02X}");
        }
        let _ = write!(text, ", access {}, status {:02X}", h.access, h.status);
    }
    let _ = writeln!(text);
    let _ = writeln!(text, "offset  record");
    for (i, r) in walked.records.iter().enumerate() {
        let value = match &r.value {
            RecordValue::Number(v) => format!("{v} {}", r.unit),
            RecordValue::Text(t) => format!("\"{t}\""),
            RecordValue::Time(t) => t.clone(),
            RecordValue::None => "-".into(),
        };
        let mut place = String::new();
        if r.storage != 0 {
            let _ = write!(place, " storage {}", r.storage);
        }
        if r.tariff != 0 {
            let _ = write!(place, " tariff {}", r.tariff);
        }
        if r.subunit != 0 {
            let _ = write!(place, " subunit {}", r.subunit);
        }
        let head = crate::hex::encode_upper(&r.head);
        let _ = writeln!(
            text,
            "{:>6}  {head:<12} {} ({}{place}) = {value}",
            r.offset,
            r.quantity,
            r.function_name()
        );
        // Only the first frame's lines go into the suggested script (later frames repeat them).
        if n == 1 {
            match r.tasmota_line(1, &format!("{}_{i}", short_name(r.quantity))) {
                Some(line) if !lines.contains(&format!("1,{head}")) => {
                    let _ = writeln!(text, "        {line}");
                    let _ = writeln!(lines, "{line}");
                }
                Some(line) => {
                    let _ = writeln!(
                        text,
                        "        {line}  (same DIF/VIF as an earlier record: Tasmota reads the \
                         first; anchor on the bytes before it)"
                    );
                }
                None => {
                    let _ = writeln!(
                        text,
                        "        (no Tasmota mask reads this {} field)",
                        match r.field {
                            super::DataField::Real32 => "little-endian float",
                            super::DataField::Int(3) => "24-bit integer",
                            super::DataField::Int(6) => "48-bit integer",
                            super::DataField::Int(8) => "64-bit integer",
                            _ if matches!(r.value, RecordValue::Time(_)) => "date",
                            _ => "text or empty",
                        }
                    );
                }
            }
        }
    }
    if let Some((off, len)) = walked.manufacturer_data {
        let _ = writeln!(text, "{off:>6}  manufacturer-specific data, {len} bytes");
    }
    if let Some((off, why)) = &walked.error {
        let _ = writeln!(text, "{off:>6}  walk stopped: {why}");
    }
}

/// A JSON-friendly name from a quantity: `Flow temperature` -> `flow_temperature`.
fn short_name(quantity: &str) -> String {
    let s: String = quantity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_matches('_').to_string();
    if s.is_empty() {
        "value".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_prints_offsets_values_and_a_script_that_compiles() {
        let f = crate::decode::mbus::tests::heat_meter_frame();
        let mut bytes = vec![0xE5];
        bytes.extend_from_slice(&f);
        let e = explain(&bytes);
        assert_eq!((e.good, e.bad), (1, 0));
        assert!(e.text.contains("    19  0C06"), "{}", e.text);
        assert!(e.text.contains("= 12345000 Wh"), "{}", e.text);
        assert!(
            e.text.contains("1,0C06bcd8@0.001,Energy,Wh,energy_0,0"),
            "{}",
            e.text
        );
        let script = format!(">D\n{}\n", &e.text[e.text.find(">M 1").unwrap()..]);
        let compiled = crate::script::compile(script.as_bytes());
        assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
    }

    #[test]
    fn a_bad_frame_is_reported_not_explained() {
        let mut f = crate::decode::mbus::tests::heat_meter_frame();
        let cs = f.len() - 2;
        f[cs] ^= 1;
        let e = explain(&f);
        assert_eq!((e.good, e.bad), (0, 1));
        assert!(e.text.contains("checksum"), "{}", e.text);
    }
}
