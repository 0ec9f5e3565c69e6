/*!
`sml run`'s async glue: one link driver task per meter, one engine loop, one sink. The engine stays
pure ([`crate::engine::scheduler::Engine`]); this module only waits on its inputs (link events, its
deadline, the broker's connect) and hands its publications to the sink.

A run that went wrong says so: a task that panics ends the run with an error (not a quiet "0
telegrams"), a link that cannot work fails it, and [`RunReport::failure`] says when payloads did not
reach the broker, so `sml run` exits non-zero with the reason.

A reload (SIGHUP, [`run_reloadable`]) restarts the meter tasks and the engine on the new script and
never the sink: what waits for the broker stays queued through it.

Sized for a thousand meters in one process: each meter is one small task on a single-threaded
tokio runtime, waiting in the reactor; telegrams reach the engine over one bounded channel (a slow
engine slows the links, it does not grow memory). Nothing polls.
*/

pub mod meter_task;
pub mod shard;
pub mod warn_limit;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant as TokioInstant;
use tracing::{info, warn};

use self::meter_task::{DecoderFactory, LinkDriver, LinkEventKind, MeterCommand};
use crate::backoff::Backoff;
use crate::decode::{decoder_for, UnsupportedMeter};
use crate::engine::hooks::HookAction;
use crate::engine::scheduler::{Engine, EngineConfig, EngineStats, Publication};
use crate::hooks::HostCommand;
use crate::http::live::{lock, Live};
use crate::http::HttpConfig;
use crate::link::{Binding, ReplaySpeed};
use crate::publish::discovery::{Discovery, DiscoveryConfig, SerialWatch};
use crate::publish::influx::{InfluxConfig, InfluxReport, InfluxTask};
use crate::publish::mqtt::{MqttConfig, MqttReport};
use crate::publish::stdout::StdoutSink;
use crate::publish::{FanOut, PublishError, RecordingSink, Sink};
use crate::script::model::{MeterIndex, Script};

/// Link events in flight between the drivers and the engine.
const EVENT_QUEUE: usize = 1024;
/// The script's commands in flight to one meter task.
const METER_COMMAND_QUEUE: usize = 64;

pub enum SinkConfig {
    Stdout,
    Mqtt(Box<MqttConfig>),
    /// Keep publications in memory (tests, benchmarks).
    Recording(RecordingSink),
    /// InfluxDB, alone or beside MQTT.
    Influx {
        influx: Box<InfluxConfig>,
        mqtt: Option<Box<MqttConfig>>,
    },
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
    /// The script's path (for hook errors) and where its `p:` variables are kept.
    pub hooks: HooksConfig,
}

/// What the script's sections need from the run besides the script.
#[derive(Debug, Clone, Default)]
pub struct HooksConfig {
    /// The script as the user named it, for hook errors (`meters/x.sml:12: error in >S: ...`).
    pub script_path: String,
    /// `--state-dir`: where the `p:` variables are saved; `None`: they are not kept.
    pub state_dir: Option<std::path::PathBuf>,
    /// `--rhai FILE`: the user's own `before_publish`/`on_telegram`.
    pub user_rhai: Option<std::path::PathBuf>,
}

/// What sml offers besides publishing (issue 10), each off unless asked for: `--http` and the
/// discovery configs (`--ha-discovery`, `--tasmota-discovery`, which need an MQTT sink).
#[derive(Debug, Default)]
pub struct Frontends {
    pub http: Option<HttpConfig>,
    pub discovery: Option<DiscoveryConfig>,
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
    #[error("--port {0}: the script has no meter {1} (it has {2})")]
    NoSuchMeter(Binding, MeterIndex, String),
    #[error("--port {0} and --port {1} both bind meter {2}: one source per meter")]
    BoundTwice(Binding, Binding, MeterIndex),
    #[error("the script has no meter (>M section)")]
    NoMeters,
    /// `can:` for a meter that is not `C`, `gpio:` for one that is not `c`: its decoder would read
    /// frames or edges as a byte stream.
    #[error("--port {0}: meter {1} is a '{2}' meter; {3}")]
    WrongKindOfSource(Binding, MeterIndex, char, &'static str),
    #[error(transparent)]
    Unsupported(#[from] UnsupportedMeter),
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A link that cannot work; the reason names the meter and its `--port`.
    #[error("{0}")]
    LinkFailed(String),
    #[error(transparent)]
    UserRhai(#[from] crate::hooks::user::UserRhaiError),
    #[error("{task} panicked: {message}")]
    Panicked { task: String, message: String },
}

/// Not `Copy`: the MQTT report carries the broker's reason for refusing us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    pub engine: EngineStats,
    pub mqtt: Option<MqttReport>,
    pub influx: Option<InfluxReport>,
}

impl RunReport {
    /// Why a run that ended without an error still failed its purpose: the broker refused us,
    /// or payloads did not reach it. `None` when everything made was delivered.
    pub fn failure(&self) -> Option<String> {
        if let Some(influx) = self.influx.as_ref().filter(|i| i.left_queued > 0) {
            return Some(format!(
                "{} payloads were not written to InfluxDB ({} points written, {} payloads dropped \
                 while it was away)",
                influx.left_queued, influx.written, influx.dropped
            ));
        }
        let mqtt = self.mqtt.as_ref()?;
        if let Some(why) = &mqtt.fatal {
            return Some(format!("the broker refused sml: {why}"));
        }
        if mqtt.left_queued > 0 {
            return Some(format!(
                "{} payloads were not delivered to the broker ({} delivered, {} dropped while it \
                 was away)",
                mqtt.left_queued, mqtt.delivered, mqtt.dropped
            ));
        }
        None
    }
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
    let mut seen: HashMap<MeterIndex, &Binding> = HashMap::new();
    let bindings = with_script_addresses(script, bindings);
    for b in &bindings {
        if script.meter(b.meter).is_none() {
            let have: Vec<String> = script.meters.iter().map(|m| m.index.to_string()).collect();
            return Err(RunError::NoSuchMeter(b.clone(), b.meter, have.join(", ")));
        }
        if let Some(first) = seen.insert(b.meter, b) {
            return Err(RunError::BoundTwice(first.clone(), b.clone(), b.meter));
        }
        let letter = script
            .meter(b.meter)
            .map_or(' ', |m| m.decoding.type_letter());
        let wrong = match (&b.source, letter) {
            (crate::link::Source::Can(_), l) if l != 'C' => Some("can: is for CAN ('C') meters"),
            (crate::link::Source::Gpio { .. }, l) if l != 'c' => {
                Some("gpio: is for pulse counters ('c' meters)")
            }
            _ => None,
        };
        if let Some(why) = wrong {
            return Err(RunError::WrongKindOfSource(b.clone(), b.meter, letter, why));
        }
    }
    let bound: BTreeSet<MeterIndex> = seen.keys().copied().collect();
    for m in &script.meters {
        if !bound.contains(&m.index) {
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
    run_with(config, Frontends::default(), shutdown).await
}

/// [`run`] with the HTTP server and discovery. The run loop keeps the HTTP side's view
/// ([`Live`]) beside the engine and hands each meter's serial to the discovery task.
pub async fn run_with(
    config: RunConfig,
    frontends: Frontends,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, RunError> {
    run_shard(config, frontends, None, shutdown).await
}

/// [`run_with`] for the meters of one `--shard` only ([`shard`]): the engine keeps the whole script,
/// links are started for the kept meters alone.
pub async fn run_shard(
    config: RunConfig,
    frontends: Frontends,
    shard: Option<shard::Shard>,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, RunError> {
    // No reloads: the sender is gone at once.
    run_reloadable(config, frontends, shard, shutdown, mpsc::channel(1).1).await
}

/// The meter tasks of one script, started at the start and again on each reload.
struct Meters {
    drivers: JoinSet<()>,
    /// Which meter each task serves, to name it when it panics.
    task_meter: HashMap<tokio::task::Id, MeterIndex>,
    events: mpsc::Receiver<meter_task::LinkEvent>,
    /// The hooks' commands to each meter (baud switches, requests, decoder resets).
    commands: HashMap<MeterIndex, mpsc::Sender<MeterCommand>>,
    /// Links that have not ended yet (replays end).
    links_left: usize,
}

impl Meters {
    fn start(config: &RunConfig, decoders: &DecoderFactory, shard: Option<shard::Shard>) -> Meters {
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let mut drivers = JoinSet::new();
        let mut task_meter = HashMap::new();
        let mut commands = HashMap::new();
        let running = shard::running(&config.script, shard);
        let bindings = with_script_addresses(&running, &config.bindings);
        drop(running);
        for b in &bindings {
            let meter = Arc::new(
                config
                    .script
                    .meter(b.meter)
                    .cloned()
                    .expect("bindings are checked before"),
            );
            let driver = LinkDriver {
                meter,
                source: b.source.clone(),
                speed: config.replay_speed,
                backoff: config.link_backoff,
                decoders: decoders.clone(),
                events: events_tx.clone(),
            };
            let (commands_tx, commands_rx) = mpsc::channel(METER_COMMAND_QUEUE);
            commands.insert(b.meter, commands_tx);
            let handle = drivers.spawn(driver.run_with_commands(commands_rx));
            task_meter.insert(handle.id(), b.meter);
        }
        Meters {
            drivers,
            task_meter,
            events,
            commands,
            links_left: bindings.len(),
        }
    }

    /// Stop every meter task and wait for them, so that a reload reopens the serial devices only
    /// after the old tasks closed them. A task that panicked fails the run.
    async fn stop(&mut self) -> Result<(), RunError> {
        self.drivers.abort_all();
        while let Some(joined) = self.drivers.join_next_with_id().await {
            if let Err(e) = joined {
                if e.is_panic() {
                    let meter = self.task_meter.get(&e.id()).copied().unwrap_or_default();
                    return Err(join_failure(format!("meter {meter}'s task"), e));
                }
            }
        }
        Ok(())
    }
}

/// The engine on `config`'s script, with the user's Rhai and the saved `p:` variables.
fn start_engine(
    config: &RunConfig,
    user_rhai: Option<crate::hooks::user::UserRhai>,
    mqtt: bool,
    shard: Option<shard::Shard>,
) -> Engine {
    let mut engine = Engine::new(&config.script, config.engine, Instant::now());
    if let Some(s) = shard {
        let elsewhere = config.script.meters.iter().map(|m| m.index);
        engine.set_meters_elsewhere(elsewhere.filter(|&m| !s.keeps(m)).collect());
    }
    if let Some(user) = user_rhai {
        engine.set_user_rhai(user);
    }
    if let Some(h) = engine.hooks_mut() {
        if !config.hooks.script_path.is_empty() {
            h.set_path(&config.hooks.script_path);
        }
        if let Some(dir) = &config.hooks.state_dir {
            if h.hooks().has_permanent() {
                match crate::hooks::state::load(dir) {
                    Ok(saved) => h.hooks_mut().restore_permanent(&saved),
                    // The declared values, then: the run goes on, the user is told why.
                    Err(e) => warn!("{e}; the p: variables start from their declared values"),
                }
            }
        }
        if mqtt {
            // A script's `publish` names its own topics, as on Tasmota (the script is the user's
            // configuration); the engine refuses wildcards and control characters.
            h.set_publish_prefixes(vec![String::new()]);
        }
    }
    engine
}

/// The one-line summary systemd shows (`systemctl status sml`): the counters since the start,
/// `earlier` being those of the engines reloads replaced.
fn service_status(engine: &Engine, earlier: EngineStats, meters: usize) -> String {
    let mut stats = earlier;
    add_stats(&mut stats, engine.stats());
    format!(
        "{meters} meters, {} telegrams, {} teleperiods, {} link drops",
        stats.telegrams, stats.teleperiods, stats.link_drops
    )
}

/// [`run_with`], where each configuration on `reloads` (SIGHUP) replaces the script, the
/// bindings and the engine's settings: the meter tasks and the engine restart on it, the old
/// engine's `>R`-time work (the `p:` variables) done first. The publisher with its queue and
/// spool, the HTTP server and discovery are kept as started; a reload's `sink` is not used.
pub async fn run_reloadable(
    mut config: RunConfig,
    frontends: Frontends,
    shard: Option<shard::Shard>,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<RunConfig>,
) -> Result<RunReport, RunError> {
    check_bindings(
        &shard::running(&config.script, shard),
        &config.bindings,
        &config.decoders,
    )?;
    let live = frontends.http.as_ref().map(|_| {
        Arc::new(Mutex::new(Live::new(
            &config.script,
            config.engine.stale_after,
            Instant::now(),
        )))
    });
    // With /metrics, each decoder counts its rejected telegrams where they happen.
    let decoders = match &live {
        Some(l) => crate::http::metrics::counting(config.decoders.clone(), lock(l).decode.clone()),
        None => config.decoders.clone(),
    };
    let user_rhai = match &config.hooks.user_rhai {
        Some(path) => Some(crate::hooks::user::UserRhai::load(path)?),
        None => None,
    };
    // The `c` meters' pulse counts, saved in the last run (before `>B` may set one).
    if let Err(e) = crate::decode::counter::store::global()
        .open(&config.script, config.hooks.state_dir.as_deref())
    {
        warn!("{e}; the pulse counters start from 0");
    }
    let mut meters = Meters::start(&config, &decoders, shard);
    let mqtt_sink = matches!(
        config.sink,
        SinkConfig::Mqtt(_) | SinkConfig::Influx { mqtt: Some(_), .. }
    );
    let mut engine = start_engine(&config, user_rhai, mqtt_sink, shard);
    let mut discovery_broker = None;
    let mut influx_task: Option<InfluxTask> = None;
    let mut actions = ActionLog {
        meters: std::mem::take(&mut meters.commands),
        not_done: BTreeSet::new(),
    };
    let (mut sink, mut connected, mut mqtt_task): (
        Box<dyn Sink + Send>,
        watch::Receiver<bool>,
        Option<JoinHandle<MqttReport>>,
    ) = match std::mem::replace(&mut config.sink, SinkConfig::Stdout) {
        SinkConfig::Stdout => (Box::new(StdoutSink::new()), watch::channel(true).1, None),
        SinkConfig::Recording(r) => (Box::new(r), watch::channel(true).1, None),
        SinkConfig::Mqtt(m) => {
            discovery_broker = Some((*m).clone());
            let (sink, connected, task) = crate::publish::mqtt::start(*m)?;
            if let Some(l) = &live {
                lock(l).mqtt_queue = Some(sink.queue_gauge());
            }
            (Box::new(sink), connected, Some(task))
        }
        SinkConfig::Influx { influx, mqtt } => {
            let (influx_sink, task) = crate::publish::influx::start(*influx, &config.script)?;
            influx_task = Some(task);
            match mqtt {
                None => (Box::new(influx_sink), watch::channel(true).1, None),
                Some(m) => {
                    discovery_broker = Some((*m).clone());
                    let (sink, connected, task) = crate::publish::mqtt::start(*m)?;
                    if let Some(l) = &live {
                        lock(l).mqtt_queue = Some(sink.queue_gauge());
                    }
                    let both = FanOut(vec![Box::new(sink), Box::new(influx_sink)]);
                    (Box::new(both), connected, Some(task))
                }
            }
        }
    };
    let mut side_tasks: Vec<JoinHandle<()>> = Vec::new();
    let mut serials = None;
    if let (Some(d), Some(mqtt)) = (frontends.discovery, discovery_broker) {
        let (tx, rx) = mpsc::unbounded_channel();
        serials = Some((SerialWatch::new(&config.script), tx));
        let backoff = Backoff {
            first: std::time::Duration::from_secs(1),
            cap: mqtt.retry_cap.max(std::time::Duration::from_secs(1)),
        };
        let task = Discovery {
            script: Arc::new(config.script.clone()),
            config: d,
            mqtt,
            backoff,
        };
        side_tasks.push(tokio::spawn(task.run(rx)));
    }
    if let (Some(h), Some(l)) = (frontends.http, &live) {
        let l = l.clone();
        side_tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::http::serve(h, l).await {
                tracing::error!("{e}");
            }
        }));
    }
    if *connected.borrow_and_update() {
        engine.handle_connected(Instant::now());
    }
    let mut watching_connect = true;
    // The counters of the engines a reload replaced, for the final report.
    let mut earlier = EngineStats::default();
    let heartbeat = crate::service::heartbeat_period();
    let mut heartbeat_tick =
        tokio::time::interval(heartbeat.unwrap_or(std::time::Duration::from_secs(3600)));
    heartbeat_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    crate::service::ready(&format!(
        "running {}: {}",
        config.hooks.script_path,
        service_status(&engine, earlier, config.script.meters.len())
    ));
    // The MQTT task's report when it stopped before the run did (the broker refused us).
    let mut mqtt_ended: Option<Result<MqttReport, JoinError>> = None;
    tokio::pin!(shutdown);

    let result: Result<(), RunError> = async {
        loop {
            for p in actions.handle(engine.take_actions(), &config.hooks) {
                sink.publish(p)?;
            }
            let deadline = TokioInstant::from_std(engine.poll_timeout());
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    info!("stopping");
                    return Ok(());
                }
                // Before the events, which may never pause: a loop that is stuck or busy for
                // good stops these pings, and systemd restarts the service.
                _ = heartbeat_tick.tick(), if heartbeat.is_some() => {
                    crate::service::heartbeat(&service_status(&engine, earlier, config.script.meters.len()));
                }
                Some(next) = reloads.recv() => {
                    // What can still refuse the new configuration, before the old one stops.
                    let checked = check_bindings(&shard::running(&next.script, shard), &next.bindings, &next.decoders)
                        .and_then(|()| match &next.hooks.user_rhai {
                            Some(path) => Ok(Some(crate::hooks::user::UserRhai::load(path)?)),
                            None => Ok(None),
                        });
                    let next_rhai = match checked {
                        Ok(rhai) => rhai,
                        Err(e) => {
                            tracing::error!("reload refused, the running script goes on: {e}");
                            crate::service::reload_refused(&format!("reload refused: {e}"));
                            continue;
                        }
                    };
                    // The old script's end, as at a stop: its `p:` variables are saved.
                    engine.handle_shutdown(Instant::now(), &chrono::Local::now().naive_local());
                    for p in actions.handle(engine.take_actions(), &config.hooks) {
                        sink.publish(p)?;
                    }
                    meters.stop().await?;
                    add_stats(&mut earlier, engine.stats());
                    config = RunConfig {
                        sink: SinkConfig::Stdout,
                        ..next
                    };
                    let decoders = match &live {
                        Some(l) => {
                            let mut view = lock(l);
                            let queue = view.mqtt_queue.take();
                            *view = Live::new(&config.script, config.engine.stale_after, Instant::now());
                            view.mqtt_queue = queue;
                            crate::http::metrics::counting(config.decoders.clone(), view.decode.clone())
                        }
                        None => config.decoders.clone(),
                    };
                    meters = Meters::start(&config, &decoders, shard);
                    actions.meters = std::mem::take(&mut meters.commands);
                    engine = start_engine(&config, next_rhai, mqtt_sink, shard);
                    if *connected.borrow() {
                        engine.handle_connected(Instant::now());
                    }
                    if let Some((watch, _)) = &mut serials {
                        *watch = SerialWatch::new(&config.script);
                    }
                    info!(
                        "reloaded: {} meters; the queued payloads are kept",
                        config.script.meters.len()
                    );
                    crate::service::ready(&format!(
                        "reloaded {}: {}",
                        config.hooks.script_path,
                        service_status(&engine, earlier, config.script.meters.len())
                    ));
                }
                // Before the events: a panicking task also closes its sender.
                Some(joined) = meters.drivers.join_next_with_id() => {
                    if let Err(e) = joined {
                        let meter = meters.task_meter.get(&e.id()).copied();
                        let task = meter.map_or("a meter task".into(), |m| format!("meter {m}'s task"));
                        return Err(join_failure(task, e));
                    }
                }
                ended = async { mqtt_task.as_mut().expect("guarded").await }, if mqtt_task.is_some() => {
                    mqtt_task = None;
                    mqtt_ended = Some(ended);
                    return Ok(());
                }
                ev = meters.events.recv() => {
                    let Some(ev) = ev else { return Ok(()) };
                    match ev.kind {
                        LinkEventKind::Telegram(t) => {
                            let read = std::time::SystemTime::now()
                                .checked_sub(ev.at.elapsed())
                                .unwrap_or_else(std::time::SystemTime::now);
                            sink.handle_read(ev.meter, read);
                            let wall = chrono::Local::now().naive_local();
                            for p in engine.handle_telegram(ev.at, &wall, ev.meter, &t) {
                                sink.publish(p)?;
                            }
                            if let Some(l) = &live {
                                let unix = chrono::Utc::now().timestamp();
                                lock(l).handle_telegram(ev.at, &wall, unix, ev.meter, &t);
                            }
                            if let Some((watch, tx)) = &mut serials {
                                if let Some(serial) = watch.handle_telegram(ev.meter, &t) {
                                    let _ = tx.send((ev.meter, serial));
                                }
                            }
                        }
                        LinkEventKind::Down => {
                            engine.handle_link_down(ev.meter);
                            if let Some(l) = &live {
                                lock(l).handle_link_down(ev.meter);
                            }
                        }
                        LinkEventKind::Up => {}
                        LinkEventKind::Failed(why) => return Err(RunError::LinkFailed(why)),
                        LinkEventKind::Ended => {
                            meters.links_left -= 1;
                            if meters.links_left == 0 {
                                info!("every link has ended");
                                let wall = chrono::Local::now().naive_local();
                                for p in engine.handle_end(Instant::now(), &wall) {
                                    sink.publish(p)?;
                                }
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
    crate::service::stopping(&format!(
        "stopping: {}",
        service_status(&engine, earlier, config.script.meters.len())
    ));
    engine.handle_shutdown(Instant::now(), &chrono::Local::now().naive_local());
    for p in actions.handle(engine.take_actions(), &config.hooks) {
        // The run is over: a `publish` of `>R` goes out if the sink still takes it.
        let _ = sink.publish(p);
    }

    meters.drivers.abort_all();
    for t in &side_tasks {
        t.abort();
    }
    // Dropping the sink lets the MQTT task drain its outbox and say Offline.
    drop(sink);
    // The InfluxDB thread drains (at most a few seconds) off the runtime thread.
    let influx = match influx_task {
        Some(task) => match tokio::task::spawn_blocking(move || task.join()).await {
            Ok(Ok(report)) => Some(report),
            Ok(Err(message)) => {
                result?;
                return Err(RunError::Panicked {
                    task: "the InfluxDB sink".into(),
                    message,
                });
            }
            Err(e) => {
                result?;
                return Err(join_failure("the InfluxDB sink".into(), e));
            }
        },
        None => None,
    };
    let mqtt_ended = match (mqtt_ended, mqtt_task) {
        (Some(ended), _) => Some(ended),
        (None, Some(task)) => Some(task.await),
        (None, None) => None,
    };
    let mqtt = match mqtt_ended {
        Some(Ok(report)) => Some(report),
        Some(Err(e)) => {
            // The run's own error, if any, came first and is the one to tell.
            result?;
            return Err(join_failure("the MQTT task".into(), e));
        }
        None => None,
    };
    result?;
    // The drivers were aborted; one that panicked before that still fails the run.
    meters.stop().await?;
    add_stats(&mut earlier, engine.stats());
    Ok(RunReport {
        engine: earlier,
        mqtt,
        influx,
    })
}

/// `total` plus the counters of an engine that ran before a reload.
fn add_stats(total: &mut EngineStats, more: EngineStats) {
    total.telegrams += more.telegrams;
    total.teleperiods += more.teleperiods;
    total.link_drops += more.link_drops;
}

/// What the run loop does for the script's hooks: the log, the state file, the meter tasks.
/// What is not done (yet) is said once per kind.
struct ActionLog {
    meters: HashMap<MeterIndex, mpsc::Sender<MeterCommand>>,
    not_done: BTreeSet<String>,
}

impl ActionLog {
    /// Carry out the engine's actions; a script's `publish` comes back as publications for the sink.
    fn handle(&mut self, actions: Vec<HookAction>, config: &HooksConfig) -> Vec<Publication> {
        let mut out = Vec::new();
        for a in actions {
            match a {
                HookAction::Error(text) => warn!("{text}"),
                HookAction::Log(text) => info!("{text}"),
                HookAction::SavePermanent(values) => match &config.state_dir {
                    Some(dir) => {
                        if let Err(e) = crate::hooks::state::save(dir, &values) {
                            warn!("the p: variables were not saved: {e}");
                        }
                    }
                    None => self.once(
                        "p: variables are not kept across restarts: give --state-dir DIR (or --spool)"
                            .into(),
                    ),
                },
                HookAction::ResetMeters => {
                    let all: Vec<MeterIndex> = self.meters.keys().copied().collect();
                    for m in all {
                        self.send_to_meter(m, MeterCommand::ResetDecoder);
                    }
                }
                HookAction::Link(HostCommand::SetBaud { meter, baud }) => {
                    self.send_to_meter_number(meter, MeterCommand::Framing { baud, parity: None })
                }
                HookAction::Link(HostCommand::SetMode { meter, baud, parity }) => self.send_to_meter_number(
                    meter,
                    MeterCommand::Framing {
                        baud,
                        parity: Some(parity),
                    },
                ),
                HookAction::Link(HostCommand::Send { meter, bytes }) => {
                    self.send_to_meter_number(meter, MeterCommand::Send(bytes))
                }
                HookAction::Link(HostCommand::Queue { meter, text }) => match queued_request(&text) {
                    Ok(request) => self.send_to_meter_number(meter, MeterCommand::Queue(request)),
                    Err(why) => self.once(format!("sml({meter} 3 \"{text}\"): {why}; not sent")),
                },
                HookAction::Link(HostCommand::SetCounter { counter, value }) => {
                    self.set_counter(counter, value)
                }
                HookAction::Link(other) => self.once(format!(
                    "{other:?}: not supported off the ESP yet; ignored"
                )),
                // `sensor53 d1` dumps meter 1, `d0` stops every dump.
                HookAction::DumpRaw { meter: 0 } => {
                    let all: Vec<MeterIndex> = self.meters.keys().copied().collect();
                    for m in all {
                        self.send_to_meter(m, MeterCommand::DumpRaw(false));
                    }
                }
                HookAction::DumpRaw { meter } => {
                    self.send_to_meter_number(meter, MeterCommand::DumpRaw(true))
                }
                HookAction::Publish { topic, payload } => {
                    out.push(Publication::Script { topic, payload })
                }
            }
        }
        out
    }

    /// `sensor53 c<n> <v>`: the count is stored (and saved), then the meter's decoder is made
    /// afresh from it, which publishes it at once, as Tasmota's does.
    fn set_counter(&mut self, counter: u32, value: f64) {
        if !(value.is_finite() && value >= 0.0 && value <= u64::MAX as f64) {
            self.once(format!(
                "`sensor53 c{counter} {value}` ignored: a count is a whole number from 0"
            ));
            return;
        }
        match crate::decode::counter::store::global().set_counter(counter, value as u64) {
            Some(meter) => self.send_to_meter(meter, MeterCommand::ResetDecoder),
            None => self.once(format!(
                "`sensor53 c{counter}` ignored: the script has no counter {counter} (`c` meter)"
            )),
        }
    }

    fn send_to_meter_number(&mut self, meter: u32, command: MeterCommand) {
        match MeterIndex::try_from(meter) {
            Ok(m) => self.send_to_meter(m, command),
            Err(_) => self.once(format!(
                "the script addressed meter {meter}, which does not exist"
            )),
        }
    }

    /// Never waits: the engine loop must not stall behind a meter task.
    fn send_to_meter(&mut self, meter: MeterIndex, command: MeterCommand) {
        let Some(tx) = self.meters.get(&meter) else {
            self.once(format!(
                "the script addressed meter {meter}, which does not exist"
            ));
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(c)) = tx.try_send(command) {
            self.once(format!(
                "meter {meter}: the script's commands come faster than its link takes them; \
                 some were dropped ({c:?})"
            ));
        }
    }

    fn once(&mut self, text: String) {
        if self.not_done.insert(text.clone()) {
            warn!("{text}");
        }
    }
}

/// `sml(m 3 svar)`'s string read as Tasmota reads it (`SML_Send_Seq`): an optional `r` (Modbus: no
/// register count appended), then hex pairs up to a comma or the end; a lone final nibble is dropped.
/// Unlike Tasmota (which sends a non-hex character as nibble 0) a character that is not hex refuses
/// the request: a wrong Modbus write is worse than none.
fn queued_request(text: &str) -> Result<crate::script::model::RequestBlock, String> {
    let text = text.trim();
    let (raw, digits) = match text.strip_prefix('r') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let digits = digits.split(',').next().unwrap_or_default().as_bytes();
    let even = &digits[..digits.len() - digits.len() % 2];
    let bytes = crate::hex::decode(even).map_err(|e| e.to_string())?;
    if bytes.is_empty() {
        return Err("no request bytes".into());
    }
    Ok(crate::script::model::RequestBlock { raw, bytes })
}

/// A task that did not finish: its panic message, or that it was cancelled.
fn join_failure(task: String, e: JoinError) -> RunError {
    let message = if e.is_panic() {
        let payload = e.into_panic();
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into())
    } else {
        "cancelled".into()
    };
    RunError::Panicked { task, message }
}

#[cfg(test)]
mod queued_request_tests {
    use super::queued_request;

    #[test]
    fn a_queued_string_is_read_as_tasmota_reads_it() {
        let r = queued_request("r010600030042").unwrap();
        assert!(r.raw);
        assert_eq!(r.bytes, [0x01, 0x06, 0x00, 0x03, 0x00, 0x42]);
        // Up to a comma; a lone final nibble dropped; no `r`: the register count is the decoder's.
        let r = queued_request("0104000,ff").unwrap();
        assert!(!r.raw);
        assert_eq!(r.bytes, [0x01, 0x04, 0x00]);
    }

    #[test]
    fn a_queued_string_that_is_not_hex_is_refused_saying_where() {
        let e = queued_request("r0106zz").unwrap_err();
        assert!(e.contains("'z'"), "{e}");
        assert!(queued_request("").is_err());
    }
}
