//! What the translated hooks cost the engine: building them (translate + compile, once per script load)
//! and one tick of the busiest pattern in the corpus, the IEC 62056-21 handshake in `>F` (every 100 ms)
//! plus an ottelo-style `>S` with timers, arrays and string building (every second). The script is inline,
//! so the bench needs no `../shared`.

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
}

criterion_group!(benches, hooks);
criterion_main!(benches);
