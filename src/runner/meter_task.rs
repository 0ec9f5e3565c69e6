/*!
The meter task: one tokio task per meter, the thin I/O adapter around the meter's sans-IO decoder
(as `quinn`'s `ConnectionDriver` is around `quinn-proto`). It waits on the link and on the decoder's
deadline, feeds bytes with `handle_bytes(now, ..)`, drains `poll_event`, writes what `poll_transmit`
gives, and sends telegrams to the engine over a channel.

A link that drops (pty closed, USB unplugged, bridge restarted) is reopened with the one reconnect
policy ([`crate::backoff`]), and the engine is told, so the meter's values are not republished as if
fresh. A fresh decoder is made for every connection: half a telegram from before the drop must not be
glued to the next one. A serial device that is not there (yet) is waited for, said once.

This is the only place where bytes meet a decoder (`link/` knows no protocol), and the only place
that warns about a meter's bytes: its warnings go through a [`WarnLimiter`], so a meter sending
noise writes one line and then a count a minute, not a line per rejected telegram.
*/

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;
use tracing::{debug, info, warn};

use super::warn_limit::{WarnLimiter, WARN_PERIOD};
use crate::backoff::{Backoff, Retry};
use crate::decode::{DecodeEvent, Decoder, RejectKind, Telegram, UnsupportedMeter};
use crate::link::{Link, ReplaySpeed, Source};
use crate::script::model::{Meter, MeterIndex};

/// Builds the decoder of a meter ([`crate::decode::decoder_for`] outside tests).
pub type DecoderFactory =
    Arc<dyn Fn(&Meter) -> Result<Box<dyn Decoder>, UnsupportedMeter> + Send + Sync>;

/// What a link driver reports to the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkEvent {
    pub meter: MeterIndex,
    /// When the bytes that completed the event were read.
    pub at: Instant,
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
    /// The link cannot work and waiting will not help (a capture that cannot be read): the run
    /// fails with this reason, which quotes the user's `--port`.
    Failed(String),
}

/// The warnings a meter task rate-limits, each kind on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Warning {
    CannotOpen,
    Dropped,
    /// Each kind of rejection on its own: a first bad CRC is news after a run of truncations.
    Rejected(RejectKind),
}

impl Warning {
    /// How a count of them reads: "12 more {telegrams rejected}".
    fn plural(self) -> &'static str {
        match self {
            Warning::CannotOpen => "failed opens",
            Warning::Dropped => "link drops",
            Warning::Rejected(RejectKind::BadCrc) => "telegrams rejected for a bad CRC",
            Warning::Rejected(RejectKind::MissingCrc) => "telegrams rejected for a missing CRC",
            Warning::Rejected(RejectKind::Truncated) => "truncated telegrams rejected",
            Warning::Rejected(RejectKind::TooLong) => "overlong telegrams rejected",
            Warning::Rejected(RejectKind::Malformed) => "malformed telegrams rejected",
            Warning::Rejected(RejectKind::NoAnswer) => "requests unanswered",
        }
    }
}

/// What the script's hooks ask of one meter's task (from the engine loop, over the meter's channel).
#[derive(Debug, Clone, PartialEq)]
pub enum MeterCommand {
    /// `sensor53 r`: start the decoder afresh (half a telegram is not glued to the next).
    ResetDecoder,
    /// `sml(m 0 baud)`, `sml(-m 1 "2400:8E1")`: after what was sent has left.
    Framing {
        baud: u32,
        parity: Option<crate::script::model::Parity>,
    },
    /// `sml(m 1 "hex")`: these bytes, as they are.
    Send(Vec<u8>),
    /// `sml(m 3 svar)`: a one-off request for the decoder to send between its own
    /// ([`Decoder::queue_request`]); a decoder that sends none of its own has it sent now.
    Queue(crate::script::model::RequestBlock),
    /// `sensor53 d<m>`: log the meter's raw bytes, in hex, as they arrive (`false`: stop).
    DumpRaw(bool),
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
    /// Failed for good (a replay that cannot go on).
    Failed(String),
    /// Nobody listens any more (shutdown).
    EngineGone,
}

/// The state of one meter task besides the link: its reconnect delays and its warnings.
struct TaskState {
    label: String,
    retry: Retry,
    warnings: WarnLimiter<Warning>,
    /// "Waiting for the device" was said and the device has not appeared since.
    waiting_said: bool,
    /// The hooks' commands for this meter; they wait here while the link is down.
    commands: mpsc::Receiver<MeterCommand>,
    /// `sensor53 d`: the raw bytes go to the log.
    dump_raw: bool,
    /// The speed and parity the script last set: a reopened port gets them again, as the ESP's
    /// port never lost them.
    framing: Option<(u32, Option<crate::script::model::Parity>)>,
    /// "This link cannot change speed" was said for the protocol's speed changes.
    fixed_speed_said: bool,
}

impl Drop for TaskState {
    /// The counts still held back are told however the task ends: finished, or aborted at shutdown.
    fn drop(&mut self) {
        report_counts(&self.label, self.warnings.flush(), "before it stopped");
    }
}

/// Log the counts of warnings held back.
fn report_counts(label: &str, counts: Vec<(Warning, u64)>, when: &str) {
    for (kind, n) in counts {
        warn!("{label}: {n} more {} {when}", kind.plural());
    }
}

impl LinkDriver {
    /// How messages name the meter: with the binding as the user wrote it.
    fn label(&self) -> String {
        format!(
            "meter {} (--port {}={})",
            self.meter.index, self.meter.index, self.source
        )
    }

    /// Run until the link ends for good or the engine goes away.
    pub async fn run(self) {
        // Nobody sends: the sender is dropped at once, the branch stays quiet.
        self.run_with_commands(mpsc::channel(1).1).await
    }

    /// [`LinkDriver::run`], taking the script's commands for this meter from `commands`.
    pub async fn run_with_commands(self, commands: mpsc::Receiver<MeterCommand>) {
        let mut state = TaskState {
            label: self.label(),
            retry: self.backoff.retry(),
            warnings: WarnLimiter::new(WARN_PERIOD),
            waiting_said: false,
            commands,
            dump_raw: false,
            framing: None,
            fixed_speed_said: false,
        };
        self.run_links(&mut state).await;
    }

    async fn run_links(&self, state: &mut TaskState) {
        loop {
            match Link::open(&self.source, &self.meter.serial, self.speed).await {
                // A capture that cannot be read will not appear by waiting.
                Err(e) if matches!(self.source, Source::Replay(_)) => {
                    self.send(LinkEventKind::Failed(format!("{}: {e}", self.label())))
                        .await;
                    return;
                }
                Err(e) => self.cannot_open(state, &e),
                Ok(mut link) => {
                    if state.waiting_said {
                        info!("{}: {} has appeared", self.label(), self.source);
                        state.waiting_said = false;
                    }
                    info!("{}: open ({})", self.label(), self.meter.serial);
                    let decoder = match (self.decoders)(&self.meter) {
                        Ok(d) => d,
                        Err(e) => {
                            self.send(LinkEventKind::Failed(format!("{}: {e}", self.label())))
                                .await;
                            return;
                        }
                    };
                    if let Some((baud, parity)) = state.framing {
                        if let Err(e) = link.set_framing(baud, parity).await {
                            warn!(
                                "{}: setting the script's {baud} baud again: {e}",
                                self.label()
                            );
                        }
                    }
                    if !self.send(LinkEventKind::Up).await {
                        return;
                    }
                    let (ending, got_bytes) = self.run_connection(&mut link, decoder, state).await;
                    if got_bytes {
                        state.retry.reset();
                    }
                    match ending {
                        Ending::EngineGone => return,
                        Ending::Finished => {
                            info!("{}: capture finished", self.label());
                            self.send(LinkEventKind::Ended).await;
                            return;
                        }
                        Ending::Failed(why) => {
                            self.send(LinkEventKind::Failed(format!("{}: {why}", self.label())))
                                .await;
                            return;
                        }
                        Ending::Dropped(why) => {
                            if state
                                .warnings
                                .handle_warning(Instant::now(), Warning::Dropped)
                            {
                                warn!(
                                    "{}: link dropped: {why}; reopening in {:.1?}",
                                    self.label(),
                                    state.retry.peek()
                                );
                            } else {
                                debug!("{}: link dropped: {why}", self.label());
                            }
                            if !self.send(LinkEventKind::Down).await {
                                return;
                            }
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(state.retry.next_delay()) => {}
                _ = self.events.closed() => return,
            }
            // The backoff's cap is below the warning period: counts come at most that late.
            let due = state.warnings.handle_timeout(Instant::now());
            report_counts(&state.label, due, "in the last minute");
        }
    }

    /// An open that failed: a device that is not there is waited for (hot-plug) and said once;
    /// anything else is a rate-limited warning.
    fn cannot_open(&self, state: &mut TaskState, e: &crate::link::LinkError) {
        let delay = state.retry.peek();
        if let Source::Serial(path) = &self.source {
            if !path.exists() {
                if !state.waiting_said {
                    state.waiting_said = true;
                    warn!(
                        "{}: {} does not exist; waiting for it to appear (sml looks again at \
                         least every {:.0?})",
                        self.label(),
                        path.display(),
                        self.backoff.cap.max(self.backoff.first)
                    );
                } else {
                    debug!("{}: still waiting for {}", self.label(), path.display());
                }
                return;
            }
        }
        if state
            .warnings
            .handle_warning(Instant::now(), Warning::CannotOpen)
        {
            warn!(
                "{}: cannot open: {e}; retrying in {delay:.1?}",
                self.label()
            );
        } else {
            debug!(
                "{}: cannot open: {e}; retrying in {delay:.1?}",
                self.label()
            );
        }
    }

    async fn send(&self, kind: LinkEventKind) -> bool {
        let ev = LinkEvent {
            meter: self.meter.index,
            at: Instant::now(),
            kind,
        };
        self.events.send(ev).await.is_ok()
    }

    /// Feed one open link to the decoder until it ends; also says whether any byte arrived.
    async fn run_connection(
        &self,
        link: &mut Link,
        mut decoder: Box<dyn Decoder>,
        state: &mut TaskState,
    ) -> (Ending, bool) {
        let mut buf = vec![0u8; 4096];
        let mut got_bytes = false;
        // A capture cannot be asked: its decoder is never told of requests, so it reads the replies
        // in the capture as answers to the request blocks in turn (Modbus).
        let can_ask = !link.ends_for_good();
        // What a decoder knows before any byte (a pulse counter's stored count) goes out at once.
        if !self.drain(decoder.as_mut(), state).await {
            return (Ending::EngineGone, got_bytes);
        }
        loop {
            while let Some(request) = can_ask
                .then(|| decoder.poll_transmit(Instant::now()))
                .flatten()
            {
                debug!("{}: sending {} request bytes", self.label(), request.len());
                if let Err(e) = link.write_all(&request).await {
                    return (Ending::Dropped(format!("write: {e}")), got_bytes);
                }
            }
            // After the transmits: the link sends what was written at the old speed first. A
            // request may wait for the change (a sign-on must leave at 300 baud): poll again.
            if let Some(change) = can_ask.then(|| decoder.poll_framing()).flatten() {
                match link.set_framing(change.baud, None).await {
                    Ok(true) => debug!(
                        "{}: now {} baud for the meter's protocol",
                        self.label(),
                        change.baud
                    ),
                    // Back to the definition's own speed needs no change on a fixed link.
                    Ok(false)
                        if !state.fixed_speed_said && change.baud != self.meter.serial.baud =>
                    {
                        state.fixed_speed_said = true;
                        warn!(
                            "{}: the meter's protocol asks for {} baud, but this link cannot change \
                             its speed (a TCP bridge): set the bridge's speed, or ask for no switch \
                             (an IEC ACK block 063030300D0A)",
                            self.label(),
                            change.baud
                        );
                    }
                    Ok(false) => {}
                    Err(e) => {
                        return (
                            Ending::Dropped(format!("setting {} baud: {e}", change.baud)),
                            got_bytes,
                        )
                    }
                }
                continue;
            }
            let deadline = decoder.poll_timeout().map(TokioInstant::from_std);
            let counts_due = state.warnings.poll_timeout().map(TokioInstant::from_std);
            tokio::select! {
                read = link.read(&mut buf) => match read {
                    Ok(0) if link.ends_for_good() => {
                        decoder.handle_end();
                        if !self.drain(decoder.as_mut(), state).await {
                            return (Ending::EngineGone, got_bytes);
                        }
                        return (Ending::Finished, got_bytes);
                    }
                    Ok(0) => return (Ending::Dropped("closed by the other end".into()), got_bytes),
                    Ok(n) => {
                        got_bytes = true;
                        if state.dump_raw {
                            info!("{}: raw {}", self.label(), crate::hex::encode(&buf[..n]));
                        }
                        decoder.handle_bytes(Instant::now(), &buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // A replay's error (its timing) is not cured by reopening it.
                    Err(e) if link.ends_for_good() => return (Ending::Failed(e.to_string()), got_bytes),
                    Err(e) => return (Ending::Dropped(e.to_string()), got_bytes),
                },
                _ = crate::timer::sleep_until_opt(deadline) => decoder.handle_timeout(Instant::now()),
                _ = crate::timer::sleep_until_opt(counts_due) => {
                    let due = state.warnings.handle_timeout(Instant::now());
                    report_counts(&state.label, due, "in the last minute");
                }
                _ = self.events.closed() => return (Ending::EngineGone, got_bytes),
                Some(command) = state.commands.recv() => match command {
                    MeterCommand::ResetDecoder => match (self.decoders)(&self.meter) {
                        Ok(fresh) => decoder = fresh,
                        Err(e) => return (Ending::Failed(e.to_string()), got_bytes),
                    },
                    MeterCommand::Framing { baud, parity } => match link.set_framing(baud, parity).await {
                        Ok(true) => {
                            let parity = parity.or(state.framing.and_then(|(_, p)| p));
                            state.framing = Some((baud, parity));
                            info!("{}: now {baud} baud, as the script asked", self.label())
                        }
                        Ok(false) => debug!("{}: the script's {baud} baud has no meaning for this link", self.label()),
                        Err(e) => return (Ending::Dropped(format!("setting {baud} baud: {e}")), got_bytes),
                    },
                    MeterCommand::DumpRaw(on) => state.dump_raw = on,
                    MeterCommand::Queue(request) => {
                        if let Some(bytes) = decoder.queue_request(&request) {
                            debug!("{}: sending {} queued bytes for the script", self.label(), bytes.len());
                            if let Err(e) = link.write_all(&bytes).await {
                                return (Ending::Dropped(format!("write: {e}")), got_bytes);
                            }
                        }
                    }
                    MeterCommand::Send(bytes) => {
                        // Framed as Tasmota's SML_Write frames it: parity, CRC, stuffing.
                        let block = crate::script::model::RequestBlock { raw: false, bytes };
                        let bytes = crate::decode::request::frame_block(&self.meter, &block);
                        debug!("{}: sending {} bytes for the script", self.label(), bytes.len());
                        if let Err(e) = link.write_all(&bytes).await {
                            return (Ending::Dropped(format!("write: {e}")), got_bytes);
                        }
                    }
                },
            }
            if !self.drain(decoder.as_mut(), state).await {
                return (Ending::EngineGone, got_bytes);
            }
        }
    }

    /// Pass the decoder's events on; false when the engine is gone.
    async fn drain(&self, decoder: &mut dyn Decoder, state: &mut TaskState) -> bool {
        while let Some(ev) = decoder.poll_event() {
            match ev {
                DecodeEvent::Telegram(t) => {
                    if !self.send(LinkEventKind::Telegram(t)).await {
                        return false;
                    }
                }
                DecodeEvent::Discarded { bytes } => {
                    debug!(
                        "{}: skipped {bytes} bytes looking for a telegram",
                        self.label()
                    )
                }
                DecodeEvent::Error(e @ crate::decode::DecodeError::NoAnswer { .. }) => {
                    if state
                        .warnings
                        .handle_warning(Instant::now(), Warning::Rejected(e.kind()))
                    {
                        warn!(
                            "{}: {e}; asking again later ({} unanswered so far; repeats are \
                             counted, not logged, for a minute)",
                            self.label(),
                            decoder.stats().unanswered,
                        );
                    } else {
                        debug!("{}: {e}", self.label());
                    }
                }
                DecodeEvent::Error(e) => {
                    if state
                        .warnings
                        .handle_warning(Instant::now(), Warning::Rejected(e.kind()))
                    {
                        warn!(
                            "{}: telegram rejected: {e} ({} rejected so far; repeats are \
                             counted, not logged, for a minute)",
                            self.label(),
                            decoder.stats().rejections(),
                        );
                    } else {
                        debug!("{}: telegram rejected: {e}", self.label());
                    }
                }
            }
        }
        true
    }
}
