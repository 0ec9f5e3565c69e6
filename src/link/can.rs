/*!
A CAN interface through Linux SocketCAN (`--port 1=can:can0`), for `C` meters.

The `socketcan` crate (MIT, pure Rust over the kernel's socket API, no system library) reads and
writes frames on the tokio runtime. Frames cross to the decoder as the byte records
[`crate::decode::can`] documents (`[id u32 BE, bit 31 = extended][dlc][data]`), so the meter task
treats a CAN interface like any other link: a request block a script sends (`908040FE08...`) is
such a record and goes out as one frame.

The bit rate is the interface's: set it where Linux sets it (`ip link set can0 type can bitrate
125000`), not from the script's param code, which only the ESP's controller reads. Error frames and
remote requests carry no reading and are skipped. `=so8`/`=so9` acceptance filters are not applied:
frames no metric line matches are counted by the decoder instead.
*/

use std::io;

use socketcan::{EmbeddedFrame, ExtendedId, Frame, Id, StandardId};

use crate::decode::can::{CanFrame as Record, EXTENDED_FLAG, ID_MASK};

pub struct CanLink {
    socket: socketcan::tokio::CanSocket,
    /// Encoded frames not handed over yet (a reader with a small buffer).
    pending: Vec<u8>,
}

impl CanLink {
    pub fn open(interface: &str) -> io::Result<CanLink> {
        Ok(CanLink {
            socket: socketcan::tokio::CanSocket::open(interface)?,
            pending: Vec::new(),
        })
    }

    /// The next frame records. Cancel-safe: a frame is taken from the socket only inside the poll
    /// that returns it.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            let frame = self.socket.read_frame().await?;
            if let Some(record) = record_of(&frame) {
                self.pending = record.encode();
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }

    /// Send every frame record in `bytes`.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        for frame in frames_of(bytes)? {
            self.socket.write_frame(frame).await?;
        }
        Ok(())
    }
}

/// A received frame as the decoder reads it; `None` for error and remote frames.
fn record_of(frame: &socketcan::CanFrame) -> Option<Record> {
    match frame {
        socketcan::CanFrame::Data(f) => Some(Record {
            id: f.raw_id() | if f.is_extended() { EXTENDED_FLAG } else { 0 },
            data: f.data().to_vec(),
        }),
        socketcan::CanFrame::Remote(_) | socketcan::CanFrame::Error(_) => None,
    }
}

/// The frames of concatenated records; an error naming the first byte that is not one.
pub fn frames_of(mut bytes: &[u8]) -> io::Result<Vec<socketcan::CanFrame>> {
    let mut out = Vec::new();
    let mut offset = 0;
    while !bytes.is_empty() {
        let len = bytes.get(4).map_or(usize::MAX, |&dlc| 5 + usize::from(dlc));
        let record = bytes
            .get(..len)
            .and_then(Record::decode)
            .ok_or_else(|| invalid(offset, "not a CAN frame record [id u32][dlc 0..8][data]"))?;
        let id = record.id & ID_MASK;
        let id: Id = if record.id & EXTENDED_FLAG != 0 || id > 0x7FF {
            ExtendedId::new(id).map(Id::Extended)
        } else {
            StandardId::new(id as u16).map(Id::Standard)
        }
        .ok_or_else(|| invalid(offset, "identifier out of range"))?;
        let frame = socketcan::CanFrame::new(id, &record.data)
            .ok_or_else(|| invalid(offset, "more than 8 data bytes"))?;
        out.push(frame);
        offset += len;
        bytes = &bytes[len..];
    }
    Ok(out)
}

fn invalid(offset: usize, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("CAN frame at byte {offset}: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_block_with_bit_31_becomes_an_extended_frame() {
        let block = crate::hex::decode(b"908040FE080000000000000000").unwrap();
        let frames = frames_of(&block).unwrap();
        assert_eq!(frames.len(), 1);
        assert!(frames[0].is_extended());
        assert_eq!(frames[0].raw_id(), 0x108040FE);
        assert_eq!(frames[0].data(), &[0u8; 8]);
        let back = record_of(&frames[0]).unwrap().encode();
        assert_eq!(back, block);
    }

    #[test]
    fn a_short_id_without_the_flag_is_a_standard_frame() {
        let frames = frames_of(&[0, 0, 0x01, 0x23, 2, 0xAA, 0xBB]).unwrap();
        assert!(!frames[0].is_extended());
        assert_eq!(frames[0].raw_id(), 0x123);
    }

    #[test]
    fn bytes_that_are_no_frame_record_are_refused_with_their_offset() {
        let e = frames_of(&[0, 0, 0, 1, 0, 0, 0, 0, 2, 9]).unwrap_err();
        assert!(e.to_string().contains("byte 5"), "{e}");
        assert!(frames_of(&[0, 0, 0, 1, 9]).is_err());
    }

    #[test]
    fn opening_an_interface_that_does_not_exist_fails_cleanly() {
        assert!(CanLink::open("nosuchcan7").is_err());
    }
}
