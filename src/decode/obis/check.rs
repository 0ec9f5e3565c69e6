/*!
The two checksums OBIS text telegrams carry: DSMR's CRC-16/ARC after `!`, and the IEC 62056-21 block
check character (BCC) after ETX. Kept apart so the framer reads as framing, and so the fixtures and
the compatibility test can compute the same sums.
*/

/// CRC-16/ARC (poly 0x8005 reflected = 0xA001, init 0, no final xor), as DSMR P1 uses over `/` .. `!`.
pub fn crc16_arc(data: &[u8]) -> u16 {
    let mut crc = 0u16;
    // Eight bytes per step through the slice-by-8 tables: the checksum covers the whole telegram, so
    // it is a large part of the per-telegram cost.
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let x = crc ^ u16::from_le_bytes([c[0], c[1]]);
        crc = TABLES[7][usize::from(x & 0xff)]
            ^ TABLES[6][usize::from(x >> 8)]
            ^ TABLES[5][usize::from(c[2])]
            ^ TABLES[4][usize::from(c[3])]
            ^ TABLES[3][usize::from(c[4])]
            ^ TABLES[2][usize::from(c[5])]
            ^ TABLES[1][usize::from(c[6])]
            ^ TABLES[0][usize::from(c[7])];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ TABLES[0][usize::from((crc ^ u16::from(b)) & 0xff)];
    }
    crc
}

/// CRC-16/ARC over the bytes with bit 7 cleared (a 7E1 meter read on an 8N1 line).
pub fn crc16_arc_7bit(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc >> 8) ^ TABLES[0][usize::from((crc ^ u16::from(b & 0x7f)) & 0xff)]
    })
}

/// The IEC 62056-21 BCC: XOR of every byte after STX up to and including ETX.
pub fn bcc(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |acc, &b| acc ^ b)
}

/// `TABLES[0]`: the classic byte table; `TABLES[k][i]`: byte `i` followed by `k` zero bytes.
static TABLES: [[u16; 256]; 8] = build_tables();

const fn build_tables() -> [[u16; 256]; 8] {
    let mut t = [[0u16; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
            bit += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let c = t[k - 1][i];
            t[k][i] = (c >> 8) ^ t[0][(c & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
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
    }

    #[test]
    fn bcc_is_the_xor_of_the_bytes() {
        assert_eq!(bcc(b"\x01\x02\x04"), 7);
        assert_eq!(bcc(b""), 0);
    }
}
