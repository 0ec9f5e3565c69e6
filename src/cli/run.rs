/*!
`sml run SCRIPT --port 1=/dev/ttyUSB0 [--broker mqtt://host]`: read the meters, publish Tasmota's
SENSOR JSON on MQTT, or on stdout without a broker.

Raw flags ([`Args`]) and the TOML file (`--config`, same keys as the long flags, `[port]` as a table)
are merged here, flags winning, and resolved into a checked [`RunConfig`]. The MQTT password comes
from `--password-file` or `SML_MQTT_PASSWORD`, never from the command line, and is never logged.
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::engine::scheduler::{EngineConfig, TELEPERIOD_DEFAULT, TELEPERIOD_MAX, TELEPERIOD_MIN};
use crate::link::{Binding, ReplaySpeed, Source};
use crate::publish::mqtt::{BrokerUrl, MqttConfig, Secret, TlsFiles};
use crate::publish::topics::{Topics, DEFAULT_FULL_TOPIC};
use crate::runner::meter_task::Backoff;
use crate::runner::{default_decoders, RunConfig, SinkConfig};

pub const PASSWORD_ENV: &str = "SML_MQTT_PASSWORD";

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// The Tasmota script (`>D ... >M ... #`); may also be given as `script` in --config.
    pub script: Option<PathBuf>,
    /// Bind meter N to its source: a serial device (`1=/dev/ttyUSB0`), a TCP serial bridge
    /// (`1=tcp://host:2000`) or a recorded capture (`1=file:capture.txt`). Repeatable.
    #[arg(long = "port", value_name = "N=SOURCE")]
    pub ports: Vec<String>,
    /// TOML file with the same keys as the long flags (`broker = "mqtt://..."`, `[port]` table
    /// `1 = "/dev/ttyUSB0"`); flags override it. Relative paths are relative to the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `mqtt://host[:port]` or `mqtts://host[:port]`; without it, SENSOR JSON goes to stdout.
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// CA certificates (PEM) for mqtts://; the system's roots by default.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that ask for one.
    #[arg(long, value_name = "FILE")]
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) for --cert-file.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// MQTT user (Tasmota's MqttUser).
    #[arg(long)]
    pub user: Option<String>,
    /// File holding the MQTT password (or set SML_MQTT_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// MQTT client id (Tasmota's MqttClient); default `sml-<topic>`.
    #[arg(long)]
    pub client_id: Option<String>,
    /// Tasmota's %topic%; default: the script's file name without extension.
    #[arg(long)]
    pub topic: Option<String>,
    /// Tasmota's FullTopic; default `%prefix%/%topic%/`.
    #[arg(long)]
    pub full_topic: Option<String>,
    /// QoS of SENSOR, STATE and LWT: 0 or 1 (default 1: every payload is acknowledged).
    #[arg(long)]
    pub qos: Option<u8>,
    /// MQTT keep-alive in seconds (default 30, Tasmota's).
    #[arg(long, value_name = "SECS")]
    pub keep_alive: Option<u64>,
    /// Longest wait between two broker connect attempts, seconds (Tasmota's MqttRetry, default 10).
    #[arg(long, value_name = "SECS")]
    pub mqtt_retry: Option<u64>,
    /// Seconds between SENSOR/STATE publications, 10..3600 (Tasmota's TelePeriod, default 300).
    #[arg(long, value_name = "SECS")]
    pub teleperiod: Option<u64>,
    /// Publish the SENSOR payload on every decoded telegram, besides the teleperiod.
    #[arg(long)]
    pub every_telegram: bool,
    /// Replay speed of `file:` sources: a factor of the line's byte rate (default 1) or `max`.
    #[arg(long, value_name = "FACTOR|max")]
    pub replay_speed: Option<String>,
    /// Keep payloads waiting for the broker in DIR/outbox.jsonl, so a restart loses none.
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Payloads kept while the broker is away (oldest dropped beyond; default 10000).
    #[arg(long, value_name = "N")]
    pub queue_size: Option<usize>,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The TOML file: the long flags' names as keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    script: Option<PathBuf>,
    #[serde(default)]
    port: BTreeMap<String, String>,
    broker: Option<String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    client_id: Option<String>,
    topic: Option<String>,
    full_topic: Option<String>,
    qos: Option<u8>,
    keep_alive: Option<u64>,
    mqtt_retry: Option<u64>,
    teleperiod: Option<u64>,
    every_telegram: Option<bool>,
    replay_speed: Option<String>,
    spool: Option<PathBuf>,
    queue_size: Option<usize>,
}

/// Flags over file, with the file's relative paths made relative to the file.
fn merge(args: Args, file: FileConfig, base: &Path) -> anyhow::Result<Args> {
    let rel = |p: Option<PathBuf>| p.map(|p| if p.is_relative() { base.join(p) } else { p });
    let mut ports: Vec<String> = Vec::new();
    for (n, source) in file.port {
        let source = match source.strip_prefix("file:") {
            Some(path) if Path::new(path).is_relative() => {
                format!("file:{}", base.join(path).display())
            }
            _ => source,
        };
        ports.push(format!("{n}={source}"));
    }
    // A meter bound on the command line replaces its binding from the file.
    let cli_meters: Vec<String> = args
        .ports
        .iter()
        .filter_map(|p| p.split_once('=').map(|(n, _)| n.trim().to_string()))
        .collect();
    ports.retain(|p| {
        !cli_meters
            .iter()
            .any(|n| p.split_once('=').is_some_and(|(m, _)| m == n))
    });
    ports.extend(args.ports);
    Ok(Args {
        script: args.script.or(rel(file.script)),
        ports,
        config: None,
        broker: args.broker.or(file.broker),
        ca_file: args.ca_file.or(rel(file.ca_file)),
        cert_file: args.cert_file.or(rel(file.cert_file)),
        key_file: args.key_file.or(rel(file.key_file)),
        user: args.user.or(file.user),
        password_file: args.password_file.or(rel(file.password_file)),
        client_id: args.client_id.or(file.client_id),
        topic: args.topic.or(file.topic),
        full_topic: args.full_topic.or(file.full_topic),
        qos: args.qos.or(file.qos),
        keep_alive: args.keep_alive.or(file.keep_alive),
        mqtt_retry: args.mqtt_retry.or(file.mqtt_retry),
        teleperiod: args.teleperiod.or(file.teleperiod),
        every_telegram: args.every_telegram || file.every_telegram.unwrap_or(false),
        replay_speed: args.replay_speed.or(file.replay_speed),
        spool: args.spool.or(rel(file.spool)),
        queue_size: args.queue_size.or(file.queue_size),
        verbose: args.verbose,
    })
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("{} is not a valid sml configuration", path.display()))
}

/// Resolve merged flags into what the run loop needs; the password is read from `password`.
fn resolve(args: Args, password_env: Option<String>) -> anyhow::Result<(PathBuf, RunConfig)> {
    let Some(script_path) = args.script.clone() else {
        bail!("no script given: sml run SCRIPT --port 1=/dev/ttyUSB0 (or `script = \"...\"` in --config)");
    };
    let bindings = args
        .ports
        .iter()
        .map(|p| p.parse::<Binding>())
        .collect::<Result<Vec<_>, _>>()
        .context("--port")?;
    let teleperiod = match args.teleperiod {
        None => TELEPERIOD_DEFAULT,
        Some(s) => {
            let d = Duration::from_secs(s);
            if !(TELEPERIOD_MIN..=TELEPERIOD_MAX).contains(&d) {
                bail!("--teleperiod {s}: must be from 10 to 3600 seconds (Tasmota's TelePeriod range)");
            }
            d
        }
    };
    let replay_speed = match &args.replay_speed {
        None => ReplaySpeed::RealTime,
        Some(s) => s.parse().context("--replay-speed")?,
    };
    if args.broker.is_none() {
        let mqtt_only = [
            ("--user", args.user.is_some()),
            ("--password-file", args.password_file.is_some()),
            ("--ca-file", args.ca_file.is_some()),
            ("--cert-file", args.cert_file.is_some()),
            ("--spool", args.spool.is_some()),
        ];
        if let Some((flag, _)) = mqtt_only.iter().find(|(_, given)| *given) {
            bail!("{flag} needs --broker");
        }
    }
    let sink = match &args.broker {
        None => SinkConfig::Stdout,
        Some(url) => {
            let broker: BrokerUrl = url
                .parse()
                .map_err(anyhow::Error::msg)
                .context("--broker")?;
            let topic = match &args.topic {
                Some(t) => t.clone(),
                None => default_topic(&script_path),
            };
            let full_topic = args
                .full_topic
                .clone()
                .unwrap_or_else(|| DEFAULT_FULL_TOPIC.to_string());
            let topics = Topics::new(&full_topic, &topic)?;
            let qos = match args.qos.unwrap_or(1) {
                0 => rumqttc::QoS::AtMostOnce,
                1 => rumqttc::QoS::AtLeastOnce,
                q => bail!("--qos {q}: 0 or 1"),
            };
            let password = match (&args.password_file, password_env) {
                (Some(f), _) => {
                    let text = std::fs::read_to_string(f)
                        .with_context(|| format!("reading --password-file {}", f.display()))?;
                    Some(Secret::new(text.trim_end_matches(['\r', '\n']).to_string()))
                }
                (None, Some(p)) => Some(Secret::new(p)),
                (None, None) => None,
            };
            if password.is_some() && args.user.is_none() {
                bail!("a password was given (--password-file or {PASSWORD_ENV}) but no --user");
            }
            if !broker.tls && (args.ca_file.is_some() || args.cert_file.is_some()) {
                bail!("--ca-file and --cert-file need an mqtts:// broker");
            }
            SinkConfig::Mqtt(Box::new(MqttConfig {
                broker,
                tls: TlsFiles {
                    ca: args.ca_file.clone(),
                    cert: args.cert_file.clone(),
                    key: args.key_file.clone(),
                },
                client_id: args
                    .client_id
                    .clone()
                    .unwrap_or_else(|| format!("sml-{topic}")),
                user: args.user.clone(),
                password,
                topics,
                qos,
                keep_alive: Duration::from_secs(args.keep_alive.unwrap_or(30)),
                retry_cap: Duration::from_secs(args.mqtt_retry.unwrap_or(10).max(1)),
                queue_capacity: args.queue_size.unwrap_or(10_000).max(1),
                spool: args.spool.clone(),
            }))
        }
    };
    let config = RunConfig {
        script: crate::script::Script {
            string_capacity: 0,
            declarations: vec![],
            sections: vec![],
            meters: vec![],
        },
        bindings,
        engine: EngineConfig {
            teleperiod,
            every_telegram: args.every_telegram,
        },
        replay_speed,
        link_backoff: Backoff::default(),
        sink,
        decoders: default_decoders(),
    };
    Ok((script_path, config))
}

/// Tasmota's %topic% default off the ESP: the script's name (`meters/sx631.sml` -> `sx631`).
fn default_topic(script: &Path) -> String {
    let stem = script.file_stem().and_then(|s| s.to_str()).unwrap_or("sml");
    let t: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "sml".into()
    } else {
        t
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn,sml=info",
        1 => "warn,sml=debug",
        _ => "info,sml=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    init_logging(args.verbose);
    let args = match args.config.clone() {
        Some(path) => {
            let file = load_file(&path)?;
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            merge(args, file, &base)?
        }
        None => args,
    };
    let (script_path, mut config) = resolve(args, std::env::var(PASSWORD_ENV).ok())?;
    let shown = script_path.display().to_string();
    let source = std::fs::read(&script_path).with_context(|| format!("reading {shown}"))?;
    let compiled = crate::script::compile(&source);
    for d in &compiled.diagnostics {
        eprint!("{}", d.render(&shown));
    }
    let Some(script) = compiled.script else {
        bail!("{shown} does not compile");
    };
    config.script = script;
    let has_address = |m: &crate::script::model::Meter| {
        matches!(
            m.source,
            crate::script::model::MeterSource::ModbusTcp { .. }
        )
    };
    if config.bindings.is_empty()
        && config.script.meters.len() == 1
        && !has_address(&config.script.meters[0])
    {
        // The common case gets the clearest message.
        let m = config.script.meters[0].index;
        bail!(
            "{shown} has one meter and it has no port. Tell sml where its bytes come from:\n  \
             sml run {shown} --port {m}=/dev/ttyUSB0        (serial adapter)\n  \
             sml run {shown} --port {m}=tcp://host:2000     (TCP serial bridge: ser2net, ESP-Link)\n  \
             sml run {shown} --port {m}=file:capture.txt    (recorded capture)"
        );
    }
    crate::runner::check_bindings(&config.script, &config.bindings, &config.decoders)?;
    for b in &config.bindings {
        if let Source::Serial(p) = &b.source {
            if !p.exists() {
                tracing::warn!(
                    "meter {}: {} does not exist (yet); sml keeps trying",
                    b.meter,
                    p.display()
                );
            }
        }
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = rt.block_on(crate::runner::run(config, shutdown_signal()))?;
    tracing::info!(
        "{} telegrams, {} teleperiods, {} link drops{}",
        report.engine.telegrams,
        report.engine.teleperiods,
        report.engine.link_drops,
        report
            .mqtt
            .map(|m| format!(
                ", {} payloads delivered, {} dropped",
                m.delivered, m.dropped
            ))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM (systemd's stop).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(script: &str) -> Args {
        Args {
            script: Some(script.into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_seed_command_resolves_to_tasmotas_topics() {
        let mut a = args("meters/sx631.sml");
        a.ports = vec!["1=/dev/ttyUSB0".into()];
        a.broker = Some("mqtt://127.0.0.1:1884".into());
        a.topic = Some("myelectricmeter".into());
        a.full_topic = Some("home1/%prefix%/%topic%/".into());
        let (_, c) = resolve(a, None).unwrap();
        let SinkConfig::Mqtt(m) = c.sink else {
            panic!("MQTT expected")
        };
        assert_eq!(m.topics.sensor, "home1/tele/myelectricmeter/SENSOR");
        assert_eq!(m.client_id, "sml-myelectricmeter");
        assert_eq!(m.qos, rumqttc::QoS::AtLeastOnce);
        assert_eq!(c.engine.teleperiod, TELEPERIOD_DEFAULT);
    }

    #[test]
    fn the_topic_defaults_to_the_scripts_name() {
        let mut a = args("meters/sx631.sml");
        a.broker = Some("mqtt://localhost".into());
        let (_, c) = resolve(a, None).unwrap();
        let SinkConfig::Mqtt(m) = c.sink else {
            panic!()
        };
        assert_eq!(m.topics.sensor, "tele/sx631/SENSOR");
    }

    #[test]
    fn teleperiod_outside_tasmotas_range_is_refused() {
        for bad in [9, 3601] {
            let mut a = args("x.sml");
            a.teleperiod = Some(bad);
            let e = resolve(a, None).err().unwrap().to_string();
            assert!(e.contains("10 to 3600"), "{e}");
        }
    }

    #[test]
    fn a_password_comes_from_the_environment_and_needs_a_user() {
        let mut a = args("x.sml");
        a.broker = Some("mqtt://localhost".into());
        let e = resolve(a, Some("pw".into())).err().unwrap().to_string();
        assert!(e.contains("no --user") && !e.contains("pw\""), "{e}");
        let mut a = args("x.sml");
        a.broker = Some("mqtt://localhost".into());
        a.user = Some("u".into());
        let (_, c) = resolve(a, Some("pw".into())).unwrap();
        let SinkConfig::Mqtt(m) = c.sink else {
            panic!()
        };
        assert_eq!(m.password.unwrap().expose(), "pw");
    }

    #[test]
    fn mqtt_flags_without_a_broker_are_refused() {
        let mut a = args("x.sml");
        a.user = Some("u".into());
        assert!(resolve(a, None)
            .err()
            .unwrap()
            .to_string()
            .contains("--user needs --broker"));
    }

    #[test]
    fn the_config_file_gives_defaults_and_flags_win() {
        let file: FileConfig = toml::from_str(
            r#"
            script = "meters/sx631.sml"
            broker = "mqtt://broker:1883"
            topic = "fromfile"
            teleperiod = 60
            every-telegram = true
            [port]
            1 = "/dev/ttyUSB0"
            2 = "file:cap.txt"
            "#,
        )
        .unwrap();
        let mut a = Args {
            topic: Some("fromflag".into()),
            ports: vec!["2=tcp://h:2000".into()],
            ..Default::default()
        };
        a.teleperiod = None;
        let m = merge(a, file, Path::new("/etc/sml")).unwrap();
        assert_eq!(m.script, Some(PathBuf::from("/etc/sml/meters/sx631.sml")));
        assert_eq!(m.topic.as_deref(), Some("fromflag"));
        assert_eq!(m.teleperiod, Some(60));
        assert!(m.every_telegram);
        assert_eq!(
            m.ports,
            vec!["1=/dev/ttyUSB0".to_string(), "2=tcp://h:2000".to_string()]
        );
    }

    #[test]
    fn unknown_keys_in_the_config_file_are_errors() {
        assert!(toml::from_str::<FileConfig>("brokr = \"x\"").is_err());
        assert!(toml::from_str::<FileConfig>("password = \"x\"").is_err());
    }
}
