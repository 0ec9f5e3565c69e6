use super::*;

const GAS: &str = ">D\n>B\n>M 1\n+1,4,c,0,-50,GAS\n\
    1,1-0:1.8.0*255(@100,Gas,cbm,Count,2\n1,1-0:1.7.0*255(@1,Rate,1/min,Rate,1\n#\n";
const WATER_POLLED: &str = ">D\n>B\n>M 1\n+1,1,c,0,10,H2O\n\
    1,1-0:1.8.0*255(@1,Water,l,Count,0\n1,1-0:1.7.0*255(@1,Rate,l/min,Rate,1\n#\n";

fn meter(script: &str) -> Meter {
    crate::script::compile(script.as_bytes())
        .script
        .expect("compiles")
        .meters
        .remove(0)
}

const MS: u64 = 1_000_000;

fn edges(list: &[(bool, u64)]) -> Vec<u8> {
    list.iter()
        .flat_map(|&(high, ms)| {
            Edge {
                high,
                at_ns: ms * MS,
            }
            .encode()
        })
        .collect()
}

/// The (count, rate) telegrams and the number of rejections.
fn run(d: &mut CounterDecoder<'_>) -> (Vec<(f64, f64)>, usize) {
    let (mut out, mut errors) = (Vec::new(), 0);
    while let Some(e) = d.poll_event() {
        match e {
            DecodeEvent::Telegram(t) => {
                let v: Vec<f64> = t
                    .readings
                    .iter()
                    .map(|r| match r.value {
                        Value::Number(v) => v,
                        Value::Text(_) => unreachable!(),
                    })
                    .collect();
                out.push((v[0], v[1]));
            }
            DecodeEvent::Error(_) => errors += 1,
            DecodeEvent::Discarded { .. } => {}
        }
    }
    (out, errors)
}

#[test]
fn falling_edges_count_and_the_rate_is_pulses_per_minute() {
    let store = CounterStore::default();
    let m = meter(GAS);
    let mut d = CounterDecoder::new(&m, &store);
    let now = Instant::now();
    // Idle high, then three pulses 600 ms apart: 100 per minute.
    d.handle_bytes(
        now,
        &edges(&[
            (true, 0),
            (false, 1000),
            (true, 1100),
            (false, 1600),
            (true, 1700),
            (false, 2200),
        ]),
    );
    let (t, errors) = run(&mut d);
    assert_eq!(errors, 0);
    assert_eq!(
        t.first(),
        Some(&(0.0, 0.0)),
        "the count is published at start"
    );
    assert_eq!(t.last(), Some(&(0.03, 100.0)));
    assert_eq!(store.get(1), 3);
}

#[test]
fn contact_bounce_is_counted_as_rejected_and_not_as_pulses() {
    let store = CounterStore::default();
    let m = meter(GAS);
    let mut d = CounterDecoder::new(&m, &store);
    // One closing of the contact that chatters for 6 ms (within the 50 ms debounce).
    let bytes = edges(&[
        (true, 0),
        (false, 1000),
        (true, 1002),
        (false, 1004),
        (true, 1006),
        (true, 1200),
    ]);
    d.handle_bytes(Instant::now(), &bytes);
    let (_, errors) = run(&mut d);
    assert_eq!(store.get(1), 1);
    // The two rises inside the window are bounce (the fall between repeats the level Tasmota
    // still holds, so it is no edge at all).
    assert_eq!(errors, 2);
    assert_eq!(d.stats().rejected, 2);
}

#[test]
fn the_rate_falls_to_zero_after_five_seconds_without_a_pulse() {
    let store = CounterStore::default();
    let m = meter(GAS);
    let mut d = CounterDecoder::new(&m, &store);
    let t0 = Instant::now();
    d.handle_bytes(
        t0,
        &edges(&[(true, 0), (false, 1000), (true, 1100), (false, 2000)]),
    );
    assert_eq!(run(&mut d).0.last(), Some(&(0.02, 60.0)));
    assert_eq!(d.poll_timeout(), Some(t0 + RATE_TIMEOUT));
    d.handle_timeout(t0 + RATE_TIMEOUT);
    assert_eq!(run(&mut d).0, vec![(0.02, 0.0)]);
    assert_eq!(d.poll_timeout(), None);
}

#[test]
fn in_poll_mode_a_fall_counts_once_the_line_stayed_low_for_six_polls() {
    let store = CounterStore::default();
    let m = meter(WATER_POLLED);
    let mut d = CounterDecoder::new(&m, &store);
    let t0 = Instant::now();
    // Low for 30 ms (< 60 ms): bounce; low for 80 ms: a pulse.
    d.handle_bytes(
        t0,
        &edges(&[
            (true, 0),
            (false, 100),
            (true, 130),
            (false, 500),
            (true, 580),
        ]),
    );
    let (_, errors) = run(&mut d);
    assert_eq!((store.get(1), errors), (1, 1));
    // A fall still low when its six polls are over counts on the timeout.
    d.handle_bytes(t0, &edges(&[(false, 1000)]));
    let due = d.poll_timeout().expect("the fall waits to be confirmed");
    assert_eq!(due, t0 + Duration::from_millis(60));
    d.handle_timeout(due);
    assert_eq!(store.get(1), 2);
}

#[test]
fn garbage_and_a_cut_record_are_rejected_without_a_pulse() {
    let store = CounterStore::default();
    let m = meter(GAS);
    let mut d = CounterDecoder::new(&m, &store);
    let mut bytes = vec![0x7F, 0x42];
    bytes.extend(edges(&[(true, 0), (false, 1000)]));
    bytes.extend(&edges(&[(true, 2000)])[..4]);
    d.handle_bytes(Instant::now(), &bytes);
    d.handle_end();
    let (_, errors) = run(&mut d);
    assert_eq!(store.get(1), 1);
    assert_eq!(
        errors, 2,
        "one for the two garbage bytes, one for the cut record"
    );
}

#[test]
fn a_timestamp_going_back_is_rejected() {
    let store = CounterStore::default();
    let m = meter(GAS);
    let mut d = CounterDecoder::new(&m, &store);
    d.handle_bytes(Instant::now(), &edges(&[(true, 5000), (false, 1000)]));
    assert_eq!(run(&mut d).1, 1);
    assert_eq!(store.get(1), 0);
}

#[test]
fn a_new_decoder_goes_on_from_the_stored_count() {
    let store = CounterStore::default();
    let m = meter(GAS);
    let t0 = Instant::now();
    {
        let mut d = CounterDecoder::new(&m, &store);
        d.handle_bytes(t0, &edges(&[(true, 0), (false, 1000)]));
    }
    let mut d = CounterDecoder::new(&m, &store);
    d.handle_bytes(t0, &edges(&[(true, 0)]));
    assert_eq!(run(&mut d).0, vec![(0.01, 0.0)]);
}
