//! The `s` decoder through its public interface: a synthetic frame we build ourselves (checked in as
//! `tests/fixtures/sml/synthetic-ehz.bin`), chunking equivalence (proptest), and hostile input.

use std::path::Path;
use std::time::Instant;

use proptest::prelude::*;
use sml::decode::sml::crc::Crc16;
use sml::decode::sml::frame;
use sml::decode::{decoder_for, DecodeError, DecodeEvent, DecodeStats, Decoder, Value};
use sml::script::model::*;

// ---- an SML encoder, just enough to build frames ----

/// An octet string with its TL field (two TL bytes when the length needs them).
fn octets(data: &[u8]) -> Vec<u8> {
    let mut v = if data.len() < 15 {
        vec![(data.len() + 1) as u8]
    } else {
        let total = data.len() + 2;
        assert!(total <= 0xff);
        vec![0x80 | (total >> 4) as u8, (total & 0x0f) as u8]
    };
    v.extend_from_slice(data);
    v
}

fn uint(v: u64, bytes: usize) -> Vec<u8> {
    let mut out = vec![0x60 | (bytes as u8 + 1)];
    out.extend_from_slice(&v.to_be_bytes()[8 - bytes..]);
    out
}

fn int(v: i64, bytes: usize) -> Vec<u8> {
    let mut out = vec![0x50 | (bytes as u8 + 1)];
    out.extend_from_slice(&v.to_be_bytes()[8 - bytes..]);
    out
}

fn list(items: &[Vec<u8>]) -> Vec<u8> {
    assert!(items.len() < 16);
    let mut out = vec![0x70 | items.len() as u8];
    for i in items {
        out.extend_from_slice(i);
    }
    out
}

const ABSENT: [u8; 1] = [0x01];

/// An SML_ListEntry.
fn entry(
    obis: [u8; 6],
    status: Option<u32>,
    unit: Option<u8>,
    scaler: Option<i8>,
    value: Vec<u8>,
) -> Vec<u8> {
    list(&[
        octets(&obis),
        status.map_or(ABSENT.to_vec(), |s| uint(u64::from(s), 4)),
        ABSENT.to_vec(),
        unit.map_or(ABSENT.to_vec(), |u| uint(u64::from(u), 1)),
        scaler.map_or(ABSENT.to_vec(), |s| int(i64::from(s), 1)),
        value,
        ABSENT.to_vec(),
    ])
}

/// An SML message with its own CRC (X-25 over the message up to the CRC field).
fn message(transaction: u8, tag: u16, body: Vec<u8>) -> Vec<u8> {
    let mut m = vec![0x76];
    m.extend(octets(&[0x10, transaction]));
    m.extend(uint(0, 1));
    m.extend(uint(0, 1));
    m.extend(list(&[uint(u64::from(tag), 2), body]));
    let crc = Crc16::X25.checksum(&m);
    m.extend(uint(u64::from(crc), 2));
    m.push(0x00);
    m
}

const SERVER_ID: [u8; 10] = [0x0a, 0x01, b'S', b'M', b'L', 0x00, 0x00, 0x12, 0x34, 0x56];

/// A three-message frame (open, get-list, close) like an eHZ sends, with the awkward cases in it:
/// 5-, 7- and 8-byte integers, negatives, a 3-byte signed value, a two-byte TL, a boolean.
fn synthetic_frame() -> Vec<u8> {
    let entries = vec![
        entry(
            [0x81, 0x81, 0xc7, 0x82, 0x03, 0xff],
            None,
            None,
            None,
            octets(b"SML"),
        ),
        entry([1, 0, 0, 0, 9, 0xff], None, None, None, octets(&SERVER_ID)),
        entry(
            [1, 0, 1, 8, 0, 0xff],
            Some(0x0182),
            Some(30),
            Some(-1),
            int(0x00_0a1b_2c3d, 5),
        ),
        entry(
            [1, 0, 1, 8, 1, 0xff],
            None,
            Some(30),
            Some(-1),
            uint(123_456_789, 4),
        ),
        entry(
            [1, 0, 1, 8, 2, 0xff],
            None,
            Some(30),
            Some(-4),
            uint(98_765_432_101_234, 8),
        ),
        entry([1, 0, 2, 8, 0, 0xff], None, Some(30), Some(3), uint(42, 2)),
        entry(
            [1, 0, 16, 7, 0, 0xff],
            None,
            Some(27),
            Some(0),
            int(-1234, 4),
        ),
        entry([1, 0, 36, 7, 0, 0xff], None, Some(27), Some(-2), int(-5, 3)),
        entry(
            [1, 0, 56, 7, 0, 0xff],
            None,
            Some(27),
            Some(-1),
            int(-300_000_000_000, 7),
        ),
        entry([1, 0, 76, 7, 0, 0xff], None, Some(27), None, int(-7, 1)),
        entry(
            [1, 0, 96, 1, 0, 0xff],
            None,
            None,
            None,
            octets(b"an id longer than fourteen"),
        ),
        entry([1, 0, 96, 90, 2, 0xff], None, None, None, vec![0x42, 0x01]),
    ];
    let open = message(
        1,
        0x0101,
        list(&[
            ABSENT.to_vec(),
            ABSENT.to_vec(),
            octets(&[0x42; 4]),
            octets(&SERVER_ID),
            ABSENT.to_vec(),
            ABSENT.to_vec(),
        ]),
    );
    let get_list = message(
        2,
        0x0701,
        list(&[
            ABSENT.to_vec(),
            octets(&SERVER_ID),
            ABSENT.to_vec(),
            ABSENT.to_vec(),
            list(&entries),
            ABSENT.to_vec(),
            ABSENT.to_vec(),
        ]),
    );
    let close = message(3, 0x0201, list(&[ABSENT.to_vec()]));
    let mut data = open;
    data.extend(get_list);
    data.extend(close);
    frame::encode(&data)
}

fn fixture_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sml/synthetic-ehz.bin")
}

// ---- the meter ----

/// Meter 1 of the script these `(pattern, spec)` lines make (`1,77070100010800ff@1000,,,v1,3`),
/// compiled by the real front end; entries numbered from 1.
fn meter(lines: &[(&str, ValueSpec)]) -> Meter {
    let mut text = String::from(">D\n>M 1\n+1,3,s,0,9600,SML\n");
    for (i, (hex, spec)) in lines.iter().enumerate() {
        let value = match spec {
            ValueSpec::Number { divisor, offset } if *offset == 0.0 => format!("{divisor}"),
            ValueSpec::Number { divisor, offset } => format!("{divisor}{offset:+}"),
            ValueSpec::Text {
                hex_as_ascii: false,
            } => "#".to_string(),
            ValueSpec::Text { hex_as_ascii: true } => "#x".to_string(),
        };
        text.push_str(&format!("1,{hex}@{value},,,v{},3\n", i + 1));
    }
    text.push_str("#\n");
    let compiled = sml::script::compile(text.as_bytes());
    let Some(mut script) = compiled.script else {
        panic!(
            "generated script does not compile: {:?}\n{text}",
            compiled.diagnostics
        );
    };
    script.meters.remove(0)
}

fn n(divisor: f64) -> ValueSpec {
    ValueSpec::Number {
        divisor,
        offset: 0.0,
    }
}

fn every_line() -> Meter {
    meter(&[
        ("77078181c78203ff", ValueSpec::Text { hex_as_ascii: true }),
        (
            "77070100000009ff",
            ValueSpec::Text {
                hex_as_ascii: false,
            },
        ),
        ("77070100010800ff", n(1000.0)),
        ("77070100010801ff", n(1000.0)),
        ("0100010802ff", n(1.0)),
        ("77070100020800ff", n(1.0)),
        ("77070100100700ff", n(1.0)),
        ("77070100240700ff", n(1.0)),
        ("77070100380700ff", n(1.0)),
        ("770701004c0700ff", n(1.0)),
        ("77070100600100ff", ValueSpec::Text { hex_as_ascii: true }),
        ("7707010060xx02ff", n(1.0)),
        ("77070100630000ff", n(1.0)),
    ])
}

fn run(decoder: &mut dyn Decoder, chunks: &[&[u8]]) -> (Vec<DecodeEvent>, DecodeStats) {
    let mut events = Vec::new();
    for c in chunks {
        decoder.handle_bytes(Instant::now(), c);
        events.extend(std::iter::from_fn(|| decoder.poll_event()));
    }
    decoder.handle_end();
    events.extend(std::iter::from_fn(|| decoder.poll_event()));
    (events, decoder.stats())
}

fn whole(meter: &Meter, bytes: &[u8]) -> (Vec<DecodeEvent>, DecodeStats) {
    run(decoder_for(meter).unwrap().as_mut(), &[bytes])
}

#[test]
fn the_checked_in_fixture_is_what_the_generator_makes() {
    let made = synthetic_frame();
    if std::env::var_os("SML_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(fixture_path().parent().unwrap()).unwrap();
        std::fs::write(fixture_path(), &made).unwrap();
    }
    assert_eq!(
        std::fs::read(fixture_path()).expect("fixture present (SML_WRITE_FIXTURES=1 makes it)"),
        made
    );
}

#[test]
fn the_synthetic_frame_gives_every_value_as_tasmota_would_publish_it_or_better() {
    let (events, stats) = whole(&every_line(), &std::fs::read(fixture_path()).unwrap());
    let [DecodeEvent::Telegram(t)] = events.as_slice() else {
        panic!("one telegram expected: {events:?}")
    };
    let got: Vec<(EntryNo, Value)> = t
        .readings
        .iter()
        .map(|r| (r.entry, r.value.clone()))
        .collect();
    let num = |e, v| (e, Value::Number(v));
    assert_eq!(
        got,
        vec![
            (1, Value::Text("SML".into())),
            (2, Value::Text("0a01534d4c0000123456".into())),
            num(3, 16_955.295_7), // 5-byte integer 0x0a1b2c3d = 169552957, scaler -1, @1000
            num(4, 12_345.678_9),
            num(5, 9_876_543_210.123_4),
            num(6, 42_000.0), // scaler +3: Tasmota applies it too
            num(7, -1234.0),
            num(8, -0.05),             // 3-byte signed
            num(9, -30_000_000_000.0), // 7-byte negative: Tasmota publishes a large positive
            num(10, -7.0),
            (11, Value::Text("an id longer than fourteen".into())),
            num(12, 1.0), // boolean true; wildcard pattern
        ]
    );
    assert_eq!(
        (
            stats.telegrams,
            stats.crc_errors,
            stats.rejected,
            stats.bytes_skipped
        ),
        (1, 0, 0, 0)
    );
}

/// A stream with everything a link delivers: garbage, good frames, a cut frame, a corrupted frame.
fn messy_stream() -> Vec<u8> {
    let good = synthetic_frame();
    let mut corrupt = good.clone();
    corrupt[100] ^= 0x10;
    let mut s = vec![
        0x00, 0x1b, 0x1b, 0x55, 0x1b, 0x1b, 0x1b, 0x1b, 0x01, 0x01, 0x02,
    ];
    s.extend(&good);
    s.extend(&good[..good.len() / 2]);
    s.extend(&good);
    s.extend(&corrupt);
    s.extend(b"noise between frames");
    s.extend(&good);
    s.extend(&good[..40]);
    s
}

#[test]
fn a_messy_stream_gives_the_good_frames_and_counts_the_rest() {
    let (events, stats) = whole(&every_line(), &messy_stream());
    let telegrams = events
        .iter()
        .filter(|e| matches!(e, DecodeEvent::Telegram(t) if t.readings.len() == 12))
        .count();
    assert_eq!(telegrams, 3);
    assert_eq!(stats.telegrams, 3);
    assert_eq!(stats.crc_errors, 1);
    assert_eq!(
        stats.rejected, 2,
        "the frame cut in half and the one cut at the end"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, DecodeEvent::Error(DecodeError::BadCrc { .. }))));
    assert_eq!(stats.bytes_skipped, 11 + 20);
}

#[test]
fn one_byte_at_a_time_gives_what_the_whole_stream_gives() {
    let bytes = messy_stream();
    let m = every_line();
    let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(
        run(decoder_for(&m).unwrap().as_mut(), &chunks),
        whole(&m, &bytes)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_gives_what_the_whole_stream_gives(cuts in proptest::collection::vec(0usize..4000, 0..40)) {
        let bytes = messy_stream();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut at = 0;
        for c in cuts {
            chunks.push(&bytes[at..c]);
            at = c;
        }
        chunks.push(&bytes[at..]);
        let m = every_line();
        prop_assert_eq!(run(decoder_for(&m).unwrap().as_mut(), &chunks), whole(&m, &bytes));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_publish_only_from_checked_frames(noise in proptest::collection::vec(any::<u8>(), 0..2000)) {
        // Random bytes wrapped in a correct frame: the frame layer accepts them, the parser decides.
        let framed = frame::encode(&noise);
        let (events, stats) = whole(&every_line(), &framed);
        prop_assert_eq!(stats.telegrams + stats.rejected + stats.crc_errors, 1);
        prop_assert_eq!(events.iter().filter(|e| !matches!(e, DecodeEvent::Discarded { .. })).count(), 1);
        let (_, stats) = whole(&every_line(), &noise);
        prop_assert_eq!(stats.telegrams, 0);
    }
}

#[test]
fn shared_captures_decode_the_same_one_byte_at_a_time() {
    let dir = std::env::var_os("SML_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
        .join("captures/sml");
    let Ok(list) = std::fs::read_dir(&dir) else {
        eprintln!("../shared/captures/sml is absent: skipped");
        return;
    };
    let m = every_line();
    let mut checked = 0;
    for path in list
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
    {
        let bytes = std::fs::read(&path).unwrap();
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(
            run(decoder_for(&m).unwrap().as_mut(), &chunks),
            whole(&m, &bytes),
            "{}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn ten_megabytes_of_noise_are_counted_in_bounded_reports_and_publish_nothing() {
    let mut d = decoder_for(&every_line()).unwrap();
    let mut state = 0x1234_5678u32;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut discarded = 0usize;
    let mut errors = 0usize;
    for _ in 0..160 {
        for b in chunk.iter_mut() {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            *b = (state >> 24) as u8;
        }
        d.handle_bytes(Instant::now(), &chunk);
        while let Some(e) = d.poll_event() {
            match e {
                DecodeEvent::Telegram(_) => panic!("noise published a telegram"),
                DecodeEvent::Discarded { bytes } => {
                    assert!(bytes <= frame::DISCARD_REPORT_BYTES);
                    discarded += bytes;
                }
                DecodeEvent::Error(_) => errors += 1,
            }
        }
    }
    d.handle_end();
    while let Some(e) = d.poll_event() {
        if let DecodeEvent::Discarded { bytes } = e {
            discarded += bytes;
        }
    }
    assert_eq!(d.stats().bytes_in, 160 * 64 * 1024);
    assert_eq!(d.stats().telegrams, 0);
    assert!(
        discarded >= 160 * 64 * 1024 - 8 * errors * frame::MAX_FRAME_BYTES,
        "{discarded} discarded, {errors} errors"
    );
}

#[test]
fn a_frame_of_a_megabyte_without_an_end_is_dropped_once_and_the_next_frame_decodes() {
    let mut bytes = frame::START.to_vec();
    bytes.resize(1 << 20, 0x42);
    bytes.extend(synthetic_frame());
    let (events, stats) = whole(&every_line(), &bytes);
    assert!(
        matches!(events[0], DecodeEvent::Error(DecodeError::TooLong { .. })),
        "{:?}",
        &events[..2]
    );
    assert_eq!((stats.rejected, stats.telegrams), (1, 1));
    assert!(matches!(events.last(), Some(DecodeEvent::Telegram(_))));
}

#[test]
fn a_good_frame_right_after_an_overlong_one_decodes_wherever_the_limit_cuts() {
    // The overlong frame is dropped when it passes the limit; the next frame's start sequence may
    // already have begun in the bytes just before the cut (on or off the word grid).
    let good = synthetic_frame();
    for filler in frame::MAX_FRAME_BYTES - 24..frame::MAX_FRAME_BYTES + 8 {
        let mut bytes = frame::START.to_vec();
        bytes.resize(frame::START.len() + filler, 0x42);
        bytes.extend(&good);
        let (events, stats) = whole(&every_line(), &bytes);
        assert!(
            matches!(events.last(), Some(DecodeEvent::Telegram(t)) if t.readings.len() == 12),
            "filler {filler}: {events:?}"
        );
        assert_eq!(stats.telegrams, 1, "filler {filler}");
        assert_eq!(stats.rejected, 1, "filler {filler}: the overlong frame");
    }
}
