//! Long-frame checks and the record walker on frames built here (EN 13757-3 examples).

use super::*;

/// A heat meter's reply: fixed header, energy (BCD8, kWh), volume (int32, 0.01 m^3), flow
/// temperature (int16, 0.1 °C), a date-time, and a storage-1 energy.
pub(crate) fn heat_meter_frame() -> Vec<u8> {
    let mut p = vec![
        0x78, 0x56, 0x34, 0x12, // id 12345678
        0x24, 0x40, // manufacturer "PAD"
        0x01, 0x04, 0x2A, 0x00, 0x00, 0x00, // version, medium heat, access, status, signature
    ];
    p.extend_from_slice(&[0x0C, 0x06, 0x45, 0x23, 0x01, 0x00]); // 12345 kWh
    p.extend_from_slice(&[0x04, 0x14, 0x10, 0x27, 0x00, 0x00]); // 10000 * 0.01 m^3
    p.extend_from_slice(&[0x02, 0x59, 0xD2, 0x04]); // 1234 * 0.01 °C
    p.extend_from_slice(&[0x04, 0x6D, 0x1E, 0x0C, 0x79, 0x2A]); // date & time
    p.extend_from_slice(&[0x4C, 0x06, 0x00, 0x90, 0x00, 0x00]); // storage 1: 9000 kWh
    long_frame(0x08, 0x01, 0x72, &p)
}

#[test]
fn a_built_frame_passes_its_check() {
    let f = heat_meter_frame();
    assert_eq!(check_long_frame(&f), Ok(&f[..]));
    assert_eq!(long_header(&f), Some(Ok(f.len())));
}

#[test]
fn a_wrong_checksum_is_named_with_its_offset() {
    let mut f = heat_meter_frame();
    let cs = f.len() - 2;
    f[cs] ^= 0x55;
    assert!(matches!(
        check_long_frame(&f),
        Err(FrameError::BadChecksum { offset, .. }) if offset == cs
    ));
}

#[test]
fn a_cut_frame_or_a_missing_stop_byte_is_no_frame() {
    let f = heat_meter_frame();
    assert!(matches!(
        check_long_frame(&f[..f.len() - 1]),
        Err(FrameError::Truncated { .. })
    ));
    let mut g = f.clone();
    let last = g.len() - 1;
    g[last] = 0x00;
    assert!(matches!(
        check_long_frame(&g),
        Err(FrameError::NoStop { .. })
    ));
    assert!(matches!(
        check_long_frame(&[0x68, 0x10, 0x11, 0x68]),
        Err(FrameError::LengthMismatch { .. })
    ));
    assert_eq!(long_header(&[0x68, 0x10]), None);
}

#[test]
fn the_walker_reads_each_record_with_its_offset_unit_and_storage() {
    let f = heat_meter_frame();
    let r = records(&f);
    assert_eq!(r.error, None);
    let h = r.header.unwrap();
    assert_eq!(h.id.as_deref(), Some("12345678"));
    assert_eq!(h.manufacturer.as_deref(), Some("PAD"));
    assert_eq!(r.records.len(), 5);
    let e = &r.records[0];
    assert_eq!((e.offset, e.data_offset, e.data_len), (19, 21, 4));
    assert_eq!((e.quantity, e.unit), ("Energy", "Wh"));
    assert_eq!(e.value, RecordValue::Number(12_345_000.0));
    assert_eq!(r.records[1].value, RecordValue::Number(100.0));
    assert_eq!(r.records[1].unit, "m^3");
    assert_eq!(r.records[2].quantity, "Flow temperature");
    assert!(matches!(r.records[2].value, RecordValue::Number(v) if (v - 12.34).abs() < 1e-9));
    assert!(matches!(&r.records[3].value, RecordValue::Time(t) if t.starts_with("20")));
    assert_eq!(r.records[4].storage, 1);
    assert_eq!(r.records[4].value, RecordValue::Number(9_000_000.0));
}

#[test]
fn a_record_gives_a_tasmota_line_that_reads_it_back() {
    let f = heat_meter_frame();
    let rec = &records(&f).records[2];
    let line = rec.tasmota_line(1, "t_flow").unwrap();
    assert_eq!(line, "1,0259ssSS@100,Flow temperature,°C,t_flow,2");
    let script = format!(">D\n>M 1\n+1,3,r,0,2400,H\n{line}\n#\n");
    let compiled = crate::script::compile(script.as_bytes());
    let meter = &compiled.script.expect("the line compiles").meters[0];
    let crate::script::model::Decoding::Raw { metrics, .. } = &meter.decoding else {
        panic!("not raw")
    };
    let raw = crate::decode::bytes::read(&metrics[0].pattern, &f[rec.offset..]).unwrap();
    assert!((crate::decode::scale(raw, &metrics[0].value) - 12.34).abs() < 1e-9);
}

#[test]
fn negative_bcd_and_signed_integers_keep_their_sign() {
    let p = [0x0A, 0x5B, 0x34, 0xF2, 0x01, 0x28, 0xFE];
    let f = long_frame(0x08, 0x01, 0x78, &p);
    let r = records(&f);
    assert_eq!(r.records[0].value, RecordValue::Number(-234.0));
    assert_eq!(r.records[1].value, RecordValue::Number(-0.002));
}

#[test]
fn a_record_running_past_the_end_stops_the_walk_with_its_offset() {
    let f = long_frame(0x08, 0x01, 0x78, &[0x04, 0x06, 0x01, 0x02]);
    let r = records(&f);
    assert!(r.records.is_empty());
    assert_eq!(r.error.as_ref().map(|e| e.0), Some(7));
}

#[test]
fn manufacturer_data_after_0f_ends_the_records() {
    let f = long_frame(
        0x08,
        0x01,
        0x78,
        &[0x01, 0xFD, 0x17, 0x00, 0x0F, 0xAA, 0xBB],
    );
    let r = records(&f);
    assert_eq!(r.records.len(), 1);
    assert_eq!(r.records[0].quantity, "Error flags");
    assert_eq!(r.manufacturer_data, Some((12, 2)));
}

#[test]
fn a_thirty_digit_variable_bcd_is_text_not_an_overflow() {
    // DIF 0D (variable length), VIF 13, LVAR CF: 15 bytes of BCD 99.
    let mut p = vec![0x0D, 0x13, 0xCF];
    p.extend_from_slice(&[0x99; 15]);
    let f = long_frame(0x08, 0x01, 0x78, &p);
    let r = records(&f);
    assert_eq!(r.records.len(), 1);
    assert_eq!(r.records[0].value, RecordValue::Text("9".repeat(30)));
}
