//! What the translated hooks cost the engine: building them (translate + compile, once per script load)
//! and one tick of the busiest pattern in the corpus, the IEC 62056-21 handshake in `>F` (every 100 ms)
//! plus an ottelo-style `>S` with timers, arrays and string building (every second). The script is inline,
//! so the bench needs no `../shared`.
//!
//! Then, when `../shared/corpus/tasmota-community` is there (skipped when not): one `>S` tick of the
//! largest corpus script that runs, and one user `before_publish` (`--rhai`) on that script's full
//! SENSOR payload.

use std::time::Duration;

use chrono::NaiveDate;
use criterion::{criterion_group, criterion_main, Criterion};
use sml::hooks::{HookContext, Hooks};

const SCRIPT: &str = r#">D 40
scnt=0
res=0
t:t1=3
M:sday=0 288
m5=0
avgv=0
avgvc=0
cstr=""
>F
scnt+=1
switch scnt
case 6
res=sml(1 0 300)
res=sml(1 1 "2F3F210D0A")
case 18
res=sml(1 1 "063035300D0A")
case 20
res=sml(1 0 9600)
case 50
scnt=0
ends
>S
avgv+=sml[1]
avgvc+=1
if (t1==0) {
t1=3
m5=int((((hours*60)+mins)/5)+1)
sday[m5]=int(avgv/avgvc)
cstr="cnth"+s(1.0(((hours)*12)+int(mins/5))+1)+"/12"
}
>M 1
+1,3,o,0,9600,X
1,1.8.0(@1,E,kWh,e,3
#
"#;

fn hooks(c: &mut Criterion) {
    let script = sml::script::compile(SCRIPT.as_bytes())
        .script
        .expect("the bench script compiles");
    let readings: Vec<f64> = vec![1234.5, 20_000.25, 3.0];
    let ctx = HookContext {
        uptime: Duration::from_secs(3),
        local: NaiveDate::from_ymd_opt(2026, 11, 27)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap(),
        epoch: 1_795_780_800,
        readings: &readings,
    };
    let mut group = c.benchmark_group("hooks");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("new", |b| {
        b.iter(|| Hooks::new(std::hint::black_box(&script)).is_ok())
    });
    let mut h = Hooks::new(&script).expect("translates");
    group.bench_function("every_100ms", |b| {
        b.iter(|| {
            h.run_every_100ms(&ctx);
            h.take_commands().len()
        })
    });
    group.bench_function("every_second", |b| {
        b.iter(|| {
            h.run_every_second(&ctx);
            h.take_commands().len()
        })
    });
    group.finish();
    largest_corpus_script(c);
}

/// The largest corpus script (by bytes) whose sections translate.
fn largest_runnable() -> Option<(String, sml::script::model::Script)> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/tasmota-community");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tas"))
        .collect();
    paths.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).map_or(0, |m| m.len())));
    paths.into_iter().find_map(|p| {
        let script = sml::script::compile(&std::fs::read(&p).ok()?).script?;
        Hooks::new(&script).ok()?;
        Some((p.file_name()?.to_string_lossy().to_string(), script))
    })
}

fn largest_corpus_script(c: &mut Criterion) {
    let Some((name, script)) = largest_runnable() else {
        eprintln!("note: ../shared/corpus is absent; the corpus benches are skipped");
        return;
    };
    eprintln!("largest runnable corpus script: {name}");
    // Every entry has a value, as after the meters' first telegrams.
    let mut table = sml::engine::values::ValueTable::new(&script);
    let now = std::time::Instant::now();
    for m in &script.meters {
        let t = sml::decode::Telegram {
            readings: script
                .outputs()
                .iter()
                .filter(|(meter, _)| meter.index == m.index)
                .map(|(_, o)| sml::decode::Reading {
                    entry: o.entry,
                    value: sml::decode::Value::Number(1234.5 + f64::from(o.entry)),
                })
                .collect(),
        };
        table.handle_telegram(now, m.index, &t);
    }
    let wall = NaiveDate::from_ymd_opt(2026, 11, 27)
        .unwrap()
        .and_hms_opt(12, 0, 0)
        .unwrap();
    let ctx = HookContext {
        uptime: Duration::from_secs(60),
        local: wall,
        epoch: 1_795_780_800,
        readings: &table,
    };
    let mut h = Hooks::new(&script).expect("translates");
    let _ = h.run_boot(&ctx);
    h.take_commands();
    let payload = table
        .sensor_payload(now, &wall)
        .map(|p| p.0)
        .unwrap_or_else(|| r#"{"Time":"2026-11-27T12:00:00"}"#.into());
    let mut user = sml::hooks::user::UserRhai::from_source(
        "bench.rhai",
        "fn before_publish(p) {\n  for k in p.keys() {\n    if type_of(p[k]) == \"map\" { p[k].count = p[k].len(); }\n  }\n  p\n}\n",
    )
    .expect("the bench's before_publish compiles");

    // What is measured must be a tick that runs, not one that stops at an error.
    if let Some(e) = h.run_every_second(&ctx) {
        eprintln!("note: >S of {name} stops: {e}");
    }
    eprintln!("its SENSOR payload: {} bytes", payload.len());
    let mut group = c.benchmark_group("hooks_corpus");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("every_second_largest", |b| {
        b.iter(|| {
            h.run_every_second(&ctx);
            h.take_commands().len()
        })
    });
    group.bench_function("before_publish_largest", |b| {
        b.iter(|| {
            user.before_publish(std::hint::black_box(&payload))
                .0
                .map(|p| p.len())
        })
    });
    group.finish();
}

criterion_group!(benches, hooks);
criterion_main!(benches);
