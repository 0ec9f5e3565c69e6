/*!
When a value stops being news: `--stale-after` and each meter's observed telegram interval.

Tasmota keeps a meter's last values for ever: a meter that stops sending on a live link goes on
being published as if it had just been read. sml leaves a value out of every payload once it has not
been refreshed for the meter's stale window, and names the meter in STATE as silent.

The window ([`StaleAfter`]):
- `Auto` (the default): 3 times the meter's own observed telegram interval, at least 10 s. The
  interval is the median of the last three gaps between its telegrams (with two gaps, the longer;
  before the second telegram there is none and the 10 s floor applies), so one late telegram neither
  widens nor narrows the window. Each line also keeps its own read interval the same way, and its
  window is the wider of the two: a meter that sends its values spread over several telegrams (a
  Modbus meter asked block by block) refreshes each value once per round, and a value read once a
  round stays fresh for three rounds.
- `After(d)`: a fixed window for every meter (`--stale-after SECS`).
- `Never` (`--stale-after 0`): Tasmota's behaviour; no value is ever left out, no meter is silent.

A dropped link does not count as a gap: the time until the meter is heard again says nothing about
its sending interval.
*/

use std::time::{Duration, Instant};

/// The shortest window `Auto` uses, and the window before a meter's interval is known.
pub const STALE_FLOOR: Duration = Duration::from_secs(10);
/// `Auto`'s window is this many of the meter's telegram intervals.
pub const STALE_INTERVALS: u32 = 3;

/// How long a value stays fresh without being refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StaleAfter {
    /// 3 x the meter's observed telegram interval, at least [`STALE_FLOOR`].
    #[default]
    Auto,
    /// Values never go stale (Tasmota's behaviour).
    Never,
    /// The same fixed window for every meter.
    After(Duration),
}

impl StaleAfter {
    /// `--stale-after SECS`: 0 means never.
    pub fn from_secs(secs: u64) -> StaleAfter {
        if secs == 0 {
            StaleAfter::Never
        } else {
            StaleAfter::After(Duration::from_secs(secs))
        }
    }
}

/// What the engine has seen of one meter's timing.
#[derive(Debug, Clone, Default)]
pub struct MeterActivity {
    /// The last telegram, for "silent".
    last_heard: Option<Instant>,
    /// The telegram the next gap is measured from; `None` after a dropped link.
    gap_from: Option<Instant>,
    /// The last (up to) three gaps, a ring.
    gaps: [Duration; 3],
    gap_count: usize,
    next_gap: usize,
}

impl MeterActivity {
    /// A telegram arrived at `now`.
    pub fn heard(&mut self, now: Instant) {
        if let Some(from) = self.gap_from {
            self.gaps[self.next_gap] = now.saturating_duration_since(from);
            self.next_gap = (self.next_gap + 1) % self.gaps.len();
            self.gap_count = (self.gap_count + 1).min(self.gaps.len());
        }
        self.gap_from = Some(now);
        self.last_heard = Some(now);
    }

    /// The link dropped: the silence until it is back is not a sending interval.
    pub fn link_down(&mut self) {
        self.gap_from = None;
    }

    pub fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    /// The meter's typical gap between telegrams, once two telegrams have arrived.
    pub fn typical_interval(&self) -> Option<Duration> {
        let g = &self.gaps;
        match self.gap_count {
            0 => None,
            1 => Some(g[0]),
            // Two gaps, one possibly late: the longer, so a value is not dropped too early.
            2 => Some(g[0].max(g[1])),
            _ => {
                let mut three = *g;
                three.sort();
                Some(three[1])
            }
        }
    }

    /// How long this meter's values stay fresh; `None` for ever.
    pub fn window(&self, policy: StaleAfter) -> Option<Duration> {
        match policy {
            StaleAfter::Never => None,
            StaleAfter::After(d) => Some(d),
            StaleAfter::Auto => Some(
                self.typical_interval()
                    .map_or(STALE_FLOOR, |i| (i * STALE_INTERVALS).max(STALE_FLOOR)),
            ),
        }
    }
}

/// Whether something that happened `at` is still within `window` at `now`.
pub fn within(window: Option<Duration>, at: Instant, now: Instant) -> bool {
    match window {
        None => true,
        Some(w) => now.saturating_duration_since(at) <= w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn heard_at(offsets: &[u64]) -> MeterActivity {
        let t0 = Instant::now();
        let mut a = MeterActivity::default();
        for s in offsets {
            a.heard(t0 + secs(*s));
        }
        a
    }

    #[test]
    fn before_the_second_telegram_the_window_is_the_floor() {
        assert_eq!(heard_at(&[]).window(StaleAfter::Auto), Some(STALE_FLOOR));
        assert_eq!(heard_at(&[0]).window(StaleAfter::Auto), Some(STALE_FLOOR));
    }

    #[test]
    fn the_window_is_three_intervals_but_at_least_ten_seconds() {
        assert_eq!(
            heard_at(&[0, 1, 2, 3]).window(StaleAfter::Auto),
            Some(secs(10))
        );
        assert_eq!(
            heard_at(&[0, 60, 120, 180]).window(StaleAfter::Auto),
            Some(secs(180))
        );
    }

    #[test]
    fn one_late_telegram_does_not_change_the_interval() {
        // Every 5 s, one telegram 40 s late, then back on schedule.
        let a = heard_at(&[0, 5, 10, 50, 55]);
        assert_eq!(a.typical_interval(), Some(secs(5)));
        // With only two gaps, the longer one: lenient until a third gap tells.
        assert_eq!(heard_at(&[0, 5, 45]).typical_interval(), Some(secs(40)));
    }

    #[test]
    fn a_dropped_link_is_not_a_gap() {
        let t0 = Instant::now();
        let mut a = MeterActivity::default();
        a.heard(t0);
        a.heard(t0 + secs(2));
        a.link_down();
        a.heard(t0 + secs(600));
        assert_eq!(a.typical_interval(), Some(secs(2)));
        assert_eq!(a.last_heard(), Some(t0 + secs(600)));
    }

    #[test]
    fn fixed_and_never_windows_ignore_the_interval() {
        let a = heard_at(&[0, 60, 120]);
        assert_eq!(a.window(StaleAfter::After(secs(7))), Some(secs(7)));
        assert_eq!(a.window(StaleAfter::Never), None);
        assert_eq!(StaleAfter::from_secs(0), StaleAfter::Never);
        assert_eq!(StaleAfter::from_secs(30), StaleAfter::After(secs(30)));
    }

    #[test]
    fn a_value_is_fresh_up_to_the_end_of_its_window() {
        let t0 = Instant::now();
        assert!(within(Some(secs(10)), t0, t0 + secs(10)));
        assert!(!within(Some(secs(10)), t0, t0 + secs(11)));
        assert!(within(None, t0, t0 + secs(1_000_000)));
    }
}
