//! Tests of the `o` decoder: framing, matching, resync, bounds, chunking.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::check::{bcc, crc16_arc};
use super::frame::{Framer, MAX_TELEGRAM};
use super::matcher::parse_number;
use super::*;
use crate::decode::{DecodeError, Reading, Value};

mod support {
    use crate::script::compile;
    use crate::script::model::*;
    include!("../../../tests/support/obis_meter.rs");
}
use support::obis_meter;

/// A DSMR telegram from its lines (CR LF line ends), with a correct CRC.
fn dsmr(lines: &[&str]) -> Vec<u8> {
    let mut t = lines.join("\r\n").into_bytes();
    t.extend_from_slice(b"\r\n!");
    let crc = crc16_arc(&t);
    t.extend_from_slice(format!("{crc:04X}\r\n").as_bytes());
    t
}

/// An IEC 62056-21 mode C readout: identification, STX, data lines, `!` CR LF ETX BCC.
fn iec(ident: &str, lines: &[&str]) -> Vec<u8> {
    let mut t = format!("{ident}\r\n").into_bytes();
    t.push(0x02);
    let data_start = t.len();
    for l in lines {
        t.extend_from_slice(l.as_bytes());
        t.extend_from_slice(b"\r\n");
    }
    t.extend_from_slice(b"!\r\n\x03");
    let b = bcc(&t[data_start..]);
    t.push(b);
    t
}

fn decoder(descriptors: &[&str]) -> ObisDecoder {
    ObisDecoder::new(&obis_meter(descriptors))
}

/// Feed `bytes` in the given chunk sizes (cycled), polling after each chunk, then end the input.
fn run(d: &mut ObisDecoder, bytes: &[u8], chunks: &[usize]) -> Vec<DecodeEvent> {
    let now = Instant::now();
    let mut events = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < bytes.len() {
        let n = chunks
            .get(k % chunks.len().max(1))
            .copied()
            .unwrap_or(bytes.len())
            .max(1);
        let end = (i + n).min(bytes.len());
        d.handle_bytes(now, &bytes[i..end]);
        while let Some(e) = d.poll_event() {
            events.push(e);
        }
        i = end;
        k += 1;
    }
    d.handle_end();
    while let Some(e) = d.poll_event() {
        events.push(e);
    }
    merge_discards(events)
}

/// Consecutive `Discarded` events as one (a caller polling between chunks may see them split).
fn merge_discards(events: Vec<DecodeEvent>) -> Vec<DecodeEvent> {
    let mut out: Vec<DecodeEvent> = Vec::new();
    for e in events {
        if let (DecodeEvent::Discarded { bytes }, Some(DecodeEvent::Discarded { bytes: last })) =
            (&e, out.last_mut())
        {
            *last += bytes;
            continue;
        }
        out.push(e);
    }
    out
}

fn whole(descriptors: &[&str], bytes: &[u8]) -> (Vec<DecodeEvent>, DecodeStats) {
    let mut d = decoder(descriptors);
    let ev = run(&mut d, bytes, &[]);
    (ev, d.stats())
}

fn num(entry: u16, v: f64) -> Reading {
    Reading {
        entry,
        value: Value::Number(v),
    }
}

fn text(entry: u16, v: &str) -> Reading {
    Reading {
        entry,
        value: Value::Text(v.to_string()),
    }
}

fn telegrams(events: &[DecodeEvent]) -> Vec<&Telegram> {
    events
        .iter()
        .filter_map(|e| match e {
            DecodeEvent::Telegram(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn all_readings(events: &[DecodeEvent]) -> usize {
    telegrams(events).iter().map(|t| t.readings.len()).sum()
}

const MONTHLY: &str = "0-0:98.1.0(210301000000W)(000249.070*kWh)(000100.816*kWh)(000148.254*kWh)(000047.903*kWh)\
(000032.349*kWh)(000015.554*kWh)(000003.513*kvarh)(000150.665*kvarh)(000003.498*kvarh)(000000.015*kvarh)\
(000027.119*kvarh)(000123.546*kvarh)(000296.974*kWh)(04.872*kW)(04.872*kW)(04.072*kW)(01.844*kW)(01.672*kW)(01.844*kW)";

fn sample() -> Vec<u8> {
    dsmr(&[
        "/ABC5TEST",
        "",
        "0-0:1.0.0(240304112520W)",
        "0-0:96.1.1(4B384547303034303436333935353037)",
        "1-0:1.8.0(001234.567*kWh)",
        "1-0:1.8.1*255(000100.001*kWh)",
        "1-0:32.7.0(233.9*V)",
        "1-0:14.7.0(49.98*Hz)",
        "1-0:2.7.0(-00.123*kW)",
        "0-0:96.13.0()",
        "0-0:96.50.68(ON)",
        "0-1:24.2.1(101209112500W)(12785.123*m3)",
        MONTHLY,
    ])
}

#[test]
fn dsmr_telegram_values_come_out_scaled_in_line_order() {
    let (ev, stats) = whole(
        &[
            "1-0:1.8.0(@1",
            "1-0:1.8.1*255(@1000",
            "1-0:32.7.0(@0.1",
            "1-0:2.7.0(@1",
            "0-1:24.2.1(@(1:1",
            "0-1:24.2.1(@1",
            "0-0:98.1.0(@(1:1",
            "0-0:98.1.0(@(19:1",
            "0-0:96.1.1(@#)",
            "1-0:14.7.0(@1+0.02",
        ],
        &sample(),
    );
    assert_eq!(
        ev,
        vec![DecodeEvent::Telegram(Telegram {
            readings: vec![
                text(9, "4B384547303034303436333935353037"),
                num(1, 1234.567),
                num(2, 0.100001),
                num(3, 2339.0),
                num(10, 50.0),
                num(4, -0.123),
                num(5, 12785.123),
                num(6, 101209112500.0),
                num(7, 249.070),
                num(8, 1.844),
            ]
        })]
    );
    assert_eq!(stats.telegrams, 1);
    assert_eq!(stats.crc_errors, 0);
}

#[test]
fn a_bad_crc_publishes_nothing_and_is_counted() {
    let mut t = sample();
    // Change one digit of a value: the CRC no longer fits.
    let p = t.windows(7).position(|w| w == b"1234.56").unwrap();
    t[p] = b'9';
    let (ev, stats) = whole(&["1-0:1.8.0(@1"], &t);
    assert!(
        matches!(
            ev.as_slice(),
            [DecodeEvent::Error(DecodeError::BadCrc { .. })]
        ),
        "{ev:?}"
    );
    assert_eq!(stats.crc_errors, 1);
    assert_eq!(stats.telegrams, 0);
}

#[test]
fn a_crc_with_fewer_than_four_digits_is_checked_as_a_number() {
    // Find lines whose CRC is below 0x1000 and send it unpadded, as some meters do.
    for n in 0..2000 {
        let mut t = dsmr(&["/X", &format!("1-0:1.8.0({n}*kWh)")]);
        let crc = crc16_arc(&t[..t.len() - 6]);
        if crc < 0x1000 {
            t.truncate(t.len() - 6);
            t.extend_from_slice(format!("{crc:X}\r\n").as_bytes());
            let (ev, _) = whole(&["1-0:1.8.0(@1"], &t);
            assert_eq!(telegrams(&ev)[0].readings, vec![num(1, f64::from(n))]);
            return;
        }
    }
    panic!("no short CRC found");
}

#[test]
fn telegrams_without_crc_are_accepted_with_lf_only_line_ends() {
    let t = b"/ISk5MT382-1000\n\n1-0:1.8.1(12345.678*kWh)\n0-0:96.14.0(0002)\n!\n";
    let (ev, stats) = whole(&["1-0:1.8.1(@1", "0-0:96.14.0(@1"], t);
    assert_eq!(
        ev,
        vec![DecodeEvent::Telegram(Telegram {
            readings: vec![num(1, 12345.678), num(2, 2.0)]
        })]
    );
    assert_eq!(stats.telegrams, 1);
}

#[test]
fn a_bang_at_the_very_end_completes_at_the_end_of_input_or_after_a_silence() {
    let t = b"/LGZ52ZMD120APt.G03\r\n1.8.1(001846.0*kWh)\r\n!";
    let (ev, _) = whole(&["1.8.1(@1"], t);
    assert_eq!(telegrams(&ev)[0].readings, vec![num(1, 1846.0)]);

    let mut d = decoder(&["1.8.1(@1"]);
    let t0 = Instant::now();
    d.handle_bytes(t0, t);
    assert_eq!(d.poll_event(), None);
    assert_eq!(d.poll_timeout(), Some(t0 + SILENCE));
    d.handle_timeout(t0 + SILENCE - Duration::from_millis(1));
    assert_eq!(d.poll_event(), None);
    d.handle_timeout(t0 + SILENCE);
    assert!(matches!(d.poll_event(), Some(DecodeEvent::Telegram(_))));
}

#[test]
fn iec_readout_with_a_good_bcc_decodes_and_a_bad_one_is_rejected() {
    let lines = [
        "F.F(00000000)",
        "0.0.0(12345678)",
        "1.8.0(001846.0*kWh)",
        "C.7.1(0003)",
    ];
    let good = iec("/LOG5LK11BL804011", &lines);
    let (ev, stats) = whole(&["1.8.0(@1", "C.7.1(@1", "0.0.0(@#)"], &good);
    assert_eq!(
        ev,
        vec![DecodeEvent::Telegram(Telegram {
            readings: vec![text(3, "12345678"), num(1, 1846.0), num(2, 3.0)]
        })]
    );
    assert_eq!(stats.telegrams, 1);

    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    let (ev, stats) = whole(&["1.8.0(@1"], &bad);
    assert!(
        matches!(
            ev.as_slice(),
            [DecodeEvent::Error(DecodeError::BadCrc { .. })]
        ),
        "{ev:?}"
    );
    assert_eq!(stats.crc_errors, 1);

    // Without ETX/BCC (some meters stop after `!`): accepted unchecked.
    let cut = &good[..good.len() - 2];
    let (ev, _) = whole(&["1.8.0(@1"], cut);
    assert_eq!(telegrams(&ev)[0].readings, vec![num(1, 1846.0)]);
}

#[test]
fn a_readout_starting_at_stx_and_an_echoed_sign_on_are_handled() {
    let mut t = b"\x7f\x7f/?!\r\n".to_vec();
    t.extend_from_slice(&iec("/ACE0\\3k260V01.19", &["1.8.0(013925.5*kWh)"]));
    let (ev, stats) = whole(&["1.8.0(@1"], &t);
    assert_eq!(
        ev,
        vec![
            DecodeEvent::Discarded { bytes: 7 },
            DecodeEvent::Telegram(Telegram {
                readings: vec![num(1, 13925.5)]
            })
        ]
    );
    assert_eq!(stats.bytes_skipped, 7);

    let full = iec("/X", &["1.8.0(1.5*kWh)"]);
    let from_stx = &full[4..]; // identification line not captured
    let (ev, _) = whole(&["1.8.0(@1"], from_stx);
    assert_eq!(
        ev,
        vec![DecodeEvent::Telegram(Telegram {
            readings: vec![num(1, 1.5)]
        })]
    );
}

#[test]
fn garbage_before_and_between_telegrams_is_reported_and_skipped() {
    let one = dsmr(&["/A", "1-0:1.8.0(1*kWh)"]);
    let two = dsmr(&["/A", "1-0:1.8.0(2*kWh)"]);
    let mut s = b"noise\r\n\x00\xff(x/y)\r\n".to_vec();
    s.extend_from_slice(&one);
    s.extend_from_slice(b"\r\n\xfe junk\r\n");
    s.extend_from_slice(&two);
    let (ev, stats) = whole(&["1-0:1.8.0(@1"], &s);
    assert_eq!(
        ev,
        vec![
            DecodeEvent::Discarded { bytes: 16 },
            DecodeEvent::Telegram(Telegram {
                readings: vec![num(1, 1.0)]
            }),
            DecodeEvent::Discarded { bytes: 10 },
            DecodeEvent::Telegram(Telegram {
                readings: vec![num(1, 2.0)]
            }),
        ]
    );
    assert_eq!(stats.bytes_skipped, 26);
    assert_eq!(stats.telegrams, 2);
}

#[test]
fn a_half_telegram_is_dropped_and_the_next_start_resynchronises() {
    let full = dsmr(&["/A", "1-0:1.8.0(1*kWh)", "1-0:2.8.0(2*kWh)"]);
    // Stream joined in the middle: the tail's CRC cannot be checked, so it is dropped.
    let mut s = full[10..].to_vec();
    s.extend_from_slice(&full);
    // A telegram cut short by the next start.
    s.extend_from_slice(&full[..20]);
    s.extend_from_slice(&full);
    let (ev, stats) = whole(&["1-0:1.8.0(@1", "1-0:2.8.0(@1"], &s);
    assert!(matches!(ev[0], DecodeEvent::Discarded { .. }), "{ev:?}");
    assert!(matches!(ev[1], DecodeEvent::Telegram(_)));
    assert!(
        matches!(
            ev[2],
            DecodeEvent::Error(DecodeError::Truncated { bytes: 20, .. })
        ),
        "{ev:?}"
    );
    assert!(matches!(ev[3], DecodeEvent::Telegram(_)));
    assert_eq!(ev.len(), 4);
    assert_eq!(stats.telegrams, 2);
    assert_eq!(stats.rejected, 1);
}

#[test]
fn a_lost_byte_gives_a_crc_error_and_the_next_telegram_decodes() {
    let full = dsmr(&["/A", "1-0:1.8.0(123.456*kWh)"]);
    let mut s = full.clone();
    s.remove(15);
    s.extend_from_slice(&full);
    let (ev, stats) = whole(&["1-0:1.8.0(@1"], &s);
    assert!(matches!(
        ev[0],
        DecodeEvent::Error(DecodeError::BadCrc { .. })
    ));
    assert_eq!(telegrams(&ev).len(), 1);
    assert_eq!(stats.crc_errors, 1);
}

#[test]
fn a_truncated_telegram_at_the_end_of_input_is_an_error() {
    let full = dsmr(&["/A", "1-0:1.8.0(1*kWh)"]);
    let (ev, stats) = whole(&["1-0:1.8.0(@1"], &full[..full.len() - 10]);
    assert!(
        matches!(
            ev.as_slice(),
            [DecodeEvent::Error(DecodeError::Truncated { .. })]
        ),
        "{ev:?}"
    );
    assert_eq!(stats.rejected, 1);
}

#[test]
fn seven_e_one_parity_bits_are_cleared() {
    let plain = dsmr(&["/A", "1-0:1.8.0(7.5*kWh)"]);
    let with_parity: Vec<u8> = plain
        .iter()
        .map(|&b| if b.count_ones() % 2 == 1 { b | 0x80 } else { b })
        .collect();
    assert_ne!(plain, with_parity);
    let (ev, _) = whole(&["1-0:1.8.0(@1"], &with_parity);
    assert_eq!(
        ev,
        vec![DecodeEvent::Telegram(Telegram {
            readings: vec![num(1, 7.5)]
        })]
    );
}

#[test]
fn a_crc_over_eight_bit_bytes_as_received_is_accepted() {
    // Some captures carry a non-ASCII header byte and a CRC computed over it as it is.
    let mut t = b"/ISk5\xabMT382\r\n1-0:1.8.0(7.5*kWh)\r\n!".to_vec();
    let crc = crc16_arc(&t);
    t.extend_from_slice(format!("{crc:04X}\r\n").as_bytes());
    let (ev, _) = whole(&["1-0:1.8.0(@1"], &t);
    assert_eq!(
        ev,
        vec![DecodeEvent::Telegram(Telegram {
            readings: vec![num(1, 7.5)]
        })]
    );
}

#[test]
fn lines_without_a_number_give_no_reading_and_are_counted() {
    let t = dsmr(&[
        "/A",
        "0-0:96.50.68(ON)",
        "0-0:96.13.0()",
        "1-0:1.8.0(*kWh)",
        "1-0:2.8.0(-.5*kWh)",
    ]);
    let mut d = decoder(&[
        "0-0:96.50.68(@1",
        "0-0:96.13.0(@1",
        "1-0:1.8.0(@1",
        "1-0:2.8.0(@1",
        "0-0:96.13.0(@#)",
    ]);
    let ev = run(&mut d, &t, &[]);
    assert_eq!(
        ev,
        vec![DecodeEvent::Telegram(Telegram {
            readings: vec![text(5, ""), num(4, -0.5)]
        })]
    );
    assert_eq!(d.unparsed_values(), 3);
}

#[test]
fn a_bracket_past_the_last_gives_no_reading() {
    let t = dsmr(&["/A", "0-1:24.2.1(101209112500W)(12785.123*m3)"]);
    let mut d = decoder(&["0-1:24.2.1(@(2:1"]);
    let ev = run(&mut d, &t, &[]);
    assert_eq!(all_readings(&ev), 0);
    assert_eq!(d.unparsed_values(), 1);
}

#[test]
fn text_capture_stops_at_the_terminator_given_after_the_hash() {
    let t = dsmr(&["/A", "1-0:0.2.0(V01.69#EEA3546C)", "0-0:96.1.0(AB*CD)"]);
    let (ev, _) = whole(&["1-0:0.2.0(@##", "1-0:0.2.0(@#)", "0-0:96.1.0(@#*"], &t);
    assert_eq!(
        telegrams(&ev)[0].readings,
        vec![text(1, "V01.69"), text(2, "V01.69#EEA3546C"), text(3, "AB")]
    );
}

#[test]
fn suffixed_and_short_codes_match_only_their_own_lines() {
    let t = dsmr(&[
        "/A",
        "1-0:1.8.0*255(1*kWh)",
        "1-0:1.8.0(2*kWh)",
        "1.8.1(3*kWh)",
        "15.8.0(4*kWh)",
        "1-0:1.8.1*00(5*kWh)",
    ]);
    let (ev, _) = whole(
        &[
            "1-0:1.8.0*255(@1",
            "1-0:1.8.0(@1",
            ".8.1(@1",
            "15.8.0(@1",
            "1.8.1*00(@1",
            "1-0:1.8.1*00(@1",
        ],
        &t,
    );
    assert_eq!(
        telegrams(&ev)[0].readings,
        vec![num(1, 1.0), num(2, 2.0), num(4, 4.0), num(6, 5.0)]
    );
}

#[test]
fn window_mode_matches_a_code_anywhere_in_the_line() {
    let t = dsmr(&["/A", "1.8.1(3*kWh)", "1-0:2.8.1(4*kWh)"]);
    let mut meter = obis_meter(&[".8.1(@1"]);
    meter.options.so2_flags = Some(1);
    let mut d = ObisDecoder::new(&meter);
    let ev = run(&mut d, &t, &[]);
    assert_eq!(telegrams(&ev)[0].readings, vec![num(1, 3.0), num(1, 4.0)]);
}

#[test]
fn kamstrup_split_fields_from_a_meter_without_header() {
    // A Multical answers `/#1` with one line of space-separated values; the echo is dropped.
    let s = b"/#1\r\n0000123 0004567 0012345\r\n";
    let (ev, stats) = whole(&["@s 0:1", "@s 1:100", "@s 2:1"], s);
    assert_eq!(
        ev,
        vec![
            DecodeEvent::Discarded { bytes: 5 },
            DecodeEvent::Telegram(Telegram {
                readings: vec![num(1, 123.0), num(2, 45.67), num(3, 12345.0)]
            })
        ]
    );
    assert_eq!(stats.telegrams, 1);
}

#[test]
fn headerless_lines_publish_after_a_silence_and_a_tail_with_crc_is_dropped() {
    let mut d = decoder(&["1-1:52.7.0(@1"]);
    let t0 = Instant::now();
    d.handle_bytes(t0, b"F\x19\x0e\x19vff\r\n1-1:52.7.0(230.5*V)\r\n");
    assert_eq!(d.poll_event(), None);
    d.handle_timeout(t0 + SILENCE);
    assert_eq!(
        d.poll_event(),
        Some(DecodeEvent::Telegram(Telegram {
            readings: vec![num(1, 230.5)]
        }))
    );

    let (ev, _) = whole(&["1-0:1.8.0(@1"], b"1-0:1.8.0(1*kWh)\r\n!ABCD\r\n");
    assert_eq!(ev, vec![DecodeEvent::Discarded { bytes: 25 }]);
}

#[test]
fn a_megabyte_without_bang_is_rejected_in_bounded_memory_and_publishes_nothing() {
    let mut d = decoder(&["1-0:1.8.0(@1"]);
    let now = Instant::now();
    d.handle_bytes(now, b"/ABC5 meter\r\n");
    let line = b"1-0:1.8.0(000123.456*kWh)\r\n";
    let mut fed = 0;
    let mut events = Vec::new();
    while fed < 1 << 20 {
        d.handle_bytes(now, line);
        fed += line.len();
        while let Some(e) = d.poll_event() {
            events.push(e);
        }
        assert!(d.framer.buffer_capacity() <= 2 * MAX_TELEGRAM);
    }
    d.handle_end();
    while let Some(e) = d.poll_event() {
        events.push(e);
    }
    assert_eq!(all_readings(&events), 0);
    assert!(events
        .iter()
        .any(|e| matches!(e, DecodeEvent::Error(DecodeError::TooLong { .. }))));
    assert!(d.stats().rejected >= 1);
    assert_eq!(d.stats().telegrams, 0);
}

/// xorshift64*: deterministic noise without a dependency.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            (seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

#[test]
fn ten_megabytes_of_noise_publish_nothing_in_bounded_memory() {
    let mut d = decoder(&["1-0:1.8.0(@1", ".8.1(@1", "0-0:96.1.1(@#)"]);
    let now = Instant::now();
    let block = noise(1 << 20, 0x9E37_79B9_7F4A_7C15);
    let mut readings = 0;
    let mut noise_telegrams = 0;
    let mut drain = |d: &mut ObisDecoder| {
        while let Some(e) = d.poll_event() {
            if let DecodeEvent::Telegram(t) = e {
                noise_telegrams += 1;
                readings += t.readings.len();
            }
        }
    };
    for round in 0..10 {
        // Shift the block each round so the 10 MB are not ten copies of one MB.
        let rotated: Vec<u8> = block
            .iter()
            .map(|&b| b.wrapping_add((round as u8).wrapping_mul(37)))
            .collect();
        d.handle_bytes(now, &rotated);
        let kept_errors = d
            .events
            .iter()
            .filter(|e| !matches!(e, DecodeEvent::Telegram(_)))
            .count();
        assert!(kept_errors <= MAX_QUEUED_EVENTS);
        assert!(d.framer.buffer_capacity() <= 2 * MAX_TELEGRAM);
        drain(&mut d);
    }
    d.handle_end();
    drain(&mut d);
    assert_eq!(readings, 0, "noise published values");
    // Random bytes do form a few `/ ... !` telegrams without CRC; none holds a matching line.
    assert!(
        noise_telegrams < 100,
        "{noise_telegrams} telegrams from noise"
    );
    let s = d.stats();
    assert_eq!(s.bytes_in, 10 << 20);
    assert!(s.bytes_skipped > 0);
    assert!(s.rejected > 0);
}

#[test]
fn the_sign_on_request_is_sent_on_its_period() {
    let mut meter = obis_meter(&["1.8.0(@1"]);
    meter.requests = crate::script::model::Requests {
        period_ms: 10_000,
        blocks: vec![crate::script::model::RequestBlock {
            raw: false,
            bytes: b"/?!\r\n".to_vec(),
        }],
    };
    let mut d = ObisDecoder::new(&meter);
    let t0 = Instant::now();
    assert_eq!(d.poll_transmit(t0), Some(b"\xaf?!\x8d\x0a".to_vec()));
    assert_eq!(d.poll_transmit(t0 + Duration::from_secs(1)), None);
    assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    assert!(d.poll_transmit(t0 + Duration::from_secs(10)).is_some());
}

#[test]
fn numbers_parse_as_tasmota_reads_them() {
    assert_eq!(parse_number(b"000258.072*kWh)"), Some(258.072));
    assert_eq!(parse_number(b"-12.5)"), Some(-12.5));
    assert_eq!(parse_number(b"+000.8*A)"), Some(0.8));
    assert_eq!(parse_number(b" 20000)"), Some(20000.0));
    assert_eq!(parse_number(b"101209112500W)"), Some(101209112500.0));
    assert_eq!(parse_number(b"00052185.7825309*kWh)"), Some(52185.7825309));
    assert_eq!(parse_number(b"1.2.3)"), Some(1.2));
    assert_eq!(parse_number(b"5.)"), Some(5.0));
    assert_eq!(parse_number(b".5)"), Some(0.5));
    assert_eq!(parse_number(b"1126120053322353)"), Some(1126120053322353.0));
    assert_eq!(parse_number(b"ON)"), None);
    assert_eq!(parse_number(b")"), None);
    assert_eq!(parse_number(b"-)"), None);
    assert_eq!(parse_number(b"."), None);
}

#[test]
fn the_framer_alone_reports_frames() {
    let mut f = Framer::with_limit(64);
    let mut frames = Vec::new();
    f.push(b"xx/A\r\n1(2)\r\n!\r\n", &mut |fr| {
        frames.push(format!("{fr:?}"))
    });
    // Before any header the framer cannot tell garbage from a headerless meter's line: the decoder
    // turns a headerless block without readings into a discard.
    assert_eq!(
        frames,
        vec![
            "Headerless([120, 120])".to_string(),
            format!("{:?}", frame::Frame::Telegram(b"/A\r\n1(2)\r\n"))
        ]
    );
}

fn corpus() -> Vec<u8> {
    let mut s = b"\x00garbage\r\n".to_vec();
    s.extend_from_slice(&sample());
    s.extend_from_slice(&iec(
        "/LOG5LK11BL804011",
        &["1.8.0(001846.0*kWh)", "0.0.0(123)"],
    ));
    let bad = sample();
    s.extend_from_slice(&bad[..bad.len() - 7]); // CRC damaged below
    s.extend_from_slice(b"FFFF\r\n");
    s.extend_from_slice(&sample()[..100]);
    s.extend_from_slice(b"/?!\r\n");
    s.extend_from_slice(&sample());
    s
}

const DESCRIPTORS: &[&str] = &[
    "1-0:1.8.0(@1",
    "0-0:98.1.0(@(19:1",
    "0-0:96.1.1(@#)",
    "1.8.0(@1",
    "0.0.0(@#)",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_gives_what_feeding_whole_gives(chunks in proptest::collection::vec(1usize..300, 1..20)) {
        let input = corpus();
        let mut d = decoder(DESCRIPTORS);
        let expected = run(&mut d, &input, &[]);
        prop_assert_eq!(telegrams(&expected).len(), 3);
        let mut d = decoder(DESCRIPTORS);
        let got = run(&mut d, &input, &chunks);
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..4000), cut in 1usize..64) {
        let mut d = decoder(DESCRIPTORS);
        let whole_ev = run(&mut d, &bytes, &[]);
        let mut d = decoder(DESCRIPTORS);
        let chunked = run(&mut d, &bytes, &[cut]);
        prop_assert_eq!(whole_ev, chunked);
    }
}

#[test]
fn one_byte_at_a_time_equals_whole() {
    let input = corpus();
    let mut d = decoder(DESCRIPTORS);
    let expected = run(&mut d, &input, &[]);
    let mut d = decoder(DESCRIPTORS);
    assert_eq!(run(&mut d, &input, &[1]), expected);
}

/// The SX631 seed script's metric descriptors, in its order (`%r%N:1` expanded).
fn sx631_descriptors() -> Vec<String> {
    let mut d: Vec<String> = [
        "1-0:32.7.0(@1",
        "1-0:52.7.0(@1",
        "1-0:72.7.0(@1",
        "1-0:14.7.0(@1",
        "0-0:96.14.0(@1",
        "1-0:1.8.0(@1",
        "1-0:2.8.0(@1",
        "1-0:1.8.1(@1",
        "1-0:1.8.2(@1",
        "1-0:2.8.1(@1",
        "1-0:2.8.2(@1",
        "1-0:1.7.0(@1",
        "1-0:2.7.0(@1",
        "1-0:13.7.0(@1",
        "1-0:3.8.0(@1",
        "1-0:4.8.0(@1",
        "1-0:5.8.0(@1",
        "1-0:6.8.0(@1",
        "1-0:7.8.0(@1",
        "1-0:8.8.0(@1",
        "1-0:5.7.0(@1",
        "1-0:6.7.0(@1",
        "1-0:7.7.0(@1",
        "1-0:8.7.0(@1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    d.extend((1..=19).map(|n| format!("0-0:98.1.0(@({n}:1")));
    d
}

#[test]
fn fixtures_decode_with_their_checksums() {
    let sx = include_bytes!("../../../tests/fixtures/meters/sx631.txt");
    let desc = sx631_descriptors();
    let desc: Vec<&str> = desc.iter().map(|s| s.as_str()).collect();
    let (ev, stats) = whole(&desc, sx);
    assert_eq!(stats.crc_errors, 0);
    let t = telegrams(&ev);
    assert_eq!(t.len(), 1, "{ev:?}");
    let r = &t[0].readings;
    assert_eq!(
        r.len(),
        43,
        "every metric line of the seed script finds its value"
    );
    assert!(r.contains(&num(1, 233.9)));
    assert!(r.contains(&num(6, 22803.012)));
    assert!(r.contains(&num(25, 22311.870)));
    assert!(r.contains(&num(43, 2.806)));

    let lk = include_bytes!("../../../tests/fixtures/meters/lk11bl804011.txt");
    let (ev, stats) = whole(
        &[
            "15.8.0(@1",
            "0.0.0(@1",
            "F.F(@1",
            "C.8.0(@1",
            "0.2.0(@#)",
            "0.3.0(@1",
            ".8.1(@1",
            "C.7.1(@1",
            "C.2.1(@1",
            "C.2.9(@1",
        ],
        lk,
    );
    assert_eq!(stats.crc_errors, 0);
    assert_eq!(
        telegrams(&ev)[0].readings,
        vec![
            num(3, 0.0),
            num(2, 60082456.0),
            text(5, "ver.03,432F,20170504"),
            num(6, 10000.0),
            num(4, 36914.0),
            num(1, 4312.5876),
            num(8, 4.0),
            num(9, 2310171432.0),
            num(10, 231017.0),
        ]
    );
}

#[test]
fn a_caller_that_does_not_poll_loses_old_errors_but_no_telegram() {
    let mut d = decoder(&["1-0:1.8.0(@1"]);
    let now = Instant::now();
    // 3000 telegrams cut short by the next start, then one good telegram.
    let mut s = b"/A\r\n".repeat(3000);
    s.extend_from_slice(&dsmr(&["/A", "1-0:1.8.0(1*kWh)"]));
    d.handle_bytes(now, &s);
    assert!(d.events.len() <= MAX_QUEUED_EVENTS);
    let mut ev = Vec::new();
    while let Some(e) = d.poll_event() {
        ev.push(e);
    }
    assert_eq!(telegrams(&ev).len(), 1);
    assert_eq!(d.stats().rejected, 3000);
}

/// A decoder whose framer has a small size bound, so overlong telegrams stay small in tests.
fn small_decoder(descriptors: &[&str], limit: usize) -> ObisDecoder {
    let meter = obis_meter(descriptors);
    let Decoding::Obis(metrics) = &meter.decoding else {
        unreachable!("obis_meter builds an o meter")
    };
    ObisDecoder::with_framer(
        Matcher::new(metrics, true),
        Framer::with_limit(limit),
        RequestSchedule::new(&meter),
    )
}

#[test]
fn a_good_telegram_right_after_an_overlong_one_decodes() {
    // `/`, 70,000 digits without a line end, then a good telegram: the overlong one is dropped at
    // the limit and its rest skipped up to the next `/`, which starts the good one.
    let mut s = b"/".to_vec();
    s.extend(std::iter::repeat_n(b'9', 70_000));
    s.extend_from_slice(&dsmr(&["/A", "1-0:1.8.0(1.5*kWh)"]));
    let (ev, stats) = whole(&["1-0:1.8.0(@1"], &s);
    assert_eq!(
        ev,
        vec![
            DecodeEvent::Error(DecodeError::TooLong {
                limit: MAX_TELEGRAM
            }),
            DecodeEvent::Discarded {
                bytes: 70_001 - MAX_TELEGRAM
            },
            DecodeEvent::Telegram(Telegram {
                readings: vec![num(1, 1.5)]
            }),
        ]
    );
    assert_eq!((stats.rejected, stats.telegrams), (1, 1));
}

#[test]
fn after_an_overlong_telegram_a_slash_inside_a_bracket_is_no_start() {
    // Cut inside `(24/03/04 ...`: the `/` there is a date's, so the skip runs to the line end, and
    // the next telegram decodes.
    let mut s = b"/A\r\n0-0:1.0.0(".to_vec();
    s.extend(std::iter::repeat_n(b'1', 60));
    s.extend_from_slice(b"24/03/04)\r\n");
    s.extend_from_slice(&dsmr(&["/A", "1-0:1.8.0(2.5*kWh)"]));
    let mut d = small_decoder(&["1-0:1.8.0(@1"], 64);
    let ev = run(&mut d, &s, &[]);
    assert!(
        matches!(
            ev[0],
            DecodeEvent::Error(DecodeError::TooLong { limit: 64 })
        ),
        "{ev:?}"
    );
    assert_eq!(telegrams(&ev).len(), 1, "{ev:?}");
    assert_eq!(telegrams(&ev)[0].readings, vec![num(1, 2.5)]);
    assert_eq!(d.stats().rejected, 1, "the date's `/` started no telegram");
}

fn overlong_corpus() -> Vec<u8> {
    let mut s = b"/".to_vec();
    s.extend(std::iter::repeat_n(b'9', 100));
    s.extend_from_slice(&dsmr(&["/A", "1-0:1.8.0(1*kWh)"]));
    s.extend_from_slice(b"/A\r\n1-0:1.8.0(");
    s.extend(std::iter::repeat_n(b'8', 80));
    s.extend_from_slice(b"/8)(x)");
    s.extend_from_slice(&dsmr(&["/A", "1-0:1.8.0(2*kWh)"]));
    s.extend_from_slice(&dsmr(&["/A", "1-0:1.8.0(3*kWh)"]));
    s
}

#[test]
fn the_next_start_after_an_overlong_telegram_is_found_in_the_same_line() {
    let mut d = small_decoder(&["1-0:1.8.0(@1"], 64);
    let ev = run(&mut d, &overlong_corpus(), &[]);
    let values: Vec<_> = telegrams(&ev).iter().map(|t| t.readings.clone()).collect();
    // The `/` after `(x)` is outside brackets: it starts the telegram whose value is 2.
    assert_eq!(
        values,
        vec![vec![num(1, 1.0)], vec![num(1, 2.0)], vec![num(1, 3.0)]],
        "{ev:?}"
    );
    assert_eq!(d.stats().rejected, 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn resync_after_an_overlong_telegram_does_not_depend_on_chunking(chunks in proptest::collection::vec(1usize..80, 1..12)) {
        let input = overlong_corpus();
        let mut d = small_decoder(&["1-0:1.8.0(@1"], 64);
        let expected = run(&mut d, &input, &[]);
        let mut d = small_decoder(&["1-0:1.8.0(@1"], 64);
        prop_assert_eq!(run(&mut d, &input, &chunks), expected);
    }
}

#[test]
fn a_telegram_without_crc_from_a_meter_that_sent_crcs_is_rejected_and_counted() {
    let good = dsmr(&["/A", "1-0:1.8.0(1.5*kWh)"]);
    // The same telegram with its CRC stripped, a forged one without CRC, and an empty one.
    let bang = good.iter().position(|&b| b == b'!').unwrap();
    let mut stripped = good[..=bang].to_vec();
    stripped.extend_from_slice(b"\r\n");
    let mut s = good.clone();
    s.extend_from_slice(&stripped);
    s.extend_from_slice(b"/A\r\n1-0:1.8.0(9999.9*kWh)\r\n!\r\n");
    s.extend_from_slice(b"/\r\n!\r\n");
    s.extend_from_slice(&good);
    let (ev, stats) = whole(&["1-0:1.8.0(@1"], &s);
    assert_eq!(
        ev,
        vec![
            DecodeEvent::Telegram(Telegram {
                readings: vec![num(1, 1.5)]
            }),
            DecodeEvent::Error(DecodeError::MissingCrc {
                bytes: stripped.len()
            }),
            DecodeEvent::Error(DecodeError::MissingCrc { bytes: 30 }),
            DecodeEvent::Error(DecodeError::MissingCrc { bytes: 6 }),
            DecodeEvent::Telegram(Telegram {
                readings: vec![num(1, 1.5)]
            }),
        ]
    );
    assert_eq!(
        (
            stats.telegrams,
            stats.missing_crc,
            stats.crc_errors,
            stats.rejected
        ),
        (2, 3, 0, 0)
    );
}

#[test]
fn telegrams_without_crc_are_accepted_before_any_crc_and_when_the_script_says_so() {
    let stripped = b"/A\r\n1-0:1.8.0(7*kWh)\r\n!\r\n";
    let mut s = stripped.to_vec();
    s.extend_from_slice(&dsmr(&["/A", "1-0:1.8.0(8*kWh)"]));
    s.extend_from_slice(stripped);
    let (ev, _) = whole(&["1-0:1.8.0(@1"], &s);
    assert_eq!(
        telegrams(&ev).len(),
        2,
        "the first, before any CRC, and the CRC one"
    );

    let mut d = decoder(&["1-0:1.8.0(@1"]).with_missing_checksum(MissingChecksum::Accept);
    let ev = run(&mut d, &s, &[]);
    assert_eq!(telegrams(&ev).len(), 3);
    assert_eq!(d.stats().missing_crc, 0);
}

#[test]
fn a_readout_without_bcc_from_a_meter_that_sent_one_is_rejected() {
    let good = iec("/LOG5LK11BL804011", &["1.8.0(001846.0*kWh)"]);
    let mut s = good.clone();
    s.extend_from_slice(&good[..good.len() - 2]); // no ETX, no BCC
    s.extend_from_slice(&good);
    let (ev, stats) = whole(&["1.8.0(@1"], &s);
    assert!(
        matches!(
            ev.as_slice(),
            [
                DecodeEvent::Telegram(_),
                DecodeEvent::Error(DecodeError::MissingCrc { .. }),
                DecodeEvent::Telegram(_)
            ]
        ),
        "{ev:?}"
    );
    assert_eq!(stats.missing_crc, 1);
}

#[test]
fn every_rejection_is_counted_under_its_kind() {
    let good = dsmr(&["/A", "1-0:1.8.0(1*kWh)"]);
    let mut bad = good.clone();
    bad[8] = b'7';
    let mut s = good.clone();
    s.extend_from_slice(&bad); // bad CRC
    s.extend_from_slice(b"/A\r\n!\r\n"); // no CRC
    s.extend_from_slice(&good[..12]); // cut by the next start
    s.extend_from_slice(b"/A\r\n!12345\r\n"); // malformed trailer
    s.extend_from_slice(&good[..12]); // cut by the end of input
    let (ev, stats) = whole(&["1-0:1.8.0(@1"], &s);
    let kinds: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            DecodeEvent::Error(e) => Some(e.kind()),
            _ => None,
        })
        .collect();
    use crate::decode::RejectKind::*;
    assert_eq!(
        kinds,
        vec![BadCrc, MissingCrc, Truncated, Malformed, Truncated]
    );
    assert_eq!(
        (stats.crc_errors, stats.missing_crc, stats.rejected),
        (1, 1, 3)
    );
    assert_eq!(stats.rejections(), kinds.len() as u64);
}
