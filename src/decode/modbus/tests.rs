//! The Modbus decoder on scripts compiled by the real front end: requests in turn, replies matched
//! to them, every kind of wrong reply counted and never published, and chunking that changes nothing.

use super::*;
use crate::script::model::Script;
use proptest::prelude::*;

/// An SDM630-style meter: voltage (block 0), current (block 1), and a line read from any reply.
const SDM: &str = ">D\n>M 1\n+1,3,m,0,9600,SDM,1,10,01040000,01040006\n\
1,010404ffffffff@i0:1,Voltage,V,volt,2\n\
1,010404ffffffff@i1:1,Current,A,amp,2\n\
1,0104xxUUuu@1,Any,x,any,0\n#\n";

fn compile(source: &str) -> Script {
    let compiled = crate::script::compile(source.as_bytes());
    compiled
        .script
        .unwrap_or_else(|| panic!("{:?}", compiled.diagnostics))
}

fn decoder(source: &str) -> ModbusDecoder {
    ModbusDecoder::new(&compile(source).meters[0])
}

/// A read reply with a good CRC.
fn rtu(slave: u8, function: u8, data: &[u8]) -> Vec<u8> {
    let mut f = vec![slave, function, data.len() as u8];
    f.extend_from_slice(data);
    f.extend_from_slice(&frame::crc16(&f).to_le_bytes());
    f
}

fn float(v: f32) -> [u8; 4] {
    v.to_be_bytes()
}

fn drain(d: &mut ModbusDecoder) -> Vec<DecodeEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

/// Readings of the telegrams among `events`, as (entry, value).
fn readings(events: &[DecodeEvent]) -> Vec<(u16, f64)> {
    events
        .iter()
        .filter_map(|e| match e {
            DecodeEvent::Telegram(t) => Some(t.readings.iter().map(|r| match r.value {
                Value::Number(v) => (r.entry, v),
                Value::Text(_) => panic!("text"),
            })),
            _ => None,
        })
        .flatten()
        .collect()
}

fn errors(events: &[DecodeEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, DecodeEvent::Error(_)))
        .count()
}

#[test]
fn blocks_go_out_in_turn_with_count_and_crc_one_per_period() {
    let mut d = decoder(SDM);
    let t0 = Instant::now();
    assert_eq!(
        d.poll_transmit(t0),
        Some(vec![0x01, 0x04, 0x00, 0x00, 0x00, 0x02, 0x71, 0xcb])
    );
    assert_eq!(d.poll_transmit(t0 + Duration::from_millis(999)), None);
    assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    let second = d.poll_transmit(t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(&second[..6], &[0x01, 0x04, 0x00, 0x06, 0x00, 0x02]);
}

#[test]
fn an_in_line_reads_only_the_reply_to_its_block() {
    let mut d = decoder(SDM);
    let t0 = Instant::now();
    d.poll_transmit(t0);
    d.handle_bytes(t0, &rtu(1, 4, &float(230.5)));
    let first = drain(&mut d);
    // Entry 1 (block 0) and entry 3 (any reply); not entry 2.
    assert_eq!(readings(&first), vec![(1, 230.5), (3, 17254.0)]);
    d.poll_transmit(t0 + Duration::from_secs(1));
    d.handle_bytes(t0, &rtu(1, 4, &float(1.25)));
    assert_eq!(readings(&drain(&mut d)), vec![(2, 1.25), (3, 16288.0)]);
    assert_eq!(d.stats().telegrams, 2);
}

#[test]
fn the_sdm630_capture_of_tasmota_issue_13224_reads_224_15_volts() {
    let mut d = decoder(SDM);
    d.poll_transmit(Instant::now());
    let reply = [0x01, 0x04, 0x04, 0x43, 0x60, 0x25, 0x88, 0xf4, 0xe8];
    d.handle_bytes(Instant::now(), &reply);
    let r = readings(&drain(&mut d));
    assert!((r[0].1 - 224.146_606_445).abs() < 1e-6, "{r:?}");
}

#[test]
fn a_bad_crc_publishes_nothing() {
    let mut d = decoder(SDM);
    d.poll_transmit(Instant::now());
    let mut reply = rtu(1, 4, &float(230.5));
    reply[4] ^= 0x10;
    d.handle_bytes(Instant::now(), &reply);
    let ev = drain(&mut d);
    assert!(readings(&ev).is_empty());
    assert!(matches!(
        ev[..],
        [DecodeEvent::Error(DecodeError::BadCrc { .. })]
    ));
    assert_eq!(d.stats().crc_errors, 1);
}

#[test]
fn a_reply_from_another_slave_publishes_nothing() {
    let mut d = decoder(SDM);
    d.poll_transmit(Instant::now());
    d.handle_bytes(Instant::now(), &rtu(2, 4, &float(230.5)));
    let ev = drain(&mut d);
    assert!(readings(&ev).is_empty());
    assert_eq!(errors(&ev), 1);
    assert_eq!(d.modbus_stats().wrong_slave, 1);
    // The right slave may still answer.
    d.handle_bytes(Instant::now(), &rtu(1, 4, &float(230.5)));
    assert_eq!(readings(&drain(&mut d))[0], (1, 230.5));
}

#[test]
fn a_reply_to_another_request_publishes_nothing() {
    let mut d = decoder(SDM);
    d.poll_transmit(Instant::now());
    // Same slave, another function; then the right function with 8 bytes where 4 were asked.
    d.handle_bytes(Instant::now(), &rtu(1, 3, &float(230.5)));
    d.handle_bytes(Instant::now(), &rtu(1, 4, &[0; 8]));
    let ev = drain(&mut d);
    assert!(readings(&ev).is_empty());
    assert_eq!(errors(&ev), 2);
    assert_eq!(d.modbus_stats().wrong_request, 2);
}

#[test]
fn an_exception_reply_is_counted_and_publishes_nothing() {
    let mut d = decoder(SDM);
    d.poll_transmit(Instant::now());
    // Tasmota issue 8677: function 04 answered with exception 04.
    d.handle_bytes(Instant::now(), &[0x01, 0x84, 0x04, 0x42, 0xc3]);
    let ev = drain(&mut d);
    assert!(readings(&ev).is_empty());
    let DecodeEvent::Error(e) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert!(
        e.to_string()
            .contains("exception 04 (server device failure)"),
        "{e}"
    );
    assert_eq!(d.modbus_stats().exceptions, 1);
    assert_eq!(d.modbus_stats().no_reply, 0);
}

#[test]
fn a_silent_slave_is_counted_and_the_next_block_goes_out() {
    let mut d = decoder(SDM);
    let t0 = Instant::now();
    d.poll_transmit(t0);
    let next = d.poll_transmit(t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(&next[..4], &[0x01, 0x04, 0x00, 0x06]);
    assert_eq!(d.modbus_stats().no_reply, 1);
    // A second reply with nobody asking is refused.
    d.handle_bytes(t0, &rtu(1, 4, &float(1.0)));
    d.handle_bytes(t0, &rtu(1, 4, &float(2.0)));
    let ev = drain(&mut d);
    assert_eq!(readings(&ev), vec![(2, 1.0), (3, 16256.0)]);
    assert_eq!(d.modbus_stats().unsolicited, 1);
    assert_eq!(errors(&ev), 1);
}

#[test]
fn a_capture_of_replies_answers_the_blocks_in_turn_skipping_missing_ones() {
    let script = ">D\n>M 1\n+1,3,m,0,9600,BUS,1,1,01040000,02040000,03040000\n\
1,010404UUuuUUuu@i0:1,A,x,a,0\n\
1,020404UUuuUUuu@i1:1,B,x,b,0\n\
1,030404UUuuUUuu@i2:1,C,x,c,0\n#\n";
    let mut d = decoder(script);
    let t0 = Instant::now();
    // Slave 2 did not answer in the first round.
    for (slave, v) in [(1, 1u32), (3, 3), (1, 4), (2, 5), (3, 6)] {
        d.handle_bytes(t0, &rtu(slave, 4, &v.to_be_bytes()));
    }
    assert_eq!(
        readings(&drain(&mut d)),
        vec![(1, 1.0), (3, 3.0), (1, 4.0), (2, 5.0), (3, 6.0)]
    );
    assert_eq!(d.modbus_stats().no_reply, 1);
    // A reply no block asks for is refused.
    d.handle_bytes(t0, &rtu(9, 4, &[0; 4]));
    assert_eq!(errors(&drain(&mut d)), 1);
    assert_eq!(d.modbus_stats().wrong_slave, 1);
}

#[test]
fn a_truncated_reply_is_dropped_on_silence_and_publishes_nothing() {
    let mut d = decoder(SDM);
    let t0 = Instant::now();
    d.poll_transmit(t0);
    let reply = rtu(1, 4, &float(230.5));
    d.handle_bytes(t0, &reply[..6]);
    assert_eq!(d.poll_timeout(), Some(t0 + SILENCE));
    d.handle_timeout(t0 + SILENCE);
    let ev = drain(&mut d);
    assert!(matches!(
        ev[..],
        [DecodeEvent::Error(DecodeError::Truncated { bytes: 6, .. })]
    ));
    assert_eq!(d.stats().rejected, 1);
}

#[test]
fn a_meter_at_the_wrong_baud_rate_gives_crc_errors_not_values() {
    let mut d = decoder(SDM);
    let t0 = Instant::now();
    d.poll_transmit(t0);
    // What 9600 baud bytes look like read at 2400: mostly 0x00/0x80/0xf8-ish noise.
    let noise: Vec<u8> = (0..200u32)
        .map(|i| [0x00, 0x80, 0xf8, 0x78, 0xe0, 0x06][(i * 7 % 6) as usize])
        .collect();
    d.handle_bytes(t0, &noise);
    d.handle_end();
    let ev = drain(&mut d);
    assert!(readings(&ev).is_empty());
    assert!(d.stats().crc_errors + d.stats().rejected > 0);
}

#[test]
fn several_slaves_on_one_line_each_read_their_own_reply() {
    let script = ">D\n>M 1\n+1,3,m,0,9600,BUS,1,1,01040000,02040000\n\
1,010404UUuuUUuu@i0:1,A,x,a,0\n\
1,020404UUuuUUuu@i1:1,B,x,b,0\n#\n";
    let mut d = decoder(script);
    let t0 = Instant::now();
    d.poll_transmit(t0);
    d.handle_bytes(t0, &rtu(1, 4, &7u32.to_be_bytes()));
    d.poll_transmit(t0 + Duration::from_millis(100));
    d.handle_bytes(t0, &rtu(2, 4, &9u32.to_be_bytes()));
    assert_eq!(readings(&drain(&mut d)), vec![(1, 7.0), (2, 9.0)]);
}

#[test]
fn a_raw_block_sends_no_count_and_its_echo_is_read() {
    let script = ">D\n>M 1\n+1,3,m,0,9600,W,1,1,r010600010001\n\
1,0106UUuu@i0:1,Reg,x,reg,0\n#\n";
    let mut d = decoder(script);
    let sent = d.poll_transmit(Instant::now()).unwrap();
    assert_eq!(&sent[..6], &[1, 6, 0, 1, 0, 1]);
    assert_eq!(sent.len(), 8);
    d.handle_bytes(Instant::now(), &sent);
    assert_eq!(readings(&drain(&mut d)), vec![(1, 1.0)]);
}

#[test]
fn without_requests_every_good_reply_is_read_by_lines_without_a_block() {
    let script = ">D\n>M 1\n+1,3,m,0,9600,SNIFF\n1,010404UUuuUUuu@1,A,x,a,0\n#\n";
    let mut d = decoder(script);
    d.handle_bytes(Instant::now(), &rtu(1, 4, &5u32.to_be_bytes()));
    assert_eq!(readings(&drain(&mut d)), vec![(1, 5.0)]);
}

const TCP: &str = ">D\n>M 1\n+1,[127.0.0.1],m,0,502,TCP,1,10,01040000\n\
1,010404ffffffff@i0:1,Voltage,V,volt,2\n#\n";

#[test]
fn modbus_tcp_requests_carry_an_mbap_header_and_replies_match_their_transaction() {
    let mut d = decoder(TCP);
    let t0 = Instant::now();
    let sent = d.poll_transmit(t0).unwrap();
    assert_eq!(sent, frame::mbap(1, &[1, 4, 0, 0, 0, 2]));
    let mut adu = vec![1, 4, 4];
    adu.extend_from_slice(&float(231.0));
    // Another transaction's reply first: refused; then the right one.
    d.handle_bytes(t0, &frame::mbap(9, &adu));
    d.handle_bytes(t0, &frame::mbap(1, &adu));
    let ev = drain(&mut d);
    assert_eq!(errors(&ev), 1);
    assert_eq!(readings(&ev), vec![(1, 231.0)]);
    assert_eq!(d.modbus_stats().wrong_request, 1);
    let next = d.poll_transmit(t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(&next[..2], &[0, 2]);
}

/// A stream of good, corrupted and exception replies for a meter that only listens.
fn listen_stream() -> Vec<u8> {
    let mut s = Vec::new();
    for i in 0..6u32 {
        let mut r = rtu(1, 4, &(i * 1000).to_be_bytes());
        if i == 2 {
            r[5] ^= 0xff;
        }
        s.extend(r);
        if i == 3 {
            s.extend([0x01, 0x84, 0x02, 0xc2, 0xc1]);
        }
    }
    s
}

const SNIFF: &str = ">D\n>M 1\n+1,3,m,0,9600,SNIFF\n1,010404UUuuUUuu@1,A,x,a,0\n#\n";

fn events_of(chunks: &[&[u8]]) -> (Vec<DecodeEvent>, DecodeStats) {
    events_of_meter(SNIFF, false, chunks)
}

/// Events of `chunks` fed in turn (discards split by a poll merged), and the statistics.
fn events_of_meter(source: &str, ask: bool, chunks: &[&[u8]]) -> (Vec<DecodeEvent>, DecodeStats) {
    let mut d = decoder(source);
    let t0 = Instant::now();
    if ask {
        d.poll_transmit(t0);
    }
    let mut ev: Vec<DecodeEvent> = Vec::new();
    let take = |d: &mut ModbusDecoder, ev: &mut Vec<DecodeEvent>| {
        for e in drain(d) {
            match (&e, ev.last_mut()) {
                (
                    DecodeEvent::Discarded { bytes },
                    Some(DecodeEvent::Discarded { bytes: last }),
                ) => *last += bytes,
                _ => ev.push(e),
            }
        }
    };
    for c in chunks {
        d.handle_bytes(t0, c);
        take(&mut d, &mut ev);
    }
    d.handle_end();
    take(&mut d, &mut ev);
    (ev, d.stats())
}

/// Modbus TCP replies with an impossible header and noise between them.
fn tcp_stream() -> Vec<u8> {
    let mut s = frame::mbap(1, &[1, 4, 4, 0x43, 0x66, 0x19, 0x9a]);
    s.extend([0, 7, 0, 9, 0, 3, 0xff, 0x00]);
    s.extend(frame::mbap(1, &[1, 4, 4, 0x43, 0x66, 0x19, 0x9a]));
    s.extend(frame::mbap(5, &[1, 0x84, 2]));
    s.extend([0, 1, 0]);
    s
}

fn chunked(stream: &[u8], cuts: Vec<usize>) -> Vec<&[u8]> {
    let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.sort();
    let mut chunks = Vec::new();
    let mut last = 0;
    for c in cuts {
        chunks.push(&stream[last..c]);
        last = c;
    }
    chunks.push(&stream[last..]);
    chunks
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_events_as_the_whole_feed(cuts in proptest::collection::vec(0usize..200, 0..20)) {
        let stream = listen_stream();
        let whole = events_of(&[&stream]);
        let (ev, stats) = events_of(&chunked(&stream, cuts));
        prop_assert_eq!(&ev, &whole.0);
        prop_assert_eq!(stats, whole.1);
    }

    #[test]
    fn any_chunking_of_a_modbus_tcp_stream_gives_the_same_events(cuts in proptest::collection::vec(0usize..200, 0..20)) {
        let stream = tcp_stream();
        let whole = events_of_meter(TCP, true, &[&stream]);
        let (ev, stats) = events_of_meter(TCP, true, &chunked(&stream, cuts));
        prop_assert_eq!(&ev, &whole.0);
        prop_assert_eq!(stats, whole.1);
    }

    #[test]
    fn hostile_bytes_never_panic_and_never_grow_the_buffer(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        for source in [SDM, TCP] {
            let mut d = decoder(source);
            let t0 = Instant::now();
            d.poll_transmit(t0);
            for c in bytes.chunks(37) {
                d.handle_bytes(t0, c);
                prop_assert!(d.pending() <= frame::MAX_RTU_FRAME);
                drain(&mut d);
            }
            d.handle_timeout(t0 + SILENCE);
            prop_assert_eq!(d.pending(), 0);
        }
    }
}

#[test]
fn the_tcp_stream_used_for_chunking_has_a_reply_a_bad_header_and_a_stray_reply() {
    let (ev, stats) = events_of_meter(TCP, true, &[&tcp_stream()]);
    assert_eq!(stats.telegrams, 1);
    assert_eq!(readings(&ev).len(), 1);
    // The bad header, the second reply and the exception with nobody asking, the cut-off tail.
    assert_eq!(errors(&ev), 4, "{ev:?}");
    assert_eq!(stats.bytes_skipped, 8);
}

#[test]
fn the_stream_used_for_chunking_has_good_and_bad_replies() {
    let (ev, stats) = events_of(&[&listen_stream()]);
    assert_eq!(stats.telegrams, 5);
    assert_eq!(stats.crc_errors, 1);
    assert_eq!(errors(&ev), 2);
    assert_eq!(readings(&ev).len(), 5);
}
