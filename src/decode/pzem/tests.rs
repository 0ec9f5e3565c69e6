//! The PZEM decoder on scripts compiled by the real front end: replies checked and matched to the
//! request waiting, `iN:` lines read the reply to their block, every kind of bad reply counted and
//! never published, and chunking that changes nothing.

use super::*;
use crate::script::model::Script;
use proptest::prelude::*;

/// The library's PZEM script in short: whole volts, power, energy (24 bits read as 32 with the
/// low byte 0, hence `@256`), and a line for block 1 only.
const PZEM: &str = ">D\n>M 1\n+1,3,p,0,9600,PZEM,1,10,B0,B1,B2,B3\n\
1,A0UUuu@1,Voltage,V,volt,0\n\
1,A0xxxxuu@10,Tenths,V,tenths,1\n\
1,A2UUuu@1,Power,W,power,0\n\
1,A3UUuuUUuu@256,Energy,Wh,energy,0\n\
1,xxxxuu@i1:1,Amps,A,amps,0\n#\n";

fn compile(source: &str) -> Script {
    let compiled = crate::script::compile(source.as_bytes());
    compiled
        .script
        .unwrap_or_else(|| panic!("{:?}", compiled.diagnostics))
}

fn decoder() -> PzemDecoder {
    PzemDecoder::new(&compile(PZEM).meters[0])
}

/// A reply with its checksum.
fn reply(code: u8, data: [u8; 5]) -> Vec<u8> {
    let mut f = vec![code];
    f.extend_from_slice(&data);
    f.push(checksum(&f));
    f
}

fn drain(d: &mut PzemDecoder) -> Vec<DecodeEvent> {
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
            Value::Text(_) => panic!("text from a PZEM line"),
        })
        .collect()
}

fn errors(events: &[DecodeEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            DecodeEvent::Error(e) => Some(e.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_datasheet_examples_check() {
    // PZEM-004T v1 datasheet: 230.2 V, 17.32 A, 2200 W, 99999 Wh.
    assert_eq!(reply(0xA0, [0x00, 0xE6, 0x02, 0x00, 0x00])[6], 0x88);
    assert_eq!(reply(0xA1, [0x00, 0x11, 0x20, 0x00, 0x00])[6], 0xD2);
    assert_eq!(reply(0xA2, [0x08, 0x98, 0x00, 0x00, 0x00])[6], 0x42);
    assert_eq!(reply(0xA3, [0x01, 0x86, 0x9F, 0x00, 0x00])[6], 0xC9);
}

#[test]
fn each_request_is_framed_and_its_reply_read() {
    let mut d = decoder();
    let t0 = Instant::now();
    assert_eq!(
        d.poll_transmit(t0),
        Some(vec![0xB0, 0xC0, 0xA8, 0x01, 0x01, 0x00, 0x1A])
    );
    d.handle_bytes(t0, &reply(0xA0, [0x00, 0xE6, 0x02, 0x00, 0x00]));
    assert_eq!(values(&drain(&mut d)), vec![(1, 230.0), (2, 0.2)]);
    let t1 = d.poll_timeout().unwrap();
    assert_eq!(d.poll_transmit(t1).map(|r| r[0]), Some(0xB1));
    d.handle_bytes(t1, &reply(0xA1, [0x00, 0x11, 0x20, 0x00, 0x00]));
    // Only the block-1 line reads the current reply (byte 2 = 17 A).
    assert_eq!(values(&drain(&mut d)), vec![(5, 17.0)]);
    let t2 = d.poll_timeout().unwrap();
    d.poll_transmit(t2);
    d.handle_bytes(t2, &reply(0xA2, [0x08, 0x98, 0x00, 0x00, 0x00]));
    assert_eq!(values(&drain(&mut d)), vec![(3, 2200.0)]);
    let t3 = d.poll_timeout().unwrap();
    d.poll_transmit(t3);
    d.handle_bytes(t3, &reply(0xA3, [0x01, 0x86, 0x9F, 0x00, 0x00]));
    assert_eq!(values(&drain(&mut d)), vec![(4, 99999.0)]);
    assert_eq!(d.pzem_stats().requests, 4);
    assert_eq!(d.stats().telegrams, 4);
}

#[test]
fn a_bad_checksum_publishes_nothing_and_is_counted() {
    let mut d = decoder();
    let mut r = reply(0xA0, [0x00, 0xE6, 0x02, 0x00, 0x00]);
    r[2] = 0xE7;
    d.handle_bytes(Instant::now(), &r);
    let events = drain(&mut d);
    assert!(values(&events).is_empty());
    assert_eq!(
        errors(&events),
        vec!["CRC mismatch: telegram says 0088, computed 0089"]
    );
    assert_eq!(d.stats().crc_errors, 1);
}

#[test]
fn a_reply_to_another_command_publishes_nothing() {
    let mut d = decoder();
    let t0 = Instant::now();
    d.poll_transmit(t0); // B0 asked
    d.handle_bytes(t0, &reply(0xA2, [0x08, 0x98, 0x00, 0x00, 0x00]));
    let events = drain(&mut d);
    assert!(values(&events).is_empty());
    assert_eq!(
        errors(&events),
        vec!["malformed telegram at byte 0: reply A2 (to command B2) while B0 was asked"]
    );
    // And a second reply with nobody waiting.
    d.handle_bytes(t0, &reply(0xA0, [0x00, 0xE6, 0x02, 0x00, 0x00]));
    assert!(errors(&drain(&mut d))[0].contains("no request waiting"));
    assert_eq!(d.pzem_stats().wrong_reply, 2);
}

#[test]
fn noise_before_a_reply_is_skipped_and_the_reply_still_reads() {
    let mut d = decoder();
    let mut bytes = vec![0x00, 0x13, 0xFF];
    bytes.extend(reply(0xA0, [0x00, 0xE6, 0x02, 0x00, 0x00]));
    d.handle_bytes(Instant::now(), &bytes);
    let events = drain(&mut d);
    assert_eq!(events[0], DecodeEvent::Discarded { bytes: 3 });
    assert_eq!(values(&events), vec![(1, 230.0), (2, 0.2)]);
    assert_eq!(d.stats().bytes_skipped, 3);
}

#[test]
fn a_reply_cut_short_is_rejected_after_the_silence() {
    let mut d = decoder();
    let t0 = Instant::now();
    d.handle_bytes(t0, &reply(0xA0, [0x00, 0xE6, 0x02, 0x00, 0x00])[..4]);
    assert_eq!(d.poll_timeout(), Some(t0 + SILENCE));
    d.handle_timeout(t0 + SILENCE);
    let events = drain(&mut d);
    assert_eq!(
        errors(&events),
        vec!["telegram truncated after 4 bytes: the line went quiet in the middle of a reply"]
    );
    assert_eq!(d.stats().rejected, 1);
}

#[test]
fn an_unanswered_request_is_counted_when_the_next_goes_out() {
    let mut d = decoder();
    let t0 = Instant::now();
    d.poll_transmit(t0);
    let t1 = d.poll_timeout().unwrap();
    d.poll_transmit(t1);
    assert_eq!(d.pzem_stats().no_reply, 1);
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_events(cut in 0usize..30, noise in proptest::collection::vec(any::<u8>(), 0..8)) {
        let mut stream = noise;
        stream.extend(reply(0xA0, [0x00, 0xE6, 0x02, 0x00, 0x00]));
        stream.extend(reply(0xA3, [0x01, 0x86, 0x9F, 0x00, 0x00]));
        let now = Instant::now();
        let mut whole = decoder();
        whole.handle_bytes(now, &stream);
        whole.handle_end();
        let mut chunked = decoder();
        let cut = cut.min(stream.len());
        chunked.handle_bytes(now, &stream[..cut]);
        chunked.handle_bytes(now, &stream[cut..]);
        chunked.handle_end();
        prop_assert_eq!(drain(&mut chunked), drain(&mut whole));
    }
}
