/*!
A recorded capture replayed as the meter would send it: at the line's byte rate (baud / bits per
character: start bit, data bits, parity, stop bits), or as fast as possible (`--replay-speed max`).
The end of the capture ends the link for good.
*/

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::{LinkError, ReplaySpeed};
use crate::script::model::{Parity, SerialSettings};

/// Bytes are handed over in slices of about this much line time, not one wake-up per byte.
const SLICE: Duration = Duration::from_millis(10);
/// At `max` speed, the most handed over per read (then the task yields to the others).
const MAX_CHUNK: usize = 4096;

pub struct ReplayLink {
    data: Vec<u8>,
    pos: usize,
    started: Instant,
    /// `None` at `max` speed.
    bytes_per_sec: Option<f64>,
}

impl ReplayLink {
    pub async fn open(
        path: &Path,
        settings: &SerialSettings,
        speed: ReplaySpeed,
    ) -> Result<ReplayLink, LinkError> {
        let data = tokio::fs::read(path)
            .await
            .map_err(|source| LinkError::Io {
                what: format!("reading capture {}", path.display()),
                source,
            })?;
        let rate = byte_rate(settings);
        let bytes_per_sec = match speed {
            ReplaySpeed::RealTime => Some(rate),
            ReplaySpeed::Factor(f) => Some(rate * f),
            ReplaySpeed::Max => None,
        };
        Ok(ReplayLink {
            data,
            pos: 0,
            started: Instant::now(),
            bytes_per_sec,
        })
    }

    /// The next bytes that are due; `Ok(0)` at the end of the capture. Cancel-safe: the position
    /// only moves when bytes are returned.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.data.len() - self.pos;
        if remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = match self.bytes_per_sec {
            None => {
                tokio::task::yield_now().await;
                remaining.min(buf.len()).min(MAX_CHUNK)
            }
            Some(rate) => {
                // Wait until a slice's worth (or the rest) is due, then hand over all that is due.
                let slice = ((rate * SLICE.as_secs_f64()) as usize)
                    .max(1)
                    .min(remaining);
                // Checked: a rate so slow that the next byte is due beyond the clock's range is an
                // error, not a panic (`--replay-speed` is validated, this is the last line).
                let due_at = Duration::try_from_secs_f64((self.pos + slice) as f64 / rate)
                    .ok()
                    .and_then(|d| self.started.checked_add(d))
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("a byte rate of {rate} bytes/s is too slow to replay"),
                        )
                    })?;
                tokio::time::sleep_until(due_at).await;
                let due = (self.started.elapsed().as_secs_f64() * rate) as usize;
                due.saturating_sub(self.pos)
                    .max(slice)
                    .min(remaining)
                    .min(buf.len())
            }
        };
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Characters per second on a UART line with this framing.
pub fn byte_rate(settings: &SerialSettings) -> f64 {
    let parity = if settings.parity == Parity::None {
        0
    } else {
        1
    };
    let bits = 1 + u32::from(settings.data_bits) + parity + u32::from(settings.stop_bits.max(1));
    f64::from(settings.baud.max(1)) / f64::from(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_rate_counts_start_parity_and_stop_bits() {
        let s = |baud, data_bits, parity, stop_bits| SerialSettings {
            baud,
            data_bits,
            parity,
            stop_bits,
        };
        assert_eq!(byte_rate(&s(9600, 8, Parity::None, 1)), 960.0);
        assert_eq!(byte_rate(&s(300, 7, Parity::Even, 1)), 30.0);
        assert_eq!(byte_rate(&s(2400, 8, Parity::Even, 1)), 2400.0 / 11.0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_rate_too_slow_for_the_clock_is_an_error_not_a_panic() {
        let mut link = ReplayLink {
            data: vec![1, 2, 3],
            pos: 0,
            started: Instant::now(),
            bytes_per_sec: Some(960.0 * 1e-300),
        };
        let e = link.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("too slow"), "{e}");
    }
}
