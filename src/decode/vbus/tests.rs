use std::time::Instant;

use super::frame::checksum;
use super::*;
use crate::decode::DecodeError;

/// The Tasmota docs' DeltaSol BS Plus script, as `%r%` expands it.
const BS_PLUS: &str = ">D\n>M 1\n+1,3,v,0,9600,Solar\n\
1,AA100021421000010774vo12ut@#,time,,zeit,1\n\
1,AA100021421000010774vo0sw@10,S1 COL,C,sens1,1\n\
1,AA100021421000010774vo2sw@10,S2 TST1,C,sens2,1\n\
1,AA100021421000010774vo10ub@b1:1,R2 VALVE,,relay2,0\n\
1,AA100021421000010774vo8ub@1,Pump1 speed,%,pump1,0\n\
1,AA100021421000010774vo9ub@1,Pump2 speed,%,pump2,0\n\
1,AA100021421000010774vo22uw@1,p1000,Wh,p2,0\n#\n";

fn decoder(script: &str) -> VbusDecoder {
    let c = crate::script::compile(script.as_bytes());
    assert!(!c.has_errors(), "{:#?}", c.diagnostics);
    VbusDecoder::new(&c.script.unwrap().meters[0])
}

/// A VBus 1.0 telegram from the DeltaSol BS Plus (source 4221) carrying `payload`.
fn telegram(payload: &[u8]) -> Vec<u8> {
    let frames = payload.len().div_ceil(4);
    let mut t = vec![0xAA, 0x10, 0x00, 0x21, 0x42, 0x10, 0x00, 0x01, frames as u8];
    t.push(checksum(&t[1..9]));
    for chunk in payload.chunks(4) {
        let mut f = [0u8; 4];
        f[..chunk.len()].copy_from_slice(chunk);
        let septet = f
            .iter()
            .enumerate()
            .fold(0u8, |s, (i, b)| s | ((b >> 7) << i));
        let mut frame: Vec<u8> = f.iter().map(|b| b & 0x7F).collect();
        frame.push(septet);
        frame.push(checksum(&frame));
        t.extend(frame);
    }
    t
}

fn payload() -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0..2].copy_from_slice(&653i16.to_le_bytes()); // S1 65.3 C
    p[2..4].copy_from_slice(&(-52i16).to_le_bytes()); // S2 -5.2 C
    p[8] = 100; // pump 1
    p[9] = 0x85; // pump 2: 133, a byte with its top bit set
    p[10] = 0b10; // relay 2 on
    p[12..14].copy_from_slice(&(13u16 * 60 + 7).to_le_bytes()); // 13:07
    p[22..24].copy_from_slice(&1234u16.to_le_bytes());
    p
}

fn readings(events: &[DecodeEvent]) -> Vec<(u16, Value)> {
    events
        .iter()
        .filter_map(|e| match e {
            DecodeEvent::Telegram(t) => Some(t.readings.iter()),
            _ => None,
        })
        .flatten()
        .map(|r| (r.entry, r.value.clone()))
        .collect()
}

fn run(d: &mut VbusDecoder, bytes: &[u8]) -> Vec<DecodeEvent> {
    d.handle_bytes(Instant::now(), bytes);
    std::iter::from_fn(|| d.poll_event()).collect()
}

#[test]
fn a_telegram_publishes_words_bytes_bits_and_the_time_as_tasmota_reads_them() {
    let mut d = decoder(BS_PLUS);
    let ev = run(&mut d, &telegram(&payload()));
    assert_eq!(
        readings(&ev),
        vec![
            (1, Value::Text("13:07".into())),
            (2, Value::Number(65.3)),
            (3, Value::Number(-5.2)),
            (4, Value::Number(1.0)),
            (5, Value::Number(100.0)),
            (6, Value::Number(133.0)),
            (7, Value::Number(1234.0)),
        ]
    );
    assert_eq!(d.stats().telegrams, 1);
}

#[test]
fn a_bad_frame_checksum_rejects_the_telegram_and_publishes_nothing() {
    let mut d = decoder(BS_PLUS);
    let mut t = telegram(&payload());
    t[11] ^= 0x01;
    let ev = run(&mut d, &t);
    assert!(readings(&ev).is_empty());
    assert!(matches!(
        ev[..],
        [DecodeEvent::Error(DecodeError::BadCrc { .. })]
    ));
    assert_eq!(d.stats().crc_errors, 1);
}

#[test]
fn a_bad_header_checksum_rejects_the_telegram() {
    let mut d = decoder(BS_PLUS);
    let mut t = telegram(&payload());
    t[9] ^= 0x01;
    let ev = run(&mut d, &t);
    assert!(readings(&ev).is_empty());
    assert_eq!(d.stats().crc_errors, 1);
}

#[test]
fn a_truncated_telegram_is_rejected_when_the_next_one_starts_or_the_line_goes_quiet() {
    let mut d = decoder(BS_PLUS);
    let t = telegram(&payload());
    let mut bytes = t[..20].to_vec();
    bytes.extend_from_slice(&t);
    let ev = run(&mut d, &bytes);
    assert!(matches!(
        ev[0],
        DecodeEvent::Error(DecodeError::Truncated { bytes: 20, .. })
    ));
    assert_eq!(readings(&ev).len(), 7);
    let now = Instant::now();
    d.handle_bytes(now, &t[..15]);
    assert_eq!(d.poll_timeout(), Some(now + SILENCE));
    d.handle_timeout(now + SILENCE);
    assert!(matches!(
        d.poll_event(),
        Some(DecodeEvent::Error(DecodeError::Truncated { bytes: 15, .. }))
    ));
    assert_eq!(d.stats().rejected, 2);
}

#[test]
fn bytes_with_bit_7_set_are_no_vbus_and_other_devices_telegrams_read_nothing() {
    let mut d = decoder(BS_PLUS);
    // 9600 baud read at the wrong speed: high bytes after the sync.
    let ev = run(&mut d, &[0x11, 0xAA, 0x10, 0xF3, 0x22]);
    assert_eq!(ev[0], DecodeEvent::Discarded { bytes: 1 });
    assert!(matches!(
        ev[1],
        DecodeEvent::Error(DecodeError::Malformed { offset: 2, .. })
    ));
    // Another source (4278) on the same bus: a good telegram, no line of this script.
    let mut other = telegram(&payload());
    other[3] = 0x78;
    other[9] = checksum(&other[1..9]);
    let ev = run(&mut d, &other);
    assert_eq!(ev, vec![DecodeEvent::Telegram(Telegram::default())]);
}

#[test]
fn chunking_does_not_change_the_events() {
    let mut bytes = vec![0x01, 0x02];
    bytes.extend(telegram(&payload()));
    bytes.extend(telegram(&payload())[..30].iter());
    bytes.extend(telegram(&payload()));
    let mut whole = decoder(BS_PLUS);
    let expected = run(&mut whole, &bytes);
    let mut d = decoder(BS_PLUS);
    let mut got = Vec::new();
    for b in &bytes {
        for e in run(&mut d, &[*b]) {
            // Discards split by a poll are one run of skipped bytes.
            match (&e, got.last_mut()) {
                (
                    DecodeEvent::Discarded { bytes: n },
                    Some(DecodeEvent::Discarded { bytes: last }),
                ) => *last += n,
                _ => got.push(e),
            }
        }
    }
    assert_eq!(got, expected);
    assert_eq!(d.stats(), whole.stats());
}
