/*!
The two checksums OBIS text telegrams carry: DSMR's CRC-16/ARC after `!`, and the IEC 62056-21 block
check character (BCC) after ETX. Kept apart so the framer reads as framing, and so the fixtures and
the compatibility test can compute the same sums.

The CRC is the `crc` crate's slice-by-16 implementation: `cargo bench --bench decode` (group `crc`)
measures it against the hand-written slice-by-8 table this module used to carry, on the bench
telegram, and it is not slower.
*/

use crc::{Crc, Table, CRC_16_ARC};

/// CRC-16/ARC, sixteen bytes per step: the checksum covers the whole telegram, so it is a large part
/// of the per-telegram cost.
static ARC: Crc<u16, Table<16>> = Crc::<u16, Table<16>>::new(&CRC_16_ARC);

/// CRC-16/ARC (poly 0x8005 reflected, init 0, no final xor), as DSMR P1 uses over `/` .. `!`.
pub fn crc16_arc(data: &[u8]) -> u16 {
    ARC.checksum(data)
}

/// CRC-16/ARC over the bytes with bit 7 cleared (a 7E1 meter read on an 8N1 line).
pub fn crc16_arc_7bit(data: &[u8]) -> u16 {
    let mut digest = ARC.digest();
    let mut cleared = [0u8; 64];
    for chunk in data.chunks(cleared.len()) {
        for (to, &b) in cleared.iter_mut().zip(chunk) {
            *to = b & 0x7f;
        }
        digest.update(&cleared[..chunk.len()]);
    }
    digest.finalize()
}

/// The IEC 62056-21 BCC: XOR of every byte after STX up to and including ETX.
pub fn bcc(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |acc, &b| acc ^ b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc16_arc_bitwise(data: &[u8]) -> u16 {
        let mut crc = 0u16;
        for &b in data {
            crc ^= u16::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xA001
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    #[test]
    fn crc16_arc_check_value_matches_the_catalogue() {
        // The CRC catalogue's check value for CRC-16/ARC over "123456789".
        assert_eq!(crc16_arc(b"123456789"), 0xBB3D);
    }

    #[test]
    fn table_crc_equals_the_bitwise_definition_for_every_length() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in 0..data.len() {
            assert_eq!(
                crc16_arc(&data[..n]),
                crc16_arc_bitwise(&data[..n]),
                "length {n}"
            );
        }
    }

    #[test]
    fn seven_bit_crc_ignores_the_parity_bit() {
        assert_eq!(crc16_arc_7bit(b"\xaf12\x8d"), crc16_arc(b"/12\r"));
        let data: Vec<u8> = (0..300u32).map(|i| (i * 13 + 5) as u8).collect();
        let cleared: Vec<u8> = data.iter().map(|b| b & 0x7f).collect();
        for n in [0, 1, 63, 64, 65, 128, 299] {
            assert_eq!(
                crc16_arc_7bit(&data[..n]),
                crc16_arc(&cleared[..n]),
                "length {n}"
            );
        }
    }

    #[test]
    fn bcc_is_the_xor_of_the_bytes() {
        assert_eq!(bcc(b"\x01\x02\x04"), 7);
        assert_eq!(bcc(b""), 0);
    }
}
