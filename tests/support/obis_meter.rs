// Test helper: an `o` meter built directly from Tasmota metric descriptors (`1-0:1.8.0(@1`,
// `0-0:98.1.0(@(1:1`, `0.2.0(@#)`, `@s 0:1`), for tests that must not wait for the script parser.
// Entries are numbered 1.. in order; names are `e<entry>`.
// Included with `include!` into a module that has `script::model::*` in scope (the crate's own unit
// tests name it `crate::`, integration tests `sml::`).

/// Parse one descriptor (the text between the meter number and the label of a metric line).
#[allow(dead_code)]
pub fn obis_metric(entry: u16, descriptor: &str) -> Metric<ObisPattern> {
    let (code, spec) = descriptor.split_once('@').expect("descriptor has '@'");
    let mut rest = spec;
    let mut bracket = 0u8;
    let mut split = None;
    if let Some(r) = rest.strip_prefix('(') {
        let (n, r) = r.split_at(r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len()));
        bracket = n.parse().expect("bracket number");
        rest = &r[1..]; // one separator
    } else if let Some(r) = rest.strip_prefix('s') {
        let delim = r.chars().next().expect("split delimiter");
        let r = &r[delim.len_utf8()..];
        let (n, r) = r.split_at(r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len()));
        split = Some((delim, n.parse().expect("split field")));
        rest = r.strip_prefix(':').unwrap_or(r);
    }
    let (value, text_terminator) = if let Some(t) = rest.strip_prefix('#') {
        (ValueSpec::Text { hex_as_ascii: false }, t.chars().next())
    } else {
        let sign_at = rest[1..].find(['+', '-']).map(|i| i + 1);
        let (div, off) = match sign_at {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "0"),
        };
        (ValueSpec::Number { divisor: div.parse().expect("divisor"), offset: off.parse().expect("offset") }, None)
    };
    Metric {
        pattern: ObisPattern { code: code.to_string(), bracket, text_terminator, split },
        value,
        output: Output {
            entry,
            line: u32::from(entry),
            label: format!("e{entry}"),
            unit: String::new(),
            name: format!("e{entry}"),
            precision: Precision::from_field(3),
        },
    }
}

/// A meter with these descriptors, no requests.
#[allow(dead_code)]
pub fn obis_meter(descriptors: &[&str]) -> Meter {
    let metrics = descriptors.iter().enumerate().map(|(i, d)| obis_metric(i as u16 + 1, d)).collect();
    Meter {
        index: 1,
        line: 1,
        source: MeterSource::Pin(3),
        serial: SerialSettings { baud: 115200, data_bits: 8, parity: Parity::None, stop_bits: 1 },
        flags: 0,
        param: 9600,
        prefix: Some("M".to_string()),
        tx: None,
        requests: Requests::default(),
        options: MeterOptions::default(),
        decoding: Decoding::Obis(metrics),
        derived: Vec::new(),
        html: Vec::new(),
    }
}
