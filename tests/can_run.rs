//! `C` meters end to end: `sml::runner` runs an unchanged community CAN script against a simulated
//! bus (`can_sim.rs`: the device's side, over the same frame records a SocketCAN interface gives),
//! and the values come out on the SENSOR payload. What ran: the simulated bus over TCP; this
//! kernel has no `vcan` module, so `can:vcan0` is not exercised here (a test that needs it skips
//! with the reason).

mod common;
#[path = "support/recorded_run.rs"]
mod recorded_run;
#[path = "can_sim.rs"]
mod sim;

use std::time::Duration;

use common::*;
use recorded_run::*;
use sim::*;
use sml::decode::can::{CanFrame, EXTENDED_FLAG};
use sml::link::{Binding, Source};

fn huawei_script() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/meters/huawei-r4850g2-can.sml"
    ))
    .unwrap()
}

const REGISTERS: &[(u8, f64)] = &[
    (0x70, 1520.5),
    (0x71, 50.0),
    (0x78, 230.5),
    (0x72, 6.5),
    (0x75, 53.5),
    (0x81, 27.5),
    (0x76, 30.0),
    (0x80, 31.5),
    (0x7f, 40.5),
    (0x74, 0.95),
];

#[test]
fn the_huawei_script_unchanged_polls_the_simulated_rectifier_and_publishes_its_values() {
    let bus = Bus::start(
        huawei(REGISTERS.to_vec()),
        Vec::new(),
        Duration::from_millis(20),
    );
    let (cfg, published) = recorded_run(compile(&huawei_script()), tcp(bus.port));
    let run = start_sml(cfg);
    // Each reply is its own telegram, so a payload may carry only the values of the replies so
    // far: the latest value of each name across the payloads is what a consumer ends up with.
    let merged = |p: &Published| {
        let mut all = serde_json::Map::new();
        for s in sensor_values(p) {
            if let Some(o) = s["CAN"].as_object() {
                all.extend(o.clone());
            }
        }
        all
    };
    assert!(
        wait_for(Duration::from_secs(20), || merged(&published).len() == 10),
        "the ten values were not all published: {:?}",
        sensor_values(&published)
    );
    run.stop();
    let heard = bus.stop();
    // The definition line's request: extended id 0x108040FE, eight zero bytes, once a second.
    assert!(heard.contains(&CanFrame {
        id: 0x1080_40FE | EXTENDED_FLAG,
        data: vec![0; 8]
    }));
    let can = serde_json::Value::Object(merged(&published));
    assert_eq!(can["ipwr"], 1520.5);
    assert_eq!(can["freq"], 50.0);
    assert_eq!(can["ivolt"], 230.5);
    assert_eq!(can["ovolt"], 53.5);
    assert_eq!(can["mcurr"], 30.0);
    // 0.95 x 1024 is 972.8, sent as 973: 0.950195..., one decimal.
    assert_eq!(can["eff"], 1.0);
}

/// The SOREL LTDC controller broadcasts its sensors; the script (community corpus, unchanged
/// lines) only listens.
const SOREL: &str = ">D\n>B\n->sensor53 r\n>M 1\n+1,3,C,0,3204,CAN,1,5\n\
1,100124800500uuUU@10,Temp S1,\u{ba}C,S1,0\n\
1,100124800501uuUU@10,Temp S2,\u{ba}C,S2,0\n\
1,10022480050000ss@-0.01,Relay R1,,R1,0\n#\n";

#[test]
fn garbage_and_other_ids_on_the_bus_publish_nothing_wrong() {
    let good_s1 = CanFrame {
        id: 0x1001_2480 | EXTENDED_FLAG,
        data: vec![0x00, 0xD2, 0x00, 0x00, 0x00],
    };
    let good_r1 = CanFrame {
        id: 0x1002_2480 | EXTENDED_FLAG,
        data: vec![0x00, 0x00, 0xFF, 0x00, 0x00],
    };
    // A length byte of 15 (garbage), another device on the bus with the same layout, good frames.
    let mut broadcast = vec![0x10, 0x01, 0x24, 0x80, 0x0F];
    broadcast.extend(
        CanFrame {
            id: 0x1001_2481 | EXTENDED_FLAG,
            data: vec![0x00, 0x99, 0x00, 0x00, 0x00],
        }
        .encode(),
    );
    broadcast.extend(good_s1.encode());
    broadcast.extend(good_r1.encode());
    let bus = Bus::start(
        Box::new(|_| Vec::new()),
        broadcast,
        Duration::from_millis(50),
    );
    let (cfg, published) = recorded_run(compile(SOREL), tcp(bus.port));
    let run = start_sml(cfg);
    assert!(
        wait_for(Duration::from_secs(20), || sensor_values(&published).len()
            >= 3),
        "no SENSOR payloads"
    );
    run.stop();
    bus.stop();
    assert!(
        sensor_values(&published)
            .iter()
            .any(|s| s["CAN"].get("S1").is_some() || s["CAN"].get("R1").is_some()),
        "the good frames between the bad ones are read"
    );
    for s in sensor_values(&published) {
        let sorel = s["CAN"].as_object().unwrap();
        // `uuUU` (little endian) D2 00 is 210, / 10; never the other device's 0x99 and never S2
        // (its frame never came).
        assert_eq!(
            sorel.get("S1").and_then(|v| v.as_f64()).unwrap_or(21.0),
            21.0,
            "{s}"
        );
        assert!(!sorel.contains_key("S2"), "{s}");
        if let Some(r1) = sorel.get("R1") {
            // `ss` is the signed byte 0xFF = -1, divided by -0.01.
            assert_eq!(r1.as_f64(), Some(100.0), "{s}");
        }
    }
}

#[test]
fn a_vcan_interface_gets_the_frames_of_the_bus() {
    if !std::path::Path::new("/sys/class/net/vcan0").exists() {
        eprintln!(
            "skipped: no vcan0 (create it with `ip link add dev vcan0 type vcan && ip link set up \
             vcan0`; this kernel may lack the vcan module)"
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let settings = sml::script::model::SerialSettings {
            baud: 125_000,
            data_bits: 8,
            parity: sml::script::model::Parity::None,
            stop_bits: 1,
        };
        let source = Source::Can("vcan0".into());
        let mut rx = sml::link::Link::open(&source, &settings, sml::link::ReplaySpeed::RealTime)
            .await
            .unwrap();
        let mut tx = sml::link::Link::open(&source, &settings, sml::link::ReplaySpeed::RealTime)
            .await
            .unwrap();
        let frame = CanFrame {
            id: 0x1081_407F | EXTENDED_FLAG,
            data: vec![1, 0x75, 0, 0, 0, 0, 0xD6, 0],
        };
        tx.write_all(&frame.encode()).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), rx.read(&mut buf))
            .await
            .expect("the frame arrives")
            .unwrap();
        assert_eq!(&buf[..n], frame.encode().as_slice());
    });
}

#[test]
fn a_can_port_for_a_meter_that_is_not_can_is_refused_with_what_the_user_wrote() {
    let script = sml::script::compile(b">D\n>M 1\n+1,3,o,0,9600,OBIS\n1,1.8.0(@1,E,kWh,E,3\n#\n")
        .script
        .unwrap();
    let binding: Binding = "1=can:can0".parse().unwrap();
    let e = sml::runner::check_bindings(&script, &[binding], &sml::runner::default_decoders())
        .unwrap_err()
        .to_string();
    assert!(e.contains("--port 1=can:can0"), "{e}");
    assert!(e.contains("'o' meter"), "{e}");
}
