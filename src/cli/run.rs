/*!
`sml run SCRIPT --port 1=/dev/ttyUSB0 [--broker mqtt://host]`: read the meters, publish Tasmota's
SENSOR JSON on MQTT, or on stdout without a broker.

One struct, [`Args`], is both the flags (clap) and the TOML file (`--config`, serde: the long flags'
names as keys, `[port]` as a table), so an option is declared once; the two are merged field by
field in [`Args::over`], flags winning, and only then resolved into the checked [`RunConfig`] (raw
options and resolved configuration are kept apart, as ripgrep's lowargs and hiargs). The MQTT
password comes from `--password-file` or `SML_MQTT_PASSWORD`, never from the command line or the
file, and is never logged: a file that cannot be parsed is quoted without the value of any line that
may hold a secret.

Without a script, `--meter-name` or `--config`, the options come from `/etc/sml/sml.toml` when it
exists (`$SML_CONFIG` names another file): the packaged service's configuration. SIGHUP reads the
file and the script again ([`reload_on_sighup`]); what does not compile is refused and the running
script goes on.

Exit codes: 0 when the run ended as asked (Ctrl-C, SIGTERM, the captures read and published); 2 when
the options or the script are refused before the run starts (a bad option, a missing capture); 1 when
the run fails (the broker's TLS or spool setup, a task that panicked, a link that failed for good,
payloads that were not delivered; but not those a `--spool` keeps when the run was stopped by SIGTERM
or Ctrl-C: they go out at the next start). The reason is the last line on stderr.
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Deserializer};

use crate::backoff::Backoff;
use crate::engine::scheduler::{
    EngineConfig, StaleAfter, TELEPERIOD_DEFAULT, TELEPERIOD_MAX, TELEPERIOD_MIN,
};
use crate::http::HttpConfig;
use crate::link::{Binding, ReplaySpeed, Source};
use crate::publish::discovery::{DiscoveryConfig, DEFAULT_HA_PREFIX};
use crate::publish::influx::{InfluxConfig, InfluxUrl, Target};
use crate::publish::mqtt::{BrokerUrl, MqttConfig, Secret, TlsFiles};
use crate::publish::topics::{Topics, DEFAULT_FULL_TOPIC};
use crate::runner::shard::Shard;
use crate::runner::{default_decoders, Frontends, RunConfig, SinkConfig};

pub const PASSWORD_ENV: &str = "SML_MQTT_PASSWORD";

/// `sml run`'s options, from the command line (clap) and from the `--config` file (serde) alike.
/// Everything is optional here; [`resolve`] applies the defaults and checks the values.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Args {
    /// The Tasmota script (`>D ... >M ... #`); may also be given as `script` in --config.
    pub script: Option<PathBuf>,
    /// Run this meter's script from the meters library (`sml meters` lists the names) instead of
    /// giving SCRIPT; `meter-name` in --config.
    #[arg(long, value_name = "NAME", conflicts_with = "script")]
    pub meter_name: Option<String>,
    /// The meters library for --meter-name (default: $SML_METERS_DIR, ./meters, then
    /// /usr/share/sml/meters).
    #[arg(long, value_name = "DIR")]
    pub meters_dir: Option<PathBuf>,
    /// Bind meter N to its source: a serial device (`1=/dev/ttyUSB0`), a TCP serial bridge
    /// (`1=tcp://host:2000`) or a recorded capture (`1=file:capture.txt`). Repeatable.
    #[arg(long = "port", value_name = "N=SOURCE")]
    #[serde(rename = "port", default, deserialize_with = "port_table")]
    pub ports: Vec<String>,
    /// TOML file with the same keys as the long flags (`broker = "mqtt://..."`, `[port]` table
    /// `1 = "/dev/ttyUSB0"`); flags override it. Relative paths are relative to the file. Without
    /// SCRIPT or --meter-name: $SML_CONFIG, else /etc/sml/sml.toml if it exists.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// `mqtt://host[:port]` or `mqtts://host[:port]`; without it, SENSOR JSON goes to stdout.
    /// Repeatable: the brokers of one cluster, tried in order, failing over to the next with the
    /// queue intact (`broker = "..."` or `brokers = ["...", "..."]` in --config).
    #[arg(long, value_name = "URL")]
    #[serde(default, alias = "brokers", deserialize_with = "one_or_many")]
    pub broker: Vec<String>,
    /// Run only the meters whose number modulo N is K (`0/3`, `1/3`, `2/3` on three hosts sharing
    /// one script and config file); `shard = "K/N"` in --config.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// CA certificates (PEM) for mqtts:// and an https:// --influx; the system's roots by default.
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
    /// Longest wait between two broker connect attempts, seconds (Tasmota's MqttRetry, default 10);
    /// InfluxDB writes are retried likewise.
    #[arg(long, value_name = "SECS")]
    pub mqtt_retry: Option<u64>,
    /// Seconds between SENSOR/STATE publications, 10..3600 (Tasmota's TelePeriod, default 300).
    #[arg(long, value_name = "SECS")]
    pub teleperiod: Option<u64>,
    /// A meter's values are left out of SENSOR when it has sent nothing for this long, seconds
    /// (0: never; default: chosen from the meter's own pace).
    #[arg(long, value_name = "SECS")]
    pub stale_after: Option<u64>,
    /// Publish the SENSOR payload on every decoded telegram, besides the teleperiod.
    #[arg(long)]
    #[serde(default)]
    pub every_telegram: bool,
    /// Replay speed of `file:` sources: a factor of the line's byte rate (default 1) or `max`.
    #[arg(long, value_name = "FACTOR|max")]
    pub replay_speed: Option<String>,
    /// Keep payloads waiting for the broker in DIR/outbox.jsonl (for InfluxDB in
    /// DIR/influx/outbox.jsonl), so a restart loses none.
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Keep the script's permanent `p:` variables in DIR/script-state.json (default: the --spool
    /// directory, if given).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Your own post-processing in Rhai: `fn before_publish(payload)` (return the map to publish, or
    /// `()` for nothing) and optionally `fn on_telegram(meter, values)`.
    #[arg(long, value_name = "FILE")]
    pub rhai: Option<PathBuf>,
    /// Payloads kept while the broker (or InfluxDB) is away (oldest dropped beyond; default 10000).
    #[arg(long, value_name = "N")]
    pub queue_size: Option<usize>,
    /// A variable of the host script a meter file is pasted into, for `%NAME%` in `>M` lines
    /// (repeatable; `define = ["NAME=VALUE"]` in --config). `rxpin`, `txpin` and `smlf` are
    /// supplied when a script uses them undeclared.
    #[arg(long = "define", short = 'D', value_name = "NAME=VALUE")]
    #[serde(rename = "define", default)]
    pub defines: Vec<String>,
    /// Announce every value to Home Assistant (MQTT discovery: retained configs under
    /// --ha-prefix); configs of lines removed from the script are removed. Needs --broker.
    #[arg(long)]
    #[serde(default)]
    pub ha_discovery: bool,
    /// Home Assistant's discovery prefix (default `homeassistant`).
    #[arg(long, value_name = "PREFIX")]
    pub ha_prefix: Option<String>,
    /// Announce sml as a Tasmota device (`tasmota/discovery/<mac>/...`) for Home Assistant's
    /// Tasmota integration; the MAC is made up from the topic. Needs --broker.
    #[arg(long)]
    #[serde(default)]
    pub tasmota_discovery: bool,
    /// Serve Tasmota's `/cm?cmnd=Status 10`, `/metrics` (Prometheus) and a live page on
    /// ADDR:PORT (a port alone binds 127.0.0.1). Off by default.
    #[arg(long, value_name = "ADDR:PORT")]
    pub http: Option<String>,
    /// File holding the password of the --http pages (basic auth, user `admin`).
    #[arg(long, value_name = "FILE")]
    pub http_password_file: Option<PathBuf>,
    /// Write the SENSOR values to InfluxDB too (or alone, without --broker): `http://host:8086`
    /// or `https://...`. In the file: an `[influx]` table (`url`, `db`, `user`, ...).
    #[arg(long, value_name = "URL")]
    pub influx: Option<String>,
    /// InfluxDB 1.x database.
    #[arg(long, value_name = "NAME")]
    pub influx_db: Option<String>,
    /// InfluxDB 1.x user.
    #[arg(long, value_name = "NAME")]
    pub influx_user: Option<String>,
    /// File holding the InfluxDB 1.x password.
    #[arg(long, value_name = "FILE")]
    pub influx_password_file: Option<PathBuf>,
    /// InfluxDB 2.x organization.
    #[arg(long, value_name = "NAME")]
    pub influx_org: Option<String>,
    /// InfluxDB 2.x bucket.
    #[arg(long, value_name = "NAME")]
    pub influx_bucket: Option<String>,
    /// File holding the InfluxDB 2.x API token.
    #[arg(long, value_name = "FILE")]
    pub influx_token_file: Option<PathBuf>,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    #[serde(skip)]
    pub verbose: u8,
}

/// `broker = "mqtt://a"` or `brokers = ["mqtt://a", "mqtt://b"]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// The file's `[port]` table (`1 = "/dev/ttyUSB0"`) as the flag's `N=SOURCE` strings.
fn port_table<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let table = BTreeMap::<String, String>::deserialize(d)?;
    Ok(table.into_iter().map(|(n, s)| format!("{n}={s}")).collect())
}

impl Args {
    /// These flags over `file`'s options, field by field, with the file's relative paths made
    /// relative to the file (`base`).
    fn over(self, file: Args, base: &Path) -> Args {
        let rel = |p: Option<PathBuf>| p.map(|p| if p.is_relative() { base.join(p) } else { p });
        // A meter bound on the command line replaces its binding from the file.
        let meter_of = |p: &String| p.split_once('=').map(|(n, _)| n.trim().to_string());
        let flag_meters: Vec<String> = self.ports.iter().filter_map(meter_of).collect();
        let mut ports: Vec<String> = file
            .ports
            .into_iter()
            .filter(|p| meter_of(p).is_none_or(|n| !flag_meters.contains(&n)))
            .map(|p| match p.split_once("=file:") {
                Some((n, path)) if Path::new(path).is_relative() => {
                    format!("{n}=file:{}", base.join(path).display())
                }
                _ => p,
            })
            .collect();
        ports.extend(self.ports);
        // A script picked on the command line (by path or by name) replaces the file's choice
        // whole: a path from one and a name from the other would be refused as both.
        let (script, meter_name) = match (self.script, self.meter_name) {
            (None, None) => (rel(file.script), file.meter_name),
            picked => picked,
        };
        Args {
            script,
            meter_name,
            meters_dir: self.meters_dir.or(rel(file.meters_dir)),
            ports,
            config: None,
            // The command line's list replaces the file's whole (a cluster is one list).
            broker: if self.broker.is_empty() {
                file.broker
            } else {
                self.broker
            },
            shard: self.shard.or(file.shard),
            ca_file: self.ca_file.or(rel(file.ca_file)),
            cert_file: self.cert_file.or(rel(file.cert_file)),
            key_file: self.key_file.or(rel(file.key_file)),
            user: self.user.or(file.user),
            password_file: self.password_file.or(rel(file.password_file)),
            client_id: self.client_id.or(file.client_id),
            topic: self.topic.or(file.topic),
            full_topic: self.full_topic.or(file.full_topic),
            qos: self.qos.or(file.qos),
            keep_alive: self.keep_alive.or(file.keep_alive),
            mqtt_retry: self.mqtt_retry.or(file.mqtt_retry),
            teleperiod: self.teleperiod.or(file.teleperiod),
            stale_after: self.stale_after.or(file.stale_after),
            // A switch: on when either turns it on.
            every_telegram: self.every_telegram || file.every_telegram,
            replay_speed: self.replay_speed.or(file.replay_speed),
            spool: self.spool.or(rel(file.spool)),
            state_dir: self.state_dir.or(rel(file.state_dir)),
            rhai: self.rhai.or(rel(file.rhai)),
            queue_size: self.queue_size.or(file.queue_size),
            // The file's first, so a flag given for the same name wins.
            defines: file.defines.into_iter().chain(self.defines).collect(),
            ha_discovery: self.ha_discovery || file.ha_discovery,
            ha_prefix: self.ha_prefix.or(file.ha_prefix),
            tasmota_discovery: self.tasmota_discovery || file.tasmota_discovery,
            http: self.http.or(file.http),
            http_password_file: self.http_password_file.or(rel(file.http_password_file)),
            influx: self.influx.or(file.influx),
            influx_db: self.influx_db.or(file.influx_db),
            influx_user: self.influx_user.or(file.influx_user),
            influx_password_file: self.influx_password_file.or(rel(file.influx_password_file)),
            influx_org: self.influx_org.or(file.influx_org),
            influx_bucket: self.influx_bucket.or(file.influx_bucket),
            influx_token_file: self.influx_token_file.or(rel(file.influx_token_file)),
            verbose: self.verbose,
        }
    }
}

fn load_file(path: &Path) -> anyhow::Result<Args> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let describe = |e: toml::de::Error| anyhow!(describe_toml_error(path, &text, &e));
    let mut table: toml::Table = toml::from_str(&text).map_err(describe)?;
    if !matches!(table.get("influx"), Some(toml::Value::Table(_))) {
        // Straight from the text, so that an error points at its line.
        return toml::from_str(&text).map_err(describe);
    }
    flatten_influx_table(&mut table);
    table.try_into().map_err(describe)
}

/// `[influx]` with `url`, `db`, `user`, `password-file`, `org`, `bucket`, `token-file` is the
/// flags' `influx`, `influx-db`, ...: one [`Args`] for both, as everywhere else.
fn flatten_influx_table(table: &mut toml::Table) {
    let Some(toml::Value::Table(influx)) = table.remove("influx") else {
        return;
    };
    for (key, value) in influx {
        let flat = if key == "url" {
            "influx".to_string()
        } else {
            format!("influx-{key}")
        };
        table.insert(flat, value);
    }
}

/// Key names that may hold a secret: their lines are never quoted.
const SECRET_WORDS: [&str; 7] = [
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "credential",
    "auth",
];

/// toml's own message quotes the offending line, which may be `password = "..."`: this one says
/// where and what, and shows the line only when its key cannot hold a secret.
fn describe_toml_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let file = path.display();
    let mut message = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else {
        return format!("{file} is not a valid sml configuration: {message}");
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_no = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("").trim_end();
    let (key, value) = line.split_once('=').unwrap_or((line, ""));
    let key = key.trim();
    // A URL with a user part (`mqtt://user:pw@host`) may carry a password too.
    let secret = SECRET_WORDS
        .iter()
        .any(|w| key.to_ascii_lowercase().contains(w))
        || (value.contains("://") && value.contains('@'));
    let shown = if secret {
        let value = value.trim().trim_matches(['"', '\'']);
        if !value.is_empty() {
            message = message.replace(value, "<not shown>");
        }
        format!("{key} = <not shown: it may be a secret>")
    } else {
        line.to_string()
    };
    let mut out = format!(
        "{file} is not a valid sml configuration: line {line_no}, column {column}: {message}\n  \
         {line_no} | {shown}"
    );
    if secret && key.to_ascii_lowercase().contains("pass") && key != "password-file" {
        out.push_str(&format!(
            "\nThe MQTT password is never kept in this file: put it in a file of its own \
             (`password-file = \"...\"`) or in the {PASSWORD_ENV} environment variable."
        ));
    }
    out
}

/// The checked configuration (ripgrep's hiargs): the script still to be read, and the run.
pub struct Resolved {
    pub script_path: PathBuf,
    /// `--shard K/N`: the meters this host runs.
    pub shard: Option<Shard>,
    /// `--define NAME=VALUE`, checked.
    pub defines: Vec<crate::script::Define>,
    pub run: RunConfig,
    /// `--http` and discovery.
    pub frontends: Frontends,
}

/// Resolve merged options into what the run loop needs; `password_env` is SML_MQTT_PASSWORD.
fn resolve(args: Args, password_env: Option<String>) -> anyhow::Result<Resolved> {
    let script_path = match (&args.script, &args.meter_name) {
        (Some(path), None) => path.clone(),
        (None, Some(name)) => {
            let index = super::meters::Index::find(args.meters_dir.as_deref())?;
            index.path_of(&index.entry(name)?.script)
        }
        (Some(path), Some(name)) => bail!(
            "give a script ({}) or --meter-name {name}, not both",
            path.display()
        ),
        (None, None) => bail!(
            "no script given: sml run SCRIPT --port 1=/dev/ttyUSB0 (or --meter-name NAME, or \
             `script = \"...\"` in --config or in /etc/sml/sml.toml)"
        ),
    };
    let bindings = args
        .ports
        .iter()
        .map(|p| p.parse::<Binding>())
        .collect::<Result<Vec<_>, _>>()
        .context("--port")?;
    let shard = match &args.shard {
        Some(s) => Some(s.parse::<Shard>().context("--shard")?),
        None => None,
    };
    // A capture that cannot be read will not appear by waiting: say so before starting. Another
    // shard's captures are another host's files.
    for b in bindings
        .iter()
        .filter(|b| shard.is_none_or(|s| s.keeps(b.meter)))
    {
        if let Source::Replay(path) = &b.source {
            std::fs::File::open(path).with_context(|| {
                format!("--port {b}: cannot read the capture {}", path.display())
            })?;
        }
    }
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
    if args.broker.is_empty() {
        let mqtt_only = [
            ("--user", args.user.is_some()),
            ("--password-file", args.password_file.is_some()),
            ("--ha-discovery", args.ha_discovery),
            ("--ha-prefix", args.ha_prefix.is_some()),
            ("--tasmota-discovery", args.tasmota_discovery),
        ];
        if let Some((flag, _)) = mqtt_only.iter().find(|(_, given)| *given) {
            bail!("{flag} needs --broker");
        }
        let either = [
            ("--ca-file", args.ca_file.is_some()),
            ("--cert-file", args.cert_file.is_some()),
            ("--spool", args.spool.is_some()),
        ];
        if args.influx.is_none() {
            if let Some((flag, _)) = either.iter().find(|(_, given)| *given) {
                bail!("{flag} needs --broker or --influx");
            }
        }
    }
    let influx = influx_config(&args, &script_path)?;
    let influx_tls = influx.as_ref().is_some_and(|i| i.url.tls);
    let sink = match args.broker.split_first() {
        None => SinkConfig::Stdout,
        Some((first, more)) => {
            let parse = |url: &String| -> anyhow::Result<BrokerUrl> {
                url.parse().map_err(anyhow::Error::msg).context("--broker")
            };
            let broker = parse(first)?;
            let more_brokers = more.iter().map(parse).collect::<anyhow::Result<Vec<_>>>()?;
            // Failing over from TLS to plain text would hand the password to whoever listens.
            if let Some((url, _)) = more
                .iter()
                .zip(&more_brokers)
                .find(|(_, b)| b.tls != broker.tls)
            {
                bail!(
                    "--broker {url}: the brokers of one list are all mqtt:// or all mqtts://, \
                     as --broker {first} is"
                );
            }
            let topic = match &args.topic {
                Some(t) => t.clone(),
                None => sharded_topic(&default_topic(&script_path), shard),
            };
            let full_topic = args
                .full_topic
                .clone()
                .unwrap_or_else(|| DEFAULT_FULL_TOPIC.to_string());
            let topics = Topics::new(&full_topic, &topic)?;
            let qos = match args.qos.unwrap_or(1) {
                0 => rumqttc::QoS::AtMostOnce,
                1 => rumqttc::QoS::AtLeastOnce,
                q => bail!("--qos {q}: Tasmota publishes with QoS 0 or 1"),
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
            if !broker.tls && !influx_tls && (args.ca_file.is_some() || args.cert_file.is_some()) {
                bail!(
                    "--ca-file and --cert-file need an mqtts:// broker (--broker mqtts://host) or an \
                     https:// InfluxDB"
                );
            }
            SinkConfig::Mqtt(Box::new(MqttConfig {
                broker,
                more_brokers,
                tls: TlsFiles {
                    ca: args.ca_file.clone(),
                    cert: args.cert_file.clone(),
                    key: args.key_file.clone(),
                },
                client_id: args.client_id.clone().unwrap_or_else(|| {
                    // Hosts of one shard set share a --topic given by hand: not their client id,
                    // or each would throw the others off the broker.
                    match (&args.topic, shard) {
                        (Some(_), Some(s)) => format!("sml-{topic}-{}", s.k),
                        _ => format!("sml-{topic}"),
                    }
                }),
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
    let discovery = match &sink {
        SinkConfig::Mqtt(_) if args.ha_discovery || args.tasmota_discovery => {
            let ha_prefix = match &args.ha_prefix {
                Some(p) if p.is_empty() || p.contains(['+', '#']) => {
                    bail!("--ha-prefix '{p}': must be a topic without '+' or '#'")
                }
                p => p.clone().unwrap_or_else(|| DEFAULT_HA_PREFIX.to_string()),
            };
            Some(DiscoveryConfig {
                ha_prefix: args.ha_discovery.then_some(ha_prefix),
                tasmota: args.tasmota_discovery,
                topic: args
                    .topic
                    .clone()
                    .unwrap_or_else(|| sharded_topic(&default_topic(&script_path), shard)),
                full_topic: args
                    .full_topic
                    .clone()
                    .unwrap_or_else(|| DEFAULT_FULL_TOPIC.to_string()),
            })
        }
        _ => None,
    };
    if args.http.is_none() && args.http_password_file.is_some() {
        bail!("--http-password-file needs --http");
    }
    let http = match &args.http {
        None => None,
        Some(addr) => {
            let password = match &args.http_password_file {
                None => None,
                Some(f) => {
                    let text = std::fs::read_to_string(f)
                        .with_context(|| format!("reading --http-password-file {}", f.display()))?;
                    let p = text.trim_end_matches(['\r', '\n']).to_string();
                    if p.is_empty() {
                        bail!("--http-password-file {}: the file is empty", f.display());
                    }
                    Some(Secret::new(p))
                }
            };
            Some(HttpConfig::bind(addr, password)?)
        }
    };
    let sink = match influx {
        None => sink,
        Some(influx) => SinkConfig::Influx {
            influx: Box::new(influx),
            mqtt: match sink {
                SinkConfig::Mqtt(m) => Some(m),
                _ => None,
            },
        },
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
            stale_after: args
                .stale_after
                .map_or(StaleAfter::Auto, StaleAfter::from_secs),
        },
        replay_speed,
        link_backoff: Backoff::default(),
        sink,
        decoders: default_decoders(),
        hooks: crate::runner::HooksConfig {
            script_path: script_path.display().to_string(),
            state_dir: args.state_dir.clone().or_else(|| args.spool.clone()),
            user_rhai: args.rhai.clone(),
        },
    };
    let defines = args
        .defines
        .iter()
        .map(|d| d.parse())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("--define {e}"))?;
    Ok(Resolved {
        script_path,
        shard,
        defines,
        run: config,
        frontends: Frontends { http, discovery },
    })
}

/// `--influx` and its flags, checked; `None` without `--influx`.
fn influx_config(args: &Args, script_path: &Path) -> anyhow::Result<Option<InfluxConfig>> {
    let Some(url) = &args.influx else {
        let given = [
            ("--influx-db", args.influx_db.is_some()),
            ("--influx-user", args.influx_user.is_some()),
            (
                "--influx-password-file",
                args.influx_password_file.is_some(),
            ),
            ("--influx-org", args.influx_org.is_some()),
            ("--influx-bucket", args.influx_bucket.is_some()),
            ("--influx-token-file", args.influx_token_file.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
            bail!("{flag} needs --influx URL");
        }
        return Ok(None);
    };
    let url: InfluxUrl = url
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--influx")?;
    let read_secret = |flag: &str, f: &PathBuf| -> anyhow::Result<Secret> {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading {flag} {}", f.display()))?;
        Ok(Secret::new(text.trim_end_matches(['\r', '\n']).to_string()))
    };
    let v2 = args.influx_org.is_some()
        || args.influx_bucket.is_some()
        || args.influx_token_file.is_some();
    let target = match (&args.influx_db, v2) {
        (Some(_), true) => bail!(
            "--influx-db is for InfluxDB 1.x, --influx-org/--influx-bucket/--influx-token-file for \
             2.x: give one or the other"
        ),
        (Some(db), false) => {
            let password = match &args.influx_password_file {
                Some(f) => Some(read_secret("--influx-password-file", f)?),
                None => None,
            };
            if password.is_some() && args.influx_user.is_none() {
                bail!("--influx-password-file needs --influx-user");
            }
            Target::V1 {
                database: db.clone(),
                user: args.influx_user.clone(),
                password,
            }
        }
        (None, true) => {
            if args.influx_user.is_some() || args.influx_password_file.is_some() {
                bail!("InfluxDB 2.x takes --influx-token-file, not --influx-user/--influx-password-file");
            }
            let (Some(org), Some(bucket), Some(token)) = (
                &args.influx_org,
                &args.influx_bucket,
                &args.influx_token_file,
            ) else {
                bail!("InfluxDB 2.x needs all of --influx-org, --influx-bucket and --influx-token-file");
            };
            Target::V2 {
                org: org.clone(),
                bucket: bucket.clone(),
                token: read_secret("--influx-token-file", token)?,
            }
        }
        (None, false) => bail!(
            "--influx {}: which database? --influx-db NAME (InfluxDB 1.x), or --influx-org, \
             --influx-bucket and --influx-token-file (2.x)",
            url.base
        ),
    };
    Ok(Some(InfluxConfig {
        url,
        target,
        tls: TlsFiles {
            ca: args.ca_file.clone(),
            cert: args.cert_file.clone(),
            key: args.key_file.clone(),
        },
        topic: args
            .topic
            .clone()
            .unwrap_or_else(|| default_topic(script_path)),
        retry_cap: Duration::from_secs(args.mqtt_retry.unwrap_or(10).max(1)),
        queue_capacity: args.queue_size.unwrap_or(10_000).max(1),
        spool: args.spool.clone(),
    }))
}

/// The default %topic% of a shard: `meters-0` for `--shard 0/3`, so that each host has its own
/// SENSOR, STATE and LWT (one LWT shared by three hosts would say `Offline` while two run).
fn sharded_topic(topic: &str, shard: Option<Shard>) -> String {
    match shard {
        Some(s) => format!("{topic}-{}", s.k),
        None => topic.to_string(),
    }
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

/// The configuration file of a packaged install (`packaging/sml.toml`), read when `sml run` is
/// given neither a script, nor `--meter-name`, nor `--config`.
pub const DEFAULT_CONFIG: &str = "/etc/sml/sml.toml";
/// Names another file than [`DEFAULT_CONFIG`] (tests, a second instance); the file must exist.
pub const CONFIG_ENV: &str = "SML_CONFIG";

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn,sml=info",
        1 => "warn,sml=debug",
        _ => "info,sml=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if crate::service::stderr_is_journal() {
        // Under systemd: each line's level as a syslog priority, no timestamp (the journal's own).
        logs.with_ansi(false)
            .event_format(crate::service::JournalFormat)
            .try_init()
    } else {
        logs
            // Colour only for a person at a terminal: log files get plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .try_init()
    };
}

/// The file to read options from: `--config`; without it, and without a script or a meter name,
/// `$SML_CONFIG` or, when it exists, [`DEFAULT_CONFIG`].
fn config_path(args: &Args) -> Option<PathBuf> {
    if let Some(path) = &args.config {
        return Some(path.clone());
    }
    if args.script.is_some() || args.meter_name.is_some() {
        return None;
    }
    match std::env::var_os(CONFIG_ENV) {
        Some(path) => Some(PathBuf::from(path)),
        None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
    }
}

/// What `sml run` checked before running, at the start and again on each SIGHUP.
struct Prepared {
    config: RunConfig,
    frontends: Frontends,
    /// The script as the user named it.
    shown: String,
    /// `--shard K/N`, kept as started over reloads (a host does not change its shard on SIGHUP).
    shard: Option<Shard>,
}

/// Whether [`prepare`] runs for a SIGHUP: the HTTP server already holds its port then (binding it
/// again would fail on ourselves), and it is kept, as the publisher is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Start,
    Reload,
}

/// The flags over the configuration file, resolved, the script read, compiled and checked, its
/// meters bound: everything that can refuse a run before it starts.
fn prepare(args: Args, stage: Stage) -> anyhow::Result<Prepared> {
    let mut args = match config_path(&args) {
        Some(path) => {
            let file = load_file(&path)?;
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            args.over(file, &base)
        }
        None => args,
    };
    if stage == Stage::Reload {
        args.http = None;
        args.http_password_file = None;
    }
    let Resolved {
        script_path,
        shard,
        defines,
        run: mut config,
        frontends,
    } = resolve(args, std::env::var(PASSWORD_ENV).ok())?;
    let shown = script_path.display().to_string();
    let (script, source) = super::compile_script(&script_path, defines)?;
    // The sections run: what does not translate stops the run here, as `sml check` reports it.
    let sections =
        crate::hooks::check::check_with_source(&script, &String::from_utf8_lossy(&source));
    for d in &sections {
        crate::service::eprint_diagnostic(d.severity, &d.render(&shown));
    }
    if sections
        .iter()
        .any(|d| d.severity == crate::script::Severity::Error)
    {
        bail!("{shown}: its script sections do not translate");
    }
    config.script = script;
    if let Some(shard) = shard {
        let kept = shard.kept(&config.script)?;
        let (mine, others) = shard.split(std::mem::take(&mut config.bindings));
        config.bindings = mine;
        let list = |m: &[u16]| m.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        tracing::info!("--shard {shard}: this host runs meters {}", list(&kept));
        if !others.is_empty() {
            let ignored: Vec<String> = others.iter().map(|b| format!("--port {b}")).collect();
            tracing::info!(
                "--shard {shard}: {} of other shards ignored here",
                ignored.join(", ")
            );
        }
    }
    let running = crate::runner::shard::running(&config.script, shard);
    let has_address = |m: &crate::script::model::Meter| {
        matches!(
            m.source,
            crate::script::model::MeterSource::ModbusTcp { .. }
        )
    };
    if config.bindings.is_empty()
        && config.script.meters.len() == 1
        && running.meters.len() == 1
        && !has_address(&running.meters[0])
    {
        // The common case gets the clearest message.
        let m = running.meters[0].index;
        bail!(
            "{shown} has one meter and it has no port. Tell sml where its bytes come from:\n  \
             sml run {shown} --port {m}=/dev/ttyUSB0        (serial adapter)\n  \
             sml run {shown} --port {m}=tcp://host:2000     (TCP serial bridge: ser2net, ESP-Link)\n  \
             sml run {shown} --port {m}=file:capture.txt    (recorded capture)"
        );
    }
    crate::runner::check_bindings(&running, &config.bindings, &config.decoders)?;
    drop(running);

    Ok(Prepared {
        config,
        frontends,
        shown,
        shard,
    })
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    init_logging(args.verbose);
    let Prepared {
        config,
        frontends,
        shown,
        shard,
    } = prepare(args.clone(), Stage::Start)?;

    let spool = match &config.sink {
        SinkConfig::Mqtt(m) => m.spool.clone(),
        SinkConfig::Influx { influx, .. } => influx.spool.clone(),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // SIGHUP's default action ends the process: the handler is in place before the run says
    // it is ready, so an early `systemctl reload` cannot kill it.
    // SIGTERM's and SIGINT's likewise: `systemctl stop` right after READY=1 must find them.
    let (hangups, stop) = {
        let _runtime = rt.enter();
        use tokio::signal::unix::{signal, SignalKind};
        let hangups = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        (hangups, stop_signal(term, int))
    };
    let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
    // A stop as asked (SIGTERM, Ctrl-C), not the captures' end: what the spool kept is no failure.
    let asked_to_stop = std::sync::atomic::AtomicBool::new(false);
    let outcome = rt.block_on(async {
        tokio::spawn(reload_on_sighup(hangups, args, shown, reload_tx));
        let shutdown = async {
            stop.await;
            asked_to_stop.store(true, std::sync::atomic::Ordering::Relaxed);
        };
        crate::runner::run_reloadable(config, frontends, shard, shutdown, reloads).await
    });
    // Whatever a task left running stops here, before the verdict is printed.
    drop(rt);
    let failure = match outcome {
        Ok(report) => {
            tracing::info!(
                "{} telegrams, {} teleperiods, {} link drops{}",
                report.engine.telegrams,
                report.engine.teleperiods,
                report.engine.link_drops,
                report
                    .mqtt
                    .as_ref()
                    .map(|m| format!(
                        ", {} payloads delivered, {} dropped, {} not delivered{}",
                        m.delivered,
                        m.dropped,
                        m.left_queued,
                        if m.failovers > 0 {
                            format!(", {} moves to another broker", m.failovers)
                        } else {
                            String::new()
                        }
                    ))
                    .unwrap_or_default()
            );
            if let Some(i) = &report.influx {
                tracing::info!(
                    "InfluxDB: {} points written, {} refused, {} payloads dropped, {} not written",
                    i.written,
                    i.refused,
                    i.dropped,
                    i.left_queued
                );
            }
            match (report.failure(), &spool) {
                // Stopped as asked with the broker away: what it did not take is on disk,
                // fsynced, and goes out at the next start; systemd's SIGTERM is no failure.
                (Some(_), Some(dir))
                    if asked_to_stop.load(std::sync::atomic::Ordering::Relaxed)
                        && kept_in_spool(&report) =>
                {
                    tracing::info!(
                        "the payloads not delivered are kept in the spool {} for the next start",
                        dir.display()
                    );
                    None
                }
                (failure, _) => failure,
            }
        }
        Err(e) => Some(e.to_string()),
    };
    match failure {
        None => Ok(ExitCode::SUCCESS),
        Some(reason) => {
            // Last on stderr, after every log line: the first thing a user reads.
            eprintln!("sml: error: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Whether the only thing wrong with a run is payloads still queued, which a `--spool` keeps:
/// not a broker that refused us.
fn kept_in_spool(report: &crate::runner::RunReport) -> bool {
    report.mqtt.as_ref().is_none_or(|m| m.fatal.is_none())
}

/// Ctrl-C or SIGTERM (systemd's stop).
pub(crate) async fn shutdown_signal() {
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

/// [`shutdown_signal`] with its handlers installed beforehand.
async fn stop_signal(mut term: tokio::signal::unix::Signal, mut int: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// SIGHUP (`systemctl reload sml`): read the configuration and the script again and hand them to
/// the run, which restarts the meters and the engine on them and keeps its publisher (no queued
/// payload is lost). What does not resolve or compile is refused with its error logged, and the
/// running script goes on.
async fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    args: Args,
    mut shown: String,
    reloads: tokio::sync::mpsc::Sender<RunConfig>,
) {
    while hangups.recv().await.is_some() {
        crate::service::reloading();
        tracing::info!("SIGHUP: reading the configuration and the script again");
        match prepare(args.clone(), Stage::Reload) {
            Ok(next) => {
                shown = next.shown;
                if reloads.send(next.config).await.is_err() {
                    return;
                }
                tracing::info!(
                    "{shown} read again; the broker, InfluxDB, --http and discovery settings stay \
                     as started (restart sml to change them)"
                );
            }
            Err(e) => {
                tracing::error!("reload refused, {shown} keeps running: {e:#}");
                crate::service::reload_refused(&format!("reload refused: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(script: &str) -> Args {
        Args {
            script: Some(script.into()),
            ..Default::default()
        }
    }

    fn mqtt(r: Resolved) -> Box<MqttConfig> {
        match r.run.sink {
            SinkConfig::Mqtt(m) => m,
            _ => panic!("MQTT expected"),
        }
    }

    /// The flags as clap parses them, through the real `sml` command line.
    fn parse(line: &[&str]) -> Args {
        let cli = crate::cli::Cli::try_parse_from(line).unwrap();
        match cli.command {
            crate::cli::Command::Run(a) => *a,
            _ => panic!("run expected"),
        }
    }

    #[test]
    fn the_seed_command_resolves_to_tasmotas_topics() {
        let mut a = args("meters/sx631.sml");
        a.ports = vec!["1=/dev/ttyUSB0".into()];
        a.broker = vec!["mqtt://127.0.0.1:1884".into()];
        a.topic = Some("myelectricmeter".into());
        a.full_topic = Some("home1/%prefix%/%topic%/".into());
        let r = resolve(a, None).unwrap();
        assert_eq!(r.run.engine.teleperiod, TELEPERIOD_DEFAULT);
        let m = mqtt(r);
        assert_eq!(m.topics.sensor, "home1/tele/myelectricmeter/SENSOR");
        assert_eq!(m.client_id, "sml-myelectricmeter");
        assert_eq!(m.qos, rumqttc::QoS::AtLeastOnce);
    }

    #[test]
    fn stale_after_is_auto_unless_given_and_zero_means_never() {
        let with = |secs: Option<u64>| {
            let mut a = args("meters/sx631.sml");
            a.stale_after = secs;
            resolve(a, None).unwrap().run.engine.stale_after
        };
        assert_eq!(with(None), StaleAfter::Auto);
        assert_eq!(with(Some(0)), StaleAfter::Never);
        assert_eq!(with(Some(45)), StaleAfter::After(Duration::from_secs(45)));
    }

    #[test]
    fn the_topic_defaults_to_the_scripts_name() {
        let mut a = args("meters/sx631.sml");
        a.broker = vec!["mqtt://localhost".into()];
        assert_eq!(
            mqtt(resolve(a, None).unwrap()).topics.sensor,
            "tele/sx631/SENSOR"
        );
    }

    #[test]
    fn teleperiod_outside_tasmotas_range_is_refused() {
        for bad in [9, 3601] {
            let mut a = args("x.sml");
            a.teleperiod = Some(bad);
            let e = resolve(a, None).err().unwrap().to_string();
            assert!(
                e.contains("10 to 3600") && e.contains(&bad.to_string()),
                "{e}"
            );
        }
    }

    #[test]
    fn a_replay_speed_that_would_overflow_the_clock_is_refused_quoting_it() {
        let mut a = args("x.sml");
        a.replay_speed = Some("1e-300".into());
        let e = format!("{:#}", resolve(a, None).err().unwrap());
        assert!(
            e.contains("--replay-speed") && e.contains("'1e-300'"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_capture_is_refused_before_the_run_quoting_the_port() {
        let mut a = args("x.sml");
        a.ports = vec!["1=file:/nonexistent/missing.txt".into()];
        let e = format!("{:#}", resolve(a, None).err().unwrap());
        assert!(e.contains("--port 1=file:/nonexistent/missing.txt"), "{e}");
    }

    #[test]
    fn a_bad_port_is_quoted_as_written() {
        let mut a = args("x.sml");
        a.ports = vec!["one=/dev/ttyUSB0".into()];
        let e = format!("{:#}", resolve(a, None).err().unwrap());
        assert!(e.contains("'one=/dev/ttyUSB0'"), "{e}");
    }

    #[test]
    fn a_password_comes_from_the_environment_and_needs_a_user() {
        let mut a = args("x.sml");
        a.broker = vec!["mqtt://localhost".into()];
        let e = resolve(a, Some("pw".into())).err().unwrap().to_string();
        assert!(e.contains("no --user") && !e.contains("pw\""), "{e}");
        let mut a = args("x.sml");
        a.broker = vec!["mqtt://localhost".into()];
        a.user = Some("u".into());
        let m = mqtt(resolve(a, Some("pw".into())).unwrap());
        assert_eq!(m.password.unwrap().expose(), "pw");
    }

    #[test]
    fn several_brokers_come_from_repeated_flags_or_a_list_in_the_file() {
        let a = parse(&[
            "sml",
            "run",
            "x.sml",
            "--broker",
            "mqtt://a:1883",
            "--broker",
            "mqtt://b:1884",
        ]);
        let m = mqtt(resolve(a, None).unwrap());
        let hosts: Vec<(String, u16)> = m
            .brokers()
            .iter()
            .map(|b| (b.host.clone(), b.port))
            .collect();
        assert_eq!(hosts, [("a".into(), 1883), ("b".into(), 1884)]);
        let file: Args =
            toml::from_str("brokers = [\"mqtt://a\", \"mqtt://b\", \"mqtt://c\"]\n").unwrap();
        assert_eq!(file.broker.len(), 3);
        let file: Args = toml::from_str("broker = \"mqtt://a\"\n").unwrap();
        assert_eq!(file.broker, ["mqtt://a"]);
        // The command line's list replaces the file's.
        let m = parse(&["sml", "run", "--broker", "mqtt://z"]).over(file, Path::new("/"));
        assert_eq!(m.broker, ["mqtt://z"]);
    }

    #[test]
    fn a_broker_list_mixing_tls_and_plain_text_is_refused_quoting_the_odd_one() {
        let mut a = args("x.sml");
        a.broker = vec!["mqtts://a".into(), "mqtt://b:1883".into()];
        let e = format!("{:#}", resolve(a, None).err().unwrap());
        assert!(
            e.contains("--broker mqtt://b:1883") && e.contains("mqtts://a"),
            "{e}"
        );
        let mut a = args("x.sml");
        a.broker = vec!["mqtt://a".into(), "mqtt://u:pw@b".into()];
        let e = format!("{:#}", resolve(a, None).err().unwrap());
        assert!(
            e.contains("credentials do not go") && !e.contains("pw"),
            "{e}"
        );
    }

    #[test]
    fn a_shard_has_its_own_topic_and_client_id_and_bad_shards_are_quoted() {
        let mut a = args("meters/house.sml");
        a.broker = vec!["mqtt://a".into()];
        a.shard = Some("2/3".into());
        let r = resolve(a, None).unwrap();
        assert_eq!(r.shard, Some(Shard { k: 2, n: 3 }));
        let m = mqtt(r);
        assert_eq!(
            (m.topics.sensor.as_str(), m.client_id.as_str()),
            ("tele/house-2/SENSOR", "sml-house-2")
        );
        let mut a = args("meters/house.sml");
        a.broker = vec!["mqtt://a".into()];
        a.shard = Some("1/3".into());
        a.topic = Some("house".into());
        let m = mqtt(resolve(a, None).unwrap());
        assert_eq!(
            (m.topics.sensor.as_str(), m.client_id.as_str()),
            ("tele/house/SENSOR", "sml-house-1")
        );
        for bad in ["3/3", "1/0", "one/3"] {
            let mut a = args("x.sml");
            a.shard = Some(bad.into());
            let e = format!("{:#}", resolve(a, None).err().unwrap());
            assert!(e.starts_with(&format!("--shard: '{bad}'")), "{e}");
        }
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
        let file: Args = toml::from_str(
            r#"
            script = "meters/sx631.sml"
            broker = "mqtt://broker:1883"
            topic = "fromfile"
            teleperiod = 60
            stale-after = 0
            every-telegram = true
            [port]
            1 = "/dev/ttyUSB0"
            2 = "file:cap.txt"
            3 = "file:caps/three.txt"
            "#,
        )
        .unwrap();
        let flags = parse(&[
            "sml",
            "run",
            "--topic",
            "fromflag",
            "--port",
            "2=tcp://h:2000",
            "--stale-after",
            "90",
        ]);
        let m = flags.over(file, Path::new("/etc/sml"));
        assert_eq!(m.script, Some(PathBuf::from("/etc/sml/meters/sx631.sml")));
        assert_eq!(m.topic.as_deref(), Some("fromflag"));
        assert_eq!(m.broker, ["mqtt://broker:1883"]);
        assert_eq!(m.teleperiod, Some(60));
        assert_eq!(m.stale_after, Some(90));
        assert!(m.every_telegram);
        assert_eq!(
            m.ports,
            vec![
                "1=/dev/ttyUSB0".to_string(),
                "3=file:/etc/sml/caps/three.txt".to_string(),
                "2=tcp://h:2000".to_string()
            ]
        );
    }

    #[test]
    fn every_long_flag_is_also_a_key_of_the_config_file() {
        let file: Args = toml::from_str(
            r#"
            script = "s.sml"
            broker = "mqtts://b:8883"
            ca-file = "ca.pem"
            cert-file = "c.pem"
            key-file = "k.pem"
            user = "u"
            password-file = "pw"
            client-id = "c"
            topic = "t"
            full-topic = "%prefix%/%topic%/"
            qos = 0
            keep-alive = 60
            mqtt-retry = 20
            teleperiod = 10
            stale-after = 30
            every-telegram = false
            replay-speed = "max"
            spool = "spool"
            queue-size = 5
            [port]
            1 = "/dev/ttyUSB0"
            "#,
        )
        .unwrap();
        let m = Args::default().over(file, Path::new("/b"));
        assert_eq!(m.ca_file, Some(PathBuf::from("/b/ca.pem")));
        assert_eq!(m.password_file, Some(PathBuf::from("/b/pw")));
        assert_eq!(m.spool, Some(PathBuf::from("/b/spool")));
        assert_eq!(
            (m.qos, m.keep_alive, m.mqtt_retry, m.queue_size),
            (Some(0), Some(60), Some(20), Some(5))
        );
        assert_eq!(m.replay_speed.as_deref(), Some("max"));
        assert_eq!(m.stale_after, Some(30));
    }

    #[test]
    fn discovery_and_http_are_keys_of_the_config_file_and_flags() {
        let file: Args = toml::from_str(
            r#"
            ha-discovery = true
            ha-prefix = "ha"
            tasmota-discovery = true
            http = "127.0.0.1:0"
            http-password-file = "web.pw"
            "#,
        )
        .unwrap();
        let m = Args::default().over(file, Path::new("/b"));
        assert!(m.ha_discovery && m.tasmota_discovery);
        assert_eq!(m.ha_prefix.as_deref(), Some("ha"));
        assert_eq!(m.http.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(m.http_password_file, Some(PathBuf::from("/b/web.pw")));
        let flags = parse(&["sml", "run", "--ha-discovery", "--http", "8080"]);
        assert!(flags.ha_discovery);
        assert_eq!(flags.http.as_deref(), Some("8080"));
    }

    #[test]
    fn discovery_resolves_with_a_broker_and_is_refused_without_one() {
        let mut a = args("meters/sx631.sml");
        a.ha_discovery = true;
        let e = resolve(a, None).err().unwrap().to_string();
        assert!(e.contains("--ha-discovery needs --broker"), "{e}");
        let mut a = args("meters/sx631.sml");
        a.broker = vec!["mqtt://localhost".into()];
        a.ha_discovery = true;
        a.ha_prefix = Some("home/+".into());
        let e = resolve(a, None).err().unwrap().to_string();
        assert!(e.contains("--ha-prefix 'home/+'"), "{e}");
        let mut a = args("meters/sx631.sml");
        a.broker = vec!["mqtt://localhost".into()];
        a.ha_discovery = true;
        let d = resolve(a, None).unwrap().frontends.discovery.unwrap();
        assert_eq!(d.ha_prefix.as_deref(), Some("homeassistant"));
        assert_eq!(d.topic, "sx631");
        assert!(!d.tasmota);
    }

    #[test]
    fn an_http_password_file_needs_http_and_a_port_in_use_is_quoted() {
        let mut a = args("x.sml");
        a.http_password_file = Some("pw".into());
        let e = resolve(a, None).err().unwrap().to_string();
        assert!(e.contains("--http-password-file needs --http"), "{e}");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let mut a = args("x.sml");
        a.http = Some(addr.clone());
        let e = format!("{:#}", resolve(a, None).err().unwrap());
        assert!(e.contains(&format!("--http {addr}")), "{e}");
    }

    #[test]
    fn unknown_keys_in_the_config_file_are_errors() {
        assert!(toml::from_str::<Args>("brokr = \"x\"").is_err());
        assert!(toml::from_str::<Args>("password = \"x\"").is_err());
        // Flags that only make sense on the command line are not keys.
        assert!(toml::from_str::<Args>("config = \"x\"").is_err());
        assert!(toml::from_str::<Args>("verbose = 1").is_err());
    }

    fn file_error(text: &str) -> String {
        let e = toml::from_str::<Args>(text).unwrap_err();
        describe_toml_error(Path::new("/etc/sml.toml"), text, &e)
    }

    #[test]
    fn a_config_error_never_quotes_a_password() {
        let e = file_error("broker = \"mqtt://b\"\npassword = \"hunter2\"\n");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("/etc/sml.toml") && e.contains("line 2"), "{e}");
        assert!(
            e.contains("password-file"),
            "says where the password goes: {e}"
        );
        // A syntax error on a secret's line: toml's own message would quote the line.
        let e = file_error("mqtt-token = hunter2 and more\n");
        assert!(!e.contains("hunter2"), "{e}");
        let e = file_error("user = \"u\"\nsecret = 'hunter2'\n");
        assert!(!e.contains("hunter2") && e.contains("line 2"), "{e}");
        let e = file_error("broker = \"mqtt://u:hunter2@host\" x\n");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_config_error_on_an_ordinary_line_shows_it() {
        let e = file_error("broker = \"mqtt://b\"\nteleperiod = \"often\"\n");
        assert!(
            e.contains("line 2") && e.contains("teleperiod = \"often\""),
            "{e}"
        );
    }
}
