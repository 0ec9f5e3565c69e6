/*!
Links: serial ports, TCP serial bridges and capture replay. They move bytes and know no protocol.

A meter index is bound to a [`Source`] (`--port 1=/dev/ttyUSB0`); [`Link::open`] turns the source into
a byte pipe opened with the meter's UART framing; [`crate::runner::meter_task`] runs one tokio task per
meter that feeds the bytes to the meter's sans-IO decoder and reconnects when the link drops. Every link is
async I/O on the one runtime (serial ports through `AsyncFd`), so a thousand meters cost a thousand
small tasks, not a thousand threads.
*/

pub mod can;
pub mod gpio;
pub mod replay;
pub mod serial;
pub mod source;
pub mod tcp;

use std::io;

pub use source::{Binding, ReplaySpeed, Source};

use crate::script::model::SerialSettings;

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("serial port {path}: {source}")]
    Serial {
        path: String,
        source: serialport::Error,
    },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

/// An open link to one meter.
pub enum Link {
    Serial(serial::SerialLink),
    Tcp(tcp::TcpLink),
    Replay(replay::ReplayLink),
    Can(can::CanLink),
    Gpio(gpio::GpioLink),
}

impl Link {
    /// Open `source` with the meter's framing (`settings` matters for serial ports and for the
    /// replay's byte rate).
    pub async fn open(
        source: &Source,
        settings: &SerialSettings,
        speed: ReplaySpeed,
    ) -> Result<Link, LinkError> {
        Ok(match source {
            Source::Serial(path) => Link::Serial(serial::SerialLink::open(path, settings)?),
            Source::Tcp { host, port } => Link::Tcp(tcp::TcpLink::connect(host, *port).await?),
            Source::Replay(path) => {
                Link::Replay(replay::ReplayLink::open(path, settings, speed).await?)
            }
            Source::Can(interface) => Link::Can(can::CanLink::open(interface).map_err(
                |source| LinkError::Io {
                    what: format!("CAN interface {interface}"),
                    source,
                },
            )?),
            Source::Gpio { chip, line } => Link::Gpio(gpio::GpioLink::open(chip, *line).map_err(
                |source| LinkError::Io {
                    what: format!("GPIO line {line} of {}", chip.display()),
                    source,
                },
            )?),
        })
    }

    /// Read what has arrived; `Ok(0)` is the end of the link (peer closed, capture finished).
    /// Cancel-safe: no byte is lost when the future is dropped before it completes.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Serial(l) => l.read(buf).await,
            Link::Tcp(l) => l.read(buf).await,
            Link::Replay(l) => l.read(buf).await,
            Link::Can(l) => l.read(buf).await,
            Link::Gpio(l) => l.read(buf).await,
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Link::Serial(l) => l.write_all(bytes).await,
            Link::Tcp(l) => l.write_all(bytes).await,
            Link::Can(l) => l.write_all(bytes).await,
            // A capture cannot answer requests: what the meter said is already in it.
            Link::Replay(_) => Ok(()),
            // A line that is only read: `sml(m 1 ...)` has nothing to go to.
            Link::Gpio(_) => Ok(()),
        }
    }

    /// Change the speed (and parity) of a serial port after what was written has left. A TCP bridge
    /// or a replay has no speed to change here: `false`, the caller says so.
    pub async fn set_framing(
        &mut self,
        baud: u32,
        parity: Option<crate::script::model::Parity>,
    ) -> io::Result<bool> {
        match self {
            Link::Serial(l) => l.set_framing(baud, parity).await.map(|()| true),
            Link::Tcp(_) | Link::Replay(_) | Link::Can(_) | Link::Gpio(_) => Ok(false),
        }
    }

    /// A replay's end is final; any other link that ends has dropped and is opened again.
    pub fn ends_for_good(&self) -> bool {
        matches!(self, Link::Replay(_))
    }
}
