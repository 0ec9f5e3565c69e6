//! Compile every community corpus script (`../shared/corpus/tasmota-community/*.tas`, as `sml check`
//! does) and report the throughput in scripts per second. Skips when `../shared` is absent.

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/tasmota-community");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tas"))
        .collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn check_corpus(c: &mut Criterion) {
    let scripts = corpus();
    if scripts.is_empty() {
        eprintln!("note: ../shared/corpus/tasmota-community is absent; check bench skipped");
        return;
    }
    let mut group = c.benchmark_group("check");
    group.throughput(Throughput::Elements(scripts.len() as u64));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("corpus", |b| {
        b.iter(|| {
            let mut models = 0usize;
            for s in &scripts {
                models += usize::from(
                    sml::script::compile(std::hint::black_box(s))
                        .script
                        .is_some(),
                );
            }
            models
        })
    });
    group.finish();
}

criterion_group!(benches, check_corpus);
criterion_main!(benches);
