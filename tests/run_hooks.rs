//! The engine runs the script's sections, on its injected clock: `>B` at start, `>S` every second,
//! `>F` every 100 ms only for a script that has one, `>J` in the SENSOR JSON, `>T` after it, `>R` at
//! shutdown; `smlj` holds the meters' values back (the seed script `meters/sx631.sml` publishes
//! nothing before 22 s of uptime, then publishes); a failing hook is reported once and the payload
//! goes out as before the hook.

use std::time::{Duration, Instant};

use sml::decode::{Reading, Telegram, Value};
use sml::engine::hooks::HookAction;
use sml::engine::scheduler::{Engine, EngineConfig, Publication};
use sml::script::model::Script;

fn wall() -> chrono::NaiveDateTime {
    chrono::NaiveDateTime::parse_from_str("2026-11-27T12:00:00", "%Y-%m-%dT%H:%M:%S").unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn compile(text: &str) -> Script {
    let compiled = sml::script::compile(text.as_bytes());
    compiled
        .script
        .unwrap_or_else(|| panic!("{:#?}", compiled.diagnostics))
}

fn teleperiod(s: u64) -> EngineConfig {
    EngineConfig {
        teleperiod: secs(s),
        ..Default::default()
    }
}

/// One telegram with every entry of meter 1 set to `v`.
fn telegram(entries: u16, v: f64) -> Telegram {
    Telegram {
        readings: (1..=entries)
            .map(|entry| Reading {
                entry,
                value: Value::Number(v),
            })
            .collect(),
    }
}

fn sensors(out: &[Publication]) -> Vec<&str> {
    out.iter()
        .filter_map(|p| match p {
            Publication::Sensor(s) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}

/// Run the engine second by second from `t0` to `until` (telegrams each second), returning the
/// uptime of every SENSOR with its payload.
fn run_seconds(e: &mut Engine, t0: Instant, entries: u16, until: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for s in 0..=until {
        let now = t0 + secs(s);
        for p in e.handle_telegram(now, &wall(), 1, &telegram(entries, s as f64)) {
            if let Publication::Sensor(p) = p {
                out.push((s, p));
            }
        }
        while e.poll_timeout() <= now {
            for p in sensors(&e.handle_timeout(now, &wall())) {
                out.push((s, p.to_string()));
            }
        }
    }
    out
}

fn seed() -> Option<Script> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("meters/sx631.sml");
    Some(compile(&std::fs::read_to_string(path).ok()?))
}

#[test]
fn the_seed_script_publishes_nothing_before_22_seconds_of_uptime_and_publishes_after() {
    let script = seed().expect("meters/sx631.sml");
    let entries = script.outputs().len() as u16;
    let t0 = Instant::now();
    let mut e = Engine::new(&script, teleperiod(10), t0);
    // The broker answers at once: Tasmota's first teleperiod 5 s later, then every 10 s.
    e.handle_connected(t0);
    let published = run_seconds(&mut e, t0, entries, 45);
    let times: Vec<u64> = published.iter().map(|(s, _)| *s).collect();
    assert_eq!(times, vec![25, 35, 45], "{published:#?}");
    assert!(
        published[0].1.contains(r#""EON":{"volts_l1":25.0"#),
        "{}",
        published[0].1
    );
    // The held-back values were still read: `sml[n]` had them all along.
    assert_eq!(e.stats().teleperiods, 5);
}

#[test]
fn without_smlj_the_meters_publish_from_the_first_teleperiod() {
    let script = compile(">D\n>M 1\n+1,3,o,0,9600,EON\n1,1.8.0(@1,E,kWh,e,0\n#\n");
    let t0 = Instant::now();
    let mut e = Engine::new(&script, teleperiod(10), t0);
    e.handle_connected(t0);
    let published = run_seconds(&mut e, t0, 1, 6);
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0].0, 5);
}

#[test]
fn smlj_also_holds_back_the_per_telegram_payloads() {
    let script = compile(
        ">D\n>B\nsmlj=0\n>S\nif upsecs>2\nthen\nsmlj=1\nendif\n>M 1\n+1,3,o,0,9600,EON\n1,1.8.0(@1,E,kWh,e,16\n#\n",
    );
    let t0 = Instant::now();
    let mut e = Engine::new(&script, teleperiod(3600), t0);
    let published = run_seconds(&mut e, t0, 1, 5);
    let times: Vec<u64> = published.iter().map(|(s, _)| *s).collect();
    // `>S` at 3 s sets smlj; the telegram of second 3 arrived before that tick.
    assert_eq!(times, vec![4, 5], "{published:?}");
}

#[test]
fn json_from_j_is_appended_to_the_sensor_payload() {
    let script = compile(
        ">D\nx=0\n>S\nx=x+1\n>J\n,\"Ticks\":%0x%\n>M 1\n+1,3,o,0,9600,EON\n1,1.8.0(@1,E,kWh,e,0\n#\n",
    );
    let t0 = Instant::now();
    let mut e = Engine::new(&script, teleperiod(10), t0);
    let published = run_seconds(&mut e, t0, 1, 10);
    assert_eq!(
        published,
        vec![(
            10,
            r#"{"Time":"2026-11-27T12:00:00","EON":{"e":10},"Ticks":10}"#.to_string()
        )]
    );
}

#[test]
fn json_from_j_alone_is_published_while_smlj_holds_the_meters_back() {
    let script = compile(
        ">D\n>B\nsmlj=0\n>J\n,\"Ok\":1\n>M 1\n+1,3,o,0,9600,EON\n1,1.8.0(@1,E,kWh,e,0\n#\n",
    );
    let t0 = Instant::now();
    let mut e = Engine::new(&script, teleperiod(10), t0);
    let published = run_seconds(&mut e, t0, 1, 10);
    assert_eq!(
        published,
        vec![(10, r#"{"Time":"2026-11-27T12:00:00","Ok":1}"#.to_string())]
    );
}

#[test]
fn f_runs_every_100_ms_and_a_script_without_f_is_not_woken_for_it() {
    let with_f = compile(">D\nn=0\n>F\nn=n+1\n>M 1\n+1,3,o,0,9600,EON\n1,1.8.0(@1,E,kWh,e,0\n#\n");
    let t0 = Instant::now();
    let mut e = Engine::new(&with_f, teleperiod(3600), t0);
    assert_eq!(e.poll_timeout(), t0 + Duration::from_millis(100));
    let mut now = t0;
    while now < t0 + secs(1) {
        now = e.poll_timeout();
        e.handle_timeout(now, &wall());
    }
    let n = e.hooks_mut().unwrap().hooks().number("n").unwrap();
    assert_eq!(n, 10.0);

    let only_s = compile(">D\nn=0\n>S\nn=n+1\n>M 1\n+1,3,o,0,9600,EON\n1,1.8.0(@1,E,kWh,e,0\n#\n");
    let e = Engine::new(&only_s, teleperiod(3600), t0);
    assert_eq!(e.poll_timeout(), t0 + secs(1));
}

#[test]
fn a_failing_hook_is_reported_once_with_the_scripts_line_and_the_payload_still_goes_out() {
    let script = compile(">D\nx=0\n>S\nx=1/0\n>M 1\n+1,3,o,0,9600,EON\n1,1.8.0(@1,E,kWh,e,0\n#\n");
    let t0 = Instant::now();
    let mut e = Engine::new(&script, teleperiod(10), t0);
    e.hooks_mut().unwrap().set_path("meters/x.sml");
    let published = run_seconds(&mut e, t0, 1, 20);
    assert_eq!(published.len(), 2, "{published:?}");
    let errors: Vec<String> = e
        .take_actions()
        .into_iter()
        .filter_map(|a| match a {
            HookAction::Error(text) => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("meters/x.sml:4: error in >S:"),
        "{}",
        errors[0]
    );
}

#[test]
fn the_teleperiod_command_moves_the_next_teleperiod() {
    let script =
        compile(">D\n>B\n=>teleperiod 20\n>M 1\n+1,3,o,0,9600,EON\n1,1.8.0(@1,E,kWh,e,0\n#\n");
    let t0 = Instant::now();
    let mut e = Engine::new(&script, teleperiod(300), t0);
    let published = run_seconds(&mut e, t0, 1, 41);
    let times: Vec<u64> = published.iter().map(|(s, _)| *s).collect();
    assert_eq!(times, vec![20, 40], "{published:?}");
}

#[test]
fn sensor53_r_forgets_the_values_until_the_meter_sends_again() {
    let script = compile(
        ">D\n>S\nif upsecs==5\nthen\n=>sensor53 r\nendif\n>M 1\n+1,3,o,0,9600,EON\n1,1.8.0(@1,E,kWh,e,0\n#\n",
    );
    let t0 = Instant::now();
    let mut e = Engine::new(&script, teleperiod(3600), t0);
    e.handle_telegram(t0, &wall(), 1, &telegram(1, 7.0));
    for s in 1..=5 {
        e.handle_timeout(t0 + secs(s), &wall());
    }
    assert!(e.take_actions().contains(&HookAction::ResetMeters));
    assert!(
        e.handle_end(t0 + secs(5), &wall()).is_empty(),
        "values forgotten"
    );
    e.handle_telegram(t0 + secs(6), &wall(), 1, &telegram(1, 8.0));
    assert_eq!(
        sensors(&e.handle_end(t0 + secs(6), &wall())),
        vec![r#"{"Time":"2026-11-27T12:00:00","EON":{"e":8}}"#]
    );
}

#[test]
fn sml_n_reads_the_value_table_and_t_sees_the_payload() {
    let script = compile(
        ">D\nlast=0\nseen=0\n>S\nlast=sml[1]\n>T\nseen=EON#e\n>M 1\n+1,3,o,0,9600,EON\n1,1.8.0(@1,E,kWh,e,0\n#\n",
    );
    let t0 = Instant::now();
    let mut e = Engine::new(&script, teleperiod(10), t0);
    run_seconds(&mut e, t0, 1, 10);
    let h = e.hooks_mut().unwrap().hooks();
    assert_eq!(h.number("last"), Some(10.0));
    assert_eq!(h.number("seen"), Some(10.0));
}

#[test]
fn r_runs_at_shutdown_and_the_permanent_variables_are_handed_over_to_save() {
    let script = compile(
        ">D\np:total=5\n>R\ntotal=total+1\n>M 1\n+1,3,o,0,9600,EON\n1,1.8.0(@1,E,kWh,e,0\n#\n",
    );
    let t0 = Instant::now();
    let mut saved = serde_json::Map::new();
    saved.insert("total".into(), serde_json::json!(41));
    let mut e = Engine::new(&script, teleperiod(10), t0);
    e.hooks_mut().unwrap().hooks_mut().restore_permanent(&saved);
    e.handle_timeout(t0 + secs(1), &wall());
    e.handle_shutdown(t0 + secs(2), &wall());
    let saves: Vec<_> = e
        .take_actions()
        .into_iter()
        .filter_map(|a| match a {
            HookAction::SavePermanent(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(saves.len(), 1);
    assert_eq!(saves[0]["total"], serde_json::json!(42.0));
}

#[test]
fn commands_after_a_delay_wait_for_it() {
    let script = compile(
        ">D\n>B\nsml(1 0 300)\ndelay(500)\nsml(1 0 9600)\n>M 1\n+1,3,o,0,9600,EON\n1,1.8.0(@1,E,kWh,e,0\n#\n",
    );
    let t0 = Instant::now();
    let mut e = Engine::new(&script, teleperiod(3600), t0);
    e.handle_timeout(t0, &wall());
    let first = e.take_actions();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(e.poll_timeout(), t0 + Duration::from_millis(500));
    e.handle_timeout(t0 + Duration::from_millis(500), &wall());
    let second = e.take_actions();
    assert!(
        matches!(
            &second[..],
            [HookAction::Link(sml::hooks::HostCommand::SetBaud {
                meter: 1,
                baud: 9600
            })]
        ),
        "{second:?}"
    );
}

#[test]
fn sml_run_refuses_a_script_whose_sections_do_not_translate_quoting_the_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sml"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "run",
            "tests/fixtures/broken/section-errors.sml",
            "--port",
            "1=file:tests/fixtures/meters/sx631.txt",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tests/fixtures/broken/section-errors.sml:6:16: error:"),
        "{err}"
    );
    assert!(err.contains("  pwr=(sml[1]*2"), "{err}");
    assert!(
        err.contains("its script sections do not translate"),
        "{err}"
    );
}
