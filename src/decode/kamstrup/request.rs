/*!
Kamstrup KMP request framing, as Tasmota sends a `+` line's request block: the CRC-16/XMODEM
(CCITT polynomial 0x1021, initial 0) appended high byte first, the reserved bytes `80 40 0D 06 1B`
stuffed as `1B` + the byte inverted, and the whole framed by `80` ... `0D`.
*/

const CRC16_XMODEM: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);

/// Bytes that would end or start a frame, or escape: sent as `1B`, byte ^ `FF`.
fn is_reserved(b: u8) -> bool {
    matches!(b, 0x80 | 0x40 | 0x0D | 0x06 | 0x1B)
}

/// One request block framed for the wire.
pub fn frame(bytes: &[u8]) -> Vec<u8> {
    let crc = CRC16_XMODEM.checksum(bytes).to_be_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 6);
    out.push(0x80);
    for &b in bytes.iter().chain(&crc) {
        if is_reserved(b) {
            out.extend_from_slice(&[0x1B, b ^ 0xFF]);
        } else {
            out.push(b);
        }
    }
    out.push(0x0D);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crc_is_crc16_xmodem() {
        // The catalogue's check value, and what the hand-written CRC before the `crc` crate gave.
        assert_eq!(CRC16_XMODEM.checksum(b"123456789"), 0x31C3);
    }

    #[test]
    fn a_request_gets_its_crc_high_byte_first_and_the_frame_bytes() {
        assert_eq!(
            frame(&[0x3F, 0x10, 0x01, 0x00, 0x3C]),
            vec![0x80, 0x3F, 0x10, 0x01, 0x00, 0x3C, 0xB2, 0x5F, 0x0D]
        );
    }

    #[test]
    fn reserved_bytes_are_stuffed_and_never_appear_inside_the_frame() {
        let f = frame(&[0x3F, 0x10, 0x01, 0x06, 0x80]);
        assert_eq!(
            f,
            vec![0x80, 0x3F, 0x10, 0x01, 0x1B, 0xF9, 0x1B, 0x7F, 0x7E, 0xAE, 0x0D]
        );
        assert!(!f[1..f.len() - 1].iter().any(|b| matches!(b, 0x80 | 0x0D)));
    }
}
