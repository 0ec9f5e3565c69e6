/*!
PZEM-004T (v1) request framing, as Tasmota sends a `p` meter's request block: the command byte the
script gives, then the address `C0 A8 01 01` (192.168.1.1) and a 0 data byte, then a checksum, the
sum of the first six bytes modulo 256.
*/

/// The address and data bytes Tasmota puts after the command.
const ADDRESS_AND_DATA: [u8; 5] = [0xC0, 0xA8, 0x01, 0x01, 0x00];

/// One request block framed for the wire.
pub fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 6);
    out.extend_from_slice(bytes);
    out.extend_from_slice(&ADDRESS_AND_DATA);
    // Tasmota sums the first six bytes of the frame, whatever the script wrote.
    let sum = out.iter().take(6).fold(0u8, |acc, &b| acc.wrapping_add(b));
    out.push(sum);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_byte_gets_the_address_and_the_checksum() {
        // Read voltage: B0 C0 A8 01 01 00 1A (the PZEM-004T datasheet's example).
        assert_eq!(
            frame(&[0xB0]),
            vec![0xB0, 0xC0, 0xA8, 0x01, 0x01, 0x00, 0x1A]
        );
    }
}
