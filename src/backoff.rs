/*!
Reconnect delays, the one policy for every reconnect (a serial link, a TCP bridge, the broker):
doubling from `first` up to `cap`, back to `first` once a connection has worked.
*/

use std::time::Duration;

/// The policy: doubling from `first` up to `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    /// Links: 0.5 s up to 30 s.
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    pub fn retry(self) -> Retry {
        Retry {
            policy: self,
            next: self.first,
        }
    }
}

/// The state of one reconnecting thing.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    policy: Backoff,
    next: Duration,
}

impl Retry {
    /// The delay to wait now; the next one is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.policy.cap.max(self.policy.first));
        d
    }

    /// The delay [`Retry::next_delay`] will give, without advancing.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// A connection worked: start again from the first delay.
    pub fn reset(&mut self) {
        self.next = self.policy.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset_after_success() {
        let mut r = Backoff {
            first: Duration::from_secs(1),
            cap: Duration::from_secs(5),
        }
        .retry();
        let got: Vec<u64> = (0..5).map(|_| r.next_delay().as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 5, 5]);
        r.reset();
        assert_eq!(r.next_delay(), Duration::from_secs(1));
    }
}
