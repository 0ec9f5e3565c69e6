/*!
A serial port (USB adapter, on-board UART, pseudo-terminal) opened with the meter's framing and
driven by tokio's `AsyncFd`: the fd is non-blocking and registered with the runtime's reactor, so a
port costs no thread. Reads and writes go straight to `read(2)`/`write(2)` (through `nix`, so without
`unsafe`): `TTYPort`'s own `Read` impl polls with a timeout first, which is what a blocking program
wants and a reactor does not.
*/

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use serialport::{DataBits, FlowControl, SerialPort, StopBits, TTYPort};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::LinkError;
use crate::script::model::{Parity, SerialSettings};

pub struct SerialLink {
    fd: AsyncFd<TTYPort>,
}

impl SerialLink {
    pub fn open(path: &Path, settings: &SerialSettings) -> Result<SerialLink, LinkError> {
        let name = path.display().to_string();
        let serial_err = |source| LinkError::Serial {
            path: name.clone(),
            source,
        };
        let builder = serialport::new(name.clone(), settings.baud)
            .data_bits(data_bits(settings.data_bits))
            .parity(match settings.parity {
                Parity::None => serialport::Parity::None,
                Parity::Even => serialport::Parity::Even,
                Parity::Odd => serialport::Parity::Odd,
            })
            .stop_bits(if settings.stop_bits == 2 {
                StopBits::Two
            } else {
                StopBits::One
            })
            .flow_control(FlowControl::None);
        let port = TTYPort::open(&builder).map_err(serial_err)?;
        set_nonblocking(port.as_raw_fd()).map_err(|source| LinkError::Io {
            what: format!("{name}: O_NONBLOCK"),
            source,
        })?;
        // SAFETY: the TTYPort owns its fd and keeps it open, unreplaced, as long as the AsyncFd
        // holds it (the AsyncFd deregisters before dropping the port).
        let fd = unsafe {
            AsyncFd::register_with_interest(port, Interest::READABLE | Interest::WRITABLE)
        }
        .map_err(|e| LinkError::Io {
            what: format!("{name}: registering with the reactor"),
            source: e.into_parts().1,
        })?;
        Ok(SerialLink { fd })
    }

    /// Cancel-safe: readiness is only consumed by a read that returned `WouldBlock`.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|port| sys_read(port.as_raw_fd(), buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|port| sys_write(port.as_raw_fd(), bytes)) {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => bytes = &bytes[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

impl SerialLink {
    /// Change the speed, and the parity if given, on the open port (`sml(m 0 baud)`, `sml(-m 1
    /// "2400:8E1")`). What was written is sent first at the old speed: an IEC 62056-21 ACK must
    /// leave at 300 baud before the switch to 9600.
    pub async fn set_framing(&mut self, baud: u32, parity: Option<Parity>) -> io::Result<()> {
        self.drain().await?;
        let port = self.fd.get_mut();
        port.set_baud_rate(baud).map_err(io::Error::from)?;
        if let Some(p) = parity {
            port.set_parity(match p {
                Parity::None => serialport::Parity::None,
                Parity::Even => serialport::Parity::Even,
                Parity::Odd => serialport::Parity::Odd,
            })
            .map_err(io::Error::from)?;
        }
        Ok(())
    }

    /// Wait, without blocking the runtime, until the kernel has sent what was written (at most
    /// 2 s: a port whose other end does not read must not stall the meter's task), then one
    /// character's time for the last byte in the UART's shift register.
    async fn drain(&mut self) -> io::Result<()> {
        let baud = self.fd.get_ref().baud_rate().unwrap_or(9600).max(50);
        let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while self
            .fd
            .get_ref()
            .bytes_to_write()
            .map_err(io::Error::from)?
            > 0
            && tokio::time::Instant::now() < give_up
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let char_time = std::time::Duration::from_micros(11_000_000 / u64::from(baud));
        tokio::time::sleep(char_time).await;
        Ok(())
    }
}

fn data_bits(bits: u8) -> DataBits {
    match bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        _ => DataBits::Eight,
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn sys_read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    Ok(nix::unistd::read(fd, buf)?)
}

fn sys_write(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    Ok(nix::unistd::write(fd, bytes)?)
}
