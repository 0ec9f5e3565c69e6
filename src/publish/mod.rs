/*!
Sinks for what the engine publishes: MQTT with Tasmota's topics, or stdout as JSON lines when no
broker is given. A sink is a push trait (as ripgrep's `Sink`): the engine hands over each
publication and never waits for a network.
*/

pub mod delivery;
pub mod discovery;
pub mod influx;
pub mod mqtt;
pub mod outbox;
pub mod spool;
pub mod stdout;
pub mod topics;

use std::time::SystemTime;

use crate::engine::scheduler::Publication;
use crate::script::model::MeterIndex;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("writing to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    #[error("the MQTT task has stopped")]
    MqttGone,
    #[error("the InfluxDB sink has stopped")]
    InfluxGone,
    /// The broker refused sml's login for a reason retrying will not fix.
    #[error("{0}")]
    BrokerRefused(String),
    #[error("spool {path}: {source}")]
    Spool {
        path: String,
        source: std::io::Error,
    },
    /// A spool sml will not use: someone else could make it publish what they wrote there.
    #[error("spool {path}: {why}")]
    SpoolUnsafe { path: String, why: String },
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Where publications go. `publish` must not block on a network.
pub trait Sink {
    fn publish(&mut self, p: Publication) -> Result<(), PublishError>;

    /// Meter `meter`'s telegram was read at `at`, before the publications it causes. A sink that
    /// stamps values with their read time (InfluxDB) keeps it; the others need not.
    fn handle_read(&mut self, _meter: MeterIndex, _at: SystemTime) {}
}

/// A sink that keeps everything, for tests of the engine and the run loop.
#[derive(Debug, Default, Clone)]
pub struct RecordingSink {
    pub published: std::sync::Arc<std::sync::Mutex<Vec<Publication>>>,
}

impl Sink for RecordingSink {
    fn publish(&mut self, p: Publication) -> Result<(), PublishError> {
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(p);
        Ok(())
    }
}

/// Every publication to each of several sinks (MQTT and InfluxDB side by side).
pub struct FanOut(pub Vec<Box<dyn Sink + Send>>);

impl Sink for FanOut {
    fn publish(&mut self, p: Publication) -> Result<(), PublishError> {
        let Some((last, others)) = self.0.split_last_mut() else {
            return Ok(());
        };
        for sink in others {
            sink.publish(p.clone())?;
        }
        last.publish(p)
    }

    fn handle_read(&mut self, meter: MeterIndex, at: SystemTime) {
        for sink in &mut self.0 {
            sink.handle_read(meter, at);
        }
    }
}
