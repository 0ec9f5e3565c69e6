//! The eBus decoder on scripts compiled by the real front end: telegrams cut at SYN, escapes undone,
//! every part's CRC checked, every kind of damage counted and never published, and chunking that
//! changes nothing.

use super::frame::{crc8, crc8_unescaped, escape, SYN};
use super::*;
use crate::decode::DecodeError;
use crate::script::model::Script;
use proptest::prelude::*;

/// The Wolf CSZ script of the Tasmota docs (the corpus' only `e` script), a few of its lines.
const WOLF: &str = ">D\n>M 1\n+1,3,e,0,2400,EBUS\n\
1,03fe0503xxxxxxxxxxxxuu@1,Returns,C,Returns,0\n\
1,03fe0503xxxxuu@1,Status,,Status,0\n\
1,03fe0503xxxxxxuu@b3:1,Burner on,,Burner,0\n\
1,xxxx5014xxxxxxxxxxuu@1,Room temperature,C,Roomtemp,0\n#\n";

fn compile(source: &str) -> Script {
    let compiled = crate::script::compile(source.as_bytes());
    compiled
        .script
        .unwrap_or_else(|| panic!("{:?}", compiled.diagnostics))
}

fn decoder(source: &str) -> EbusDecoder {
    EbusDecoder::new(&compile(source).meters[0])
}

/// A master part `QQ ZZ PB SB NN data CRC`, unescaped.
fn master(qq: u8, zz: u8, pb: u8, sb: u8, data: &[u8]) -> Vec<u8> {
    let mut t = vec![qq, zz, pb, sb, data.len() as u8];
    t.extend_from_slice(data);
    t.push(crc8_unescaped(&t));
    t
}

/// A slave answer `NN data CRC`, unescaped.
fn answer(data: &[u8]) -> Vec<u8> {
    let mut t = vec![data.len() as u8];
    t.extend_from_slice(data);
    t.push(crc8_unescaped(&t));
    t
}

/// Symbols on the wire between SYNs.
fn on_bus(symbols: &[u8]) -> Vec<u8> {
    let mut w = vec![SYN];
    w.extend(escape(symbols));
    w.push(SYN);
    w
}

/// The Wolf heater's broadcast of the csowada/ebus test (`03 FE 05 03 08 ...`).
const BROADCAST: [u8; 15] = [
    0x03, 0xFE, 0x05, 0x03, 0x08, 0x01, 0x00, 0x40, 0xFF, 0x2C, 0x17, 0x30, 0x0E, 0x96, 0xAA,
];

fn drain(d: &mut EbusDecoder) -> Vec<DecodeEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

fn values(events: &[DecodeEvent]) -> Vec<(u16, f64)> {
    events
        .iter()
        .filter_map(|e| match e {
            DecodeEvent::Telegram(t) => Some(t),
            _ => None,
        })
        .flat_map(|t| &t.readings)
        .map(|r| match r.value {
            Value::Number(v) => (r.entry, v),
            Value::Text(_) => panic!("text from an eBus line"),
        })
        .collect()
}

fn errors(events: &[DecodeEvent]) -> Vec<DecodeError> {
    events
        .iter()
        .filter_map(|e| match e {
            DecodeEvent::Error(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Tasmota's bit-by-bit CRC as the eBus specification describes it, as an independent oracle.
fn crc_bitwise(data: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &byte in data {
        let mut d = byte;
        for _ in 0..8 {
            let poly = if crc & 0x80 != 0 { 0x9B } else { 0 };
            crc = (crc << 1) | (d >> 7);
            crc ^= poly;
            d <<= 1;
        }
    }
    crc
}

#[test]
fn the_crc_is_the_one_the_heater_sent() {
    assert_eq!(crc8(&BROADCAST[..13]), 0x96);
    // The escaped `A9 00` counts as two bytes, as on the wire (csowada/ebus's FF FE FE 01 test).
    let hallo = crate::hex::decode(b"FFFEFE010A48414C4C4F2057454CA900").unwrap();
    assert_eq!(crc8(&hallo), 0xBB);
    assert_eq!(crc8_unescaped(&escape_undone(&hallo)), 0xBB);
}

fn escape_undone(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < wire.len() {
        if wire[i] == 0xA9 {
            out.push(if wire[i + 1] == 0 { 0xA9 } else { 0xAA });
            i += 2;
        } else {
            out.push(wire[i]);
            i += 1;
        }
    }
    out
}

proptest! {
    #[test]
    fn the_table_crc_equals_the_bitwise_one(data in proptest::collection::vec(any::<u8>(), 0..40)) {
        prop_assert_eq!(crc8(&data), crc_bitwise(&data));
    }

    #[test]
    fn any_chunking_gives_the_same_events(cuts in proptest::collection::vec(0usize..60, 0..6)) {
        let mut stream = on_bus(&master(0x03, 0xFE, 0x05, 0x03, &[1, 0, 0x40, 0xFF, 0x2C, 0x17, 0x30, 0x0E]));
        stream.extend(escape(&master(0x03, 0xFE, 0x05, 0x03, &[1, 0xA9, 0xAA, 0, 9, 8, 7, 6])));
        stream.push(SYN);
        stream.extend([0x10, 0x20, SYN]);
        let now = Instant::now();
        let mut whole = decoder(WOLF);
        whole.handle_bytes(now, &stream);
        let expected = drain(&mut whole);
        let mut chunked = decoder(WOLF);
        let mut cuts = cuts;
        cuts.push(stream.len());
        cuts.sort();
        let mut from = 0;
        let mut got = Vec::new();
        for c in cuts {
            let c = c.min(stream.len()).max(from);
            chunked.handle_bytes(now, &stream[from..c]);
            got.extend(drain(&mut chunked));
            from = c;
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(chunked.stats(), whole.stats());
    }

    #[test]
    fn random_bytes_never_panic_and_are_all_accounted_for(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut d = decoder(WOLF);
        d.handle_bytes(Instant::now(), &bytes);
        d.handle_end();
        let _ = drain(&mut d);
        prop_assert_eq!(d.stats().bytes_in, bytes.len() as u64);
    }
}

#[test]
fn a_broadcast_gives_the_wolf_lines_their_values() {
    let mut d = decoder(WOLF);
    let mut stream = vec![SYN, SYN];
    stream.extend_from_slice(&BROADCAST);
    d.handle_bytes(Instant::now(), &stream);
    let events = drain(&mut d);
    // Returns: byte 10 (0x17 = 23), Status: byte 6 (0x00), Burner: bit 3 of byte 7 (0x40) = 0.
    assert_eq!(values(&events), vec![(1, 23.0), (2, 0.0), (3, 0.0)]);
    assert_eq!(d.stats().telegrams, 1);
    assert_eq!(d.ebus_stats().broadcasts, 1);
}

#[test]
fn escaped_data_is_read_at_its_unescaped_offset() {
    // Data 01 A9 AA 00 ...: on the wire `A9 00` and `A9 01`; the Returns byte (offset 10) stays put.
    let t = master(
        0x03,
        0xFE,
        0x05,
        0x03,
        &[0x01, 0xA9, 0xAA, 0x00, 0x00, 0x2A, 0, 0],
    );
    let wire = on_bus(&t);
    assert_eq!(wire.len(), t.len() + 2 + 2);
    let mut d = decoder(WOLF);
    d.handle_bytes(Instant::now(), &wire);
    let events = drain(&mut d);
    assert_eq!(values(&events), vec![(1, 42.0), (2, 0xA9 as f64), (3, 1.0)]);
}

#[test]
fn a_bad_crc_publishes_nothing_and_is_counted() {
    let mut t = BROADCAST;
    t[10] = 0x18; // the Returns temperature, changed in transit
    let mut stream = vec![SYN];
    stream.extend_from_slice(&t);
    let mut d = decoder(WOLF);
    d.handle_bytes(Instant::now(), &stream);
    let events = drain(&mut d);
    assert!(values(&events).is_empty());
    assert!(matches!(
        errors(&events)[..],
        [DecodeError::BadCrc { expected: 0x96, .. }]
    ));
    assert_eq!(d.stats().crc_errors, 1);
}

#[test]
fn a_truncated_telegram_publishes_nothing_and_says_so() {
    let mut stream = vec![SYN];
    stream.extend_from_slice(&BROADCAST[..9]);
    stream.push(SYN);
    let mut d = decoder(WOLF);
    d.handle_bytes(Instant::now(), &stream);
    let events = drain(&mut d);
    assert!(values(&events).is_empty());
    let errs = errors(&events);
    assert!(
        matches!(&errs[..], [DecodeError::Truncated { bytes: 9, why }] if why.contains("master part")),
        "{errs:?}"
    );
    assert_eq!(d.stats().rejected, 1);
}

#[test]
fn garbage_between_syns_is_rejected_and_the_next_telegram_still_decodes() {
    let mut stream = vec![
        SYN, 0x13, 0x57, SYN, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, SYN,
    ];
    stream.extend_from_slice(&BROADCAST);
    let mut d = decoder(WOLF);
    d.handle_bytes(Instant::now(), &stream);
    let events = drain(&mut d);
    let errs = errors(&events);
    assert!(
        matches!(errs[0], DecodeError::Truncated { bytes: 2, .. }),
        "{errs:?}"
    );
    // 0x42 is no master address; the message says where, in stream bytes.
    assert_eq!(
        errs[1].to_string(),
        "malformed telegram at byte 4: QQ 42 is no master address"
    );
    assert_eq!(values(&events), vec![(1, 23.0), (2, 0.0), (3, 0.0)]);
    assert_eq!(d.stats().rejected, 2);
    assert_eq!(d.stats().telegrams, 1);
}

#[test]
fn bytes_after_the_telegram_end_reject_it() {
    let mut t = master(
        0x03,
        0xFE,
        0x05,
        0x03,
        &[1, 0, 0x40, 0xFF, 0x2C, 0x17, 0x30, 0x0E],
    );
    t.extend([0x00, 0x12]);
    let mut d = decoder(WOLF);
    d.handle_bytes(Instant::now(), &on_bus(&t));
    let events = drain(&mut d);
    assert!(values(&events).is_empty());
    assert!(errors(&events)[0]
        .to_string()
        .contains("2 bytes after the end"));
}

#[test]
fn a_master_slave_telegram_reads_the_answer_at_its_offset() {
    // QQ 70 ZZ 51 PB 50 SB 14, answer `09 00 40 ...`: Room temperature reads byte 9 of the master
    // part; a line for the answer reads past the master's CRC and the ACK.
    let source = ">D\n>M 1\n+1,3,e,0,2400,EBUS\n\
1,xxxx5014xxxxxxxxxxuu@1,Room,C,room,0\n\
1,7051501407x7xxxxxxuuuu@1,Answer,C,ans,0\n#\n";
    let mut t = master(
        0x70,
        0x51,
        0x50,
        0x14,
        &[0x41, 0x00, 0x05, 0x00, 0x17, 0x00, 0x5A],
    );
    t.push(0x00);
    t.extend(answer(&[
        0x00, 0x40, 0x80, 0x16, 0x00, 0xD8, 0x14, 0x64, 0x00,
    ]));
    t.push(0x00);
    let mut d = decoder(source);
    d.handle_bytes(Instant::now(), &on_bus(&t));
    let events = drain(&mut d);
    // Room: byte 9 = 0x17; Answer: skip 7 data, CRC, ACK, NN, then bytes 0x00 0x40 -> last is 0x40.
    assert_eq!(values(&events), vec![(1, 23.0), (2, 64.0)]);
    assert_eq!(d.ebus_stats().master_slave, 1);
}

#[test]
fn a_bad_answer_crc_rejects_the_whole_telegram() {
    let mut t = master(
        0x70,
        0x51,
        0x50,
        0x14,
        &[0x41, 0x00, 0x05, 0x00, 0x17, 0x00, 0x5A],
    );
    t.push(0x00);
    let mut a = answer(&[0x00, 0x40]);
    a[1] = 0x01;
    t.extend(a);
    t.push(0x00);
    let mut d = decoder(WOLF);
    d.handle_bytes(Instant::now(), &on_bus(&t));
    let events = drain(&mut d);
    assert!(values(&events).is_empty());
    assert_eq!(d.stats().crc_errors, 1);
}

#[test]
fn a_refused_master_part_is_read_from_its_repeat() {
    let good = master(
        0x70,
        0x51,
        0x50,
        0x14,
        &[0x41, 0x00, 0x05, 0x00, 0x17, 0x00, 0x5A],
    );
    let mut damaged = good.clone();
    damaged[9] = 0x99;
    let mut t = damaged;
    t.push(0xFF); // NAK
    t.extend(&good);
    t.push(0x00);
    t.extend(answer(&[0x01]));
    t.push(0x00);
    let mut d = decoder(WOLF);
    d.handle_bytes(Instant::now(), &on_bus(&t));
    let events = drain(&mut d);
    assert_eq!(values(&events), vec![(4, 23.0)]);
    assert_eq!(d.ebus_stats().naks, 1);
}

#[test]
fn an_unanswered_request_still_gives_its_master_part() {
    let t = master(
        0x70,
        0x51,
        0x50,
        0x14,
        &[0x41, 0x00, 0x05, 0x00, 0x17, 0x00, 0x5A],
    );
    let mut d = decoder(WOLF);
    d.handle_bytes(Instant::now(), &on_bus(&t));
    let events = drain(&mut d);
    assert_eq!(values(&events), vec![(4, 23.0)]);
    assert_eq!(d.ebus_stats().unanswered, 1);
}

#[test]
fn joining_the_bus_mid_telegram_discards_the_tail_without_an_error() {
    let mut stream = BROADCAST[6..].to_vec();
    stream.extend_from_slice(&BROADCAST);
    let mut d = decoder(WOLF);
    d.handle_bytes(Instant::now(), &stream);
    let events = drain(&mut d);
    assert_eq!(events[0], DecodeEvent::Discarded { bytes: 8 });
    assert!(errors(&events).is_empty());
    assert_eq!(values(&events).len(), 3);
}

#[test]
fn silence_in_the_middle_of_a_telegram_rejects_it_after_the_timeout() {
    let t0 = Instant::now();
    let mut d = decoder(WOLF);
    d.handle_bytes(t0, &[SYN, 0x03, 0xFE, 0x05, 0x03, 0x08, 0x01]);
    assert_eq!(d.poll_timeout(), Some(t0 + SILENCE));
    d.handle_timeout(t0 + SILENCE / 2);
    assert!(drain(&mut d).is_empty());
    d.handle_timeout(t0 + SILENCE);
    let errs = errors(&drain(&mut d));
    assert!(
        matches!(&errs[..], [DecodeError::Truncated { why, .. }] if why.contains("quiet")),
        "{errs:?}"
    );
    assert_eq!(d.poll_timeout(), None);
}

#[test]
fn a_bus_without_syns_is_dropped_as_too_long_once() {
    let mut d = decoder(WOLF);
    let mut stream = vec![SYN];
    stream.extend(std::iter::repeat_n(0x55, 1000));
    d.handle_bytes(Instant::now(), &stream);
    let events = drain(&mut d);
    assert_eq!(
        errors(&events),
        vec![DecodeError::TooLong {
            limit: frame::MAX_RAW
        }]
    );
    d.handle_bytes(Instant::now(), &[SYN]);
    assert_eq!(
        drain(&mut d),
        vec![DecodeEvent::Discarded {
            bytes: 1000 - frame::MAX_RAW
        }]
    );
}

#[test]
fn a_bad_escape_says_which_byte() {
    let mut d = decoder(WOLF);
    d.handle_bytes(
        Instant::now(),
        &[SYN, 0x03, 0xFE, 0xA9, 0x07, 0x00, 0x00, SYN],
    );
    assert_eq!(
        errors(&drain(&mut d))[0].to_string(),
        "malformed telegram at byte 3: escape A9 followed by 07, not 00 or 01"
    );
}

#[test]
fn explain_lists_each_part() {
    let mut t = master(0x70, 0x51, 0x50, 0x14, &[0x41]);
    t.push(0x00);
    t.extend(answer(&[0x02, 0x03]));
    t.push(0x00);
    let text = explain(&on_bus(&t)).text;
    let crc = t[6];
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "telegram at byte 1 (master-slave): QQ 70 ZZ 51 PB 50 SB 14 NN 01 data [41] CRC {crc:02X} ok"
        )
    );
    assert_eq!(lines[1], "  ACK 00");
    assert!(
        lines[2].starts_with("  answer: NN 02 data [02 03] CRC "),
        "{text}"
    );
    assert_eq!(lines[3], "  ACK 00");
}

#[test]
fn a_master_part_refused_twice_publishes_nothing() {
    let good = master(
        0x70,
        0x51,
        0x50,
        0x14,
        &[0x41, 0x00, 0x05, 0x00, 0x17, 0x00, 0x5A],
    );
    let mut t = good.clone();
    t.push(0xFF);
    t.extend(&good);
    t.push(0xFF);
    let mut d = decoder(WOLF);
    d.handle_bytes(Instant::now(), &on_bus(&t));
    let events = drain(&mut d);
    assert!(values(&events).is_empty());
    assert!(errors(&events)[0].to_string().contains("second NAK"));
}
