/*!
A GPIO line through the kernel's GPIO character device (`--port 1=gpio:/dev/gpiochip0:17`), for `c`
pulse counters.

The `gpiocdev` crate (Apache-2.0/MIT, pure Rust over the uAPI v2 ioctls, no libgpiod) requests the
line as an input with edge detection on both edges; every edge comes with the kernel's timestamp
(CLOCK_MONOTONIC, taken in the interrupt), so pulse widths do not depend on how busy the host is.
Edges cross to the decoder as the nine-byte records [`crate::decode::counter`] documents; the first
record is the line's level at open (timestamp 0).

Debounce is done by the decoder, with Tasmota's rules, not by the kernel's debounce filter: the
kernel would swallow bounces silently, and the decoder counts and reports them. The line's bias
(the ESP's pull-up flag) is left as the board's device tree sets it.
*/

use std::io;
use std::path::{Path, PathBuf};

use gpiocdev::line::{EdgeDetection, EdgeKind, Value};

use crate::decode::counter::Edge;

pub struct GpioLink {
    request: gpiocdev::tokio::AsyncRequest,
    /// Encoded edges not handed over yet.
    pending: Vec<u8>,
}

/// `gpiochip0` names `/dev/gpiochip0`; a path is taken as it is.
pub fn chip_path(chip: &str) -> PathBuf {
    if chip.contains('/') {
        PathBuf::from(chip)
    } else {
        Path::new("/dev").join(chip)
    }
}

impl GpioLink {
    pub fn open(chip: &Path, line: u32) -> io::Result<GpioLink> {
        let request = gpiocdev::Request::builder()
            .on_chip(chip)
            .with_consumer("sml")
            .with_line(line)
            .as_input()
            .with_edge_detection(EdgeDetection::BothEdges)
            .request()
            .map_err(to_io)?;
        let level = request.value(line).map_err(to_io)?;
        let first = Edge {
            high: level == Value::Active,
            at_ns: 0,
        };
        Ok(GpioLink {
            request: gpiocdev::tokio::AsyncRequest::new(request),
            pending: first.encode().to_vec(),
        })
    }

    /// The next edge records. Cancel-safe: an event is taken from the kernel only inside the poll
    /// that returns it.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            let event = self.request.read_edge_event().await.map_err(to_io)?;
            let edge = Edge {
                high: event.kind == EdgeKind::Rising,
                at_ns: event.timestamp_ns,
            };
            self.pending = edge.encode().to_vec();
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

fn to_io(e: gpiocdev::Error) -> io::Error {
    io::Error::other(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chip_name_is_looked_for_in_dev() {
        assert_eq!(chip_path("gpiochip0"), PathBuf::from("/dev/gpiochip0"));
        assert_eq!(chip_path("/dev/gpiochip4"), PathBuf::from("/dev/gpiochip4"));
    }

    #[test]
    fn a_chip_that_does_not_exist_fails_cleanly() {
        let e = GpioLink::open(Path::new("/nonexistent/gpiochip9"), 17)
            .err()
            .unwrap();
        assert!(!e.to_string().is_empty());
    }
}
