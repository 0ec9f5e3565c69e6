/*!
Getting every point into InfluxDB once, in order, across outages: a state machine with no I/O and
no clock of its own, as [`crate::publish::delivery`] is for MQTT. The adapter ([`super`]) feeds it
points (`handle_points`) and the server's answers (`handle_answer`), carries out the writes it asks
for ([`InfluxDelivery::poll_write`]) and wakes it at [`InfluxDelivery::poll_timeout`].

Points wait in the same [`Outbox`] as MQTT payloads (one entry per SENSOR payload, its lines with
their timestamps, journaled in the `--spool` directory), and leave only when InfluxDB has them.
They go in batches of up to [`BATCH_POINTS`] points, or whatever is queued [`LINGER`] after the
oldest arrived; one write at a time, so order is kept.

**What an answer means.** 2xx: written. A network error, 5xx, 401/403/404 (a restarted server, a
database or token not there yet), 408 or 429: nothing was written, retry the same batch with
backoff. A 4xx that says `partial write` (a field's type conflicts with what the database holds):
InfluxDB wrote every other point and names the refused field, so the batch is done, with one log
line quoting it. Any other 4xx refuses the batch for something in it: the batch is halved until
the point at fault is alone, and that one is dropped with its reason. A bad point never holds up
the points behind it, and never takes them down with it.
*/

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::backoff::{Backoff, Retry};
use crate::publish::outbox::Outbox;

/// Points per write at most (InfluxDB's documented sweet spot).
pub const BATCH_POINTS: usize = 5000;
/// A point waits at most this long for a batch to fill.
pub const LINGER: Duration = Duration::from_secs(1);
/// A refusal is logged at most once per this; the ones between are counted into the next.
pub const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(60);
/// The topic the outbox's entries carry: only these are taken back from the spool.
pub const OUTBOX_TOPIC: &str = "influx";

/// What the influx sink did, for the log at exit and the run's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InfluxReport {
    /// Points InfluxDB took.
    pub written: u64,
    /// Points InfluxDB refused (type conflict, bad point) and sml dropped.
    pub refused: u64,
    /// Payloads dropped because the queue was full while InfluxDB was away.
    pub dropped: u64,
    /// Payloads still queued at exit (in the spool when there is one).
    pub left_queued: usize,
}

/// How InfluxDB answered a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx.
    Written,
    /// Nothing written, and the same batch may succeed later: a network error, 5xx, 401, 403,
    /// 404, 408, 429.
    Unavailable(String),
    /// Any other 4xx, with the server's message.
    Refused { status: u16, message: String },
}

/// A write for the adapter to send: the lines of `entries` outbox entries from the oldest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub body: String,
    pub points: usize,
}

struct InFlight {
    /// Sequence numbers of the outbox entries in the write.
    seqs: Vec<u64>,
    points: usize,
}

pub struct InfluxDelivery {
    outbox: Outbox,
    retry: Retry,
    in_flight: Option<InFlight>,
    /// While InfluxDB is away: no write before this.
    backoff_until: Option<Instant>,
    /// When the oldest entry not yet written arrived (the linger's start).
    oldest_at: Option<Instant>,
    /// Entries per write at most: halved while a refused batch is searched for its bad point.
    max_entries: usize,
    /// The last entry of the refused batch being searched.
    searching_until: Option<u64>,
    /// Points queued, not yet written (for the batch size).
    queued_points: usize,
    /// The sink is gone: write what is queued without waiting for a batch to fill.
    flushing: bool,
    failures: u64,
    /// When a refusal was last logged, and the points refused since (not logged).
    refusal_logged_at: Option<Instant>,
    refusals_unlogged: u64,
    report: InfluxReport,
    /// `host:port`, for the log.
    server: String,
}

impl InfluxDelivery {
    pub fn new(outbox: Outbox, reconnect: Backoff, server: String, now: Instant) -> InfluxDelivery {
        let queued_points = (0..outbox.len())
            .filter_map(|i| outbox.get(i))
            .map(|e| count_points(&e.payload))
            .sum();
        let oldest_at = (!outbox.is_empty()).then_some(now);
        InfluxDelivery {
            retry: reconnect.retry(),
            outbox,
            in_flight: None,
            backoff_until: None,
            oldest_at,
            max_entries: usize::MAX,
            searching_until: None,
            queued_points,
            flushing: false,
            failures: 0,
            refusal_logged_at: None,
            refusals_unlogged: 0,
            report: InfluxReport::default(),
            server,
        }
    }

    /// Lines (`\n`-terminated, with their timestamps) for one payload.
    pub fn handle_points(&mut self, now: Instant, lines: String) {
        if lines.is_empty() {
            return;
        }
        self.queued_points += count_points(&lines);
        if let Some(old) = self.outbox.push(OUTBOX_TOPIC.into(), lines) {
            self.queued_points -= count_points(&old.payload);
            self.report.dropped += 1;
            let dropped = self.report.dropped;
            if dropped == 1 || dropped % 100 == 0 {
                warn!(
                    "InfluxDB queue full ({} payloads): dropped the oldest ({dropped} dropped so far)",
                    self.outbox.len()
                );
            }
        }
        self.oldest_at.get_or_insert(now);
    }

    /// Write what is queued without waiting for batches to fill (the run is ending).
    pub fn handle_flush(&mut self) {
        self.flushing = true;
    }

    /// The answer to the write [`Self::poll_write`] gave last.
    pub fn handle_answer(&mut self, now: Instant, answer: Answer) {
        let Some(flight) = self.in_flight.take() else {
            return;
        };
        match answer {
            Answer::Written => {
                if self.failures > 0 {
                    info!(
                        "InfluxDB {} is back; writing {} queued payloads",
                        self.server,
                        self.outbox.len()
                    );
                }
                self.failures = 0;
                self.retry.reset();
                self.report.written += flight.points as u64;
                self.done(&flight);
                // The search by halves ends once past the refused batch (its bad point may have
                // been the server's passing trouble after all).
                if self
                    .searching_until
                    .is_some_and(|end| flight.seqs.last().is_some_and(|&s| s >= end))
                {
                    self.end_search();
                }
            }
            Answer::Unavailable(why) => {
                self.failures += 1;
                let delay = self.retry.next_delay();
                // Said once when InfluxDB goes away; the retries go to the debug log.
                if self.failures == 1 {
                    warn!(
                        "InfluxDB {}: {why}; retrying in {delay:?}, {} payloads queued",
                        self.server,
                        self.outbox.len()
                    );
                } else {
                    debug!("InfluxDB {}: {why}; retrying in {delay:?}", self.server);
                }
                self.backoff_until = Some(now + delay);
            }
            Answer::Refused { status, message } if message.contains("partial write") => {
                // InfluxDB wrote the others; the message names the field and the point's
                // measurement ("field type conflict: input field \"x\" on measurement ...").
                let refused = dropped_count(&message).unwrap_or(1).min(flight.points);
                if let Some(earlier) = self.log_refusal(now, refused) {
                    warn!(
                        "InfluxDB {} refused {refused} of {} points ({status}): {message}; the \
                         other points were written{earlier}",
                        self.server, flight.points
                    );
                }
                self.report.refused += refused as u64;
                self.report.written += (flight.points - refused) as u64;
                self.done(&flight);
            }
            Answer::Refused { status, message } if flight.seqs.len() > 1 => {
                // Something in this batch is bad: find it by halves, the good ones go through.
                self.max_entries = flight.seqs.len() / 2;
                let last = flight.seqs.last().copied();
                self.searching_until = self.searching_until.max(last);
                debug!(
                    "InfluxDB refused a batch of {} points ({status}: {message}); retrying it in \
                     halves to find the bad one",
                    flight.points
                );
            }
            Answer::Refused { status, message } => {
                let first_line = self
                    .outbox
                    .position(flight.seqs[0])
                    .and_then(|i| self.outbox.get(i))
                    .map(|e| e.payload.lines().next().unwrap_or("").to_string())
                    .unwrap_or_default();
                if let Some(earlier) = self.log_refusal(now, flight.points) {
                    warn!(
                        "InfluxDB {} refused a point ({status}): {message}; dropped it: {}{earlier}",
                        self.server,
                        shorten(&first_line)
                    );
                }
                self.report.refused += flight.points as u64;
                self.done(&flight);
                self.end_search();
            }
        }
    }

    /// The next write to send, if one is due at `now`.
    pub fn poll_write(&mut self, now: Instant) -> Option<Write> {
        if self.in_flight.is_some() || self.outbox.is_empty() {
            return None;
        }
        if self.backoff_until.is_some_and(|t| now < t) {
            return None;
        }
        self.backoff_until = None;
        let full = self.queued_points >= BATCH_POINTS;
        let lingered = self.oldest_at.is_some_and(|t| now >= t + LINGER);
        let searching = self.max_entries < usize::MAX;
        if !(full || lingered || searching || self.flushing) {
            return None;
        }
        let mut body = String::new();
        let mut seqs = Vec::new();
        let mut points = 0;
        let mut i = 0;
        while let Some(e) = self.outbox.get(i) {
            let n = count_points(&e.payload);
            if !seqs.is_empty() && (points + n > BATCH_POINTS || seqs.len() >= self.max_entries) {
                break;
            }
            body.push_str(&e.payload);
            seqs.push(e.seq);
            points += n;
            i += 1;
        }
        self.in_flight = Some(InFlight { seqs, points });
        Some(Write { body, points })
    }

    /// When [`Self::poll_write`] may next have something (the linger's end, the backoff's).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight.is_some() || self.outbox.is_empty() {
            return None;
        }
        self.backoff_until.or(self.oldest_at.map(|t| t + LINGER))
    }

    /// Nothing queued, nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.outbox.is_empty()
    }

    pub fn report(&self) -> InfluxReport {
        InfluxReport {
            left_queued: self.outbox.len(),
            ..self.report.clone()
        }
    }

    pub fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    fn done(&mut self, flight: &InFlight) {
        for &seq in &flight.seqs {
            if let Some(e) = self.outbox.complete(seq) {
                self.queued_points -= count_points(&e.payload);
            }
        }
        // What is left waited since before this write: it keeps its start and goes without
        // lingering again.
        if self.outbox.is_empty() {
            self.oldest_at = None;
        }
    }

    /// Whether to log a refusal of `points` now (with what to add about the ones not logged), or
    /// count it for the next message: a meter whose every point conflicts writes one line a
    /// minute, not one a second.
    fn log_refusal(&mut self, now: Instant, points: usize) -> Option<String> {
        if self
            .refusal_logged_at
            .is_some_and(|t| now < t + REFUSAL_LOG_PERIOD)
        {
            self.refusals_unlogged += points as u64;
            return None;
        }
        self.refusal_logged_at = Some(now);
        let earlier = std::mem::take(&mut self.refusals_unlogged);
        Some(if earlier > 0 {
            format!(" ({earlier} more points refused since the last message)")
        } else {
            String::new()
        })
    }

    fn end_search(&mut self) {
        self.max_entries = usize::MAX;
        self.searching_until = None;
    }
}

fn count_points(lines: &str) -> usize {
    lines.bytes().filter(|&b| b == b'\n').count()
}

/// InfluxDB's `... dropped=N` at the end of a partial-write message.
fn dropped_count(message: &str) -> Option<usize> {
    let at = message.rfind("dropped=")?;
    let digits: String = message[at + 8..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A point for the log: its first 200 characters.
fn shorten(line: &str) -> String {
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(now: Instant) -> InfluxDelivery {
        InfluxDelivery::new(
            Outbox::new(100),
            Backoff {
                first: Duration::from_secs(1),
                cap: Duration::from_secs(8),
            },
            "test:8086".into(),
            now,
        )
    }

    fn point(n: u32) -> String {
        format!("m,meter=1 v={n} {n}\n")
    }

    #[test]
    fn points_wait_for_the_linger_then_go_in_one_write() {
        let t0 = Instant::now();
        let mut d = delivery(t0);
        d.handle_points(t0, point(1));
        d.handle_points(t0, point(2));
        assert_eq!(d.poll_write(t0), None);
        assert_eq!(d.poll_timeout(), Some(t0 + LINGER));
        let w = d.poll_write(t0 + LINGER).unwrap();
        assert_eq!(w.body, point(1) + point(2).as_str());
        assert_eq!(w.points, 2);
        // One write at a time.
        d.handle_points(t0 + LINGER, point(3));
        assert_eq!(d.poll_write(t0 + 2 * LINGER), None);
        d.handle_answer(t0 + LINGER, Answer::Written);
        assert_eq!(d.report().written, 2);
        assert_eq!(d.poll_write(t0 + 2 * LINGER).unwrap().body, point(3));
    }

    #[test]
    fn a_full_batch_goes_at_once_and_holds_at_most_the_batch_size() {
        let t0 = Instant::now();
        let mut d = delivery(t0);
        let many: String = (0..BATCH_POINTS as u32 - 1).map(point).collect();
        d.handle_points(t0, many);
        assert_eq!(d.poll_write(t0), None);
        d.handle_points(t0, point(1) + point(2).as_str());
        // The second payload would make the write too big: it waits for the next one.
        let w = d.poll_write(t0).unwrap();
        assert_eq!(w.points, BATCH_POINTS - 1);
    }

    #[test]
    fn an_unavailable_server_gets_the_same_batch_again_after_the_backoff() {
        let t0 = Instant::now();
        let mut d = delivery(t0);
        d.handle_points(t0, point(1));
        d.handle_flush();
        let first = d.poll_write(t0).unwrap();
        d.handle_answer(t0, Answer::Unavailable("connection refused".into()));
        assert_eq!(d.poll_write(t0), None);
        assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        let again = d.poll_write(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(again, first);
        d.handle_answer(t0, Answer::Unavailable("connection refused".into()));
        // Doubling.
        assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(d.report().left_queued, 1);
    }

    #[test]
    fn a_partial_write_completes_the_batch_and_counts_the_refused_point() {
        let t0 = Instant::now();
        let mut d = delivery(t0);
        for n in 0..3 {
            d.handle_points(t0, point(n));
        }
        d.handle_flush();
        d.poll_write(t0).unwrap();
        d.handle_answer(
            t0,
            Answer::Refused {
                status: 400,
                message: "partial write: field type conflict: input field \"v\" on measurement \
                          \"m\" is type string, already exists as type float dropped=1"
                    .into(),
            },
        );
        let r = d.report();
        assert_eq!((r.written, r.refused, r.left_queued), (2, 1, 0));
        assert!(d.is_idle());
    }

    #[test]
    fn a_refused_batch_is_halved_until_the_bad_point_is_dropped_alone() {
        let t0 = Instant::now();
        let mut d = delivery(t0);
        for n in 0..8 {
            d.handle_points(t0, point(n));
        }
        d.handle_flush();
        let bad = point(5);
        let mut writes = 0;
        while let Some(w) = d.poll_write(t0) {
            writes += 1;
            assert!(writes < 20, "no progress");
            let answer = if w.body.contains(&bad) {
                Answer::Refused {
                    status: 400,
                    message: "unable to parse".into(),
                }
            } else {
                Answer::Written
            };
            d.handle_answer(t0, answer);
        }
        let r = d.report();
        assert_eq!((r.written, r.refused, r.left_queued), (7, 1, 0));
    }

    #[test]
    fn a_full_queue_drops_the_oldest_payload_and_counts_it() {
        let t0 = Instant::now();
        let mut d = InfluxDelivery::new(Outbox::new(2), Backoff::default(), "test:8086".into(), t0);
        for n in 0..3 {
            d.handle_points(t0, point(n));
        }
        d.handle_flush();
        let w = d.poll_write(t0).unwrap();
        assert_eq!(w.body, point(1) + point(2).as_str());
        assert_eq!(d.report().dropped, 1);
    }

    #[test]
    fn refusals_are_logged_once_a_minute_and_the_rest_counted() {
        let t0 = Instant::now();
        let mut d = delivery(t0);
        assert_eq!(d.log_refusal(t0, 1).as_deref(), Some(""));
        assert_eq!(d.log_refusal(t0 + Duration::from_secs(1), 2), None);
        assert_eq!(d.log_refusal(t0 + Duration::from_secs(59), 1), None);
        let next = d.log_refusal(t0 + REFUSAL_LOG_PERIOD, 1).unwrap();
        assert!(next.contains("3 more points refused"), "{next}");
    }

    #[test]
    fn the_dropped_count_is_read_from_influxdbs_message() {
        assert_eq!(dropped_count("partial write: x dropped=3"), Some(3));
        assert_eq!(dropped_count("partial write"), None);
    }
}
