use std::time::{Duration, Instant};

use super::*;
use crate::decode::Decoder;

/// The OMNIPOWER Kx7 script of the community corpus: one block asking for four registers.
const KX7: &str = ">D\n>M 1\n+1,4,k,0,9600,KAMKx7,5,10,3F10040001041E043403FF\n\
1,3F100001kstr@i0:1000,EnergyIn,kWh,EnergyIn,3\n\
1,3F10x8xx041Ekstr@i0:1,VoltageP1,V,VoltageP1,1\n\
1,3F10x17xx0434kstr@i0:1,CurrentP1,A,CurrentP1,2\n\
1,3F10x26xx03FFkstr@i0:1,PowerIN,W,PowerIN,0\n#\n";

fn decoder(script: &str) -> KamstrupDecoder {
    let c = crate::script::compile(script.as_bytes());
    assert!(!c.has_errors(), "{:#?}", c.diagnostics);
    KamstrupDecoder::new(&c.script.unwrap().meters[0])
}

/// A register record: id, unit, mantissa length, sign/exponent byte, mantissa.
fn record(id: u16, exp: u8, mantissa: u32) -> Vec<u8> {
    let mut r = id.to_be_bytes().to_vec();
    r.extend_from_slice(&[0x1E, 4, exp]);
    r.extend_from_slice(&mantissa.to_be_bytes());
    r
}

/// A reply frame on the wire: CRC, stuffing, `40` ... `0D`.
fn wire(body: &[u8]) -> Vec<u8> {
    let mut w = request::frame(body);
    w[0] = frame::START;
    w
}

fn kx7_reply() -> Vec<u8> {
    let mut body = vec![0x3F, 0x10];
    body.extend(record(0x0001, 0x00, 123_456));
    body.extend(record(0x041E, 0x41, 2301));
    body.extend(record(0x0434, 0x42, 1250));
    body.extend(record(0x03FF, 0x00, 0x0D40));
    body
}

fn events(d: &mut KamstrupDecoder) -> Vec<DecodeEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

fn numbers(ev: &[DecodeEvent]) -> Vec<(u16, f64)> {
    ev.iter()
        .filter_map(|e| match e {
            DecodeEvent::Telegram(t) => Some(t.readings.iter()),
            _ => None,
        })
        .flatten()
        .map(|r| match &r.value {
            Value::Number(n) => (r.entry, *n),
            Value::Text(t) => panic!("text {t}"),
        })
        .collect()
}

#[test]
fn a_polled_reply_publishes_every_register_of_its_block_with_the_exponents_applied() {
    let mut d = decoder(KX7);
    let now = Instant::now();
    let request = d.poll_transmit(now).unwrap();
    assert_eq!(
        request,
        request::frame(&[0x3F, 0x10, 0x04, 0x00, 0x01, 0x04, 0x1E, 0x04, 0x34, 0x03, 0xFF])
    );
    // Byte by byte, as a slow line delivers it; the power mantissa 0D40 is stuffed.
    for b in wire(&kx7_reply()) {
        d.handle_bytes(now, &[b]);
    }
    assert_eq!(
        numbers(&events(&mut d)),
        vec![(1, 123.456), (2, 230.1), (3, 12.5), (4, 3392.0)]
    );
    assert_eq!(d.stats().telegrams, 1);
    assert_eq!(d.kamstrup_stats().requests, 1);
}

#[test]
fn a_bad_crc_publishes_nothing_and_is_counted() {
    let mut d = decoder(KX7);
    let now = Instant::now();
    d.poll_transmit(now);
    let mut w = wire(&kx7_reply());
    w[5] ^= 0x01;
    d.handle_bytes(now, &w);
    let ev = events(&mut d);
    assert!(numbers(&ev).is_empty());
    assert!(matches!(
        ev[..],
        [DecodeEvent::Error(DecodeError::BadCrc { .. })]
    ));
    assert_eq!(d.stats().crc_errors, 1);
}

#[test]
fn a_reply_to_another_request_publishes_nothing() {
    let mut d = decoder(KX7);
    let now = Instant::now();
    d.poll_transmit(now);
    let mut body = vec![0x3F, 0x10];
    body.extend(record(0x003C, 0x00, 5));
    d.handle_bytes(now, &wire(&body));
    let ev = events(&mut d);
    assert!(numbers(&ev).is_empty());
    let DecodeEvent::Error(e) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert!(e.to_string().contains("register 003C"), "{e}");
    assert_eq!(d.kamstrup_stats().wrong_request, 1);
    // Another CID is no reply to GetRegister either.
    d.poll_transmit(now + Duration::from_secs(1));
    d.handle_bytes(now, &wire(&[0x3F, 0x02, 0x01, 0x23, 0x45, 0x67]));
    assert!(numbers(&events(&mut d)).is_empty());
    assert_eq!(d.kamstrup_stats().wrong_request, 2);
}

#[test]
fn a_reply_with_nobody_asking_and_a_request_without_reply_are_counted() {
    let mut d = decoder(KX7);
    let now = Instant::now();
    d.poll_transmit(now);
    d.handle_bytes(now, &wire(&kx7_reply()));
    assert_eq!(numbers(&events(&mut d)).len(), 4);
    // The same reply again: nobody asked.
    d.handle_bytes(now, &wire(&kx7_reply()));
    assert!(numbers(&events(&mut d)).is_empty());
    assert_eq!(d.kamstrup_stats().unsolicited, 1);
    // A request, silence, the next request.
    d.poll_transmit(now + Duration::from_secs(1));
    d.poll_transmit(now + Duration::from_secs(2));
    assert_eq!(d.kamstrup_stats().no_reply, 1);
}

#[test]
fn silence_in_the_middle_of_a_frame_ends_it_as_truncated() {
    let mut d = decoder(KX7);
    let now = Instant::now();
    d.poll_transmit(now);
    let w = wire(&kx7_reply());
    d.handle_bytes(now, &w[..10]);
    assert_eq!(d.poll_timeout(), Some(now + SILENCE));
    d.handle_timeout(now + SILENCE);
    let ev = events(&mut d);
    assert!(matches!(
        ev[..],
        [DecodeEvent::Error(DecodeError::Truncated { .. })]
    ));
    assert_eq!(d.stats().rejected, 1);
    // The rest arriving late is noise, not a value.
    d.handle_bytes(now + SILENCE, &w[10..]);
    assert!(numbers(&events(&mut d)).is_empty());
}

#[test]
fn a_capture_answers_the_blocks_in_turn_and_a_date_line_reads_as_tasmota_shows_it() {
    let script = ">D\n>M 1\n+1,3,kN2,0,1200,KSMC403,1,5,3F1001003C,3F1001007B\n\
1,3F10003Ckstr@i0:1,Energy,kWh,Total,3\n\
1,3F10007Bkstr@i1:#,max. Fluss am,,MaxFlowDate,0\n#\n";
    let mut d = decoder(script);
    let now = Instant::now();
    let mut first = vec![0x3F, 0x10];
    first.extend(record(0x003C, 0x00, 4711));
    let mut second = vec![0x3F, 0x10];
    second.extend(record(0x007B, 0x00, 220_901));
    d.handle_bytes(now, &wire(&first));
    d.handle_bytes(now, &wire(&second));
    let readings: Vec<Reading> = events(&mut d)
        .into_iter()
        .filter_map(|e| match e {
            DecodeEvent::Telegram(t) => Some(t.readings),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        readings,
        vec![
            Reading {
                entry: 1,
                value: Value::Number(4711.0)
            },
            Reading {
                entry: 2,
                value: Value::Text("01.09.22".into())
            }
        ]
    );
}

#[test]
fn without_request_blocks_a_reply_is_read_as_the_reply_to_block_0() {
    let script = ">D\n>M 1\n+1,3,k,0,9600,K\n1,3F100001kstr@i0:1000,E,kWh,E,3\n#\n";
    let mut d = decoder(script);
    let now = Instant::now();
    assert_eq!(d.poll_transmit(now), None);
    d.handle_bytes(now, &wire(&kx7_reply()));
    assert_eq!(numbers(&events(&mut d)), vec![(1, 123.456)]);
}
