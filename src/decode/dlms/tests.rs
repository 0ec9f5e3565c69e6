//! The DLMS decoder on scripts compiled by the real front end, with telegrams encrypted here under
//! known keys: offsets as the community IM350 scripts use them, `pm(1.8.0)` searches, HDLC and
//! segmented M-Bus framing, and every kind of bad input counted and never published.

use super::*;
use crate::script::model::Script;
use proptest::prelude::*;

const KEY: &str = "000102030405060708090A0B0C0D0E0F";
const AUTH: &str = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF";
const SYSTEM_TITLE: [u8; 8] = *b"SMS\x67\x70\x04\x52\xCD";

fn key() -> [u8; 16] {
    crate::hex::decode(KEY.as_bytes())
        .unwrap()
        .try_into()
        .unwrap()
}

fn keys(auth: bool) -> Keys {
    Keys {
        encryption: key(),
        authentication: auth.then(|| crate::hex::decode(AUTH.as_bytes()).unwrap()),
    }
}

/// The IM350/AM550 community script's lines (`siemens-im-351.tas`), with `=so5` when `auth`.
fn im350_script(key: &str, auth: bool) -> String {
    format!(
        ">D\n>M 1\n+1,3,r,0,9600,IM350\n1,=so4,{key}\n{}\
1,0209090Cx0UUuu@1,year,,year,0\n\
1,0209090Cx13UUuuUUuu@1000,Zaehlerstand,kWh,in,3\n\
1,0209090Cx18UUuuUUuu@1000,Einspeisung,kWh,out,3\n\
1,0209090Cx33UUuuUUuu@1,Momentanleistung,W,power,16\n#\n",
        if auth {
            format!("1,=so5,{AUTH}\n")
        } else {
            String::new()
        }
    )
}

fn compile(source: &str) -> Script {
    let compiled = crate::script::compile(source.as_bytes());
    compiled
        .script
        .unwrap_or_else(|| panic!("{:?}", compiled.diagnostics))
}

fn decoder(source: &str) -> DlmsDecoder {
    DlmsDecoder::new(&compile(source).meters[0])
}

/// An IM350 notification: `0F invoke 09 0C date-time` then a structure of 9: the date-time and
/// eight double-long-unsigned registers (A+, A-, R+, R-, P+, P-, Q+, Q-).
fn im350_notification(import_wh: u32, power_w: u32) -> Vec<u8> {
    let dt = [
        0x07, 0xE8, 0x0B, 0x1B, 0x03, 0x10, 0x20, 0x30, 0x00, 0xFF, 0xC4, 0x00,
    ];
    let mut n = vec![0x0F, 0x00, 0x00, 0x00, 0x01, 0x09, 0x0C];
    n.extend_from_slice(&dt);
    n.extend_from_slice(&[0x02, 0x09, 0x09, 0x0C]);
    n.extend_from_slice(&dt);
    for v in [import_wh, 1000, 3, 4, power_w, 0, 7, 8] {
        n.push(0x06);
        n.extend_from_slice(&v.to_be_bytes());
    }
    n
}

fn encrypted_hdlc(plain: &[u8], security: u8, counter: u32) -> Vec<u8> {
    let apdu = apdu::encrypt(plain, &keys(true), SYSTEM_TITLE, security, counter);
    frame::hdlc_frame(&apdu, false, true)
}

fn drain(d: &mut DlmsDecoder) -> Vec<DecodeEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

fn readings(events: &[DecodeEvent]) -> Vec<(u16, f64)> {
    events
        .iter()
        .filter_map(|e| match e {
            DecodeEvent::Telegram(t) => Some(t.readings.iter().filter_map(|r| match r.value {
                Value::Number(v) => Some((r.entry, v)),
                Value::Text(_) => None,
            })),
            _ => None,
        })
        .flatten()
        .collect()
}

fn errors(events: &[DecodeEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            DecodeEvent::Error(e) => Some(e.to_string()),
            _ => None,
        })
        .collect()
}

fn feed(d: &mut DlmsDecoder, bytes: &[u8]) -> Vec<DecodeEvent> {
    d.handle_bytes(Instant::now(), bytes);
    drain(d)
}

#[test]
fn an_authenticated_im350_push_reads_the_community_scripts_offsets() {
    let mut d = decoder(&im350_script(KEY, true));
    let events = feed(
        &mut d,
        &encrypted_hdlc(&im350_notification(123_456, 500), 0x30, 7),
    );
    assert_eq!(errors(&events), Vec::<String>::new());
    assert_eq!(
        readings(&events),
        vec![(1, 2024.0), (2, 123.456), (3, 1.0), (4, 500.0)]
    );
    assert_eq!(d.dlms_stats().notifications, 1);
    assert_eq!(d.stats().telegrams, 1);
}

#[test]
fn an_encryption_only_push_decrypts_without_an_authentication_key() {
    let mut d = decoder(&im350_script(KEY, false));
    // Security byte 0x20 (IM350 and Sagemcom T210-D): no tag at all.
    let events = feed(
        &mut d,
        &encrypted_hdlc(&im350_notification(42_000, 7), 0x20, 8),
    );
    assert_eq!(readings(&events)[1], (2, 42.0));
    // 0x30 without `=so5`: the tag cannot be checked, the plaintext is.
    let events = feed(
        &mut d,
        &encrypted_hdlc(&im350_notification(43_000, 7), 0x30, 9),
    );
    assert_eq!(readings(&events)[1], (2, 43.0));
}

#[test]
fn a_wrong_key_with_an_auth_key_is_one_tag_error_naming_the_meter() {
    let wrong = "FF0102030405060708090A0B0C0D0E0F";
    let mut d = decoder(&im350_script(wrong, true));
    let events = feed(&mut d, &encrypted_hdlc(&im350_notification(1, 1), 0x30, 1));
    let errs = errors(&events);
    assert_eq!(errs.len(), 1, "{events:?}");
    assert!(
        errs[0].contains("meter 1") && errs[0].contains("authentication tag"),
        "{}",
        errs[0]
    );
    assert!(readings(&events).is_empty());
    assert_eq!(d.dlms_stats().auth_failures, 1);
    assert_eq!(d.stats().rejected, 1);
    for secret in [wrong, AUTH, KEY] {
        assert!(
            !errs[0].to_uppercase().contains(secret),
            "a key in {}",
            errs[0]
        );
    }
}

#[test]
fn a_wrong_key_without_an_auth_key_is_caught_by_the_plaintext() {
    let wrong = "FF0102030405060708090A0B0C0D0E0F";
    let mut d = decoder(&im350_script(wrong, false));
    let mut published = 0;
    for counter in 0..200 {
        let events = feed(
            &mut d,
            &encrypted_hdlc(&im350_notification(5, 5), 0x20, counter),
        );
        published += readings(&events).len();
        assert_eq!(errors(&events).len(), 1);
    }
    assert_eq!(published, 0);
    assert_eq!(d.dlms_stats().implausible, 200);
    let e = d.stats();
    assert_eq!((e.rejected, e.telegrams), (200, 0));
}

#[test]
fn a_wrong_auth_key_fails_the_tag() {
    let mut d = decoder(&im350_script(KEY, true).replace(AUTH, "00D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"));
    let events = feed(&mut d, &encrypted_hdlc(&im350_notification(1, 1), 0x30, 1));
    assert_eq!(errors(&events).len(), 1);
    assert!(readings(&events).is_empty());
}

#[test]
fn a_flipped_ciphertext_byte_fails_the_tag_and_a_bad_fcs_is_a_crc_error() {
    let mut d = decoder(&im350_script(KEY, true));
    let apdu = apdu::encrypt(
        &im350_notification(1, 1),
        &keys(true),
        SYSTEM_TITLE,
        0x30,
        3,
    );
    let mut tampered = apdu.clone();
    tampered[30] ^= 1;
    let events = feed(&mut d, &frame::hdlc_frame(&tampered, false, true));
    assert_eq!(d.dlms_stats().auth_failures, 1, "{events:?}");
    let mut bad_fcs = frame::hdlc_frame(&apdu, false, true);
    let n = bad_fcs.len();
    bad_fcs[n - 2] ^= 0xFF;
    let events = feed(&mut d, &bad_fcs);
    assert!(
        matches!(events[..], [DecodeEvent::Error(DecodeError::BadCrc { .. })]),
        "{events:?}"
    );
    assert_eq!(d.stats().crc_errors, 1);
    assert!(readings(&events).is_empty());
}

#[test]
fn a_truncated_frame_is_reported_at_the_end_and_after_a_silence() {
    let mut d = decoder(&im350_script(KEY, true));
    let f = encrypted_hdlc(&im350_notification(1, 1), 0x30, 1);
    let t0 = Instant::now();
    d.handle_bytes(t0, &f[..40]);
    assert!(drain(&mut d).is_empty());
    assert_eq!(d.poll_timeout(), Some(t0 + SILENCE));
    d.handle_timeout(t0 + SILENCE);
    let events = drain(&mut d);
    assert!(
        matches!(
            events[..],
            [DecodeEvent::Error(DecodeError::Truncated { bytes: 40, .. })]
        ),
        "{events:?}"
    );
    d.handle_bytes(t0 + SILENCE * 2, &f[..10]);
    d.handle_end();
    assert_eq!(errors(&drain(&mut d)).len(), 1);
    assert_eq!(d.stats().rejected, 2);
}

#[test]
fn segmented_mbus_frames_are_joined_into_one_telegram() {
    let mut d = decoder(&im350_script(KEY, true));
    let apdu = apdu::encrypt(
        &im350_notification(9_000, 2),
        &keys(true),
        SYSTEM_TITLE,
        0x30,
        4,
    );
    let wire = frame::mbus_frames(&apdu, 40);
    assert!(wire.len() > 2 * 46, "several segments");
    let events = feed(&mut d, &wire);
    assert_eq!(readings(&events)[1], (2, 9.0), "{events:?}");
    // A lost middle segment drops the message.
    let mut parts = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let len = usize::from(wire[at + 1]) + 6;
        parts.push(&wire[at..at + len]);
        at += len;
    }
    let without_second: Vec<u8> = parts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .flat_map(|(_, p)| p.to_vec())
        .collect();
    let events = feed(&mut d, &without_second);
    assert!(readings(&events).is_empty());
    assert!(!errors(&events).is_empty());
}

#[test]
fn pm_obis_text_finds_the_cosem_value_after_the_code() {
    // Kamstrup-style flat list: obis, value, obis, value; a negative long for power.
    let mut n = vec![0x0F, 0, 0, 0, 2, 0x00, 0x02, 0x04];
    n.extend_from_slice(&[
        0x09, 0x06, 1, 0, 1, 8, 0, 0xFF, 0x06, 0x00, 0x01, 0xE2, 0x40,
    ]);
    n.extend_from_slice(&[0x09, 0x06, 1, 0, 1, 7, 0, 0xFF, 0x10, 0xFF, 0x38]);
    let script = format!(
        ">D\n>M 1\n+1,3,r,0,9600,LGZ\n1,=so4,{KEY}\n\
1,pm(1.8.0)@1000,kWh_IN,kWh,kWh_IN,3\n1,pm(1.7.0)@1,W,W,W,0\n1,pm(2.8.0)@1,x,x,x,0\n#\n"
    );
    let mut d = decoder(&script);
    let events = feed(&mut d, &encrypted_hdlc(&n, 0x20, 1));
    assert_eq!(
        readings(&events),
        vec![(1, 123.456), (2, -200.0)],
        "{events:?}"
    );
}

#[test]
fn obis_needles_follow_tasmota() {
    assert_eq!(obis_needle(b"1.8.0"), Some(vec![1, 8, 0, 0xFF]));
    assert_eq!(obis_needle(b".3.8.1"), Some(vec![0, 3, 8, 1]));
    assert_eq!(obis_needle(b"1.0.1.8.0"), Some(vec![1, 0, 1, 8, 0]));
    assert_eq!(obis_needle(b"300.1.1"), None);
    assert_eq!(obis_needle(b"abc"), None);
}

#[test]
fn a_plain_notification_is_read_too() {
    let mut d = decoder(&im350_script(KEY, false));
    let events = feed(
        &mut d,
        &frame::hdlc_frame(&im350_notification(77_000, 1), false, true),
    );
    assert_eq!(readings(&events)[1], (2, 77.0));
}

#[test]
fn explain_lists_the_header_and_data_and_never_the_key() {
    let wire = encrypted_hdlc(&im350_notification(123_456, 500), 0x30, 7);
    let text = explain(&wire, Some(&keys(true))).text;
    assert!(text.contains("frame counter 7, tag checked"), "{text}");
    assert!(text.contains("unsigned 123456"), "{text}");
    assert!(text.contains("date-time 2024-11-27 16:32:48"), "{text}");
    assert!(!text.to_uppercase().contains(KEY) && !text.to_uppercase().contains(AUTH));
    let no_key = explain(&wire, None).text;
    assert!(no_key.contains("no `=so4` key"), "{no_key}");
}

/// The DLMS UA Green Book's worked example of security suite 0 (authenticated encryption of a
/// get-request): EK 00..0F, AK D0..DF, system title `4D4D4D0000BC614E`, invocation counter
/// `01234567`, security byte 0x30.
#[test]
fn the_green_book_gcm_example_decrypts_and_its_tag_is_checked() {
    let mut apdu = crate::hex::decode(b"DB 08 4D4D4D0000BC614E 1E 30 01234567 411312FF935A47566827C467BC 7D825C3BE4A77C3FCC056B6B").unwrap();
    let (plain, security) = apdu::decipher(&apdu, Some(&keys(true))).unwrap();
    assert_eq!(crate::hex::encode(&plain), "c0010000080000010000ff0200");
    assert!(security.tag_checked);
    assert_eq!(security.frame_counter, 0x0123_4567);
    // Without the authentication key the counter mode alone gives the same plaintext.
    assert_eq!(apdu::decipher(&apdu, Some(&keys(false))).unwrap().0, plain);
    let last = apdu.len() - 1;
    apdu[last] ^= 1;
    assert_eq!(
        apdu::decipher(&apdu, Some(&keys(true))),
        Err(ApduError::AuthFailed)
    );
    // Our own encryption gives the book's bytes.
    let ours = apdu::encrypt(
        &plain,
        &keys(true),
        *b"MMM\x00\x00\xBC\x61\x4E",
        0x30,
        0x0123_4567,
    );
    apdu[last] ^= 1;
    assert_eq!(ours, apdu);
}

#[test]
fn a_key_is_not_in_the_debug_output_of_keys() {
    assert_eq!(format!("{:?}", keys(true)), "Keys { .. }");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn chunking_changes_nothing(cuts in proptest::collection::vec(1usize..60, 1..40)) {
        let mut wire = b"\x00\x7e garbage".to_vec();
        wire.extend(encrypted_hdlc(&im350_notification(1_000, 3), 0x30, 1));
        wire.extend(frame::mbus_frames(&apdu::encrypt(&im350_notification(2_000, 4), &keys(true), SYSTEM_TITLE, 0x30, 2), 50));
        wire.extend(encrypted_hdlc(&im350_notification(3_000, 5), 0x30, 3));
        let mut whole = decoder(&im350_script(KEY, true));
        let expected = feed(&mut whole, &wire);
        let mut d = decoder(&im350_script(KEY, true));
        let mut got = Vec::new();
        let mut at = 0;
        for c in cuts.iter().cycle() {
            if at >= wire.len() { break; }
            let end = (at + c).min(wire.len());
            got.extend(feed(&mut d, &wire[at..end]));
            at = end;
        }
        prop_assert_eq!(readings(&got), readings(&expected));
        prop_assert_eq!(readings(&got).len(), 12);
        prop_assert_eq!(d.stats().bytes_skipped, whole.stats().bytes_skipped);
    }

    #[test]
    fn hostile_bytes_never_panic_nor_publish(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut d = decoder(&im350_script(KEY, true));
        let events = feed(&mut d, &bytes);
        d.handle_end();
        prop_assert!(readings(&events).is_empty());
        let _ = explain(&bytes, Some(&keys(true)));
    }

    #[test]
    fn a_flipped_byte_anywhere_publishes_nothing_wrong(pos in 0usize..120, bit in 0u8..8) {
        let wire = encrypted_hdlc(&im350_notification(1_000, 3), 0x30, 1);
        let mut bad = wire.clone();
        let pos = pos % bad.len();
        bad[pos] ^= 1 << bit;
        let mut d = decoder(&im350_script(KEY, true));
        let events = feed(&mut d, &bad);
        d.handle_end();
        let got = readings(&events);
        prop_assert!(got.is_empty() || got == vec![(1, 2024.0), (2, 1.0), (3, 1.0), (4, 3.0)], "{:?}", got);
    }
}
