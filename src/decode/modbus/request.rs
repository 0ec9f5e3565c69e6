/*!
Modbus request framing: what Tasmota puts on the wire for a `+` line's request block. A block is
unit id + function + start register; Tasmota appends the register count `00 02` unless the block
was written with `r` (then it is sent as given), and on RTU the CRC-16/MODBUS, low byte first. On
Modbus TCP there is no CRC: the link puts the MBAP header in front.
*/

use crate::script::model::RequestBlock;

/// CRC-16/MODBUS for requests and replies alike; slice-by-16, as the other decoders' CRCs.
pub(crate) static CRC16_MODBUS: crc::Crc<u16, crc::Table<16>> =
    crc::Crc::<u16, crc::Table<16>>::new(&crc::CRC_16_MODBUS);

/// Modbus RTU: the TCP bytes, then the CRC low byte first.
pub fn rtu(block: &RequestBlock) -> Vec<u8> {
    let mut out = tcp(block);
    let crc = CRC16_MODBUS.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Modbus TCP: unit id + PDU (the register count added as for RTU), no CRC.
pub fn tcp(block: &RequestBlock) -> Vec<u8> {
    let mut out = block.bytes.clone();
    if !block.raw {
        out.extend_from_slice(&[0x00, 0x02]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(raw: bool, bytes: &[u8]) -> RequestBlock {
        RequestBlock {
            raw,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn the_crc_is_crc16_modbus() {
        // The catalogue's check value, and what the hand-written CRC before the `crc` crate gave.
        assert_eq!(CRC16_MODBUS.checksum(b"123456789"), 0x4B37);
    }

    #[test]
    fn a_block_gets_the_register_count_and_the_crc_low_byte_first() {
        assert_eq!(
            rtu(&block(false, &[0x01, 0x04, 0x00, 0x00])),
            vec![0x01, 0x04, 0x00, 0x00, 0x00, 0x02, 0x71, 0xCB]
        );
        assert_eq!(
            rtu(&block(false, &[0x01, 0x03, 0x02, 0x71])),
            vec![0x01, 0x03, 0x02, 0x71, 0x00, 0x02, 0x95, 0xA8]
        );
    }

    #[test]
    fn a_raw_block_is_sent_as_given_plus_the_crc() {
        let wire = rtu(&block(true, &[0x01, 0x04, 0x00, 0x00, 0x00, 0x12]));
        assert_eq!(wire, vec![0x01, 0x04, 0x00, 0x00, 0x00, 0x12, 0x70, 0x07]);
        assert_eq!(
            CRC16_MODBUS.checksum(&wire),
            0,
            "a frame with its CRC appended checks to 0"
        );
    }

    #[test]
    fn modbus_tcp_has_the_register_count_but_no_crc() {
        assert_eq!(
            tcp(&block(false, &[0x01, 0x04, 0x00, 0x00])),
            vec![0x01, 0x04, 0x00, 0x00, 0x00, 0x02]
        );
    }
}
