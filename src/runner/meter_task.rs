/*!
The meter task: one tokio task per meter, the thin I/O adapter around the meter's sans-IO decoder
(as `quinn`'s `ConnectionDriver` is around `quinn-proto`). It waits on the link and on the decoder's
deadline, feeds bytes with `handle_bytes(now, ..)`, drains `poll_event`, writes what `poll_transmit`
gives, and sends telegrams to the engine over a channel.

A link that drops (pty closed, USB unplugged, bridge restarted) is reopened with exponential backoff,
and the engine is told, so the meter's values are not republished as if fresh. A fresh decoder is
made for every connection: half a telegram from before the drop must not be glued to the next one.
*/

use crate::script::model::MeterIndex;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;
use tracing::{debug, error, info, warn};

use crate::decode::{DecodeEvent, Decoder, Telegram, UnsupportedMeter};
use crate::link::{Link, ReplaySpeed, Source};
use crate::script::model::Meter;

/// Builds the decoder of a meter ([`crate::decode::decoder_for`] outside tests).
pub type DecoderFactory =
    Arc<dyn Fn(&Meter) -> Result<Box<dyn Decoder>, UnsupportedMeter> + Send + Sync>;

/// What a link driver reports to the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkEvent {
    pub meter: MeterIndex,
    /// When the bytes that completed the event were read.
    pub at: std::time::Instant,
    pub kind: LinkEventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LinkEventKind {
    /// The link is open.
    Up,
    Telegram(Telegram),
    /// The link dropped and will be reopened: the meter's values are stale.
    Down,
    /// The link ended for good (a finished replay).
    Ended,
}

/// Reconnect delays: doubling from `first` up to `cap`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

pub struct LinkDriver {
    pub meter: Arc<Meter>,
    pub source: Source,
    pub speed: ReplaySpeed,
    pub backoff: Backoff,
    pub decoders: DecoderFactory,
    pub events: mpsc::Sender<LinkEvent>,
}

/// How one connection of a link ended.
enum Ending {
    /// Dropped: open it again.
    Dropped(String),
    /// For good (replay finished).
    Finished,
    /// Nobody listens any more (shutdown).
    EngineGone,
}

impl LinkDriver {
    /// Run until the link ends for good or the engine goes away.
    pub async fn run(self) {
        let index = self.meter.index;
        let mut delay = self.backoff.first;
        loop {
            match Link::open(&self.source, &self.meter.serial, self.speed).await {
                // A capture that cannot be read will not appear by waiting.
                Err(e) if matches!(self.source, Source::Replay(_)) => {
                    error!(meter = index, "{e}");
                    self.send(LinkEventKind::Ended).await;
                    return;
                }
                Err(e) => warn!(
                    meter = index,
                    "cannot open {}: {e}; retrying in {:.1?}", self.source, delay
                ),
                Ok(mut link) => {
                    info!(
                        meter = index,
                        "link {} open ({})", self.source, self.meter.serial
                    );
                    let decoder = match (self.decoders)(&self.meter) {
                        Ok(d) => d,
                        Err(e) => {
                            warn!(meter = index, "{e}");
                            return;
                        }
                    };
                    if !self.send(LinkEventKind::Up).await {
                        return;
                    }
                    let (ending, got_bytes) = self.run_connection(&mut link, decoder).await;
                    if got_bytes {
                        delay = self.backoff.first;
                    }
                    match ending {
                        Ending::EngineGone => return,
                        Ending::Finished => {
                            info!(meter = index, "{} finished", self.source);
                            self.send(LinkEventKind::Ended).await;
                            return;
                        }
                        Ending::Dropped(why) => {
                            warn!(
                                meter = index,
                                "link {} dropped: {why}; reopening in {:.1?}", self.source, delay
                            );
                            if !self.send(LinkEventKind::Down).await {
                                return;
                            }
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.events.closed() => return,
            }
            delay = (delay * 2).min(self.backoff.cap);
        }
    }

    async fn send(&self, kind: LinkEventKind) -> bool {
        let ev = LinkEvent {
            meter: self.meter.index,
            at: std::time::Instant::now(),
            kind,
        };
        self.events.send(ev).await.is_ok()
    }

    /// Feed one open link to the decoder until it ends; also says whether any byte arrived.
    async fn run_connection(
        &self,
        link: &mut Link,
        mut decoder: Box<dyn Decoder>,
    ) -> (Ending, bool) {
        let mut buf = vec![0u8; 4096];
        let mut got_bytes = false;
        // A capture cannot be asked: its decoder is never told of requests, so it reads the replies
        // in the capture as answers to the request blocks in turn (Modbus).
        let can_ask = !link.ends_for_good();
        loop {
            while let Some(request) = can_ask
                .then(|| decoder.poll_transmit(std::time::Instant::now()))
                .flatten()
            {
                debug!(
                    meter = self.meter.index,
                    "sending {} request bytes",
                    request.len()
                );
                if let Err(e) = link.write_all(&request).await {
                    return (Ending::Dropped(format!("write: {e}")), got_bytes);
                }
            }
            let deadline = decoder.poll_timeout().map(TokioInstant::from_std);
            tokio::select! {
                read = link.read(&mut buf) => match read {
                    Ok(0) if link.ends_for_good() => {
                        decoder.handle_end();
                        if !self.drain(decoder.as_mut()).await {
                            return (Ending::EngineGone, got_bytes);
                        }
                        return (Ending::Finished, got_bytes);
                    }
                    Ok(0) => return (Ending::Dropped("closed by the other end".into()), got_bytes),
                    Ok(n) => {
                        got_bytes = true;
                        decoder.handle_bytes(std::time::Instant::now(), &buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return (Ending::Dropped(e.to_string()), got_bytes),
                },
                _ = sleep_until_opt(deadline) => decoder.handle_timeout(std::time::Instant::now()),
                _ = self.events.closed() => return (Ending::EngineGone, got_bytes),
            }
            if !self.drain(decoder.as_mut()).await {
                return (Ending::EngineGone, got_bytes);
            }
        }
    }

    /// Pass the decoder's events on; false when the engine is gone.
    async fn drain(&self, decoder: &mut dyn Decoder) -> bool {
        let meter = self.meter.index;
        while let Some(ev) = decoder.poll_event() {
            match ev {
                DecodeEvent::Telegram(t) => {
                    if !self.send(LinkEventKind::Telegram(t)).await {
                        return false;
                    }
                }
                DecodeEvent::Discarded { bytes } => {
                    debug!(meter, "skipped {bytes} bytes looking for a telegram")
                }
                DecodeEvent::Error(e) => {
                    let s = decoder.stats();
                    warn!(
                        meter,
                        "telegram rejected: {e} ({} CRC errors, {} rejected so far)",
                        s.crc_errors,
                        s.rejected
                    );
                }
            }
        }
        true
    }
}

async fn sleep_until_opt(deadline: Option<TokioInstant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
