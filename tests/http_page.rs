//! The live page in a real browser: Debian's headless Chromium driven through chromedriver
//! (WebDriver). The page loads, shows the meter's values with labels, units and the `=h` line,
//! updates when a new telegram arrives without a reload, and each value's chart has points.
//! Skips when chromium or chromedriver is not installed (`.ci/run` installs both).
//!
//! `SML_SCREENSHOT=path.png` also saves what the browser shows (docs/web-page.png was made so).

mod common;
mod http_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, wait_for};
use fantoccini::{ClientBuilder, Locator};
use http_common::*;
use sml::http::HttpConfig;
use sml::publish::RecordingSink;
use sml::runner::{Frontends, SinkConfig};

const WAIT: Duration = Duration::from_secs(30);

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .chain([
                PathBuf::from("/usr/bin"),
                PathBuf::from("/usr/lib/chromium"),
            ])
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver(bin: &Path, port: u16) -> Driver {
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "chromedriver did not start"
    );
    Driver(child)
}

#[test]
fn the_live_page_shows_the_values_updates_them_and_charts_them() {
    let (Some(chromium), Some(driver_bin)) = (
        find(&["chromium", "chromium-browser"]),
        find(&["chromedriver"]),
    ) else {
        eprintln!("skipped: chromium and chromedriver are not installed");
        return;
    };
    let (mut meter, device) = pty_meter();
    let sink = RecordingSink::default();
    let config = run_config(SCRIPT, device, SinkConfig::Recording(sink.clone()));
    let http = HttpConfig::bind("127.0.0.1:0", None).unwrap();
    let addr = http.listener.local_addr().unwrap();
    let sml = start(
        config,
        Frontends {
            http: Some(http),
            discovery: None,
        },
    );
    send_telegram(&mut meter, b"1ESY1160 22803.012 233.9 1500\n");
    assert!(wait_for(WAIT, || http_get(
        addr,
        "/cm?cmnd=Status%2010",
        None
    )
    .2
    .contains("233.9")));

    let port = free_port();
    let _driver = chromedriver(&driver_bin, port);
    let profile = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=520,760",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        client.goto(&format!("http://{addr}/")).await.unwrap();

        // Entries: 1 meter_id, 2 enrg_imp, 3 volts_l1, 4 power.
        let text_of = |css: &'static str| {
            let client = client.clone();
            async move {
                match client.find(Locator::Css(css)).await {
                    Ok(e) => e.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                }
            }
        };
        let until = |css: &'static str, want: &'static str| {
            let text_of = &text_of;
            async move {
                let end = Instant::now() + WAIT;
                loop {
                    let got = text_of(css).await;
                    if got == want {
                        return;
                    }
                    assert!(Instant::now() < end, "{css}: {got:?}, not {want:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        until("#v-3", "233.9").await;
        until("#v-2", "22803.012").await;
        until("#v-1", "1ESY1160").await;
        // Laid out as Tasmota's web UI: label, value, unit; the `=h` line where the script has it.
        let body = client.find(Locator::Css("#meters")).await.unwrap().text().await.unwrap();
        for want in ["Energy import", "22803.012", "kWh", "Voltage L1", "V", "Power", "1500", "W", "Meter number"] {
            assert!(body.contains(want), "{want} in {body}");
        }
        let hr = client.find_all(Locator::Css("#meters table hr")).await.unwrap();
        assert_eq!(hr.len(), 1, "the =h line");

        // A new telegram shows without a reload.
        let page_id: String = client
            .execute("window.__sml_page = window.__sml_page || Math.random().toString(); return window.__sml_page;", vec![])
            .await
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        send_telegram(&mut meter, b"1ESY1160 22803.015 234.6 1720\n");
        until("#v-3", "234.6").await;
        until("#v-4", "1720").await;
        let same: serde_json::Value = client
            .execute("return window.__sml_page;", vec![])
            .await
            .unwrap();
        assert_eq!(same.as_str(), Some(page_id.as_str()), "the page was reloaded");

        // Each numeric value has a chart with at least one point, drawn on a canvas.
        for entry in [2, 3, 4] {
            let css = format!("#c-{entry}");
            let chart = client.find(Locator::Css(&css)).await.unwrap();
            let points: usize = chart
                .attr("data-points")
                .await
                .unwrap()
                .unwrap_or_default()
                .parse()
                .unwrap_or(0);
            assert!(points >= 1, "{css} has {points} points");
            let canvases = chart.find_all(Locator::Css("canvas")).await.unwrap();
            assert_eq!(canvases.len(), 1, "{css}");
        }
        if let Some(path) = std::env::var_os("SML_SCREENSHOT") {
            let png = client.screenshot().await.unwrap();
            std::fs::write(path, png).unwrap();
        }
        client.close().await.unwrap();
    });
    sml.stop();
}
