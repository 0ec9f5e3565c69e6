//! The `r`/`R` decoder on scripts compiled by the real front end: values from checked M-Bus frames
//! only, every bad frame counted once and never published, Tasmota's sliding window on plain raw
//! meters, silence framing for `R`, and chunking that changes nothing.

use super::*;
use crate::decode::mbus::long_frame;
use crate::script::model::Script;
use proptest::prelude::*;

/// A heat meter as the community scripts read it (8E1: an M-Bus meter).
const HEAT: &str = ">D\n>M 1\n+1,3,rE1,0,2400,WAERME\n\
1,0C06bcd8@1,Energy,kWh,energy,0\n\
1,0259ssSS@100,Flow,°C,t_flow,2\n#\n";

fn compile(source: &str) -> Script {
    let compiled = crate::script::compile(source.as_bytes());
    compiled
        .script
        .unwrap_or_else(|| panic!("{:?}", compiled.diagnostics))
}

fn decoder(source: &str) -> RawDecoder {
    RawDecoder::new(&compile(source).meters[0])
}

fn drain(d: &mut RawDecoder) -> Vec<DecodeEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

fn heat_frame(energy_bcd: [u8; 4], flow: i16) -> Vec<u8> {
    let mut p = vec![
        0x78, 0x56, 0x34, 0x12, 0x24, 0x40, 0x01, 0x04, 0x2A, 0x00, 0x00, 0x00,
    ];
    p.extend_from_slice(&[0x0C, 0x06]);
    p.extend_from_slice(&energy_bcd);
    p.extend_from_slice(&[0x02, 0x59]);
    p.extend_from_slice(&flow.to_le_bytes());
    long_frame(0x08, 0x01, 0x72, &p)
}

fn values(events: &[DecodeEvent]) -> Vec<Vec<(u16, f64)>> {
    events
        .iter()
        .filter_map(|e| match e {
            DecodeEvent::Telegram(t) => Some(
                t.readings
                    .iter()
                    .map(|r| match r.value {
                        Value::Number(v) => (r.entry, v),
                        Value::Text(_) => (r.entry, f64::NAN),
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn feed(d: &mut RawDecoder, bytes: &[u8]) -> Vec<DecodeEvent> {
    d.handle_bytes(Instant::now(), bytes);
    d.handle_end();
    drain(d)
}

#[test]
fn a_good_frame_publishes_every_line_once() {
    let mut d = decoder(HEAT);
    let ev = feed(&mut d, &heat_frame([0x45, 0x23, 0x01, 0x00], 1234));
    assert_eq!(values(&ev), vec![vec![(1, 12345.0), (2, 12.34)]]);
    assert_eq!(d.stats().telegrams, 1);
    assert_eq!(d.stats().rejections(), 0);
}

#[test]
fn a_bad_checksum_publishes_nothing_and_is_counted_once() {
    let mut d = decoder(HEAT);
    let mut f = heat_frame([0x45, 0x23, 0x01, 0x00], 1234);
    let cs = f.len() - 2;
    f[cs] = f[cs].wrapping_add(1);
    let ev = feed(&mut d, &f);
    assert!(values(&ev).is_empty(), "{ev:?}");
    assert_eq!(d.stats().crc_errors, 1);
    assert!(ev
        .iter()
        .any(|e| matches!(e, DecodeEvent::Error(DecodeError::BadCrc { .. }))));
}

#[test]
fn a_truncated_frame_publishes_nothing_and_the_next_good_one_does() {
    let mut d = decoder(HEAT);
    let f = heat_frame([0x45, 0x23, 0x01, 0x00], 1234);
    let mut stream = f[..f.len() - 7].to_vec();
    stream.extend_from_slice(&heat_frame([0x46, 0x23, 0x01, 0x00], 1000));
    let ev = feed(&mut d, &stream);
    assert_eq!(values(&ev), vec![vec![(1, 12346.0), (2, 10.0)]]);
    assert_eq!(d.stats().rejections(), 1);
}

#[test]
fn a_frame_cut_by_the_end_of_input_is_reported_truncated() {
    let mut d = decoder(HEAT);
    let f = heat_frame([0x45, 0x23, 0x01, 0x00], 1234);
    let ev = feed(&mut d, &f[..20]);
    assert!(values(&ev).is_empty());
    assert!(ev
        .iter()
        .any(|e| matches!(e, DecodeEvent::Error(DecodeError::Truncated { .. }))));
}

#[test]
fn wrong_baud_noise_on_an_mbus_meter_is_skipped_and_counted() {
    let mut d = decoder(HEAT);
    // Noise that even holds the pattern `0C 06` followed by BCD digits.
    let noise: Vec<u8> = (0..500u32)
        .map(|i| [0x0C, 0x06, 0x11, 0x22, 0x33, 0x44, 0xF3, 0x9A][(i % 8) as usize])
        .collect();
    let ev = feed(&mut d, &noise);
    assert!(values(&ev).is_empty());
    assert_eq!(d.stats().bytes_skipped, 500);
}

#[test]
fn a_pattern_inside_another_records_data_loses_to_the_record_itself() {
    // A power record whose data holds `0C 06 ..`, before the real energy record.
    let mut p = vec![0x06, 0x2B, 0x0C, 0x06, 0x99, 0x99, 0x99, 0x09];
    p.extend_from_slice(&[0x0C, 0x06, 0x01, 0x00, 0x00, 0x00]);
    let f = long_frame(0x08, 0x01, 0x78, &p);
    let mut d = decoder(HEAT);
    let ev = feed(&mut d, &f);
    assert_eq!(values(&ev), vec![vec![(1, 1.0)]]);
}

#[test]
fn a_plain_raw_meter_is_read_through_tasmotas_sliding_window() {
    // The AEconversion inverter script: no M-Bus, patterns anywhere in the stream.
    let src = ">D\n>M 1\n+1,3,r,0,9600,aec\n1,212717UUuux7@1,Power,W,power,0\n#\n";
    let mut d = decoder(src);
    let mut stream = vec![0x00, 0x55];
    stream.extend_from_slice(&[0x21, 0x27, 0x17, 0x01, 0x2C, 0, 0, 0, 0, 0, 0, 0]);
    let ev = feed(&mut d, &stream);
    assert_eq!(values(&ev), vec![vec![(1, 300.0)]]);
}

#[test]
fn a_short_window_reads_nothing_past_its_end() {
    let src = ">D\n>M 1\n+1,3,r,0,9600,aec\n1,=so3,4\n1,212717UUuu@1,Power,W,power,0\n#\n";
    let mut d = decoder(src);
    let ev = feed(&mut d, &[0x21, 0x27, 0x17, 0x01, 0x2C, 0x00]);
    assert!(
        values(&ev).is_empty(),
        "a 5-byte mask needs more than a 4-byte window"
    );
}

#[test]
fn r_upper_reads_each_burst_from_its_start_after_the_so6_silence() {
    let src = ">D\n>M 1\n+1,3,R,0,2400,RAW\n1,=so6,200\n1,AA55UUuu@1,Value,,v,0\n#\n";
    let mut d = decoder(src);
    let t0 = Instant::now();
    d.handle_bytes(t0, &[0xAA, 0x55]);
    d.handle_bytes(t0 + Duration::from_millis(50), &[0x01, 0x02]);
    assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_millis(250)));
    d.handle_timeout(t0 + Duration::from_millis(249));
    assert!(drain(&mut d).is_empty(), "no silence yet");
    d.handle_timeout(t0 + Duration::from_millis(250));
    assert_eq!(values(&drain(&mut d)), vec![vec![(1, 258.0)]]);
    // A burst that does not start with the pattern reads nothing.
    d.handle_bytes(t0 + Duration::from_secs(1), &[0x00, 0xAA, 0x55, 0x01, 0x02]);
    d.handle_timeout(t0 + Duration::from_secs(2));
    assert!(values(&drain(&mut d)).is_empty());
}

#[test]
fn an_r_upper_burst_past_its_buffer_is_rejected_once_and_read_from_nowhere() {
    let src = ">D\n>M 1\n+1,3,R,0,2400,RAW\n1,AA55UUuu@1,Value,,v,0\n#\n";
    let mut d = decoder(src);
    let t0 = Instant::now();
    // A meter that never pauses: 100 chunks of 10 bytes, each holding the pattern.
    for i in 0..100 {
        d.handle_bytes(
            t0 + Duration::from_millis(i),
            &[0xAA, 0x55, 1, 2, 0, 0, 0, 0, 0, 0],
        );
    }
    d.handle_end();
    let ev = drain(&mut d);
    assert!(values(&ev).is_empty(), "{ev:?}");
    assert_eq!(d.stats().rejected, 1);
    assert_eq!(d.stats().bytes_skipped, 1000);
    // After a silence the next burst is read again.
    d.handle_bytes(t0 + Duration::from_secs(5), &[0xAA, 0x55, 0, 7]);
    d.handle_end();
    assert_eq!(values(&drain(&mut d)), vec![vec![(1, 7.0)]]);
}

#[test]
fn r_upper_checks_an_mbus_frame_in_its_burst() {
    let src = ">D\n>M 1\n+1,3,R,0,2400,H\n1,68xxxx6808xx72bcd8@1,Id,,id,0\n#\n";
    let mut d = decoder(src);
    let mut f = heat_frame([0x45, 0x23, 0x01, 0x00], 1234);
    d.handle_bytes(Instant::now(), &f);
    d.handle_end();
    assert_eq!(values(&drain(&mut d)), vec![vec![(1, 12345678.0)]]);
    let cs = f.len() - 2;
    f[cs] ^= 1;
    d.handle_bytes(Instant::now(), &f);
    d.handle_end();
    assert!(values(&drain(&mut d)).is_empty());
    assert_eq!(d.stats().crc_errors, 1);
}

#[test]
fn mbus_requests_go_out_as_written() {
    let src = ">D\n>M 1\n+1,3,r,0,2400,MBUS,1,10,105b015c16\n1,0C06bcd8@1,E,kWh,e,0\n#\n";
    let mut d = decoder(src);
    assert!(d.is_mbus());
    assert_eq!(
        d.poll_transmit(Instant::now()),
        Some(vec![0x10, 0x5B, 0x01, 0x5C, 0x16])
    );
}

proptest! {
    #[test]
    fn chunking_changes_nothing(cuts in proptest::collection::vec(0usize..200, 0..8), noise in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut stream = noise.clone();
        stream.extend_from_slice(&heat_frame([0x45, 0x23, 0x01, 0x00], 1234));
        stream.extend_from_slice(&noise);
        stream.extend_from_slice(&heat_frame([0x46, 0x23, 0x01, 0x00], -5));
        let mut whole = decoder(HEAT);
        let expected = feed(&mut whole, &stream);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
        cuts.sort_unstable();
        let mut d = decoder(HEAT);
        let mut at = 0;
        let mut got = Vec::new();
        for c in cuts.into_iter().chain([stream.len()]) {
            d.handle_bytes(Instant::now(), &stream[at..c]);
            got.extend(drain(&mut d));
            at = c;
        }
        d.handle_end();
        got.extend(drain(&mut d));
        prop_assert_eq!(values(&got), values(&expected));
        prop_assert_eq!(d.stats(), whole.stats());
    }

    #[test]
    fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for src in [HEAT, ">D\n>M 1\n+1,3,R,0,2400,R\n1,68xxxx68bcd8@1,Id,,id,0\n#\n"] {
            let mut d = decoder(src);
            d.handle_bytes(Instant::now(), &bytes);
            d.handle_end();
            let _ = drain(&mut d);
        }
    }
}

#[test]
fn an_over_long_burst_gives_the_same_events_however_it_is_chunked() {
    // Found by `fuzz/fuzz_targets/raw.rs`: the tail of an over-long `R` burst was reported as a
    // discard only when it arrived in a later chunk.
    let src = ">D\n>M 1\n+1,3,R,0,2400,R\n1,AA55UUuu@1,v,,v,0\n#\n";
    let bytes: Vec<u8> = (0..300u32)
        .map(|i| [0x68, 0x5F, 0x20][(i % 3) as usize])
        .collect();
    let mut whole = decoder(src);
    let expected = feed(&mut whole, &bytes);
    let mut d = decoder(src);
    let mut got = Vec::new();
    for b in &bytes {
        d.handle_bytes(Instant::now(), std::slice::from_ref(b));
        got.extend(drain(&mut d));
    }
    d.handle_end();
    got.extend(drain(&mut d));
    assert_eq!(got, expected);
    assert_eq!(d.stats(), whole.stats());
}
