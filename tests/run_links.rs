//! Links with real parts: bytes through a pseudo-terminal, a TCP bridge and a replayed capture arrive
//! intact; a meter whose pty goes away and comes back is read again, and the engine is told.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serialport::{SerialPort, TTYPort};
use sml::backoff::Backoff;
use sml::link::{Link, ReplaySpeed, Source};
use sml::runner::meter_task::{LinkDriver, LinkEvent, LinkEventKind};
use sml::script::model::{Parity, SerialSettings};

const S9600: SerialSettings = SerialSettings {
    baud: 9600,
    data_bits: 8,
    parity: Parity::None,
    stop_bits: 1,
};

fn pattern(n: usize) -> Vec<u8> {
    // Every byte value, including 0x00, 0x11/0x13 (XON/XOFF) and 0x0d/0x0a: nothing may be translated.
    (0..n).map(|i| (i * 7 + i / 256) as u8).collect()
}

async fn read_exactly(link: &mut Link, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while got.len() < n {
        let k = tokio::time::timeout(Duration::from_secs(10), link.read(&mut buf))
            .await
            .expect("bytes in time")
            .unwrap();
        assert!(k > 0, "link ended after {} of {n} bytes", got.len());
        got.extend_from_slice(&buf[..k]);
    }
    got
}

#[tokio::test(flavor = "current_thread")]
async fn bytes_written_on_a_pty_arrive_intact() {
    let (mut master, slave) = TTYPort::pair().unwrap();
    let path = PathBuf::from(slave.name().unwrap());
    let mut link = Link::open(&Source::Serial(path), &S9600, ReplaySpeed::RealTime)
        .await
        .unwrap();
    let sent = pattern(3000);
    let writer = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            send_at_9600(&mut master, &sent);
            master
        })
    };
    let got = read_exactly(&mut link, sent.len()).await;
    assert_eq!(got, sent);
    // And the other way: what sml transmits (a request) reaches the meter.
    let mut master = writer.join().unwrap();
    link.write_all(b"/?!\r\n").await.unwrap();
    master.set_timeout(Duration::from_secs(5)).unwrap();
    let mut req = [0u8; 5];
    std::io::Read::read_exact(&mut master, &mut req).unwrap();
    assert_eq!(&req, b"/?!\r\n");
    drop(slave);
}

#[tokio::test(flavor = "current_thread")]
async fn bytes_from_a_tcp_bridge_arrive_intact() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = pattern(20_000);
    let server = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            for chunk in sent.chunks(1000) {
                s.write_all(chunk).unwrap();
            }
            let mut req = [0u8; 3];
            std::io::Read::read_exact(&mut s, &mut req).unwrap();
            req
        })
    };
    let source: Source = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let mut link = Link::open(&source, &S9600, ReplaySpeed::RealTime)
        .await
        .unwrap();
    assert_eq!(read_exactly(&mut link, sent.len()).await, sent);
    link.write_all(b"/?!").await.unwrap();
    assert_eq!(&server.join().unwrap(), b"/?!");
    // The bridge closed: the link reports its end.
    let mut buf = [0u8; 16];
    assert_eq!(link.read(&mut buf).await.unwrap(), 0);
    assert!(
        !link.ends_for_good(),
        "a TCP link is reopened, not finished"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_replayed_capture_arrives_intact_then_ends_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.bin");
    let sent = pattern(2000);
    std::fs::write(&path, &sent).unwrap();
    for speed in [ReplaySpeed::Factor(20.0), ReplaySpeed::Max] {
        let mut link = Link::open(&Source::Replay(path.clone()), &S9600, speed)
            .await
            .unwrap();
        assert_eq!(read_exactly(&mut link, sent.len()).await, sent, "{speed:?}");
        let mut buf = [0u8; 16];
        assert_eq!(link.read(&mut buf).await.unwrap(), 0);
        assert!(link.ends_for_good());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_missing_capture_is_a_clear_error() {
    let e = Link::open(
        &Source::Replay("/nonexistent/cap.txt".into()),
        &S9600,
        ReplaySpeed::Max,
    )
    .await
    .err()
    .unwrap();
    assert!(e.to_string().contains("/nonexistent/cap.txt"), "{e}");
}

async fn next_event(rx: &mut tokio::sync::mpsc::Receiver<LinkEvent>) -> LinkEventKind {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("a link event in time")
        .expect("driver alive")
        .kind
}

/// The pty goes away (the adapter is unplugged) and a new one appears under the same name (udev's
/// /dev/serial/by-id link): the driver reports the drop, reopens, and telegrams flow again.
#[tokio::test(flavor = "current_thread")]
async fn a_closed_and_reopened_pty_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let by_id = dir.path().join("meter");
    let (mut master, slave) = TTYPort::pair().unwrap();
    std::os::unix::fs::symlink(slave.name().unwrap(), &by_id).unwrap();
    drop(slave);

    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let driver = LinkDriver {
        meter: Arc::new(script(&["a", "b"]).meters[0].clone()),
        source: Source::Serial(by_id.clone()),
        speed: ReplaySpeed::RealTime,
        backoff: Backoff {
            first: Duration::from_millis(100),
            cap: Duration::from_millis(400),
        },
        decoders: line_decoders(),
        events: tx,
    };
    let task = tokio::spawn(driver.run());
    assert_eq!(next_event(&mut rx).await, LinkEventKind::Up);
    let meter = std::thread::spawn(move || {
        send_at_9600(&mut master, b"1.5 2\n");
        master
    });
    let LinkEventKind::Telegram(t) = next_event(&mut rx).await else {
        panic!("telegram expected")
    };
    assert_eq!(t.readings.len(), 2);

    // Unplug: the master side closes.
    drop(meter.join().unwrap());
    assert_eq!(next_event(&mut rx).await, LinkEventKind::Down);

    // Plug in again: a new pty behind the same name.
    let (mut master, slave) = TTYPort::pair().unwrap();
    std::fs::remove_file(&by_id).unwrap();
    std::os::unix::fs::symlink(slave.name().unwrap(), &by_id).unwrap();
    drop(slave);
    // Reopen attempts may fail while the old name is gone; the next event that matters is Up.
    assert_eq!(next_event(&mut rx).await, LinkEventKind::Up);
    send_at_9600(&mut master, b"3 4.25\n");
    let LinkEventKind::Telegram(t) = next_event(&mut rx).await else {
        panic!("telegram expected after reopening")
    };
    assert_eq!(t.readings[1].value, sml::decode::Value::Number(4.25));
    task.abort();
}

/// The README's no-hardware path: a capture replayed as fast as possible, a payload per telegram,
/// and the run ends by itself when the capture does.
#[test]
fn a_replayed_capture_publishes_every_telegram_then_the_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("cap.txt");
    std::fs::write(&capture, "garbage without numbers\n1 2\n3 4\n").unwrap();
    let sink = sml::publish::RecordingSink::default();
    let published = sink.published.clone();
    let report = start_sml(run_config(
        &["a", "b"],
        Source::Replay(capture),
        sml::runner::SinkConfig::Recording(sink),
    ))
    .join();
    assert_eq!(report.engine.telegrams, 2);
    let got: Vec<String> = published
        .lock()
        .unwrap()
        .iter()
        .map(|p| match p {
            sml::engine::scheduler::Publication::Sensor(s) => without_time(s),
            other => panic!("only SENSOR expected, got {other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            r#"{"Time":"T","EON":{"a":1.00,"b":2.00}}"#,
            r#"{"Time":"T","EON":{"a":3.00,"b":4.00}}"#
        ]
    );
}

#[test]
fn a_meter_without_a_port_says_how_to_give_one() {
    let s = script(&["a"]);
    let e = sml::runner::check_bindings(&s, &[], &line_decoders())
        .unwrap_err()
        .to_string();
    for form in [
        "--port 1=/dev/ttyUSB0",
        "--port 1=tcp://host:2000",
        "--port 1=file:capture.txt",
    ] {
        assert!(e.contains(form), "{e}");
    }
    let two = [
        sml::link::Binding {
            meter: 1,
            source: Source::Serial("/dev/ttyUSB0".into()),
        },
        sml::link::Binding {
            meter: 2,
            source: Source::Serial("/dev/ttyUSB1".into()),
        },
    ];
    let e = sml::runner::check_bindings(&s, &two, &line_decoders())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--port 2=/dev/ttyUSB1") && e.contains("no meter 2"),
        "{e}"
    );
}

/// A decoder that panics on its first byte: a bug in a meter task must fail the run, not leave it
/// running without that meter and exiting 0.
struct PanickingDecoder;

impl sml::decode::Decoder for PanickingDecoder {
    fn handle_bytes(&mut self, _now: std::time::Instant, _bytes: &[u8]) {
        panic!("decoder bug on purpose");
    }
    fn poll_event(&mut self) -> Option<sml::decode::DecodeEvent> {
        None
    }
    fn stats(&self) -> sml::decode::DecodeStats {
        Default::default()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_panic_in_a_meter_task_fails_the_run_naming_the_meter() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("cap.txt");
    std::fs::write(&capture, "1 2\n").unwrap();
    let mut config = run_config(
        &["a", "b"],
        Source::Replay(capture),
        sml::runner::SinkConfig::Recording(Default::default()),
    );
    config.decoders = Arc::new(|_m| Ok(Box::new(PanickingDecoder)));
    let e = tokio::time::timeout(
        Duration::from_secs(15),
        sml::runner::run(config, std::future::pending()),
    )
    .await
    .expect("the run ends by itself")
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("meter 1") && e.contains("decoder bug on purpose"),
        "{e}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_capture_that_cannot_be_read_fails_its_link_quoting_the_port() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let driver = LinkDriver {
        meter: Arc::new(script(&["a"]).meters[0].clone()),
        source: Source::Replay("/nonexistent/cap.txt".into()),
        speed: ReplaySpeed::Max,
        backoff: Backoff::default(),
        decoders: line_decoders(),
        events: tx,
    };
    tokio::spawn(driver.run());
    let LinkEventKind::Failed(why) = next_event(&mut rx).await else {
        panic!("Failed expected")
    };
    assert!(why.contains("--port 1=file:/nonexistent/cap.txt"), "{why}");
}

#[test]
fn a_port_bound_twice_names_both_bindings() {
    let s = script(&["a"]);
    let two: Vec<sml::link::Binding> = ["1=/dev/ttyUSB0", "1=tcp://h:2000"]
        .iter()
        .map(|b| b.parse().unwrap())
        .collect();
    let e = sml::runner::check_bindings(&s, &two, &line_decoders())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--port 1=/dev/ttyUSB0") && e.contains("--port 1=tcp://h:2000"),
        "{e}"
    );
}
