//! Fuzz the `e` decoder: arbitrary bytes in arbitrary chunks. Invariants: no panic (decoder and
//! `explain`), events and statistics do not depend on the chunking, and every piece the framer
//! accepts has master and answer CRCs that check.

#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sml::decode::ebus::frame::{self, crc8_unescaped};
use sml::decode::ebus::EbusDecoder;
use sml::decode::{DecodeEvent, DecodeStats, Decoder, MAX_QUEUED_EVENTS};

const SCRIPT: &str = ">D\n>M 1\n+1,3,e,0,2400,EBUS\n\
1,xxxx0503xxxxxxxxxxxxxxxxss@1,a,C,a,0\n\
1,03fe0503xxxxxxuu@b3:1,b,,b,0\n\
1,xxxx5017xxxxxxuuuu@16,c,C,c,1\n\
1,xxxx5014x5UUuu@1,d,C,d,0\n\
1,pm(r0700)bcd4@1,e,,e,0\n\
1,x20ffffffff@1,f,,f,0\n#\n";

fn meter() -> sml::script::model::Meter {
    static METER: std::sync::OnceLock<sml::script::model::Meter> = std::sync::OnceLock::new();
    METER
        .get_or_init(|| sml::script::compile(SCRIPT.as_bytes()).script.unwrap().meters[0].clone())
        .clone()
}

fn run(data: &[u8], chunk: usize) -> (Vec<DecodeEvent>, DecodeStats) {
    let mut d = EbusDecoder::new(&meter());
    let now = Instant::now();
    let mut events: Vec<DecodeEvent> = Vec::new();
    // Discards split by a poll are one run of skipped bytes.
    let push = |events: &mut Vec<DecodeEvent>, e: DecodeEvent| {
        if let (DecodeEvent::Discarded { bytes }, Some(DecodeEvent::Discarded { bytes: last })) =
            (&e, events.last_mut())
        {
            *last += bytes;
        } else {
            events.push(e);
        }
    };
    for piece in data.chunks(chunk.max(1)) {
        d.handle_bytes(now, piece);
        while let Some(e) = d.poll_event() {
            push(&mut events, e);
        }
    }
    d.handle_end();
    while let Some(e) = d.poll_event() {
        push(&mut events, e);
    }
    (events, d.stats())
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x3f) + 1;
    let (whole, whole_stats) = run(data, data.len().max(1));
    let (chunked, chunked_stats) = run(data, chunk);
    assert_eq!(
        whole_stats, chunked_stats,
        "statistics depend on chunking (chunk {chunk})"
    );
    if data.len() < 2 * MAX_QUEUED_EVENTS {
        assert_eq!(whole, chunked, "events depend on chunking (chunk {chunk})");
    }
    let _ = sml::decode::ebus::explain(data);
    // A piece between SYNs that the framer accepts has good CRCs.
    for piece in data.split(|&b| b == frame::SYN) {
        if let Ok(t) = frame::check(piece, 0) {
            let s = &t.symbols;
            let end = 5 + usize::from(t.master.nn);
            assert_eq!(crc8_unescaped(&s[..end]), s[end], "master CRC");
            if let Some(p) = t.slave {
                let end = p.start + 1 + usize::from(p.nn);
                assert_eq!(crc8_unescaped(&s[p.start..end]), s[end], "answer CRC");
            }
        }
    }
});
