/*!
A TCP serial bridge (ser2net, ESP-Link): the meter's bytes arrive on a TCP stream. The UART framing
is the bridge's business; only the bytes cross the network.
*/

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::LinkError;

/// A bridge that does not answer within this time is retried later.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TcpLink {
    stream: TcpStream,
}

impl TcpLink {
    pub async fn connect(host: &str, port: u16) -> Result<TcpLink, LinkError> {
        let what = || format!("tcp://{host}:{port}");
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => {
                    return Err(LinkError::Io {
                        what: what(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(LinkError::Io {
                        what: what(),
                        source: io::ErrorKind::TimedOut.into(),
                    })
                }
            };
        // Requests are a few bytes each: send them now, not after Nagle's delay.
        stream.set_nodelay(true).map_err(|source| LinkError::Io {
            what: what(),
            source,
        })?;
        Ok(TcpLink { stream })
    }

    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf).await
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }
}
