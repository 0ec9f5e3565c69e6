//! Modbus end to end with real parts: `sml::runner::run` polls a simulated meter over a
//! pseudo-terminal (RTU) or a TCP socket (Modbus TCP), and the script's values come out on the
//! SENSOR payload; wrong replies on the wire publish nothing wrong.

mod common;
#[path = "support/recorded_run.rs"]
mod recorded_run;
#[path = "modbus_sim.rs"]
mod sim;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use recorded_run::*;
use sim::*;
use sml::link::{Binding, Source};

#[test]
fn the_sdm630_script_unchanged_publishes_the_simulated_meters_values() {
    let script_text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/meters/sdm630-modbus.sml"
    ))
    .unwrap();
    let mut sim = Simulator::default();
    let values = [230.1f32, 231.2, 229.8, 1.5, 2.25, 0.75, 345.0, 520.2, 172.3];
    for (i, v) in values.iter().enumerate() {
        sim.set_f32(1, 2 * i as u16, *v);
    }
    let (master, path) = pty();
    let stop = Arc::new(AtomicBool::new(false));
    let meter = serve_pty(master, sim, stop.clone(), |_, r| Some(r));
    let (cfg, published) = recorded_run(compile(&script_text), serial(path));
    run_until_a_sensor_payload(cfg, &published);
    stop.store(true, Ordering::Relaxed);
    assert!(meter.join().unwrap() >= 1);
    assert_eq!(
        sensors(&published)[0],
        r#"{"Time":"T","SDM630":{"Voltage_P1":230.10,"Voltage_P2":231.20,"Voltage_P3":229.80,"Current_P1":1.50,"Current_P2":2.25,"Current_P3":0.75,"Power_P1":345.00,"Power_P2":520.20,"Power_P3":172.30}}"#
    );
}

/// Two slaves polled every 100 ms; the simulator spoils its first replies in every way a line can.
const TWO_SLAVES: &str = ">D\n>M 1\n+1,3,m,0,9600,BUS,1,1,01040000,02040000\n\
1,010404ffffffff@i0:1,A,V,a,1\n\
1,020404ffffffff@i1:1,B,V,b,1\n#\n";

#[test]
fn wrong_replies_on_the_wire_publish_nothing_wrong() {
    let mut sim = Simulator::default();
    sim.set_f32(1, 0, 230.0);
    sim.set_f32(2, 0, 400.0);
    let (master, path) = pty();
    let stop = Arc::new(AtomicBool::new(false));
    let meter = serve_pty(master, sim, stop.clone(), |n, mut reply| match n {
        // A flipped bit: the CRC fails.
        0 => {
            reply[4] ^= 0x01;
            Some(reply)
        }
        // Slave 2 is asked; slave 1 answers (with its own, wrong-for-b value).
        1 => {
            reply[0] = 1;
            Some(with_crc(reply[..reply.len() - 2].to_vec()))
        }
        // An exception instead of data.
        2 => Some(with_crc(vec![reply[0], 0x84, 0x04])),
        // Silence.
        3 => None,
        // Cut short: the rest never comes.
        4 => Some(reply[..5].to_vec()),
        // A reply to another request (8 data bytes where 4 were asked).
        5 => Some(with_crc(vec![
            reply[0], 4, 8, 0x43, 0xc8, 0, 0, 0x43, 0xc8, 0, 0,
        ])),
        _ => Some(reply),
    });
    let (cfg, published) = recorded_run(compile(TWO_SLAVES), serial(path));
    let run = start_sml(cfg);
    assert!(
        wait_for(Duration::from_secs(20), || sensors(&published)
            .iter()
            .any(|s| s.contains("\"b\""))
            && sensors(&published).iter().any(|s| s.contains("\"a\""))),
        "both slaves' values never came: {:?}",
        sensors(&published)
    );
    run.stop();
    stop.store(true, Ordering::Relaxed);
    let answered = meter.join().unwrap();
    assert!(answered >= 8, "{answered}");
    let got = sensors(&published);
    // Only good replies were published: a is always 230.0 and b 400.0, never anything else.
    for s in &got {
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        let bus = &v["BUS"];
        if let Some(a) = bus.get("a") {
            assert_eq!(a.as_f64(), Some(230.0), "{s}");
        }
        if let Some(b) = bus.get("b") {
            assert_eq!(b.as_f64(), Some(400.0), "{s}");
        }
    }
    // The six spoilt replies published nothing: the first payload came from reply 6 or later.
    assert!(
        got.len() <= answered - 6,
        "{} payloads, {answered} replies",
        got.len()
    );
}

fn tcp_meter(values: f32) -> (u16, Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut sim = Simulator::default();
    sim.set_f32(1, 0, values);
    let stop = Arc::new(AtomicBool::new(false));
    let handle = serve_tcp(listener, sim, stop.clone());
    (port, stop, handle)
}

fn tcp_script(port: u16) -> sml::script::Script {
    compile(&format!(
        ">D\n>M 1\n+1,[127.0.0.1],m,0,{port},TCP,1,1,01040000\n\
         1,010404ffffffff@i0:1,Voltage,V,volt,1\n#\n"
    ))
}

#[test]
fn a_modbus_tcp_meter_is_polled_at_the_scripts_own_address_without_a_port() {
    let (port, stop, meter) = tcp_meter(229.5);
    let (cfg, published) = recorded_run(tcp_script(port), vec![]);
    run_until_a_sensor_payload(cfg, &published);
    stop.store(true, Ordering::Relaxed);
    assert!(meter.join().unwrap() >= 1);
    assert_eq!(
        sensors(&published)[0],
        r#"{"Time":"T","TCP":{"volt":229.5}}"#
    );
}

#[test]
fn a_port_option_overrides_the_scripts_modbus_tcp_address() {
    let (port, stop, meter) = tcp_meter(231.5);
    // The script names a port nobody listens on; --port 1=tcp://127.0.0.1:<port> wins.
    let (cfg, published) = recorded_run(
        tcp_script(free_port()),
        vec![Binding {
            meter: 1,
            source: Source::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
        }],
    );
    run_until_a_sensor_payload(cfg, &published);
    stop.store(true, Ordering::Relaxed);
    assert!(meter.join().unwrap() >= 1);
    assert_eq!(
        sensors(&published)[0],
        r#"{"Time":"T","TCP":{"volt":231.5}}"#
    );
}

/// The whole path with real parts: the unchanged SDM630 script, a simulated meter on a pty, and the
/// SENSOR payload on a real broker under Tasmota's topic.
#[test]
fn the_sdm630_values_reach_the_broker_on_the_sensor_topic() {
    let broker = free_port();
    start_broker(broker);
    let seen = subscribe(broker, "home1/#");
    let script_text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/meters/sdm630-modbus.sml"
    ))
    .unwrap();
    let mut sim = Simulator::default();
    for i in 0..9u16 {
        sim.set_f32(1, 2 * i, 100.0 + f32::from(i));
    }
    let (master, path) = pty();
    let stop = Arc::new(AtomicBool::new(false));
    let meter = serve_pty(master, sim, stop.clone(), |_, r| Some(r));
    let (mut cfg, _) = recorded_run(compile(&script_text), serial(path));
    cfg.sink = sml::runner::SinkConfig::Mqtt(Box::new(mqtt_config(broker, "sdm630")));
    let run = start_sml(cfg);
    let s = next_on(&seen, "home1/tele/sdm630/SENSOR", Duration::from_secs(20));
    run.stop();
    stop.store(true, Ordering::Relaxed);
    meter.join().unwrap();
    assert_eq!(
        without_time(&s.payload),
        r#"{"Time":"T","SDM630":{"Voltage_P1":100.00,"Voltage_P2":101.00,"Voltage_P3":102.00,"Current_P1":103.00,"Current_P2":104.00,"Current_P3":105.00,"Power_P1":106.00,"Power_P2":107.00,"Power_P3":108.00}}"#
    );
}

/// `sml run --port 1=file:...` on a Modbus capture: no request can reach a capture, so its replies
/// answer the blocks in turn and each one is published.
#[test]
fn a_replayed_modbus_capture_publishes_every_reply_then_ends() {
    let root = env!("CARGO_MANIFEST_DIR");
    let script_text = std::fs::read_to_string(format!("{root}/meters/sdm630-modbus.sml")).unwrap();
    let (cfg, published) = recorded_run(
        compile(&script_text),
        vec![Binding {
            meter: 1,
            source: Source::Replay(
                format!("{root}/tests/fixtures/meters/sdm630-modbus.bin").into(),
            ),
        }],
    );
    let report = start_sml(cfg).join();
    assert_eq!(report.engine.telegrams, 2);
    let got = sensors(&published);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].contains(r#""Voltage_P1":230.10"#), "{got:?}");
    assert!(got[1].contains(r#""Voltage_P1":230.40"#), "{got:?}");
}
