//! `c` counters end to end: `sml::runner` runs a counter script against a simulated line
//! (`counter_sim.rs`: edge records over TCP, the same records the GPIO link gives), and the count
//! and the pulse rate come out on the SENSOR payload; `sensor53 c1 <v>` from `>B` sets the count,
//! and the count survives a restart through the state directory. What ran: the simulated line;
//! this kernel has no `gpio-sim`, so `gpio:CHIP:LINE` is not exercised here.
//!
//! The counts live in one store per process (as the ESP's `pulse_counter[]`), so the runs of this
//! file take turns.

mod common;
#[path = "support/recorded_run.rs"]
mod recorded_run;
#[path = "counter_sim.rs"]
mod sim;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use recorded_run::*;
use sim::*;
use sml::engine::scheduler::Publication;

static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A run of `script_text` with meter 1 on the simulated line at `port`, its hooks keeping state
/// (the count) in `state_dir`.
fn config(
    script_text: &str,
    port: u16,
    state_dir: Option<&Path>,
) -> (sml::runner::RunConfig, Published) {
    let (mut config, published) = recorded_run(compile(script_text), tcp(port));
    config.hooks = sml::runner::HooksConfig {
        script_path: "counter.sml".into(),
        state_dir: state_dir.map(Path::to_path_buf),
        user_rhai: None,
    };
    (config, published)
}

fn last_gas(published: &Mutex<Vec<Publication>>) -> Option<serde_json::Value> {
    sensor_values(published)
        .iter()
        .rev()
        .find_map(|v| v.get("GAS").cloned())
}

/// The gas counter of the community "combo" script (`+2,4,c,0,50,GAS`, Tasmota's WGS_COMBO) with
/// interrupt-mode debounce, and a rate line.
fn gas_script(boot: &str) -> String {
    format!(
        ">D\n>B\n{boot}\n>M 1\n+1,4,c,0,-50,GAS\n\
         1,1-0:1.8.0*255(@100,Gas reading,cbm,Count,3\n\
         1,1-0:1.7.0*255(@1,Gas pulses,1/min,Rate,1\n#\n"
    )
}

fn wait_for_gas(published: &Published, want: impl Fn(&serde_json::Value) -> bool) -> bool {
    wait_for(Duration::from_secs(20), || {
        last_gas(published).is_some_and(|g| want(&g))
    })
}

#[test]
fn bouncing_pulses_on_the_line_count_once_each_and_give_the_rate() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Seven pulses 600 ms apart (100 a minute), each chattering for 4 ms when the contact closes.
    let line = Line::start(encode(&pulses(7, 1000, 600, 100, true)));
    let (cfg, published) = config(&gas_script(""), line.port, None);
    let run = start_sml(cfg);
    assert!(
        wait_for_gas(&published, |g| g["Count"] == 0.07),
        "count never reached 7 pulses: {:?}",
        last_gas(&published)
    );
    run.stop();
    let gas = last_gas(&published).unwrap();
    assert_eq!(gas["Rate"], 100.0, "{gas}");
    // Never more than seven: the bounces were not counted.
    for p in published.lock().unwrap().iter() {
        if let Publication::Sensor(s) = p {
            let v: serde_json::Value = serde_json::from_str(s).unwrap();
            assert!(v["GAS"]["Count"].as_f64().unwrap_or(0.0) <= 0.07, "{s}");
        }
    }
}

#[test]
fn sensor53_c1_at_boot_sets_the_count_and_the_count_survives_a_restart() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("state");

    // First run: `>B` sets counter 1 to 1000, then three pulses arrive.
    let line = Line::start(encode(&pulses(3, 1000, 1000, 100, false)));
    let (cfg, published) = config(&gas_script("=>sensor53 c1 1000"), line.port, Some(&dir));
    let run = start_sml(cfg);
    assert!(
        wait_for_gas(&published, |g| g["Count"] == 10.03),
        "count never reached 1003: {:?}",
        last_gas(&published)
    );
    run.stop();
    drop(line);
    let saved = std::fs::read_to_string(dir.join("counters.json")).unwrap();
    assert!(saved.contains("1003"), "{saved}");

    // Second run, without the `sensor53 c1`: the count goes on from the state file.
    let line = Line::start(encode(&pulses(1, 500, 1000, 100, false)));
    let (cfg, published) = config(&gas_script(""), line.port, Some(&dir));
    let run = start_sml(cfg);
    assert!(
        wait_for_gas(&published, |g| g["Count"] == 10.04),
        "count did not go on from 1003: {:?}",
        last_gas(&published)
    );
    run.stop();
}
