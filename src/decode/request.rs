/*!
The request schedule of a meter that must be asked (Modbus polls, the IEC 62056-21 `/?!` sign-on):
one block every period, in turn. Protocol-neutral: the blocks are already wire bytes.
*/

use std::time::{Duration, Instant};

use crate::script::model::Requests;

#[derive(Debug, Clone)]
pub struct RequestSchedule {
    blocks: Vec<Vec<u8>>,
    period: Duration,
    next_at: Option<Instant>,
    /// Index of the block most recently sent.
    current: Option<usize>,
}

impl RequestSchedule {
    pub fn new(requests: &Requests) -> Self {
        RequestSchedule {
            blocks: requests.telegrams.clone(),
            // Tasmota's period is in 100 ms ticks; 0 would spin, so at least one tick.
            period: Duration::from_millis(u64::from(requests.period_ms.max(100))),
            next_at: None,
            current: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The block due at `now`, with its index; the first block is due at once.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(usize, Vec<u8>)> {
        if self.blocks.is_empty() {
            return None;
        }
        if let Some(at) = self.next_at {
            if now < at {
                return None;
            }
        }
        let next = self.current.map_or(0, |c| (c + 1) % self.blocks.len());
        self.current = Some(next);
        self.next_at = Some(now + self.period);
        Some((next, self.blocks[next].clone()))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.blocks.is_empty() {
            None
        } else {
            self.next_at
        }
    }

    /// The block whose reply is expected now (Modbus `iN` lines).
    pub fn current_block(&self) -> Option<usize> {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_go_in_turn_one_per_period() {
        let mut s = RequestSchedule::new(&Requests {
            period_ms: 1000,
            telegrams: vec![vec![1], vec![2]],
        });
        let t0 = Instant::now();
        assert_eq!(s.poll_transmit(t0), Some((0, vec![1])));
        assert_eq!(s.poll_transmit(t0 + Duration::from_millis(999)), None);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(1000)));
        assert_eq!(
            s.poll_transmit(t0 + Duration::from_millis(1000)),
            Some((1, vec![2]))
        );
        assert_eq!(
            s.poll_transmit(t0 + Duration::from_millis(2000)),
            Some((0, vec![1]))
        );
        assert_eq!(s.current_block(), Some(0));
    }
}
