/*!
Requests to a meter that must be asked (Modbus polls, the IEC 62056-21 `/?!` sign-on, Kamstrup
queries): the script's blocks framed by their protocol ([`frame`]), then sent one block every
period, in turn ([`RequestSchedule`]). The script model keeps the blocks as written; each protocol's
framing lives with its decoder (`modbus::request`, `obis::request`, `kamstrup::request`,
`pzem::request`), checked against Tasmota's `SML_Send_Seq`.
*/

use std::time::{Duration, Instant};

use crate::decode::{kamstrup, modbus, obis, pzem};
use crate::script::model::{Decoding, Meter, MeterSource};

/// The meter's request blocks as bytes on the wire, exactly what Tasmota sends: Modbus count and
/// CRC (none on Modbus TCP, where the link adds the MBAP header), `o` parity (unless `=so2` flag
/// 0x20), Kamstrup CRC, stuffing and framing, PZEM address and checksum; other types send the
/// bytes as written.
pub fn frame(meter: &Meter) -> Vec<Vec<u8>> {
    meter
        .requests
        .blocks
        .iter()
        .map(|b| frame_block(meter, b))
        .collect()
}

/// One block framed as the meter's type frames it. Also what a script's `sml(m 1 "hex")` sends: Tasmota
/// sends those bytes through the same framing (Modbus CRC, Kamstrup stuffing, `o` parity), so a meter
/// at 7E1 or a Modbus slave reads them.
pub fn frame_block(meter: &Meter, block: &crate::script::model::RequestBlock) -> Vec<u8> {
    let parity = meter
        .options
        .so2_flags
        .is_none_or(|f| f & obis::request::NO_PARITY_FLAG == 0);
    match &meter.decoding {
        Decoding::Modbus(_) if matches!(meter.source, MeterSource::ModbusTcp { .. }) => {
            modbus::request::tcp(block)
        }
        Decoding::Modbus(_) => modbus::request::rtu(block),
        Decoding::Obis(_) if parity => obis::request::even_parity(&block.bytes),
        Decoding::Kamstrup(_) => kamstrup::request::frame(&block.bytes),
        Decoding::Pzem(_) => pzem::request::frame(&block.bytes),
        _ => block.bytes.clone(),
    }
}

#[derive(Debug, Clone)]
pub struct RequestSchedule {
    blocks: Vec<Vec<u8>>,
    period: Duration,
    next_at: Option<Instant>,
    /// Index of the block most recently sent.
    current: Option<usize>,
}

impl RequestSchedule {
    /// The schedule of a meter's requests, framed for its protocol.
    pub fn new(meter: &Meter) -> Self {
        Self::from_wire(frame(meter), meter.requests.period_ms)
    }

    /// A schedule of blocks that are already wire bytes.
    pub fn from_wire(blocks: Vec<Vec<u8>>, period_ms: u32) -> Self {
        RequestSchedule {
            blocks,
            // Tasmota's period is in 100 ms ticks; 0 would spin, so at least one tick.
            period: Duration::from_millis(u64::from(period_ms.max(100))),
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

    fn wire(script: &str) -> Vec<Vec<u8>> {
        let compiled = crate::script::compile(script.as_bytes());
        assert!(!compiled.has_errors(), "{:#?}", compiled.diagnostics);
        frame(&compiled.script.unwrap().meters[0])
    }

    #[test]
    fn blocks_go_in_turn_one_per_period() {
        let mut s = RequestSchedule::from_wire(vec![vec![1], vec![2]], 1000);
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

    #[test]
    fn modbus_rtu_blocks_get_the_register_count_and_the_crc() {
        let blocks =
            wire(">D\n>M 1\n+1,3,m,0,9600,MB,1,10,01040000,r010400000012\n1,010404ffffffff@i0:1,V,V,v,1\n#\n");
        assert_eq!(
            blocks,
            vec![
                vec![0x01, 0x04, 0x00, 0x00, 0x00, 0x02, 0x71, 0xCB],
                vec![0x01, 0x04, 0x00, 0x00, 0x00, 0x12, 0x70, 0x07],
            ]
        );
    }

    #[test]
    fn modbus_tcp_blocks_have_no_crc() {
        let blocks = wire(
            ">D\n>M 1\n+1,[192.168.1.10],m,0,502,TCP,0,10,01040000\n1,010404ffffffff@i0:1,V,V,v,1\n#\n",
        );
        assert_eq!(blocks, vec![vec![0x01, 0x04, 0x00, 0x00, 0x00, 0x02]]);
    }

    #[test]
    fn obis_requests_get_parity_unless_so2_has_flag_20() {
        let with = wire(">D\n>M 1\n+1,3,o,0,300,zm,1,100,2F3F210D0A\n1,1.8.0(@1,t,,t,0\n#\n");
        assert_eq!(with, vec![vec![0xAF, 0x3F, 0x21, 0x8D, 0x0A]]);
        let without =
            wire(">D\n>M 1\n+1,3,o,0,300,zm,1,100,2F3F210D0A\n1,=so2,20\n1,1.8.0(@1,t,,t,0\n#\n");
        assert_eq!(without, vec![vec![0x2F, 0x3F, 0x21, 0x0D, 0x0A]]);
    }

    #[test]
    fn kamstrup_and_pzem_requests_are_framed_and_can_is_sent_as_written() {
        let k = wire(">D\n>M 1\n+1,3,k,0,9600,K,1,10,3F1001003C\n1,3F10x5kstr@1,E,,e,0\n#\n");
        assert_eq!(
            k,
            vec![vec![0x80, 0x3F, 0x10, 0x01, 0x00, 0x3C, 0xB2, 0x5F, 0x0D]]
        );
        let c =
            wire(">D\n>M 1\n+1,7,C,0,3203,CAN,6,10,908040FE08\n1,908040FEx4UUuu@1,V,V,v,1\n#\n");
        assert_eq!(c, vec![vec![0x90, 0x80, 0x40, 0xFE, 0x08]]);
    }

    #[test]
    fn the_schedule_of_a_meter_sends_its_framed_blocks() {
        let compiled = crate::script::compile(
            b">D\n>M 1\n+1,3,o,0,300,zm,1,100,2F3F210D0A\n1,1.8.0(@1,t,,t,0\n#\n",
        );
        let meter = &compiled.script.unwrap().meters[0];
        let mut s = RequestSchedule::new(meter);
        let t0 = Instant::now();
        assert_eq!(
            s.poll_transmit(t0),
            Some((0, vec![0xAF, 0x3F, 0x21, 0x8D, 0x0A]))
        );
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    }
}
