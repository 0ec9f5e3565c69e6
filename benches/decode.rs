//! Decoder throughput against the peers, in the same run: `cargo bench --bench decode`.
//!
//! - DSMR: sml decodes `../shared/bench/dsmr5-3phase.txt` with the SX631 script's metric lines
//!   (`meters/sx631.sml`), CRC checked. The `dsmr5` crate rejects that telegram whole because of its
//!   `0-0:98.1.0` line, so it is measured on the same telegram without that line, CRC recomputed;
//!   sml is measured on both.
//! - SML: sml decodes `../shared/bench/sml-10-entries.bin` with one metric line per list entry;
//!   `sml-rs` decodes the same frame (transport + complete parse).
//!
//! - CRC: the `crc` crate's CRC-16/ARC and X-25 (slice-by-16, which the decoders use, and the plain
//!   byte table) against the hand-written tables the decoders carried before (below, kept for this
//!   comparison), over the bench telegram and frame.
//!
//! Ends with one summary line per protocol and one for the CRCs, read from criterion's own estimates.

use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{black_box, Criterion, Throughput};
use sml::decode::{decoder_for, DecodeEvent, Decoder};

/// `$SML_SHARED/bench`, or `../shared/bench` next to the repository (a git worktree elsewhere sets
/// `SML_SHARED=/work/shared`).
fn shared() -> PathBuf {
    std::env::var_os("SML_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
        .join("bench")
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

/// The CRCs the decoders computed by hand before they used the `crc` crate: kept only to show, in
/// this bench, that the crate is not slower.
mod hand_written {
    /// CRC-16/ARC, slice-by-8 (was `decode::obis::check::crc16_arc`).
    pub fn crc16_arc(data: &[u8]) -> u16 {
        let mut crc = 0u16;
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let x = crc ^ u16::from_le_bytes([c[0], c[1]]);
            crc = ARC[7][usize::from(x & 0xff)]
                ^ ARC[6][usize::from(x >> 8)]
                ^ ARC[5][usize::from(c[2])]
                ^ ARC[4][usize::from(c[3])]
                ^ ARC[3][usize::from(c[4])]
                ^ ARC[2][usize::from(c[5])]
                ^ ARC[1][usize::from(c[6])]
                ^ ARC[0][usize::from(c[7])];
        }
        for &b in chunks.remainder() {
            crc = (crc >> 8) ^ ARC[0][usize::from((crc ^ u16::from(b)) & 0xff)];
        }
        crc
    }

    /// CRC-16/X-25, one byte table (was `decode::sml::crc::Crc16::X25`).
    pub fn crc16_x25(data: &[u8]) -> u16 {
        !data.iter().fold(0xFFFFu16, |crc, &b| {
            (crc >> 8) ^ X25[usize::from((crc ^ u16::from(b)) as u8)]
        })
    }

    static ARC: [[u16; 256]; 8] = sliced(0xA001);
    static X25: [u16; 256] = sliced::<1>(0x8408)[0];

    /// `T[0]`: the reflected byte table of `poly`; `T[k][i]`: byte `i` followed by `k` zero bytes.
    const fn sliced<const N: usize>(poly: u16) -> [[u16; 256]; N] {
        let mut t = [[0u16; 256]; N];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u16;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ poly
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            t[0][i] = crc;
            i += 1;
        }
        let mut k = 1;
        while k < N {
            let mut i = 0;
            while i < 256 {
                let c = t[k - 1][i];
                t[k][i] = (c >> 8) ^ t[0][(c & 0xff) as usize];
                i += 1;
            }
            k += 1;
        }
        t
    }
}

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
    {
        use crc::{Crc, Table, CRC_16_ARC, CRC_16_IBM_SDLC};
        static ARC_16: Crc<u16, Table<16>> = Crc::<u16, Table<16>>::new(&CRC_16_ARC);
        static ARC_1: Crc<u16, Table<1>> = Crc::<u16, Table<1>>::new(&CRC_16_ARC);
        static X25_16: Crc<u16, Table<16>> = Crc::<u16, Table<16>>::new(&CRC_16_IBM_SDLC);
        static X25_1: Crc<u16, Table<1>> = Crc::<u16, Table<1>>::new(&CRC_16_IBM_SDLC);
        // What the decoders check: the telegram from `/` through `!`, the frame up to its CRC.
        let body = &dsmr[..=dsmr.iter().position(|&b| b == b'!').expect("!")];
        let frame = &smlbin[..smlbin.len() - 2];
        assert_eq!(ARC_16.checksum(body), hand_written::crc16_arc(body));
        assert_eq!(X25_16.checksum(frame), hand_written::crc16_x25(frame));
        assert_eq!(
            sml::decode::obis::check::crc16_arc(body),
            ARC_16.checksum(body)
        );
        let mut g = c.benchmark_group("crc");
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function("arc-hand-slice8", |b| {
            b.iter(|| hand_written::crc16_arc(black_box(body)))
        });
        g.bench_function("arc-crate-slice16", |b| {
            b.iter(|| ARC_16.checksum(black_box(body)))
        });
        g.bench_function("arc-crate-table", |b| {
            b.iter(|| ARC_1.checksum(black_box(body)))
        });
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function("x25-hand-table", |b| {
            b.iter(|| hand_written::crc16_x25(black_box(frame)))
        });
        g.bench_function("x25-crate-slice16", |b| {
            b.iter(|| X25_16.checksum(black_box(frame)))
        });
        g.bench_function("x25-crate-table", |b| {
            b.iter(|| X25_1.checksum(black_box(frame)))
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
    let ns = |id: &str| estimate_ns(&format!("crc/{id}"));
    if let (Some(a8), Some(a16), Some(a1), Some(x1), Some(x16), Some(xc1)) = (
        ns("arc-hand-slice8"),
        ns("arc-crate-slice16"),
        ns("arc-crate-table"),
        ns("x25-hand-table"),
        ns("x25-crate-slice16"),
        ns("x25-crate-table"),
    ) {
        println!(
            "crc: ARC over the telegram: hand-written slice-by-8 {a8:.0} ns, crate slice-by-16 {a16:.0} ns \
             ({:.1}x), crate table {a1:.0} ns; X-25 over the frame: hand-written table {x1:.0} ns, \
             crate slice-by-16 {x16:.0} ns ({:.1}x), crate table {xc1:.0} ns",
            a8 / a16,
            x1 / x16
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
