/*!
`sml run`'s async glue: one link driver task per meter, one engine loop, one sink. The engine stays
pure ([`crate::engine::scheduler::Engine`]); this module only waits on its inputs (link events, its
deadline, the broker's connect) and hands its publications to the sink.

Sized for a thousand meters in one process: each meter is one small task on a single-threaded
tokio runtime, waiting in the reactor; telegrams reach the engine over one bounded channel (a slow
engine slows the links, it does not grow memory). Nothing polls.
*/

pub mod meter_task;

use crate::script::model::MeterIndex;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant as TokioInstant;
use tracing::{info, warn};

use self::meter_task::{Backoff, DecoderFactory, LinkDriver, LinkEventKind};
use crate::decode::{decoder_for, UnsupportedMeter};
use crate::engine::scheduler::{Engine, EngineConfig, EngineStats};
use crate::link::{Binding, ReplaySpeed};
use crate::publish::mqtt::{MqttConfig, MqttReport};
use crate::publish::stdout::StdoutSink;
use crate::publish::{PublishError, RecordingSink, Sink};
use crate::script::model::Script;

/// Link events in flight between the drivers and the engine.
const EVENT_QUEUE: usize = 1024;

pub enum SinkConfig {
    Stdout,
    Mqtt(Box<MqttConfig>),
    /// Keep publications in memory (tests, benchmarks).
    Recording(RecordingSink),
}

pub struct RunConfig {
    pub script: Script,
    pub bindings: Vec<Binding>,
    pub engine: EngineConfig,
    pub replay_speed: ReplaySpeed,
    pub link_backoff: Backoff,
    pub sink: SinkConfig,
    /// How each meter's decoder is made; [`default_decoders`] outside tests.
    pub decoders: DecoderFactory,
}

pub fn default_decoders() -> DecoderFactory {
    Arc::new(decoder_for)
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "meter {0} has no port. Bind it to its source with --port {0}=/dev/ttyUSB0 (serial), \
         --port {0}=tcp://host:2000 (TCP serial bridge) or --port {0}=file:capture.txt (recorded capture)"
    )]
    Unbound(MeterIndex),
    #[error("--port {0}=...: the script has no meter {0} (it has {1})")]
    NoSuchMeter(MeterIndex, String),
    #[error("meter {0} is bound twice")]
    BoundTwice(MeterIndex),
    #[error("the script has no meter (>M section)")]
    NoMeters,
    #[error(transparent)]
    Unsupported(#[from] UnsupportedMeter),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    pub engine: EngineStats,
    pub mqtt: Option<MqttReport>,
}

/// The `--port` bindings, plus the script's own address for each Modbus TCP meter not bound there
/// (`+1,[192.168.1.10],m,0,502,...` polls 192.168.1.10:502 unless `--port 1=...` says otherwise).
pub fn with_script_addresses(script: &Script, bindings: &[Binding]) -> Vec<Binding> {
    let mut all = bindings.to_vec();
    for m in &script.meters {
        if let crate::script::model::MeterSource::ModbusTcp { host, port } = &m.source {
            if !bindings.iter().any(|b| b.meter == m.index) {
                all.push(Binding {
                    meter: m.index,
                    source: crate::link::Source::Tcp {
                        host: host.clone(),
                        port: *port,
                    },
                });
            }
        }
    }
    all
}

/// Check that every meter has exactly one source and a decoder.
pub fn check_bindings(
    script: &Script,
    bindings: &[Binding],
    decoders: &DecoderFactory,
) -> Result<(), RunError> {
    if script.meters.is_empty() {
        return Err(RunError::NoMeters);
    }
    let mut seen = BTreeSet::new();
    let bindings = with_script_addresses(script, bindings);
    for b in &bindings {
        if script.meter(b.meter).is_none() {
            let have: Vec<String> = script.meters.iter().map(|m| m.index.to_string()).collect();
            return Err(RunError::NoSuchMeter(b.meter, have.join(", ")));
        }
        if !seen.insert(b.meter) {
            return Err(RunError::BoundTwice(b.meter));
        }
    }
    for m in &script.meters {
        if !seen.contains(&m.index) {
            return Err(RunError::Unbound(m.index));
        }
        decoders(m)?;
    }
    Ok(())
}

/// Run until `shutdown` completes or every link has ended for good (all were replays).
pub async fn run(
    config: RunConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, RunError> {
    check_bindings(&config.script, &config.bindings, &config.decoders)?;
    let bindings = with_script_addresses(&config.script, &config.bindings);
    let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let mut drivers = Vec::new();
    for b in &bindings {
        let meter = Arc::new(
            config
                .script
                .meter(b.meter)
                .cloned()
                .expect("checked above"),
        );
        let driver = LinkDriver {
            meter,
            source: b.source.clone(),
            speed: config.replay_speed,
            backoff: config.link_backoff,
            decoders: config.decoders.clone(),
            events: events_tx.clone(),
        };
        drivers.push(tokio::spawn(driver.run()));
    }
    drop(events_tx);

    let mut engine = Engine::new(&config.script, config.engine, Instant::now());
    let (mut sink, mut connected, mqtt_task): (Box<dyn Sink + Send>, watch::Receiver<bool>, _) =
        match config.sink {
            SinkConfig::Stdout => (Box::new(StdoutSink::new()), watch::channel(true).1, None),
            SinkConfig::Recording(r) => (Box::new(r), watch::channel(true).1, None),
            SinkConfig::Mqtt(m) => {
                let (sink, connected, task) = crate::publish::mqtt::start(*m)?;
                (Box::new(sink), connected, Some(task))
            }
        };
    if *connected.borrow_and_update() {
        engine.handle_connected(Instant::now());
    }
    let mut watching_connect = true;
    let mut links_left = bindings.len();
    tokio::pin!(shutdown);

    let result: Result<(), RunError> = async {
        loop {
            let deadline = TokioInstant::from_std(engine.poll_timeout());
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    info!("stopping");
                    return Ok(());
                }
                ev = events.recv() => {
                    let Some(ev) = ev else { return Ok(()) };
                    match ev.kind {
                        LinkEventKind::Telegram(t) => {
                            let wall = chrono::Local::now().naive_local();
                            for p in engine.handle_telegram(ev.at, &wall, &t) {
                                sink.publish(p)?;
                            }
                        }
                        LinkEventKind::Down => engine.handle_link_down(ev.meter),
                        LinkEventKind::Up => {}
                        LinkEventKind::Ended => {
                            links_left -= 1;
                            if links_left == 0 {
                                info!("every link has ended");
                                return Ok(());
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let wall = chrono::Local::now().naive_local();
                    for p in engine.handle_timeout(Instant::now(), &wall) {
                        sink.publish(p)?;
                    }
                }
                changed = connected.changed(), if watching_connect => match changed {
                    Ok(()) => {
                        if *connected.borrow_and_update() {
                            engine.handle_connected(Instant::now());
                        }
                    }
                    Err(_) => watching_connect = false,
                },
            }
        }
    }
    .await;

    for d in &drivers {
        d.abort();
    }
    // Dropping the sink lets the MQTT task drain its outbox and say Offline.
    drop(sink);
    let mqtt = match mqtt_task {
        Some(task) => match task.await {
            Ok(report) => {
                if report.left_queued > 0 {
                    warn!("{} payloads were not delivered", report.left_queued);
                }
                Some(report)
            }
            Err(e) => {
                warn!("the MQTT task failed: {e}");
                None
            }
        },
        None => None,
    };
    result?;
    Ok(RunReport {
        engine: engine.stats(),
        mqtt,
    })
}
