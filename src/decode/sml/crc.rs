/*!
The CRC-16 variants an SML transport frame may carry.

SML 1.04 specifies CRC-16/X-25, sent low byte first. Some meters get it subtly wrong (Holley meters
are reported to send CRC-16/KERMIT, others send the right CRC high byte first), and Tasmota's `=soC`
option lets a script name one of twelve variants. All of them are table-driven CRCs with polynomial
0x1021 or 0x8005; the table for each shape is computed once at compile time.
*/

/// One CRC-16 algorithm (the "Rocksoft" parameters we need; `refin == refout` for all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crc16 {
    /// CRC-16/X-25 (SML's own): 0x1021 reflected, init 0xFFFF, xorout 0xFFFF.
    X25,
    /// CRC-16/IBM-3740 ("CCITT-FALSE"): 0x1021, init 0xFFFF, not reflected.
    Ccitt,
    /// CRC-16/KERMIT: 0x1021 reflected, init 0, xorout 0.
    Kermit,
    /// CRC-16/MODBUS: 0x8005 reflected, init 0xFFFF.
    Modbus,
    /// CRC-16/XMODEM: 0x1021, init 0, not reflected.
    Xmodem,
    /// CRC-16/MCRF4XX: 0x1021 reflected, init 0xFFFF, xorout 0.
    Mcrf4xx,
}

/// A CRC algorithm plus the byte order of the two CRC bytes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrcVariant {
    pub algorithm: Crc16,
    /// The CRC is sent low byte first (SML's rule). `false`: byte-swapped.
    pub low_byte_first: bool,
}

impl CrcVariant {
    /// What SML 1.04 specifies.
    pub const SML: CrcVariant = CrcVariant {
        algorithm: Crc16::X25,
        low_byte_first: true,
    };

    /// Tasmota's `=soC` crc mode: 0 x25, 1 ccitt, 2 kermit, 3 modbus, 4 xmodem, 5 mcrf4xx,
    /// 6..11 the same with the CRC bytes swapped. Anything else is not a single variant.
    pub fn from_tasmota_mode(mode: u8) -> Option<CrcVariant> {
        let algorithm = match mode % 6 {
            0 => Crc16::X25,
            1 => Crc16::Ccitt,
            2 => Crc16::Kermit,
            3 => Crc16::Modbus,
            4 => Crc16::Xmodem,
            _ => Crc16::Mcrf4xx,
        };
        (mode < 12).then_some(CrcVariant {
            algorithm,
            low_byte_first: mode < 6,
        })
    }

    /// Does `sent` (the two CRC bytes as they arrived) match this variant's CRC of `data`?
    pub fn verifies(&self, data: &[u8], sent: [u8; 2]) -> bool {
        let crc = self.algorithm.checksum(data);
        let wire = if self.low_byte_first {
            crc.to_le_bytes()
        } else {
            crc.to_be_bytes()
        };
        wire == sent
    }

    /// The CRC as it would be sent (for error messages: read the wire bytes in this order).
    pub fn read(&self, sent: [u8; 2]) -> u16 {
        if self.low_byte_first {
            u16::from_le_bytes(sent)
        } else {
            u16::from_be_bytes(sent)
        }
    }
}

const fn reflected_table(poly_reflected: u16) -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ poly_reflected
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

const fn normal_table(poly: u16) -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ poly
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static REFLECTED_1021: [u16; 256] = reflected_table(0x8408);
static REFLECTED_8005: [u16; 256] = reflected_table(0xA001);
static NORMAL_1021: [u16; 256] = normal_table(0x1021);

fn reflected(table: &[u16; 256], init: u16, data: &[u8]) -> u16 {
    data.iter().fold(init, |crc, &b| {
        (crc >> 8) ^ table[usize::from((crc ^ u16::from(b)) as u8)]
    })
}

fn normal(table: &[u16; 256], init: u16, data: &[u8]) -> u16 {
    data.iter().fold(init, |crc, &b| {
        (crc << 8) ^ table[usize::from(((crc >> 8) as u8) ^ b)]
    })
}

impl Crc16 {
    pub fn checksum(self, data: &[u8]) -> u16 {
        match self {
            Crc16::X25 => !reflected(&REFLECTED_1021, 0xFFFF, data),
            Crc16::Kermit => reflected(&REFLECTED_1021, 0, data),
            Crc16::Mcrf4xx => reflected(&REFLECTED_1021, 0xFFFF, data),
            Crc16::Modbus => reflected(&REFLECTED_8005, 0xFFFF, data),
            Crc16::Ccitt => normal(&NORMAL_1021, 0xFFFF, data),
            Crc16::Xmodem => normal(&NORMAL_1021, 0, data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The catalogue "check" values: the CRC of the ASCII bytes `123456789`.
    #[test]
    fn every_algorithm_gives_its_catalogue_check_value() {
        let check = b"123456789";
        assert_eq!(Crc16::X25.checksum(check), 0x906E);
        assert_eq!(Crc16::Ccitt.checksum(check), 0x29B1);
        assert_eq!(Crc16::Kermit.checksum(check), 0x2189);
        assert_eq!(Crc16::Modbus.checksum(check), 0x4B37);
        assert_eq!(Crc16::Xmodem.checksum(check), 0x31C3);
        assert_eq!(Crc16::Mcrf4xx.checksum(check), 0x6F91);
    }

    #[test]
    fn the_sliced_crc_equals_the_bitwise_definition_at_every_length() {
        fn bitwise_x25(data: &[u8]) -> u16 {
            let mut crc = 0xFFFFu16;
            for &b in data {
                crc ^= u16::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ 0x8408
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        }
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 + 11) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(
                Crc16::X25.checksum(&data[..len]),
                bitwise_x25(&data[..len]),
                "length {len}"
            );
        }
    }

    #[test]
    fn tasmota_modes_map_to_variants_and_swapped_variants() {
        assert_eq!(CrcVariant::from_tasmota_mode(0), Some(CrcVariant::SML));
        assert_eq!(
            CrcVariant::from_tasmota_mode(8),
            Some(CrcVariant {
                algorithm: Crc16::Kermit,
                low_byte_first: false
            })
        );
        assert_eq!(CrcVariant::from_tasmota_mode(15), None);
    }

    #[test]
    fn byte_order_decides_which_wire_bytes_verify() {
        let crc = Crc16::X25.checksum(b"abc");
        assert!(CrcVariant::SML.verifies(b"abc", crc.to_le_bytes()));
        let swapped = CrcVariant {
            algorithm: Crc16::X25,
            low_byte_first: false,
        };
        assert!(swapped.verifies(b"abc", crc.to_be_bytes()));
        assert!(!CrcVariant::SML.verifies(b"abc", crc.to_be_bytes()) || crc.swap_bytes() == crc);
    }
}
