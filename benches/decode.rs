//! Decoder throughput against the peers, in the same run: `cargo bench --bench decode`.
//!
//! - DSMR: sml decodes `../shared/bench/dsmr5-3phase.txt` with the SX631 script's metric lines
//!   (`meters/sx631.sml`), CRC checked. The `dsmr5` crate rejects that telegram whole because of its
//!   `0-0:98.1.0` line, so it is measured on the same telegram without that line, CRC recomputed;
//!   sml is measured on both.
//! - SML: sml decodes `../shared/bench/sml-10-entries.bin` with one metric line per list entry;
//!   `sml-rs` decodes the same frame (transport + complete parse).
//!
//! Ends with one summary line per protocol, read from criterion's own estimates.

use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{black_box, Criterion, Throughput};
use sml::decode::{decoder_for, DecodeEvent, Decoder};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench")
}

fn decoder(script: &str) -> Box<dyn Decoder> {
    let compiled = sml::script::compile(script.as_bytes());
    let script = compiled
        .script
        .unwrap_or_else(|| panic!("bench script does not compile: {:?}", compiled.diagnostics));
    decoder_for(&script.meters[0]).expect("decoder")
}

/// Feed one telegram and count the values it gave; panics if it gave no telegram.
fn decode_once(d: &mut dyn Decoder, bytes: &[u8]) -> usize {
    d.handle_bytes(Instant::now(), bytes);
    let mut values = 0;
    let mut telegrams = 0;
    while let Some(ev) = d.poll_event() {
        match ev {
            DecodeEvent::Telegram(t) => {
                telegrams += 1;
                values += t.readings.len();
            }
            DecodeEvent::Discarded { .. } => {}
            DecodeEvent::Error(e) => panic!("bench input rejected: {e}"),
        }
    }
    assert_eq!(telegrams, 1, "one telegram per feed");
    values
}

/// The telegram without its `0-0:98.1.0` line, with the CRC recomputed.
fn without_monthly_line(telegram: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(telegram).expect("ASCII telegram");
    let bang = text.find('!').expect("telegram has !");
    let body: String = text[..=bang]
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("0-0:98.1.0"))
        .collect();
    let crc = sml::decode::obis::check::crc16_arc(body.as_bytes());
    format!("{body}{crc:04X}\r\n").into_bytes()
}

fn dsmr5_decode(bytes: &[u8]) -> dsmr5::Result<dsmr5::state::State> {
    let readout = dsmr5::Reader::new(bytes.iter().map(|b| Ok::<u8, ()>(*b)))
        .next()
        .expect("a readout")
        .map_err(|_| dsmr5::Error::InvalidFormat)?;
    let telegram = readout.to_telegram()?;
    dsmr5::Result::<dsmr5::state::State>::from(&telegram)
}

/// One metric line per entry of the bench SML frame.
const SML_SCRIPT: &str = ">D\n>B\n->sensor53 r\n>M 1\n+1,3,s,0,9600,SML\n\
1,7707010060320101@#x,Manufacturer,,manufacturer,0\n\
1,77070100600100ff@#,Server id,,server_id,0\n\
1,77070100010800ff@1000,Import,kWh,import,3\n\
1,77070100020800ff@1000,Export,kWh,export,3\n\
1,77070100010801ff@1000,Import T1,kWh,import_t1,3\n\
1,77070100010802ff@1000,Import T2,kWh,import_t2,3\n\
1,77070100100700ff@1,Power,W,power,1\n\
1,77070100240700ff@1,Power L1,W,power_l1,1\n\
1,77070100380700ff@1,Power L2,W,power_l2,1\n\
1,770701004c0700ff@1,Power L3,W,power_l3,1\n#\n";

fn estimate_ns(id: &str) -> Option<f64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/criterion")
        .join(id)
        .join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn main() {
    let dir = shared();
    let (Ok(dsmr), Ok(smlbin)) = (
        std::fs::read(dir.join("dsmr5-3phase.txt")),
        std::fs::read(dir.join("sml-10-entries.bin")),
    ) else {
        eprintln!("../shared/bench is absent: nothing to measure");
        return;
    };
    let sx631 =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("meters/sx631.sml"))
            .unwrap();
    let dsmr_short = without_monthly_line(&dsmr);
    assert!(
        dsmr5_decode(&dsmr).is_err(),
        "dsmr5 is expected to reject the telegram with 0-0:98.1.0"
    );
    dsmr5_decode(&dsmr_short).expect("dsmr5 decodes the telegram without 0-0:98.1.0");
    let mut sx = decoder(&sx631);
    assert_eq!(
        decode_once(sx.as_mut(), &dsmr),
        17,
        "17 of the SX631 lines find their code in the bench telegram"
    );
    let mut sm = decoder(SML_SCRIPT);
    assert_eq!(
        decode_once(sm.as_mut(), &smlbin),
        10,
        "every SML entry matched"
    );
    sml_rs::SmlReader::from_slice(&smlbin)
        .read::<sml_rs::parser::complete::File>()
        .expect("sml-rs parses the bench frame");

    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = c.benchmark_group("dsmr");
        g.throughput(Throughput::Bytes(dsmr.len() as u64));
        g.bench_function("sml", |b| {
            b.iter(|| decode_once(sx.as_mut(), black_box(&dsmr)))
        });
        g.throughput(Throughput::Bytes(dsmr_short.len() as u64));
        g.bench_function("sml-without-98.1.0", |b| {
            b.iter(|| decode_once(sx.as_mut(), black_box(&dsmr_short)))
        });
        g.bench_function("dsmr5-without-98.1.0", |b| {
            b.iter(|| dsmr5_decode(black_box(&dsmr_short)).unwrap())
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("sml");
        g.throughput(Throughput::Bytes(smlbin.len() as u64));
        g.bench_function("sml", |b| {
            b.iter(|| decode_once(sm.as_mut(), black_box(&smlbin)))
        });
        g.bench_function("sml-rs", |b| {
            b.iter(|| {
                let mut r = sml_rs::SmlReader::from_slice(black_box(&smlbin));
                r.read::<sml_rs::parser::complete::File>()
                    .map(|f| f.messages.len())
                    .unwrap()
            })
        });
        g.finish();
    }
    modbus_group(&mut c);
    c.final_summary();

    let us = |id: &str| estimate_ns(id).map(|ns| ns / 1000.0);
    let mbs = |bytes: usize, us: f64| bytes as f64 / us; // bytes per microsecond = MB/s
    if let (Some(a), Some(a2), Some(b)) = (
        us("dsmr/sml"),
        us("dsmr/sml-without-98.1.0"),
        us("dsmr/dsmr5-without-98.1.0"),
    ) {
        println!(
            "dsmr: sml {a:.2} us/telegram, dsmr5 {b:.2} us/telegram, {:.1}x ({:.0} MB/s; without 0-0:98.1.0 sml {a2:.2} us, {:.1}x)",
            b / a,
            mbs(dsmr.len(), a),
            b / a2
        );
    }
    if let (Some(a), Some(b)) = (us("sml/sml"), us("sml/sml-rs")) {
        println!(
            "sml: sml {a:.2} us/frame, sml-rs {b:.2} us/frame, {:.1}x ({:.0} MB/s)",
            b / a,
            mbs(smlbin.len(), a)
        );
    }
    modbus_summary();
}

/// Modbus: sml decodes the SDM630 reply of `tests/fixtures/meters/sdm630-modbus.bin` (CRC, request
/// match and nine `ffffffff` metric lines of `meters/sdm630-modbus.sml`); `rmodbus` parses the same
/// reply (CRC, unit and function checks, nine big-endian floats).
fn modbus_reply() -> (Vec<u8>, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let capture = std::fs::read(root.join("tests/fixtures/meters/sdm630-modbus.bin")).unwrap();
    let script = std::fs::read_to_string(root.join("meters/sdm630-modbus.sml")).unwrap();
    (capture[..41].to_vec(), script)
}

fn modbus_group(c: &mut Criterion) {
    let (reply, script) = modbus_reply();
    let mut d = decoder(&script);
    assert_eq!(decode_once(d.as_mut(), &reply), 9);
    let mut request = rmodbus::client::ModbusRequest::new(1, rmodbus::ModbusProto::Rtu);
    let mut wire = Vec::new();
    request.generate_get_inputs(0, 18, &mut wire).unwrap();
    let mut floats: Vec<f32> = Vec::with_capacity(9);
    request.parse_f32_be(&reply, &mut floats).unwrap();
    assert_eq!(floats.len(), 9);

    let mut g = c.benchmark_group("modbus");
    g.throughput(Throughput::Bytes(reply.len() as u64));
    g.bench_function("sml", |b| {
        b.iter(|| decode_once(d.as_mut(), black_box(&reply)))
    });
    g.bench_function("rmodbus", |b| {
        b.iter(|| {
            floats.clear();
            request
                .parse_f32_be(black_box(&reply), &mut floats)
                .unwrap();
            floats.len()
        })
    });
    g.finish();
}

fn modbus_summary() {
    let (reply, _) = modbus_reply();
    if let (Some(a), Some(b)) = (estimate_ns("modbus/sml"), estimate_ns("modbus/rmodbus")) {
        println!(
            "modbus: sml {:.3} us/reply, rmodbus {:.3} us/reply, {:.2}x ({:.0} MB/s)",
            a / 1000.0,
            b / 1000.0,
            b / a,
            reply.len() as f64 / (a / 1000.0)
        );
    }
}
