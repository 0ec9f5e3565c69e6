/*!
Running under systemd (`packaging/sml.service`, `Type=notify`): what the service manager needs
from the process, and nothing else.

- **Readiness and liveness** go to `$NOTIFY_SOCKET` (the `sd-notify` crate: one datagram per call,
  a no-op without the variable, so `sml run` in a terminal is unchanged). `READY=1` once the script
  compiled and the links and the publisher run; `WATCHDOG=1` from the engine loop itself, at half
  of `$WATCHDOG_USEC`, so a loop that is stuck stops the pings and systemd restarts the service;
  `STATUS=` a one-line summary; `RELOADING=1` on SIGHUP, `STOPPING=1` on the way out.
- **Log levels in the journal**: with `$JOURNAL_STREAM` naming our stderr, each log line starts
  with its syslog priority (`<4>` for a warning, sd-daemon(3)'s convention) and carries no
  timestamp (the journal keeps its own), so `journalctl -p warning -u sml` works.

Notification failures are never errors of the run: systemd not listening is not a reason to stop
reading meters. They are logged at debug level.
*/

use std::time::Duration;

use sd_notify::NotifyState;

/// How often the engine loop reports when the service manager asked for no watchdog: the
/// `STATUS=` line stays this fresh.
const STATUS_EVERY: Duration = Duration::from_secs(60);

/// Whether a service manager listens at all (`$NOTIFY_SOCKET`).
pub fn supervised() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// How often the engine loop must call [`heartbeat`]: half of `$WATCHDOG_USEC` when systemd
/// watches us (sd_watchdog_enabled(3) advises pinging at half the timeout), [`STATUS_EVERY`] for the
/// status line when it only listens, `None` outside systemd.
pub fn heartbeat_period() -> Option<Duration> {
    watchdog_period().or_else(|| supervised().then_some(STATUS_EVERY))
}

/// Half of `$WATCHDOG_USEC`, when the watchdog is meant for this process (`$WATCHDOG_PID`).
fn watchdog_period() -> Option<Duration> {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    // Never below a millisecond: a zero interval would panic tokio's `interval`.
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// The engine loop is alive: `WATCHDOG=1` (when watched) and the current status.
pub fn heartbeat(status: &str) {
    if watchdog_period().is_some() {
        send(&[NotifyState::Watchdog, NotifyState::Status(status)]);
    } else {
        send(&[NotifyState::Status(status)]);
    }
}

/// Started (or restarted after a reload): the script compiled, the links and the publisher run.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// SIGHUP arrived: the script and configuration are being read again. systemd 253 and newer want
/// the monotonic time beside it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// A reload that was refused: the old script keeps running, and is ready again.
pub fn reload_refused(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// On the way out (SIGTERM, Ctrl-C, the links ended): the publisher drains.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

fn send(states: &[NotifyState]) {
    if !supervised() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!("telling systemd {states:?}: {e}");
    }
}

/// Whether stderr is the journal's stream: `$JOURNAL_STREAM` is `DEVICE:INODE` of it, and only
/// counts when it is still our stderr (a shell that redirected stderr inherits the variable).
pub fn stderr_is_journal() -> bool {
    names_stderr(std::env::var_os("JOURNAL_STREAM").as_deref())
}

/// Whether `journal_stream` (`DEVICE:INODE`) is this process's stderr.
fn names_stderr(journal_stream: Option<&std::ffi::OsStr>) -> bool {
    let Some((dev, ino)) = journal_stream
        .and_then(|v| v.to_str())
        .and_then(|v| v.split_once(':'))
    else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    stderr_id().is_some_and(|id| id == (dev, ino))
}

/// stderr's device and inode; std's metadata gives u64s on every target (a Pi's 32-bit too).
fn stderr_id() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let m = std::fs::File::from(fd).metadata().ok()?;
    Some((m.dev(), m.ino()))
}

/// A script diagnostic (several lines: the message, the source line, a caret) on stderr; under
/// the journal each line gets the priority of its severity, as the log lines do.
pub fn eprint_diagnostic(severity: crate::script::Severity, text: &str) {
    if !stderr_is_journal() {
        eprint!("{text}");
        return;
    }
    let priority = match severity {
        crate::script::Severity::Error => syslog_priority(tracing::Level::ERROR),
        crate::script::Severity::Warning => syslog_priority(tracing::Level::WARN),
        crate::script::Severity::Note => syslog_priority(tracing::Level::INFO),
    };
    for line in text.lines() {
        eprintln!("<{priority}>{line}");
    }
}

/// Log lines for the journal: `<priority>message`, without a timestamp or ANSI colours.
pub struct JournalFormat;

/// syslog(3) priorities of the tracing levels (sd-daemon(3): `<3>` error ... `<7>` debug).
pub fn syslog_priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        tracing::Level::DEBUG | tracing::Level::TRACE => 7,
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = syslog_priority(*event.metadata().level());
        // The journal splits a message at newlines and gives the later lines the default
        // priority: each line gets the prefix.
        let mut message = String::new();
        ctx.field_format().format_fields(
            tracing_subscriber::fmt::format::Writer::new(&mut message),
            event,
        )?;
        for line in message.lines() {
            writeln!(writer, "<{priority}>{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_the_syslog_priorities_journald_reads() {
        assert_eq!(syslog_priority(tracing::Level::ERROR), 3);
        assert_eq!(syslog_priority(tracing::Level::WARN), 4);
        assert_eq!(syslog_priority(tracing::Level::INFO), 6);
        assert_eq!(syslog_priority(tracing::Level::DEBUG), 7);
    }

    #[test]
    fn each_line_of_a_message_gets_its_priority_and_no_timestamp() {
        use std::io::Write;
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .event_format(JournalFormat)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("meter 1: bad CRC\nat byte 12");
            tracing::info!("ready");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "<4>meter 1: bad CRC\n<4>at byte 12\n<6>ready\n");
    }

    #[test]
    fn only_a_journal_stream_naming_our_stderr_counts() {
        use std::ffi::OsStr;
        let (dev, ino) = stderr_id().unwrap();
        assert!(names_stderr(Some(OsStr::new(&format!("{dev}:{ino}")))));
        // Another file (a shell redirected stderr and kept the variable), garbage, nothing.
        assert!(!names_stderr(Some(OsStr::new(&format!(
            "{dev}:{}",
            ino + 1
        )))));
        assert!(!names_stderr(Some(OsStr::new("journal"))));
        assert!(!names_stderr(None));
    }
}
