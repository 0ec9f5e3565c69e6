//! Kamstrup end to end with real parts: `sml::runner::run` polls a simulated KMP meter over a
//! pseudo-terminal and the script's values come out on the SENSOR payload; spoilt replies on the
//! wire (bad CRC, a reply to another request, silence, a meter at the wrong baud rate, a cut
//! frame) publish nothing wrong, and the decoder counts each one.

mod common;
#[path = "support/recorded_run.rs"]
mod recorded_run;
#[path = "kamstrup_sim.rs"]
mod sim;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use recorded_run::*;
use sim::*;
use sml::decode::kamstrup::KamstrupDecoder;
use sml::decode::{DecodeEvent, Decoder, Value};

fn multical_script() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/meters/kamstrup-multical.sml"
    ))
    .unwrap()
}

#[test]
fn the_multical_script_of_the_meters_library_publishes_the_simulated_meters_values() {
    let (master, path) = pty();
    let stop = Arc::new(AtomicBool::new(false));
    let meter = serve_pty(master, Simulator::multical(), stop.clone(), |_, r| Some(r));
    let (cfg, published) = recorded_run(compile(&multical_script()), serial(path));
    run_until_a_sensor_payload(cfg, &published);
    stop.store(true, Ordering::Relaxed);
    assert!(meter.join().unwrap() >= 1);
    assert_eq!(
        sensors(&published)[0],
        r#"{"Time":"T","KSMC403":{"HeatEnergyE1":123.456,"PreTemp":65.23,"AftTemp":42.10,"DifTemp":23.13,"Flow":312,"Volume":3456.78,"MaxFlowDate":"15.03.24"}}"#
    );
}

/// Polled every 100 ms; the meter answers energy 4711 kWh and power 2875 W.
const FAST: &str = ">D\n>M 1\n+1,3,k,0,9600,K,1,1,3F1002003C03FF\n\
1,3F10003Ckstr@i0:1,Energy,kWh,e,0\n\
1,3F10x08xx03FFkstr@i0:1,Power,W,p,0\n#\n";

fn fast_meter() -> Simulator {
    let mut sim = Simulator::default();
    sim.registers
        .insert(0x003C, Register::new(0x02, 4, 0x00, 4711));
    sim.registers
        .insert(0x03FF, Register::new(0x1B, 4, 0x00, 2875));
    sim
}

/// What a meter at the wrong baud rate looks like from here: every byte misread, none a marker.
fn misread(reply: &[u8]) -> Vec<u8> {
    reply.iter().map(|b| b.rotate_left(3) | 0x80).collect()
}

/// The n-th reply spoilt in each way a line can spoil it; from the 6th on, good replies.
fn spoil(n: usize, mut reply: Vec<u8>) -> Option<Vec<u8>> {
    match n {
        // A flipped bit: the CRC fails.
        0 => {
            reply[5] ^= 0x01;
            Some(reply)
        }
        // A reply to another request: register 0044 where 003C and 03FF were asked.
        1 => {
            let mut body = vec![0x3F, 0x10, 0x00, 0x44, 0x29, 4, 0x00];
            body.extend_from_slice(&9999u32.to_be_bytes());
            Some(framed(0x40, &body))
        }
        // Silence.
        2 => None,
        // The wrong baud rate.
        3 => Some(misread(&reply)),
        // Cut short: the rest never comes.
        4 => Some(reply[..8].to_vec()),
        _ => Some(reply),
    }
}

#[test]
fn spoilt_replies_on_the_wire_publish_nothing_wrong() {
    let (master, path) = pty();
    let stop = Arc::new(AtomicBool::new(false));
    let meter = serve_pty(master, fast_meter(), stop.clone(), spoil);
    let (cfg, published) = recorded_run(compile(FAST), serial(path));
    run_until_a_sensor_payload(cfg, &published);
    stop.store(true, Ordering::Relaxed);
    let answered = meter.join().unwrap();
    let got = sensors(&published);
    for s in &got {
        assert_eq!(s, r#"{"Time":"T","K":{"e":4711,"p":2875}}"#);
    }
    // The five spoilt replies published nothing: at most the good ones did.
    assert!(
        got.len() <= answered.saturating_sub(5),
        "{} payloads, {answered} replies",
        got.len()
    );
}

/// The same spoilt replies, sans-IO on an injected clock: each one is counted under its kind.
#[test]
fn each_kind_of_spoilt_reply_is_counted_and_publishes_nothing() {
    let script = compile(FAST);
    let mut d = KamstrupDecoder::new(&script.meters[0]);
    let sim = fast_meter();
    let t0 = Instant::now();
    let mut values = Vec::new();
    let mut errors = Vec::new();
    for n in 0..7 {
        let now = t0 + Duration::from_millis(100 * n as u64);
        d.handle_timeout(now);
        let request = d.poll_transmit(now).expect("a request every 100 ms");
        if let Some(reply) = sim.answer_wire(&request).and_then(|r| spoil(n, r)) {
            d.handle_bytes(now, &reply);
        }
        while let Some(e) = d.poll_event() {
            match e {
                DecodeEvent::Telegram(t) => values.extend(t.readings),
                DecodeEvent::Error(e) => errors.push(e.to_string()),
                DecodeEvent::Discarded { .. } => {}
            }
        }
    }
    let stats = d.stats();
    let k = d.kamstrup_stats();
    assert_eq!(stats.crc_errors, 1, "{errors:?}");
    assert_eq!(k.wrong_request, 1, "{errors:?}");
    // No good reply came to the first five requests: each is counted when the next one goes out.
    assert_eq!(k.no_reply, 5, "{errors:?}");
    assert!(stats.bytes_skipped > 0, "the misread bytes are skipped");
    // The cut frame is ended by the next request.
    assert!(errors.iter().any(|e| e.contains("truncated")), "{errors:?}");
    assert_eq!(stats.telegrams, 2, "the two good replies, 5 and 6");
    assert_eq!(values.len(), 4);
    assert!(values
        .iter()
        .all(|r| matches!(r.value, Value::Number(v) if v == 4711.0 || v == 2875.0)));
}
