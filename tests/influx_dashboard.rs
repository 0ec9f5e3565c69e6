//! The Grafana dashboard `sml dashboard` makes: the one shipped for the seed script is what the
//! command makes today, and after a run of the seed script into a real InfluxDB 1.x (configured
//! through `--config` with an `[influx]` table), every one of its InfluxQL queries returns data.

mod influx_support;

use std::path::Path;
use std::process::Command;

use influx_support::{have_influxd, Influxd};
use serde_json::Value;

const SML: &str = env!("CARGO_BIN_EXE_sml");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn generated() -> String {
    let out = Command::new(SML)
        .arg("dashboard")
        .arg(root().join("meters/sx631.sml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every InfluxQL query of a dashboard: the panels' and the template variables'.
fn queries(board: &Value) -> Vec<String> {
    let mut q: Vec<String> = board["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["query"].as_str().unwrap().to_string())
        .collect();
    for v in board["templating"]["list"].as_array().unwrap() {
        q.push(v["query"].as_str().unwrap().to_string());
    }
    q
}

#[test]
fn the_shipped_seed_dashboard_is_what_sml_dashboard_makes() {
    let shipped =
        std::fs::read_to_string(root().join("contrib/grafana/dashboards/sx631.json")).unwrap();
    assert_eq!(
        shipped.trim_end(),
        generated().trim_end(),
        "regenerate: sml dashboard meters/sx631.sml > contrib/grafana/dashboards/sx631.json"
    );
}

#[test]
fn a_script_that_does_not_compile_makes_no_dashboard_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.sml");
    std::fs::write(&bad, ">M 1\n+1,3,q,0,9600,X\n#\n").unwrap();
    let out = Command::new(SML)
        .arg("dashboard")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.sml"));
}

#[test]
fn every_query_of_the_seed_dashboard_returns_data_after_a_run() {
    if !have_influxd() {
        return;
    }
    let server = Influxd::start("sml");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sml.toml");
    std::fs::write(
        &config,
        format!(
            "script = \"{script}\"\nevery-telegram = true\nreplay-speed = \"max\"\n\
             topic = \"myelectricmeter\"\n\n[port]\n1 = \"file:{capture}\"\n\n\
             [influx]\nurl = \"{url}\"\ndb = \"sml\"\n",
            // The seed's `>M` without its 22 s `smlj` hold-back: a capture is over in a moment.
            script = root()
                .join("tests/fixtures/no-holdback/sx631.sml")
                .display(),
            capture = root().join("tests/fixtures/meters/sx631.txt").display(),
            url = server.url(),
        ),
    )
    .unwrap();
    let run = Command::new(SML)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "sml run failed: {stderr}");
    assert!(stderr.contains("points written"), "{stderr}");

    let board: Value = serde_json::from_str(&generated()).unwrap();
    let all = queries(&board);
    assert!(all.len() > 40, "{} queries", all.len());
    for q in &all {
        // What Grafana puts in for its macros and the Device selector.
        let q = q
            .replace("$timeFilter", "time > now() - 1h")
            .replace("$__interval", "10s")
            .replace("$topic", "myelectricmeter");
        let answer = server.query("sml", &q);
        let series = answer["results"][0]["series"].as_array();
        let has_value = series.is_some_and(|s| {
            s.iter().any(|s| {
                s["values"].as_array().is_some_and(|rows| {
                    rows.iter()
                        .any(|r| r.as_array().unwrap().iter().skip(1).any(|v| !v.is_null()))
                })
            })
        }) || (q.starts_with("SHOW") && series.is_some());
        assert!(has_value, "no data for {q}: {answer}");
    }
}
