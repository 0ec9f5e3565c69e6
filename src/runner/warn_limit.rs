/*!
Rate-limited warnings. A meter that sends noise, or a link that keeps failing, must not write a
warning per telegram (1 MB of noise once wrote 3,128 lines): the first of a kind is logged in full,
the repeats within the next [`WarnLimiter::period`] are only counted, and the count is logged once the
period is over. Sans-IO like the decoders: driven with `now`, it owns no timer; the caller waits for
[`WarnLimiter::poll_timeout`] and calls [`WarnLimiter::handle_timeout`], so it is tested without
sleeping.
*/

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Repeats are summed up once a minute.
pub const WARN_PERIOD: Duration = Duration::from_secs(60);

/// One kind of warning's window: opened by the warning that was logged.
#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    suppressed: u64,
}

/// Counts repeats of each kind of warning `K` (one limiter per meter, so `K` is the kind).
#[derive(Debug)]
pub struct WarnLimiter<K> {
    period: Duration,
    windows: BTreeMap<K, Window>,
}

impl<K: Ord + Copy> WarnLimiter<K> {
    pub fn new(period: Duration) -> Self {
        WarnLimiter {
            period,
            windows: BTreeMap::new(),
        }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// A warning of kind `key` happened at `now`: true when it is to be logged, false when it is
    /// counted into the next summary.
    pub fn handle_warning(&mut self, now: Instant, key: K) -> bool {
        match self.windows.get_mut(&key) {
            Some(w) if now < w.opened + self.period => {
                w.suppressed += 1;
                false
            }
            // A window that is over with repeats still counted waits for `handle_timeout`, which
            // reports them before this warning opens the next window; logged here, it would appear
            // before the count of the ones that came earlier.
            Some(w) if w.suppressed > 0 => {
                w.suppressed += 1;
                false
            }
            _ => {
                self.windows.insert(
                    key,
                    Window {
                        opened: now,
                        suppressed: 0,
                    },
                );
                true
            }
        }
    }

    /// When the next summary is due (`None`: nothing was held back).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.windows
            .values()
            .filter(|w| w.suppressed > 0)
            .map(|w| w.opened + self.period)
            .min()
    }

    /// The summaries due at `now`: each kind with the number of warnings held back in its period.
    /// A kind that keeps happening gets a new window now, so its next count comes a period later.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<(K, u64)> {
        let period = self.period;
        let mut due = Vec::new();
        self.windows.retain(|key, w| {
            if now < w.opened + period {
                return true;
            }
            if w.suppressed == 0 {
                // Quiet for a whole period: the next one is logged in full.
                return false;
            }
            due.push((*key, w.suppressed));
            *w = Window {
                opened: now,
                suppressed: 0,
            };
            true
        });
        due
    }

    /// Every count still held back, whatever its period (the meter task is ending).
    pub fn flush(&mut self) -> Vec<(K, u64)> {
        let due = self
            .windows
            .iter()
            .filter(|(_, w)| w.suppressed > 0)
            .map(|(k, w)| (*k, w.suppressed))
            .collect();
        self.windows.clear();
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Kind {
        Rejected,
        Dropped,
    }

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn the_first_warning_is_logged_and_repeats_within_the_period_are_counted() {
        let t0 = Instant::now();
        let mut l = WarnLimiter::new(WARN_PERIOD);
        assert!(l.handle_warning(t0, Kind::Rejected));
        assert_eq!(l.poll_timeout(), None, "nothing held back yet");
        for s in 1..=59 {
            assert!(!l.handle_warning(at(t0, s), Kind::Rejected));
        }
        assert_eq!(l.poll_timeout(), Some(at(t0, 60)));
        assert_eq!(l.handle_timeout(at(t0, 59)), vec![]);
        assert_eq!(l.handle_timeout(at(t0, 60)), vec![(Kind::Rejected, 59)]);
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn a_steady_stream_of_warnings_gives_one_count_per_period() {
        let t0 = Instant::now();
        let mut l = WarnLimiter::new(WARN_PERIOD);
        let mut logged = 0;
        let mut counts = Vec::new();
        // Ten warnings a second for five minutes, the caller serving the limiter's deadline.
        for tenth in 0..3000u64 {
            let now = t0 + Duration::from_millis(tenth * 100);
            if l.poll_timeout().is_some_and(|d| d <= now) {
                counts.extend(l.handle_timeout(now));
            }
            if l.handle_warning(now, Kind::Rejected) {
                logged += 1;
            }
        }
        counts.extend(l.flush());
        assert_eq!(logged, 1, "only the first is logged in full");
        assert_eq!(counts.len(), 5, "{counts:?}");
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 2999);
    }

    #[test]
    fn kinds_are_limited_apart() {
        let t0 = Instant::now();
        let mut l = WarnLimiter::new(WARN_PERIOD);
        assert!(l.handle_warning(t0, Kind::Rejected));
        assert!(l.handle_warning(t0, Kind::Dropped));
        assert!(!l.handle_warning(t0, Kind::Dropped));
        assert_eq!(l.flush(), vec![(Kind::Dropped, 1)]);
    }

    #[test]
    fn a_kind_quiet_for_a_period_is_logged_in_full_again() {
        let t0 = Instant::now();
        let mut l = WarnLimiter::new(WARN_PERIOD);
        assert!(l.handle_warning(t0, Kind::Rejected));
        assert_eq!(l.handle_timeout(at(t0, 61)), vec![]);
        assert!(l.handle_warning(at(t0, 90), Kind::Rejected));
    }

    #[test]
    fn a_warning_after_an_unreported_period_waits_behind_the_count() {
        let t0 = Instant::now();
        let mut l = WarnLimiter::new(WARN_PERIOD);
        assert!(l.handle_warning(t0, Kind::Rejected));
        assert!(!l.handle_warning(at(t0, 1), Kind::Rejected));
        // The caller was busy past the deadline: the late one is counted with the others.
        assert!(!l.handle_warning(at(t0, 70), Kind::Rejected));
        assert_eq!(l.handle_timeout(at(t0, 70)), vec![(Kind::Rejected, 2)]);
    }
}
