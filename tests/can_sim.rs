//! A simulated CAN bus for the `C` meter tests: the device's side of the bus, speaking the frame
//! records of `sml::decode::can` (`[id u32 BE, bit 31 extended][dlc][data]`) over a TCP socket,
//! which the meter task reads through its `tcp://` link exactly as it reads a SocketCAN interface
//! through `can:IFACE`. No `vcan` interface exists on this test machine's kernel, so the kernel
//! side (`sml::link::can`) is tested on its own and this simulator stands for the bus.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sml::decode::can::{CanFrame, EXTENDED_FLAG, ID_MASK};
use sml::script::model::{ByteOp, BytePattern, Extract};

/// A frame a metric line reads: the line's literal bytes, zero for skipped bytes, `value_byte` in
/// the last byte of each value field, data padded to the frame's length byte.
pub fn frame_for(pattern: &BytePattern, value_byte: u8) -> CanFrame {
    let mut bytes = Vec::new();
    for op in &pattern.ops {
        match op {
            ByteOp::Literal(b) => bytes.push(*b),
            ByteOp::Skip(n) => bytes.extend(std::iter::repeat_n(0, usize::from(*n))),
            ByteOp::Find(seq) => bytes.extend(seq),
            ByteOp::Extract(e) => {
                let width = match e {
                    Extract::U8 | Extract::I8 => 1,
                    Extract::U16 { .. } | Extract::I16 { .. } => 2,
                    Extract::U32 { .. } | Extract::I32 { .. } | Extract::F32 { .. } => 4,
                    Extract::U64 { .. } | Extract::I64 { .. } | Extract::F64 { .. } => 8,
                    Extract::Bcd(n) => usize::from(*n).div_ceil(2),
                    Extract::Kamstrup => 8,
                };
                let start = bytes.len();
                bytes.extend(std::iter::repeat_n(0, width));
                // A small number in every byte order: the field's low byte is at one of its ends.
                if matches!(e, Extract::Bcd(_)) {
                    bytes[start] = 0x01;
                } else {
                    bytes[start + width - 1] = value_byte;
                }
            }
        }
    }
    while bytes.len() < 5 {
        bytes.push(0);
    }
    let id = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) & ID_MASK;
    let dlc = usize::from(bytes[4]).min(8);
    let mut data = bytes[5..].to_vec();
    data.resize(dlc.max(data.len()).min(8), 0);
    CanFrame {
        id: if id > 0x7FF { id | EXTENDED_FLAG } else { id },
        data,
    }
}

/// What the simulated device sends when it sees a frame: its replies.
pub type Responder = Box<dyn FnMut(&CanFrame) -> Vec<CanFrame> + Send>;

pub struct Bus {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<CanFrame>>>,
}

impl Bus {
    /// A device that answers requests with `responder`, and sends `broadcast` (raw bytes, so a test
    /// can put garbage on the bus) every `every`, to one client at a time.
    pub fn start(mut responder: Responder, broadcast: Vec<u8>, every: Duration) -> Bus {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut heard = Vec::new();
            listener.set_nonblocking(true).unwrap();
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(every)).unwrap();
                let mut pending = Vec::new();
                let mut buf = [0u8; 256];
                while !stopped.load(Ordering::Relaxed) {
                    if !broadcast.is_empty() && s.write_all(&broadcast).is_err() {
                        break;
                    }
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                    }
                    while pending.len() >= 5 && pending.len() >= 5 + usize::from(pending[4]) {
                        let len = 5 + usize::from(pending[4]);
                        let record: Vec<u8> = pending.drain(..len).collect();
                        let Some(frame) = CanFrame::decode(&record) else {
                            continue;
                        };
                        for reply in responder(&frame) {
                            let _ = s.write_all(&reply.encode());
                        }
                        heard.push(frame);
                    }
                }
            }
            heard
        });
        Bus {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Stop; the frames the device heard.
    pub fn stop(mut self) -> Vec<CanFrame> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The Huawei R4850G2 rectifier: to the request `0x108040FE` it answers one frame per register
/// (`0x1081407F`, data `01 <reg> 00 00 <value x 1024 u32>`).
pub fn huawei(registers: Vec<(u8, f64)>) -> Responder {
    Box::new(move |request: &CanFrame| {
        if request.id & ID_MASK != 0x1080_40FE {
            return Vec::new();
        }
        registers
            .iter()
            .map(|&(reg, value)| {
                let scale = if reg == 0x76 { 20.0 } else { 1024.0 };
                let mut data = vec![0x01, reg, 0, 0];
                data.extend_from_slice(&((value * scale).round() as u32).to_be_bytes());
                CanFrame {
                    id: 0x1081_407F | EXTENDED_FLAG,
                    data,
                }
            })
            .collect()
    })
}
