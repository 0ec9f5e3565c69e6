//! Fuzz the `s` decoder: arbitrary bytes, fed whole and in chunks, must never panic and must give the
//! same events either way. Half the inputs are wrapped in a correct transport frame, so the SML
//! element parser behind the CRC check is reached too.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sml::decode::sml::frame;
use sml::decode::{decoder_for, DecodeEvent};
use sml::script::model::*;

fn meter() -> Meter {
    let line = |i: u16, hex: &str, bit: Option<u8>, value: ValueSpec| Metric {
        pattern: SmlPattern {
            bytes: (0..hex.len())
                .step_by(2)
                .map(|j| u8::from_str_radix(&hex[j..j + 2], 16).ok())
                .collect(),
            bit,
        },
        value,
        output: Output {
            entry: i,
            line: u32::from(i) + 5,
            label: String::new(),
            unit: String::new(),
            name: format!("v{i}"),
            precision: Precision::from_field(3),
        },
    };
    let n = ValueSpec::Number {
        divisor: 1000.0,
        offset: 0.0,
    };
    Meter {
        index: 1,
        line: 5,
        source: MeterSource::Pin(3),
        serial: SerialSettings {
            baud: 9600,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
        },
        flags: 0,
        param: 9600,
        prefix: Some("SML".into()),
        tx: None,
        requests: Requests::default(),
        options: MeterOptions {
            sign_from_status: Some(SignFromStatus {
                status_obis: [0, 1, 8, 0],
                fc1: 0x65,
                bit1: 5,
                fc2: 0x63,
                bit2: 5,
                value_obis: [0, 16, 7, 0],
            }),
            ..MeterOptions::default()
        },
        decoding: Decoding::Sml(vec![
            line(1, "77070100010800ff", None, n.clone()),
            line(2, "0100100700ff", None, n.clone()),
            line(3, "7707xxxxxxxxxxxx", Some(3), n.clone()),
            line(
                4,
                "77070100000009ff",
                None,
                ValueSpec::Text {
                    hex_as_ascii: false,
                },
            ),
            line(
                5,
                "77078181c78203ff",
                None,
                ValueSpec::Text { hex_as_ascii: true },
            ),
            line(6, "62", None, n),
        ]),
        derived: Vec::new(),
        html: Vec::new(),
    }
}

fn run(chunks: &[&[u8]]) -> (Vec<DecodeEvent>, sml::decode::DecodeStats) {
    let mut d = decoder_for(&meter()).expect("decoder");
    let mut events = Vec::new();
    for c in chunks {
        d.handle_bytes(Instant::now(), c);
        events.extend(std::iter::from_fn(|| d.poll_event()));
    }
    d.handle_end();
    events.extend(std::iter::from_fn(|| d.poll_event()));
    (events, d.stats())
}

fn check(bytes: &[u8], split: usize) {
    let whole = run(&[bytes]);
    let split = split % (bytes.len() + 1);
    let (a, b) = bytes.split_at(split);
    assert_eq!(run(&[a, b]), whole, "split at {split}");
    let telegrams = whole
        .0
        .iter()
        .filter(|e| matches!(e, DecodeEvent::Telegram(_)))
        .count() as u64;
    assert_eq!(telegrams, whole.1.telegrams);
    let errors = whole
        .0
        .iter()
        .filter(|e| matches!(e, DecodeEvent::Error(_)))
        .count() as u64;
    assert_eq!(
        errors,
        whole.1.rejections(),
        "every rejection is counted once"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    if control & 1 == 1 {
        check(&frame::encode(rest), usize::from(control >> 1));
    } else {
        check(rest, usize::from(control >> 1) * 7);
    }
});
