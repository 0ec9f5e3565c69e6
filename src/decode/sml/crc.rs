/*!
The CRC-16 variants an SML transport frame may carry.

SML 1.04 specifies CRC-16/X-25, sent low byte first. Some meters get it subtly wrong (Holley meters
are reported to send CRC-16/KERMIT, others send the right CRC high byte first), and Tasmota's `=soC`
option lets a script name one of twelve variants. All of them come from the `crc` crate's catalogue,
sliced by 16 (`cargo bench --bench decode`, group `crc`, compares it with the hand-written byte table
this module used to carry, on the bench frame); this module only names them and knows the byte order
on the wire.
*/

use crc::{
    Crc, Table, CRC_16_IBM_3740, CRC_16_IBM_SDLC, CRC_16_KERMIT, CRC_16_MCRF4XX, CRC_16_MODBUS,
    CRC_16_XMODEM,
};

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
        self.matches(self.algorithm.checksum(data), sent)
    }

    /// Does `sent` carry `crc` (this variant's algorithm over the frame) in this variant's byte order?
    /// Lets a caller compute one algorithm once and try both byte orders.
    pub fn matches(&self, crc: u16, sent: [u8; 2]) -> bool {
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

/// One table set per algorithm (the `crc` crate's slice-by-16), built at compile time.
type Sliced = Crc<u16, Table<16>>;
static X25: Sliced = Sliced::new(&CRC_16_IBM_SDLC);
static CCITT: Sliced = Sliced::new(&CRC_16_IBM_3740);
static KERMIT: Sliced = Sliced::new(&CRC_16_KERMIT);
static MODBUS: Sliced = Sliced::new(&CRC_16_MODBUS);
static XMODEM: Sliced = Sliced::new(&CRC_16_XMODEM);
static MCRF4XX: Sliced = Sliced::new(&CRC_16_MCRF4XX);

impl Crc16 {
    pub fn checksum(self, data: &[u8]) -> u16 {
        match self {
            Crc16::X25 => X25.checksum(data),
            Crc16::Kermit => KERMIT.checksum(data),
            Crc16::Mcrf4xx => MCRF4XX.checksum(data),
            Crc16::Modbus => MODBUS.checksum(data),
            Crc16::Ccitt => CCITT.checksum(data),
            Crc16::Xmodem => XMODEM.checksum(data),
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
