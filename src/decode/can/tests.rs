use super::*;
use crate::decode::DecodeEvent;

const HUAWEI: &str = ">D\n>B\n->sensor53 r\n>M 1\n\
+1,7,C,0,3203,CAN,6,10,908040FE080000000000000000\n\
1,1081407f0801700000UUuuUUuu@1024,Input Power,W,ipwr,1\n\
1,1081407f0801750000UUuuUUuu@1024,Output Voltage,V,ovolt,1\n#\n";

fn decoder(script: &str) -> CanDecoder {
    let compiled = crate::script::compile(script.as_bytes());
    let script = compiled.script.expect("the script compiles");
    CanDecoder::new(&script.meters[0])
}

fn frame(id: u32, data: &[u8]) -> Vec<u8> {
    CanFrame {
        id,
        data: data.to_vec(),
    }
    .encode()
}

fn events(d: &mut CanDecoder) -> Vec<DecodeEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

fn numbers(evs: &[DecodeEvent]) -> Vec<(u16, f64)> {
    evs.iter()
        .filter_map(|e| match e {
            DecodeEvent::Telegram(t) => Some(t.readings.clone()),
            _ => None,
        })
        .flatten()
        .map(|r| match r.value {
            Value::Number(v) => (r.entry, v),
            Value::Text(_) => panic!("no text on CAN"),
        })
        .collect()
}

#[test]
fn an_extended_frame_matches_the_bare_identifier_of_the_metric_line() {
    let mut d = decoder(HUAWEI);
    let now = Instant::now();
    // 0x1081407F extended; register 0x75 (output voltage) = 53.5 V x 1024.
    let value = (53.5 * 1024.0) as u32;
    let mut data = vec![0x01, 0x75, 0, 0];
    data.extend_from_slice(&value.to_be_bytes());
    d.handle_bytes(now, &frame(0x1081_407F | EXTENDED_FLAG, &data));
    assert_eq!(numbers(&events(&mut d)), vec![(2, 53.5)]);
    assert_eq!(d.stats().telegrams, 1);
}

#[test]
fn frames_split_anywhere_decode_the_same() {
    let mut stream = Vec::new();
    for reg in [0x70u8, 0x75] {
        stream.extend(frame(0x9081_407F, &[0x01, reg, 0, 0, 0, 0, 0x04, 0x00]));
    }
    let now = Instant::now();
    for cut in 0..stream.len() {
        let mut d = decoder(HUAWEI);
        d.handle_bytes(now, &stream[..cut]);
        d.handle_bytes(now, &stream[cut..]);
        assert_eq!(
            numbers(&events(&mut d)),
            vec![(1, 1.0), (2, 1.0)],
            "cut {cut}"
        );
    }
}

#[test]
fn a_frame_with_another_id_is_counted_and_publishes_nothing() {
    let mut d = decoder(HUAWEI);
    d.handle_bytes(
        Instant::now(),
        &frame(0x9081_4080, &[0x01, 0x75, 0, 0, 0, 0, 4, 0]),
    );
    assert!(events(&mut d).is_empty());
    assert_eq!(d.can_stats().unmatched, 1);
}

#[test]
fn a_length_above_eight_is_rejected_and_the_stream_resynchronises() {
    let mut d = decoder(HUAWEI);
    let mut stream = vec![0x12, 0x34, 0x56, 0x78, 0x0F];
    stream.extend(frame(0x9081_407F, &[0x01, 0x70, 0, 0, 0, 0, 8, 0]));
    d.handle_bytes(Instant::now(), &stream);
    let evs = events(&mut d);
    assert!(evs.iter().any(|e| matches!(
        e,
        DecodeEvent::Error(DecodeError::Malformed { offset: 4, .. })
    )));
    assert!(numbers(&evs).contains(&(1, 2.0)), "{evs:?}");
    assert!(d.stats().rejected >= 1);
}

#[test]
fn a_record_cut_by_the_end_or_by_silence_is_truncated_and_publishes_nothing() {
    let mut d = decoder(HUAWEI);
    let full = frame(0x9081_407F, &[0x01, 0x70, 0, 0, 0, 0, 8, 0]);
    let t0 = Instant::now();
    d.handle_bytes(t0, &full[..7]);
    d.handle_timeout(t0 + SILENCE / 2);
    assert!(events(&mut d).is_empty());
    d.handle_timeout(t0 + SILENCE);
    let evs = events(&mut d);
    assert!(matches!(
        evs.as_slice(),
        [DecodeEvent::Error(DecodeError::Truncated { bytes: 7, .. })]
    ));
    d.handle_bytes(t0, &full[..3]);
    d.handle_end();
    assert_eq!(d.stats().rejected, 2);
    assert!(numbers(&events(&mut d)).is_empty());
}

#[test]
fn the_request_block_goes_out_every_period_as_a_frame_record() {
    let mut d = decoder(HUAWEI);
    let t0 = Instant::now();
    let sent = d
        .poll_transmit(t0)
        .expect("the first request is due at once");
    assert_eq!(
        CanFrame::decode(&sent),
        Some(CanFrame {
            id: 0x9080_40FE,
            data: vec![0; 8]
        })
    );
    assert_eq!(d.poll_transmit(t0), None);
    assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    assert!(d.poll_transmit(t0 + Duration::from_secs(1)).is_some());
}
