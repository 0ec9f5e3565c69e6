//! Every extractor against the bytes Tasmota's `SML_Decode` would read, on patterns as scripts write
//! them (parsed by the real front end, so a grammar change that breaks a mask shows here too).

use super::*;
use crate::script::model::Decoding;

/// The pattern of a one-line Modbus script, compiled by the real front end.
fn pattern(text: &str) -> BytePattern {
    let source = format!(">D\n>M 1\n+1,3,m,0,9600,X\n1,{text}@1,a,u,a,0\n#\n");
    let compiled = crate::script::compile(source.as_bytes());
    let script = compiled
        .script
        .unwrap_or_else(|| panic!("{text}: {:?}", compiled.diagnostics));
    match &script.meters[0].decoding {
        Decoding::Modbus(m) => m[0].pattern.clone(),
        other => panic!("{other:?}"),
    }
}

fn value(text: &str, frame: &[u8]) -> f64 {
    read(&pattern(text), frame).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn unsigned_and_signed_bytes() {
    assert_eq!(value("uu", &[0xfe]), 254.0);
    assert_eq!(value("ss", &[0xfe]), -2.0);
}

#[test]
fn sixteen_bit_masks_in_both_byte_orders() {
    assert_eq!(value("UUuu", &[0x12, 0x34]), 4660.0);
    assert_eq!(value("uuUU", &[0x34, 0x12]), 4660.0);
    assert_eq!(value("SSss", &[0xff, 0xfe]), -2.0);
    assert_eq!(value("ssSS", &[0xfe, 0xff]), -2.0);
}

#[test]
fn thirty_two_bit_masks_and_their_short_forms() {
    let f = [0x00, 0x01, 0x86, 0xa0]; // 100000
    assert_eq!(value("UUuuUUuu", &f), 100000.0);
    assert_eq!(value("U32", &f), 100000.0);
    // `u32` swaps the bytes inside each word, as Tasmota does.
    assert_eq!(value("uuUUuuUU", &[0x01, 0x00, 0xa0, 0x86]), 100000.0);
    assert_eq!(value("u32", &[0x01, 0x00, 0xa0, 0x86]), 100000.0);
    let neg = (-100000i32).to_be_bytes();
    assert_eq!(value("SSssSSss", &neg), -100000.0);
    assert_eq!(value("S32", &neg), -100000.0);
    assert_eq!(
        value("ssSSssSS", &[neg[1], neg[0], neg[3], neg[2]]),
        -100000.0
    );
}

#[test]
fn a_trailing_s_swaps_the_words_of_a_32_bit_value() {
    // Low word first on the wire (many Modbus meters).
    assert_eq!(value("UUuuUUuus", &[0x86, 0xa0, 0x00, 0x01]), 100000.0);
    assert_eq!(value("U32s", &[0x86, 0xa0, 0x00, 0x01]), 100000.0);
    let neg = (-100000i32).to_be_bytes();
    assert_eq!(
        value("SSssSSsss", &[neg[2], neg[3], neg[0], neg[1]]),
        -100000.0
    );
}

#[test]
fn sixty_four_bit_masks() {
    let v: u64 = 0x0001_0203_0405_0607;
    assert_eq!(value("U64", &v.to_be_bytes()), v as f64);
    let b = v.to_be_bytes();
    let swapped = [b[1], b[0], b[3], b[2], b[5], b[4], b[7], b[6]];
    assert_eq!(value("u64", &swapped), v as f64);
    assert_eq!(value("S64", &(-5i64).to_be_bytes()), -5.0);
}

#[test]
fn floats_big_endian_and_word_swapped() {
    // The SDM630 voltage of the Tasmota issue 13224 capture.
    let f = [0x43, 0x60, 0x25, 0x88];
    assert!((value("ffffffff", &f) - 224.146_606_445).abs() < 1e-6);
    assert!((value("FFffFFff", &[0x25, 0x88, 0x43, 0x60]) - 224.146_606_445).abs() < 1e-6);
}

#[test]
fn bcd_reads_the_least_significant_byte_first() {
    assert_eq!(value("bcd4", &[0x34, 0x12]), 1234.0);
    assert_eq!(value("bcd8", &[0x78, 0x56, 0x34, 0x12]), 12345678.0);
    // An odd count reads whole bytes, as Tasmota does.
    assert_eq!(value("bcd3", &[0x34, 0x12]), 1234.0);
}

#[test]
fn a_bcd_nibble_above_nine_reads_nothing() {
    assert_eq!(
        read(&pattern("bcd4"), &[0x3a, 0x12]),
        Err(NoMatch::BadBcd {
            offset: 0,
            nibble: 0xa
        })
    );
}

#[test]
fn kamstrup_records_apply_their_exponent_negative_ones_too() {
    // Unit 3C, 4 mantissa bytes, exponent +1: 1234 * 10.
    assert_eq!(value("kstr", &[0x3c, 4, 0x01, 0, 0, 0x04, 0xd2]), 12340.0);
    // Exponent -2 (0x42): 12.34, where Tasmota reads 1234 and leaves it to the script's divisor.
    assert_eq!(value("kstr", &[0x3c, 4, 0x42, 0, 0, 0x04, 0xd2]), 12.34);
    // Both signs: -12.34.
    assert_eq!(value("kstr", &[0x3c, 4, 0xc2, 0, 0, 0x04, 0xd2]), -12.34);
    // Bit 7: a negative value.
    assert_eq!(value("kstr", &[0x3c, 1, 0x80, 7]), -7.0);
}

#[test]
fn literals_and_skips_position_the_value() {
    let reply = [0x01, 0x04, 0x04, 0x43, 0x60, 0x25, 0x88, 0xf4, 0xe8];
    assert_eq!(value("010404xxxxUUuu", &reply), 9608.0);
    assert_eq!(value("01x2UUuu", &reply), 17248.0);
}

#[test]
fn a_literal_that_differs_reads_nothing_and_says_where() {
    assert_eq!(
        read(&pattern("0203UUuu"), &[0x01, 0x03, 0, 1]),
        Err(NoMatch::Literal {
            offset: 0,
            expected: 2,
            found: 1
        })
    );
}

#[test]
fn a_pattern_longer_than_the_frame_reads_nothing() {
    assert_eq!(
        read(&pattern("0104UUuuUUuu"), &[0x01, 0x04, 0, 0]),
        Err(NoMatch::Short { needed: 6, len: 4 })
    );
    assert!(read(&pattern("x200UUuu"), &[0x01]).is_err());
}

#[test]
fn a_found_pattern_puts_the_value_after_it() {
    assert_eq!(value("pm(r0102)UUuu", &[9, 9, 1, 2, 0, 5]), 5.0);
    assert_eq!(
        read(&pattern("pm(r0102)UUuu"), &[9, 9]),
        Err(NoMatch::NotFound { from: 0 })
    );
}

#[test]
fn the_last_extractor_gives_the_value() {
    assert_eq!(value("uuuu", &[1, 2]), 2.0);
}

#[test]
fn a_pattern_without_a_value_mask_reads_nothing() {
    assert_eq!(read(&pattern("0104"), &[1, 4]), Err(NoMatch::NoExtractor));
}

#[test]
fn a_bit_line_publishes_one_bit() {
    let mut p = pattern("uu");
    p.bit = Some(2);
    assert_eq!(read(&p, &[0b0000_0100]), Ok(1.0));
    assert_eq!(read(&p, &[0b1111_1011]), Ok(0.0));
}

#[test]
fn a_float64_reads_eight_bytes() {
    let p = BytePattern {
        ops: vec![ByteOp::Extract(Extract::F64 { big_endian: true })],
        bit: None,
        block: None,
    };
    assert_eq!(read(&p, &1.5f64.to_be_bytes()), Ok(1.5));
}

#[test]
fn a_float_that_is_not_a_number_reads_nothing() {
    assert_eq!(
        read(&pattern("xxffffffff"), &[0, 0xff, 0xff, 0xff, 0xff]),
        Err(NoMatch::NotFinite { offset: 1 })
    );
    assert!(read(&pattern("ffffffff"), &f32::INFINITY.to_be_bytes()).is_err());
}
