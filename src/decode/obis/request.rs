/*!
IEC 62056-21 request framing for `o` meters: the sign-on (`/?!` CR LF) and any other request go out
with even parity in bit 7, since Tasmota emulates the meter's 7E1 on an 8N1 line. `=so2` with flag
0x20 sends the bytes as written (a meter or an adapter that does 8N1 itself).
*/

/// Flag of `=so2,N`: send requests without the parity bit.
pub const NO_PARITY_FLAG: u16 = 0x20;

/// Even parity in bit 7 of every byte (7E1 on an 8N1 line).
pub fn even_parity(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| {
            let data = b & 0x7F;
            if data.count_ones() % 2 == 1 {
                data | 0x80
            } else {
                data
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sign_on_gets_even_parity_in_bit_7() {
        // `/?!` CR LF: 2F has 5 ones -> AF; 3F 6 -> 3F; 21 2 -> 21; 0D 3 -> 8D; 0A 2 -> 0A.
        assert_eq!(even_parity(b"/?!\r\n"), vec![0xAF, 0x3F, 0x21, 0x8D, 0x0A]);
    }
}
