//! Every eBus (`e`) script of the community corpus (`../shared/corpus/tasmota-community`, or
//! `$SML_SHARED/corpus/...`) run against a simulated bus: for each metric line the bus sends a
//! telegram that has what the line's mask asks for (its literal bytes, addresses and length; the
//! rest filled in), escaped and with its CRC as on a real bus, and the script runs when every
//! metric line has published a value. Scripts that cannot run are listed in [`KNOWN_BROKEN`] with
//! the reason; any other failure, or a listed script that now runs, fails the test. Prints
//! runs/total. Skips cleanly when the corpus is absent.

#[path = "ebus_sim.rs"]
mod sim;
#[path = "support/type_corpus.rs"]
mod type_corpus;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use sml::decode::decoder_for;
use sml::script::model::{ByteOp, BytePattern, Decoding, Extract, Meter};
use type_corpus::{defines_meter_of, judge_meters, TypeCorpus, Verdict};

/// Scripts that do not run against a well-behaved bus, and why (checked by the test).
const KNOWN_BROKEN: &[(&str, &str)] = &[];

/// The bytes one extractor reads.
fn width(e: Extract) -> usize {
    match e {
        Extract::U8 | Extract::I8 => 1,
        Extract::U16 { .. } | Extract::I16 { .. } => 2,
        Extract::U32 { .. } | Extract::I32 { .. } | Extract::F32 { .. } => 4,
        Extract::U64 { .. } | Extract::I64 { .. } | Extract::F64 { .. } => 8,
        Extract::Bcd(d) => usize::from(d.clamp(2, 12)).div_ceil(2),
        Extract::Kamstrup => 3,
    }
}

/// What a line's mask wants of the telegram (offset 0 = QQ): fixed bytes, and its length.
fn wants(pattern: &BytePattern) -> (BTreeMap<usize, u8>, usize) {
    let (mut fixed, mut at) = (BTreeMap::new(), 0usize);
    for op in &pattern.ops {
        match op {
            ByteOp::Literal(b) => {
                fixed.insert(at, *b);
                at += 1;
            }
            ByteOp::Skip(n) => at += usize::from(*n),
            ByteOp::Find(needle) => {
                for b in needle {
                    fixed.insert(at, *b);
                    at += 1;
                }
            }
            ByteOp::Extract(e) => at += width(*e),
        }
    }
    (fixed, at)
}

/// A telegram (unescaped symbols, no CRC yet) that has `fixed` and is `len` bytes long or more:
/// a broadcast, unless the mask fixes ZZ or reads past 16 data bytes (then the slave's answer).
fn telegram(fixed: &BTreeMap<usize, u8>, len: usize) -> Vec<u8> {
    let get = |i: usize, default: u8| fixed.get(&i).copied().unwrap_or(default);
    let master_len = |nn: usize| 5 + nn + 1;
    let answered = len > master_len(16)
        || fixed
            .get(&1)
            .is_some_and(|&z| z != 0xFE && !sim_is_master(z));
    let zz = get(1, if answered { 0x08 } else { 0xFE });
    let nn = usize::from(get(4, (len.saturating_sub(5)).min(16) as u8));
    let data: Vec<u8> = (0..nn).map(|i| get(5 + i, 0x01)).collect();
    let mut wire = sim::part(&[get(0, 0x10), zz, get(2, 0x00), get(3, 0x00)], &data);
    if answered && zz != 0xFE && !sim_is_master(zz) {
        let skip = master_len(nn) + 2; // past the master's CRC, the ACK and the answer's NN
        let ann = len.saturating_sub(skip).clamp(1, 16);
        let answer: Vec<u8> = (0..ann).map(|i| get(skip + i, 0x01)).collect();
        wire.push(0x00);
        wire.extend(sim::part(&[], &answer));
        wire.push(0x00);
    }
    wire
}

fn sim_is_master(a: u8) -> bool {
    let ok = |n: u8| matches!(n, 0x0 | 0x1 | 0x3 | 0x7 | 0xF);
    ok(a >> 4) && ok(a & 0x0f)
}

/// The bus for a meter: one telegram per metric line, SYNs between; the entries that got a value
/// and the decoder's complaints.
fn run_meter(meter: &Meter) -> (BTreeSet<u16>, Vec<String>) {
    let Decoding::Ebus(metrics) = &meter.decoding else {
        unreachable!()
    };
    let mut stream = Vec::new();
    for m in metrics {
        let (fixed, len) = wants(&m.pattern);
        stream.extend([sim::SYN, sim::SYN]);
        stream.extend(telegram(&fixed, len));
    }
    stream.push(sim::SYN);
    let mut d = decoder_for(meter).unwrap();
    d.handle_bytes(Instant::now(), &stream);
    d.handle_end();
    type_corpus::drain(d.as_mut(), true)
}

#[test]
fn every_ebus_script_of_the_corpus_runs_against_a_simulated_bus() {
    let ebus = TypeCorpus {
        label: "ebus corpus",
        kind: "an eBus script",
        known_broken: KNOWN_BROKEN,
        mentions: |text| defines_meter_of(text, &['e']),
        source: |path| std::fs::read(path).unwrap(),
    };
    ebus.check_every_script(|script, text| {
        if !(ebus.mentions)(text) {
            return Verdict::NotOfType;
        }
        // A complaint (bytes skipped, a bad CRC) fails the script: the simulated bus is clean.
        judge_meters(
            script,
            |m| match &m.decoding {
                Decoding::Ebus(metrics) => Some(metrics.as_slice()),
                _ => None,
            },
            run_meter,
            true,
        )
    });
}
