/*!
`sml dashboard SCRIPT > dashboard.json`: a Grafana dashboard for what `sml run --influx` writes, made
from the script's metric lines, so that the first chart appears without writing a query.

The schema is the sink's ([`crate::publish::influx`]): measurement = the meter's prefix, fields =
the JSON names, tag `topic`. Per meter, the numbers are grouped by unit, one panel per group:
counters (kWh, kvarh, m³, ...) as bars of their increase per hour and per day, everything else as
gauges of the last value beside a chart over time. The labels and units are the script's. Text
captures (`@#`) are not charted. Queries are InfluxQL against the data source with uid
[`DATASOURCE_UID`], which `contrib/grafana/provisioning` creates; `$topic` picks the device.
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::script::model::{Decoding, Meter, Metric, Output, Script, ValueSpec};

/// The data source the provisioning file creates.
pub const DATASOURCE_UID: &str = "sml-influxdb";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Tasmota script (`>D ... >M ... #`).
    pub script: PathBuf,
    /// The dashboard's title; default `sml <script name>`.
    #[arg(long)]
    pub title: Option<String>,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let shown = args.script.display().to_string();
    let source = std::fs::read(&args.script).with_context(|| format!("reading {shown}"))?;
    let compiled = crate::script::compile(&source);
    for d in &compiled.diagnostics {
        eprint!("{}", d.render(&shown));
    }
    let Some(script) = compiled.script else {
        bail!("{shown} does not compile");
    };
    let name = stem(&args.script);
    let title = args.title.unwrap_or_else(|| format!("sml {name}"));
    let board = dashboard(&script, &title, &name);
    if board["panels"].as_array().is_none_or(|p| p.is_empty()) {
        bail!("{shown} has no number lines with a meter prefix: nothing to chart");
    }
    println!("{}", serde_json::to_string_pretty(&board)?);
    Ok(ExitCode::SUCCESS)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("sml")
        .to_string()
}

/// One number line: its field and label.
struct Series<'a> {
    field: &'a str,
    label: &'a str,
}

/// The dashboard for `script`; `uid_base` makes its uid.
pub fn dashboard(script: &Script, title: &str, uid_base: &str) -> Value {
    let mut panels = Vec::new();
    let mut layout = Layout::default();
    let mut first_measurement = None;
    for meter in &script.meters {
        let Some(prefix) = &meter.prefix else {
            continue;
        };
        // Unit groups in the order the script first uses them.
        let mut groups: Vec<(String, Vec<Series>)> = Vec::new();
        for out in number_outputs(meter) {
            let series = Series {
                field: &out.name,
                label: if out.label.is_empty() || out.label == "*" {
                    &out.name
                } else {
                    &out.label
                },
            };
            match groups.iter_mut().find(|(u, _)| *u == out.unit) {
                Some((_, g)) => g.push(series),
                None => groups.push((out.unit.clone(), vec![series])),
            }
        }
        if groups.is_empty() {
            continue;
        }
        first_measurement.get_or_insert(prefix.clone());
        panels.push(json!({
            "type": "row",
            "title": format!("Meter {} ({prefix})", meter.index),
            "collapsed": false,
            "gridPos": layout.row(),
            "panels": [],
        }));
        for (unit, series) in &groups {
            let what = if unit.is_empty() {
                "Values".to_string()
            } else {
                unit.clone()
            };
            if is_counter(unit) {
                for (per, interval) in [("hour", "1h"), ("day", "1d")] {
                    let targets = series
                        .iter()
                        .enumerate()
                        .map(|(i, s)| target(i, &increase_query(prefix, s, interval)))
                        .collect::<Vec<_>>();
                    panels.push(json!({
                        "type": "barchart",
                        "title": format!("{what} per {per}"),
                        "datasource": datasource(),
                        "gridPos": layout.half(),
                        "targets": targets,
                        "fieldConfig": field_config(unit),
                        "options": {"xTickLabelRotation": -45, "legend": {"showLegend": true}},
                    }));
                }
            } else {
                let last = series
                    .iter()
                    .enumerate()
                    .map(|(i, s)| target(i, &last_query(prefix, s)))
                    .collect::<Vec<_>>();
                panels.push(json!({
                    "type": "gauge",
                    "title": format!("{what} now"),
                    "datasource": datasource(),
                    "gridPos": layout.half(),
                    "targets": last,
                    "fieldConfig": field_config(unit),
                    "options": {"reduceOptions": {"calcs": ["lastNotNull"], "values": false}},
                }));
                let over_time = series
                    .iter()
                    .enumerate()
                    .map(|(i, s)| target(i, &mean_query(prefix, s)))
                    .collect::<Vec<_>>();
                panels.push(json!({
                    "type": "timeseries",
                    "title": what,
                    "datasource": datasource(),
                    "gridPos": layout.half(),
                    "targets": over_time,
                    "fieldConfig": field_config(unit),
                }));
            }
        }
    }
    let topic_query = format!(
        "SHOW TAG VALUES FROM {} WITH KEY = \"topic\"",
        ident(first_measurement.as_deref().unwrap_or("sml"))
    );
    json!({
        "uid": format!("sml-{}", uid_base.chars().take(30).collect::<String>()),
        "title": title,
        "tags": ["sml", "energy"],
        "timezone": "browser",
        "schemaVersion": 39,
        "editable": true,
        "refresh": "30s",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": [{
            "name": "topic",
            "label": "Device",
            "type": "query",
            "datasource": datasource(),
            "query": topic_query,
            "definition": topic_query,
            "refresh": 1,
            "includeAll": false,
            "multi": false,
        }]},
        "panels": panels,
    })
}

/// The meter's number outputs (metric lines other than `@#`, and `=m`/`=d`), in entry order.
fn number_outputs(meter: &Meter) -> Vec<&Output> {
    fn numbers<P>(v: &[Metric<P>]) -> Vec<&Output> {
        v.iter()
            .filter(|m| matches!(m.value, ValueSpec::Number { .. }))
            .map(|m| &m.output)
            .collect()
    }
    let mut outs = match &meter.decoding {
        Decoding::Obis(m) => numbers(m),
        Decoding::Sml(m) => numbers(m),
        Decoding::Modbus(m)
        | Decoding::Ebus(m)
        | Decoding::Kamstrup(m)
        | Decoding::Can(m)
        | Decoding::Pzem(m)
        | Decoding::Raw { metrics: m, .. } => numbers(m),
        Decoding::Vbus(m) => numbers(m),
        Decoding::Counter { metrics, .. } => numbers(metrics),
    };
    outs.extend(meter.derived.iter().map(|d| &d.output));
    outs.sort_by_key(|o| o.entry);
    outs
}

/// A unit that counts up (energy, volume): charted as its increase, not its level.
fn is_counter(unit: &str) -> bool {
    let u = unit.trim().to_ascii_lowercase();
    u.ends_with("wh") || u.ends_with("varh") || u.ends_with("vah") || u.ends_with("ah") || {
        matches!(u.as_str(), "m3" | "m³" | "m^3" | "l" | "gal")
    }
}

/// Grafana's unit id for the script's unit, or the unit as a suffix.
fn grafana_unit(unit: &str) -> String {
    let known: BTreeMap<&str, &str> = [
        ("Wh", "watth"),
        ("kWh", "kwatth"),
        ("W", "watt"),
        ("kW", "kwatt"),
        ("V", "volt"),
        ("A", "amp"),
        ("mA", "mamp"),
        ("Hz", "hertz"),
        ("VA", "voltamp"),
        ("kVA", "kvoltamp"),
        ("var", "voltampreact"),
        ("kvar", "kvoltampreact"),
        ("°C", "celsius"),
        ("%", "percent"),
        ("m³", "m3"),
        ("m3", "m3"),
        ("l", "litre"),
    ]
    .into_iter()
    .collect();
    match known.get(unit.trim()) {
        Some(id) => id.to_string(),
        None if unit.trim().is_empty() => "none".into(),
        None => format!("suffix: {}", unit.trim()),
    }
}

fn field_config(unit: &str) -> Value {
    json!({"defaults": {"unit": grafana_unit(unit)}, "overrides": []})
}

fn datasource() -> Value {
    json!({"type": "influxdb", "uid": DATASOURCE_UID})
}

fn target(i: usize, query: &str) -> Value {
    // refIds A..Z, then A1...
    let letter = (b'A' + (i % 26) as u8) as char;
    let ref_id = if i < 26 {
        letter.to_string()
    } else {
        format!("{letter}{}", i / 26)
    };
    json!({
        "refId": ref_id,
        "datasource": datasource(),
        "rawQuery": true,
        "resultFormat": "time_series",
        "query": query,
    })
}

/// An InfluxQL identifier, double-quoted.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

const WHERE: &str = "\"topic\" =~ /^$topic$/ AND $timeFilter";

/// A counter's increase per `interval`: the spread of its readings in each bucket. Unlike the
/// difference between buckets it shows from the first hour on (it leaves out the little the
/// counter moved between a bucket's last reading and the next one's first).
fn increase_query(prefix: &str, s: &Series, interval: &str) -> String {
    format!(
        "SELECT spread({}) AS {} FROM {} WHERE {WHERE} GROUP BY time({interval}) fill(none)",
        ident(s.field),
        ident(s.label),
        ident(prefix),
    )
}

fn last_query(prefix: &str, s: &Series) -> String {
    format!(
        "SELECT last({}) AS {} FROM {} WHERE {WHERE}",
        ident(s.field),
        ident(s.label),
        ident(prefix),
    )
}

fn mean_query(prefix: &str, s: &Series) -> String {
    format!(
        "SELECT mean({}) AS {} FROM {} WHERE {WHERE} GROUP BY time($__interval) fill(none)",
        ident(s.field),
        ident(s.label),
        ident(prefix),
    )
}

/// Rows of panels, two half-width panels side by side.
#[derive(Default)]
struct Layout {
    y: u32,
    x: u32,
}

impl Layout {
    fn row(&mut self) -> Value {
        if self.x > 0 {
            self.x = 0;
            self.y += 8;
        }
        let at = json!({"h": 1, "w": 24, "x": 0, "y": self.y});
        self.y += 1;
        at
    }

    fn half(&mut self) -> Value {
        let at = json!({"h": 8, "w": 12, "x": self.x, "y": self.y});
        if self.x == 0 {
            self.x = 12;
        } else {
            self.x = 0;
            self.y += 8;
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(text: &str) -> Value {
        let script = crate::script::compile(text.as_bytes()).script.unwrap();
        dashboard(&script, "t", "t")
    }

    fn queries(b: &Value) -> Vec<String> {
        b["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
            .map(|t| t["query"].as_str().unwrap().to_string())
            .collect()
    }

    const SCRIPT: &str = ">D\n>M 1\n+1,3,o,0,9600,EON\n\
        1,1-0:1.8.0(@1,Energy import,kWh,enrg_imp,3\n\
        1,1-0:16.7.0(@1,Power,W,pwr,0\n\
        1,1-0:32.7.0(@1,L1 Voltage,V,volts_l1,1\n\
        1,1-0:52.7.0(@1,L2 Voltage,V,volts_l2,1\n\
        1,0-0:96.1.0(@#),Meter id,,meter_id,0\n#\n";

    #[test]
    fn counters_become_increase_per_hour_and_day_and_the_rest_gauges_and_charts() {
        let b = board(SCRIPT);
        let kinds: Vec<(String, String)> = b["panels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["type"].as_str().unwrap().to_string(),
                    p["title"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let kinds: Vec<(&str, &str)> = kinds.iter().map(|(a, b)| (&a[..], &b[..])).collect();
        assert_eq!(
            kinds,
            [
                ("row", "Meter 1 (EON)"),
                ("barchart", "kWh per hour"),
                ("barchart", "kWh per day"),
                ("gauge", "W now"),
                ("timeseries", "W"),
                ("gauge", "V now"),
                ("timeseries", "V"),
            ]
        );
    }

    #[test]
    fn queries_use_the_scripts_labels_and_leave_text_captures_out() {
        let q = queries(&board(SCRIPT));
        assert!(q.contains(
            &"SELECT spread(\"enrg_imp\") AS \"Energy import\" FROM \"EON\" WHERE \"topic\" =~ \
              /^$topic$/ AND $timeFilter GROUP BY time(1h) fill(none)"
                .to_string()
        ));
        assert!(q
            .iter()
            .any(|q| q.contains("last(\"volts_l2\") AS \"L2 Voltage\"")));
        assert!(!q.iter().any(|q| q.contains("meter_id")), "{q:?}");
    }

    #[test]
    fn units_map_to_grafanas_or_stay_as_a_suffix() {
        assert_eq!(grafana_unit("kWh"), "kwatth");
        assert_eq!(grafana_unit("kvarh"), "suffix: kvarh");
        assert_eq!(grafana_unit(""), "none");
        assert!(is_counter("kvarh") && is_counter("m³") && !is_counter("W"));
    }
}
