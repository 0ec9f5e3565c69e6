//! Soak of the `sml` binary: N simulated meters (half DSMR `o`, half SML `s`) behind TCP serial
//! bridges, one telegram per meter and interval, the real `sml run` process publishing each telegram
//! to a real mosquitto, for hours, with the broker restarted and meter connections dropped on a
//! schedule. A subscriber on its own persistent session counts what arrives.
//!
//!     cargo build --release && cargo run --release --example soak -- --minutes 120 --out soak-out
//!
//! Every telegram carries its own sequence number as the meter's import counter (kWh = seq / 1000),
//! so the subscriber can tell, per meter, which telegrams arrived, which twice, and whether a value
//! that was never sent was published. "Expected" are the telegrams written whole to a connected
//! bridge socket; the ones a dropped bridge never sent are not expected (a real bridge loses them
//! too).
//!
//! Every `--sample` seconds it appends sml's RSS and CPU share to OUT/samples.csv; every few minutes
//! and at the end it writes OUT/rss.png (plotters) and OUT/summary.md. RSS is flat when the highest
//! RSS after warm-up is within 5 % of the RSS at the end of warm-up. Needs `mosquitto` on PATH.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "Soak of `sml run`: many meters, broker restarts, source drops, RSS over time")]
struct Opts {
    /// Simulated meters (odd numbers DSMR `o`, even numbers SML `s`).
    #[arg(long, default_value_t = 1000)]
    meters: usize,
    /// How long the meters send.
    #[arg(long, default_value_t = 120.0)]
    minutes: f64,
    /// Seconds between two telegrams of one meter.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Restart the broker every this many seconds (0: never); it stays down --broker-down seconds.
    #[arg(long, default_value_t = 900)]
    broker_restart_every: u64,
    #[arg(long, default_value_t = 5)]
    broker_down: u64,
    /// Drop --drop-count meters' bridge connections every this many seconds (0: never), for
    /// --drop-for seconds.
    #[arg(long, default_value_t = 120)]
    drop_every: u64,
    #[arg(long, default_value_t = 50)]
    drop_count: usize,
    #[arg(long, default_value_t = 20)]
    drop_for: u64,
    /// Seconds between two RSS/CPU samples.
    #[arg(long, default_value_t = 10)]
    sample: u64,
    /// Minutes of warm-up before RSS must stay flat.
    #[arg(long, default_value_t = 10.0)]
    warm_up: f64,
    /// The sml binary.
    #[arg(long, default_value = "target/release/sml")]
    sml: PathBuf,
    #[arg(long, default_value_t = 18831)]
    broker_port: u16,
    /// Output directory (samples.csv, rss.png, summary.md, sml's log, the broker's files).
    #[arg(long, default_value = "soak-out")]
    out: PathBuf,
    /// Run nothing: redraw OUT/rss.png from OUT/samples.csv and print the RSS figures for
    /// --warm-up (to look at a finished soak with another warm-up).
    #[arg(long)]
    replot: bool,
}

/// The SML bench telegram with its 1.8.0 value replaced: the getList response message's CRC and
/// the transport frame's CRC recomputed, so the frame is one a meter could have sent.
struct SmlTemplate {
    /// The transport frame's inner data (between start and end sequence, padding removed).
    data: Vec<u8>,
    /// Offset in `data` of the 1.8.0 value's 8 bytes (Integer64, scaler -1).
    value_at: usize,
    /// The getList response message: its first byte and the offset of its CRC's 2 bytes.
    message: (usize, usize),
}

const X25: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);

impl SmlTemplate {
    fn load() -> SmlTemplate {
        let path = "../shared/bench/sml-10-entries.bin";
        let frame = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let end = frame.len() - 8;
        let padding = frame[end + 5] as usize;
        let data = frame[8..end - padding].to_vec();
        let find = |needle: &[u8]| {
            data.windows(needle.len())
                .position(|w| w == needle)
                .expect("the bench telegram has what the soak patches")
        };
        // 77 07 0100010800ff 01 01 62 1e 52 ff 69 <8 bytes>
        let value_at = find(&[0x01, 0x00, 0x01, 0x08, 0x00, 0xff]) + 13;
        assert_eq!(data[value_at - 1], 0x69, "1.8.0 is an Integer64");
        // The getList response: the second message (76 .. 72 63 07 01 ...), its CRC `63 xx xx`
        // right before the third message's `76`.
        let start = find(&[0x72, 0x63, 0x07, 0x01]) - 7;
        let close = find(&[0x72, 0x63, 0x02, 0x01]) - 7;
        let crc_at = close - 3;
        assert_eq!(data[crc_at - 1], 0x63, "the message CRC is an Unsigned16");
        let template = SmlTemplate {
            data,
            value_at,
            message: (start, crc_at),
        };
        let (s, c) = template.message;
        let stored = u16::from_le_bytes([template.data[c], template.data[c + 1]]);
        assert_eq!(
            X25.checksum(&template.data[s..c - 1]),
            stored,
            "the soak computes the bench telegram's own message CRC"
        );
        template
    }

    fn telegram(&self, seq: u64) -> Vec<u8> {
        let mut data = self.data.clone();
        // Scaler -1: raw = seq * 10 reads as seq Wh; the script's @1000 makes it seq / 1000 kWh.
        data[self.value_at..self.value_at + 8].copy_from_slice(&((seq * 10) as i64).to_be_bytes());
        let (s, c) = self.message;
        let crc = X25.checksum(&data[s..c - 1]);
        data[c..c + 2].copy_from_slice(&crc.to_le_bytes());
        sml::decode::sml::frame::encode(&data)
    }
}

const ARC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_ARC);

fn dsmr_telegram(seq: u64) -> Vec<u8> {
    let body = format!(
        "/ISK5\\2M550T-1012\r\n\r\n1-0:1.8.1({:010.3}*kWh)\r\n1-0:1.7.0(01.234*kW)\r\n!",
        seq as f64 / 1000.0
    );
    format!("{body}{:04X}\r\n", ARC.checksum(body.as_bytes())).into_bytes()
}

fn script(n: usize) -> String {
    let mut text = format!(">D\n>B\n>M {n}\n");
    for i in 1..=n {
        if i % 2 == 1 {
            text.push_str(&format!("+{i},3,o,0,115200,M{i}\n"));
            text.push_str(&format!("{i},1-0:1.8.1(@1,Import,kWh,import,3\n"));
        } else {
            text.push_str(&format!("+{i},3,s,0,9600,M{i}\n"));
            text.push_str(&format!("{i},77070100010800ff@1000,Import,kWh,import,3\n"));
        }
    }
    text.push_str("#\n");
    text
}

/// What the simulated meters did: per meter, the sequence numbers written whole to a connection.
struct Meters {
    sent: Vec<Mutex<Vec<u64>>>,
    sent_total: AtomicU64,
    /// Per meter: the bridge is down (connections refused) until this instant.
    down_until: Vec<Mutex<Option<Instant>>>,
    stop: AtomicBool,
}

async fn bridge(
    i: usize,
    listener: tokio::net::TcpListener,
    meters: Arc<Meters>,
    template: Arc<SmlTemplate>,
    epoch: Instant,
    interval: Duration,
    phase: Duration,
) {
    use tokio::io::AsyncWriteExt;
    let mut next = epoch + phase;
    let mut conn: Option<tokio::net::TcpStream> = None;
    loop {
        if meters.stop.load(Ordering::Relaxed) {
            return;
        }
        let down = meters.down_until[i]
            .lock()
            .unwrap()
            .is_some_and(|t| Instant::now() < t);
        if down {
            conn = None;
        }
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    // A bridge that is down accepts and hangs up, as a bridge without its
                    // serial side does; a second client replaces the first.
                    if !down {
                        let _ = stream.set_nodelay(true);
                        conn = Some(stream);
                    }
                }
            }
            _ = tokio::time::sleep_until(next.into()) => {
                let seq = ((next - epoch).as_secs_f64() / interval.as_secs_f64()).round() as u64 + 1;
                next += interval;
                if let Some(stream) = conn.as_mut() {
                    let bytes = if (i + 1) % 2 == 1 { dsmr_telegram(seq) } else { template.telegram(seq) };
                    match stream.write_all(&bytes).await {
                        Ok(()) => {
                            meters.sent[i].lock().unwrap().push(seq);
                            meters.sent_total.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => conn = None,
                    }
                }
            }
        }
    }
}

/// What the subscriber saw.
#[derive(Default)]
struct Seen {
    per_meter: Vec<HashSet<u64>>,
    telegram_payloads: u64,
    duplicates: u64,
    /// Payloads with several meters (teleperiod) or none: counted, not matched.
    other_payloads: u64,
    unparsable: u64,
}

fn subscribe(port: u16, n: usize, seen: Arc<Mutex<Seen>>, delivered: Arc<AtomicU64>) {
    seen.lock().unwrap().per_meter = vec![HashSet::new(); n];
    let mut options = rumqttc::MqttOptions::new("soak-observer", "127.0.0.1", port);
    options.set_clean_session(false);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut conn) = rumqttc::Client::new(options, 100_000);
    std::thread::spawn(move || {
        for event in conn.iter() {
            match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => {
                    if !ack.session_present {
                        let _ = client.subscribe("tele/soak/SENSOR", rumqttc::QoS::AtLeastOnce);
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    count(&p.payload, &seen, &delivered);
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    });
}

fn count(payload: &[u8], seen: &Mutex<Seen>, delivered: &AtomicU64) {
    let mut seen = seen.lock().unwrap();
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(payload)
    else {
        seen.unparsable += 1;
        return;
    };
    let meters: Vec<(usize, u64)> = map
        .iter()
        .filter_map(|(k, v)| {
            let i: usize = k.strip_prefix('M')?.parse().ok()?;
            let kwh = v.get("import")?.as_f64()?;
            Some((i - 1, (kwh * 1000.0).round() as u64))
        })
        .collect();
    if meters.len() != 1 {
        seen.other_payloads += 1;
        return;
    }
    let (i, seq) = meters[0];
    seen.telegram_payloads += 1;
    if i < seen.per_meter.len() && !seen.per_meter[i].insert(seq) {
        seen.duplicates += 1;
    } else {
        delivered.fetch_add(1, Ordering::Relaxed);
    }
}

struct Broker {
    conf: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Broker {
    fn new(out: &Path, port: u16) -> Broker {
        let dir = out.join("mosquitto");
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("mosquitto.conf");
        // Persistence keeps the observer's session and its queued messages over a restart; no
        // cap on queued messages (the default 1000 would drop what sml delivers while the
        // observer reconnects).
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nmax_queued_messages 0\nmax_queued_bytes 0\n\
                 log_dest none\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut b = Broker {
            conf,
            child: None,
            log: dir.join("mosquitto.log"),
        };
        b.start(port);
        b
    }

    fn start(&mut self, port: u16) {
        let log = std::fs::File::create(&self.log).unwrap();
        self.child = Some(
            Command::new("mosquitto")
                .arg("-c")
                .arg(&self.conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("mosquitto on PATH"),
        );
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "mosquitto listens within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A clean stop (SIGTERM: mosquitto saves its sessions), as a package upgrade does.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(child.id(), libc::SIGTERM);
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kill(pid: u32, signal: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) with a pid this tool spawned and a valid signal number.
    if unsafe { libc::kill(pid as i32, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// RSS in kB and CPU seconds (user + system) of a process.
fn proc_usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().ok()? + fields[12].parse::<f64>().ok()?;
    // SAFETY: sysconf with a valid name has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((rss, ticks / hz))
}

#[derive(Clone, Copy)]
struct Sample {
    minutes: f64,
    rss_mb: f64,
    cpu_pct: f64,
    sent: u64,
    delivered: u64,
}

fn plot(out: &Path, samples: &[Sample], warm_up: f64) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let fonts = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ];
    let font = fonts
        .iter()
        .find_map(|f| std::fs::read(f).ok())
        .ok_or("no DejaVu or Liberation font for the plot's labels")?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "the font does not load")?;
    let path = out.join("rss.png");
    let root = BitMapBackend::new(&path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(420);
    let end = samples.last().map_or(1.0, |s| s.minutes).max(1.0);
    let rss: Vec<(f64, f64)> = samples.iter().map(|s| (s.minutes, s.rss_mb)).collect();
    let cpu: Vec<(f64, f64)> = samples.iter().map(|s| (s.minutes, s.cpu_pct)).collect();
    panel(
        &top,
        "sml RSS during the soak",
        "RSS (MB)",
        end,
        &rss,
        BLUE,
        Some(warm_up),
    )?;
    panel(
        &bottom,
        "sml CPU (% of one core)",
        "CPU %",
        end,
        &cpu,
        RED,
        None,
    )?;
    root.present()?;
    Ok(())
}

/// One chart of the plot: a series over minutes, and a faint line at the end of warm-up.
fn panel<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    end: f64,
    points: &[(f64, f64)],
    colour: plotters::style::RGBColor,
    marker: Option<f64>,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    let top = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..end, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc(y_desc)
        .draw()?;
    chart.draw_series(LineSeries::new(points.iter().copied(), &colour))?;
    if let Some(x) = marker {
        chart.draw_series(LineSeries::new([(x, 0.0), (x, top)], &BLACK.mix(0.3)))?;
    }
    Ok(())
}

struct Events {
    broker_restarts: u64,
    source_drops: u64,
}

/// RSS and CPU after warm-up: the RSS at its end (`base`), the highest after it, the last.
struct Usage {
    base: f64,
    peak: f64,
    last: f64,
    /// Peak over base, percent.
    growth: f64,
    cpu_mean: f64,
}

fn usage(samples: &[Sample], warm_up: f64) -> Usage {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.minutes >= warm_up).collect();
    let base = after.first().map_or(0.0, |s| s.rss_mb);
    let peak = after.iter().map(|s| s.rss_mb).fold(0.0, f64::max);
    Usage {
        base,
        peak,
        last: samples.last().map_or(0.0, |s| s.rss_mb),
        growth: 100.0 * (peak - base) / base.max(f64::MIN_POSITIVE),
        cpu_mean: after.iter().map(|s| s.cpu_pct).sum::<f64>() / after.len().max(1) as f64,
    }
}

/// The summary's text, and the telegrams lost or published without having been sent.
fn summary(
    opts: &Opts,
    samples: &[Sample],
    events: &Events,
    meters: &Meters,
    seen: &Seen,
    final_run: bool,
) -> (String, u64) {
    let Usage {
        base,
        peak,
        last,
        growth,
        cpu_mean,
    } = usage(samples, opts.warm_up);
    let mut expected = 0u64;
    let mut lost = 0u64;
    let mut never_sent = 0u64;
    let mut lost_list = String::new();
    for (i, sent) in meters.sent.iter().enumerate() {
        let sent: HashSet<u64> = sent.lock().unwrap().iter().copied().collect();
        expected += sent.len() as u64;
        let got = &seen.per_meter[i];
        let mut missing: Vec<u64> = sent.iter().filter(|s| !got.contains(s)).copied().collect();
        missing.sort();
        for seq in &missing {
            lost_list.push_str(&format!("meter {} seq {seq}\n", i + 1));
        }
        lost += missing.len() as u64;
        never_sent += got.iter().filter(|s| !sent.contains(s)).count() as u64;
    }
    if final_run {
        // Which telegrams, to set beside events.txt (the sequence number is the send time).
        let _ = std::fs::write(opts.out.join("lost.txt"), &lost_list);
    }
    let minutes = samples.last().map_or(0.0, |s| s.minutes);
    let text = format!(
        "# sml soak{}\n\n\
         | | |\n|---|---|\n\
         | meters | {} ({} DSMR `o`, {} SML `s`), one telegram each every {} s |\n\
         | run | {minutes:.1} min, {} broker restarts ({} s down each), {} source drops ({} meters for {} s) |\n\
         | telegrams expected (written whole to a connected bridge) | {expected} |\n\
         | delivered (distinct) | {} |\n\
         | lost (expected, never delivered) | {lost} |\n\
         | duplicated (delivered again: QoS 1 re-sends) | {} |\n\
         | published but never sent (wrong values) | {never_sent} |\n\
         | other payloads (teleperiod) / unparsable | {} / {} |\n\
         | RSS after {:.0} min warm-up | {base:.1} MB, peak after {peak:.1} MB ({growth:+.1} %), at the end {last:.1} MB |\n\
         | RSS flat (peak within 5 % of warm-up) | {} |\n\
         | sml CPU after warm-up | {cpu_mean:.1} % of one core (mean) |\n",
        if final_run { "" } else { " (in progress)" },
        opts.meters,
        opts.meters.div_ceil(2),
        opts.meters / 2,
        opts.interval,
        events.broker_restarts,
        opts.broker_down,
        events.source_drops,
        opts.drop_count,
        opts.drop_for,
        seen.per_meter.iter().map(|s| s.len() as u64).sum::<u64>(),
        seen.duplicates,
        seen.other_payloads,
        seen.unparsable,
        opts.warm_up,
        if growth <= 5.0 { "yes" } else { "NO" },
    ) + &*format!(
        "\nsent total {} (counter)\n",
        meters.sent_total.load(Ordering::Relaxed)
    );
    (text, lost + never_sent)
}

/// `--replot`: the samples of a finished run, the RSS figures after `warm_up`, a new plot.
fn replot(opts: &Opts) {
    let csv = std::fs::read_to_string(opts.out.join("samples.csv")).expect("OUT/samples.csv");
    let samples: Vec<Sample> = csv
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<f64> = l.split(',').filter_map(|v| v.parse().ok()).collect();
            (f.len() == 5).then(|| Sample {
                minutes: f[0],
                rss_mb: f[1],
                cpu_pct: f[2],
                sent: f[3] as u64,
                delivered: f[4] as u64,
            })
        })
        .collect();
    let u = usage(&samples, opts.warm_up);
    println!(
        "{} samples; RSS after {:.0} min warm-up {:.1} MB, peak after {:.1} MB ({:+.1} %), \
         at the end {:.1} MB; CPU after warm-up {:.1} % of one core (mean)",
        samples.len(),
        opts.warm_up,
        u.base,
        u.peak,
        u.growth,
        u.last,
        u.cpu_mean,
    );
    if let Err(e) = plot(&opts.out, &samples, opts.warm_up) {
        eprintln!("plot: {e}");
    }
}

/// One line of OUT/events.txt: what the soak did, at which telegram sequence number.
fn note_event(out: &Path, epoch: Instant, interval: Duration, what: &str) {
    let seq = Instant::now()
        .saturating_duration_since(epoch)
        .as_secs_f64()
        / interval.as_secs_f64();
    let line = format!("seq {seq:.1}: {what}\n");
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("events.txt"))
        .and_then(|mut f| f.write_all(line.as_bytes()));
}

/// Exits 1 when a telegram was lost or a value published that was never sent, or when sml died
/// or did not exit 0 on SIGTERM: a soak run by a script must not pass on a failure.
fn main() -> std::process::ExitCode {
    let opts = Opts::parse();
    if opts.replot {
        replot(&opts);
        return std::process::ExitCode::SUCCESS;
    }
    std::fs::create_dir_all(&opts.out).unwrap();
    let n = opts.meters;
    let template = Arc::new(SmlTemplate::load());
    // Raise the file limit: N listeners, N accepted sockets, N sml clients.
    let limit = libc::rlimit {
        rlim_cur: 65536,
        rlim_max: 65536,
    };
    // SAFETY: setrlimit with a valid resource and a pointer to a live struct.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };

    let mut broker = Broker::new(&opts.out, opts.broker_port);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let delivered = Arc::new(AtomicU64::new(0));
    subscribe(opts.broker_port, n, seen.clone(), delivered.clone());

    let meters = Arc::new(Meters {
        sent: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
        sent_total: AtomicU64::new(0),
        down_until: (0..n).map(|_| Mutex::new(None)).collect(),
        stop: AtomicBool::new(false),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let interval = Duration::from_secs_f64(opts.interval);
    let epoch = Instant::now() + Duration::from_secs(5);
    let mut ports = Vec::new();
    for i in 0..n {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        ports.push(listener.local_addr().unwrap().port());
        let phase = interval.mul_f64(i as f64 / n as f64);
        rt.spawn(bridge(
            i,
            listener,
            meters.clone(),
            template.clone(),
            epoch,
            interval,
            phase,
        ));
    }

    let script_path = opts.out.join("soak.sml");
    std::fs::write(&script_path, script(n)).unwrap();
    let mut config = format!(
        "script = \"soak.sml\"\nbroker = \"mqtt://127.0.0.1:{}\"\ntopic = \"soak\"\n\
         every-telegram = true\nteleperiod = 3600\nmqtt-retry = 2\nqueue-size = 500000\n\
         spool = \"spool\"\n\n[port]\n",
        opts.broker_port
    );
    for (i, p) in ports.iter().enumerate() {
        config.push_str(&format!("{} = \"tcp://127.0.0.1:{p}\"\n", i + 1));
    }
    let config_path = opts.out.join("soak.toml");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(opts.out.join("sml.log")).unwrap();
    let mut sml = Command::new(&opts.sml)
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", opts.sml.display()));
    let pid = sml.id();

    let start = Instant::now();
    let run_for = Duration::from_secs_f64(opts.minutes * 60.0);
    let mut events = Events {
        broker_restarts: 0,
        source_drops: 0,
    };
    let mut samples: Vec<Sample> = Vec::new();
    let mut csv = std::fs::File::create(opts.out.join("samples.csv")).unwrap();
    writeln!(csv, "minutes,rss_mb,cpu_pct,sent,delivered").unwrap();
    let mut next_sample = start;
    let mut next_restart = start + Duration::from_secs(opts.broker_restart_every);
    let mut next_drop = start + Duration::from_secs(opts.drop_every);
    let mut next_report = start + Duration::from_secs(300);
    let mut last_cpu: Option<(Instant, f64)> = None;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut sml_died = false;
    while start.elapsed() < run_for {
        let now = Instant::now();
        if opts.broker_restart_every > 0 && now >= next_restart {
            note_event(&opts.out, epoch, interval, "broker stops");
            broker.stop();
            std::thread::sleep(Duration::from_secs(opts.broker_down));
            broker.start(opts.broker_port);
            note_event(&opts.out, epoch, interval, "broker back");
            events.broker_restarts += 1;
            next_restart += Duration::from_secs(opts.broker_restart_every);
        }
        if opts.drop_every > 0 && now >= next_drop {
            for _ in 0..opts.drop_count {
                // xorshift: the same meters every run.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let i = (rng % n as u64) as usize;
                *meters.down_until[i].lock().unwrap() =
                    Some(Instant::now() + Duration::from_secs(opts.drop_for));
                note_event(
                    &opts.out,
                    epoch,
                    interval,
                    &format!("meter {} drops", i + 1),
                );
            }
            events.source_drops += 1;
            next_drop += Duration::from_secs(opts.drop_every);
        }
        if now >= next_sample {
            next_sample = now + Duration::from_secs(opts.sample);
            if let Some((rss_kb, cpu)) = proc_usage(pid) {
                let cpu_pct = match last_cpu {
                    Some((t, c)) => 100.0 * (cpu - c) / now.duration_since(t).as_secs_f64(),
                    None => 0.0,
                };
                last_cpu = Some((now, cpu));
                let s = Sample {
                    minutes: start.elapsed().as_secs_f64() / 60.0,
                    rss_mb: rss_kb as f64 / 1024.0,
                    cpu_pct,
                    sent: meters.sent_total.load(Ordering::Relaxed),
                    delivered: delivered.load(Ordering::Relaxed),
                };
                writeln!(
                    csv,
                    "{:.2},{:.2},{:.2},{},{}",
                    s.minutes, s.rss_mb, s.cpu_pct, s.sent, s.delivered
                )
                .unwrap();
                samples.push(s);
            } else {
                eprintln!("sml (pid {pid}) is gone: {:?}", sml.try_wait());
                sml_died = true;
                break;
            }
        }
        if now >= next_report {
            next_report += Duration::from_secs(300);
            let (text, _) = summary(
                &opts,
                &samples,
                &events,
                &meters,
                &seen.lock().unwrap(),
                false,
            );
            std::fs::write(opts.out.join("summary.md"), &text).unwrap();
            if let Err(e) = plot(&opts.out, &samples, opts.warm_up) {
                eprintln!("plot: {e}");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    meters.stop.store(true, Ordering::Relaxed);
    // Let what is queued arrive: until nothing new for 15 s (at most 3 min).
    let until = Instant::now() + Duration::from_secs(180);
    let mut last = delivered.load(Ordering::Relaxed);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_secs(15));
        let now = delivered.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let _ = kill(pid, libc::SIGTERM);
    let status = sml.wait();
    let (text, faults) = summary(
        &opts,
        &samples,
        &events,
        &meters,
        &seen.lock().unwrap(),
        true,
    );
    let text = text + &*format!("sml exit after SIGTERM: {status:?}\n");
    std::fs::write(opts.out.join("summary.md"), &text).unwrap();
    if let Err(e) = plot(&opts.out, &samples, opts.warm_up) {
        eprintln!("plot: {e}");
    }
    print!("{text}");
    drop(broker);
    let clean_exit = status.is_ok_and(|s| s.success());
    if faults > 0 || sml_died || !clean_exit {
        eprintln!(
            "soak failed: {faults} telegrams lost or never sent, sml died early: {sml_died}, \
             clean exit: {clean_exit}"
        );
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
