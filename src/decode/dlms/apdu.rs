/*!
The application layer of a DLMS push: general-block-transfer (`E0`) reassembly, general-glo- and
general-ded-ciphering (`DB`/`DF`) decryption, and the data-notification (`0F`) header.

Ciphering (IEC 62056-5-3 / DLMS Green Book security suite 0): the IV is the 8-byte system title
followed by the 4-byte frame counter; the security byte says what was applied (bit 4 authentication,
bit 5 encryption). With authentication the last 12 bytes are the GCM tag over AAD = security byte
|| authentication key; it is checked when `=so5` gives that key, so a wrong key or auth key is one
clear rejection. Without an authentication key (Tasmota never checks the tag unless built with
`USE_SML_AUTHKEY`) the ciphertext is decrypted as GCM's counter mode does, and a wrong key is caught
by the plaintext: it must be a data-notification whose COSEM data parse to the last byte, which
random bytes are not (the first byte alone is right once in 256).

Keys are secrets: no error or log line here quotes them, nor the plaintext around them.
*/

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::cipher::BlockEncrypt;
use aes_gcm::aes::Aes128;
use aes_gcm::AesGcm;

use super::cosem::{self, length};

pub const GENERAL_BLOCK_TRANSFER: u8 = 0xE0;
pub const GENERAL_GLO_CIPHERING: u8 = 0xDB;
pub const GENERAL_DED_CIPHERING: u8 = 0xDF;
pub const DATA_NOTIFICATION: u8 = 0x0F;

/// The GCM tag DLMS sends: 12 bytes.
const TAG_LEN: usize = 12;

/// Blocks of a general-block-transfer past this total are not a meter's push.
const MAX_GBT: usize = 16 * 1024;

/// The `=so4` key and the optional `=so5` authentication key. `Debug` shows neither.
#[derive(Clone)]
pub struct Keys {
    pub encryption: [u8; 16],
    pub authentication: Option<Vec<u8>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys { .. }")
    }
}

/// Why an APDU gave no notification. Offsets count from the start of the link payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApduError {
    #[error("encrypted telegram (security byte {security:02X}) but the meter has no `=so4` key")]
    NoKey { security: u8 },
    #[error("authentication tag mismatch: wrong `=so4` key or `=so5` authentication key")]
    AuthFailed,
    #[error("decryption gave no DLMS data (byte {offset}: {why}): wrong `=so4` key?")]
    Implausible { offset: usize, why: String },
    #[error("byte {offset}: {why}")]
    Malformed { offset: usize, why: String },
    #[error("APDU cut after {bytes} bytes: {why}")]
    Truncated { bytes: usize, why: &'static str },
}

/// What the ciphering header said (for `--explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    pub system_title: Vec<u8>,
    pub security: u8,
    pub frame_counter: u32,
    /// The GCM tag was checked (an authentication key was given and the byte asks for one).
    pub tag_checked: bool,
}

/// A data-notification: the plaintext APDU and where its parts are.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The plaintext APDU, starting with `0F`.
    pub apdu: Vec<u8>,
    pub invoke_id: u32,
    /// The notification's date-time field (12 bytes) when it has one.
    pub date_time: Option<Vec<u8>>,
    /// Where the notification body starts in `apdu`: what Tasmota's metric lines read from.
    pub body: usize,
    pub security: Option<Security>,
}

impl Notification {
    /// The notification body (the buffer Tasmota lays a `r` meter's masks over).
    pub fn body(&self) -> &[u8] {
        &self.apdu[self.body..]
    }
}

/// Unwraps APDUs; holds general-block-transfer blocks between telegrams.
#[derive(Debug, Default)]
pub struct Unwrapper {
    gbt: Vec<u8>,
    gbt_next: Option<u16>,
}

fn malformed(offset: usize, why: impl Into<String>) -> ApduError {
    ApduError::Malformed {
        offset,
        why: why.into(),
    }
}

impl Unwrapper {
    /// One link payload in; `Ok(None)` while general-block-transfer blocks are still coming.
    pub fn open(
        &mut self,
        payload: &[u8],
        keys: Option<&Keys>,
    ) -> Result<Option<Notification>, ApduError> {
        match payload.first() {
            Some(&GENERAL_BLOCK_TRANSFER) => {
                let Some(joined) = self.block(payload)? else {
                    return Ok(None);
                };
                unwrap_apdu(&joined, keys).map(Some)
            }
            Some(_) => unwrap_apdu(payload, keys).map(Some),
            None => Err(ApduError::Truncated {
                bytes: 0,
                why: "empty payload",
            }),
        }
    }

    /// A general-block-transfer block: `E0 control(1) block(2) ack(2) length data`.
    fn block(&mut self, p: &[u8]) -> Result<Option<Vec<u8>>, ApduError> {
        if p.len() < 7 {
            return Err(ApduError::Truncated {
                bytes: p.len(),
                why: "general-block-transfer header",
            });
        }
        let control = p[1];
        let number = u16::from_be_bytes([p[2], p[3]]);
        let (len, used) = length(p, 6).map_err(|e| malformed(e.offset, e.why))?;
        let start = 6 + used;
        let data = p.get(start..start + len).ok_or(ApduError::Truncated {
            bytes: p.len(),
            why: "general-block-transfer block shorter than its length",
        })?;
        match self.gbt_next {
            Some(n) if n == number => {}
            _ if number == 1 => self.gbt.clear(),
            _ => {
                self.gbt.clear();
                self.gbt_next = None;
                return Err(malformed(
                    2,
                    format!(
                        "general-block-transfer block {number} out of order (a block was lost)"
                    ),
                ));
            }
        }
        self.gbt.extend_from_slice(data);
        if self.gbt.len() > MAX_GBT {
            self.gbt.clear();
            self.gbt_next = None;
            return Err(malformed(0, "general-block-transfer longer than 16 KiB"));
        }
        if control & 0x80 != 0 {
            self.gbt_next = None;
            Ok(Some(std::mem::take(&mut self.gbt)))
        } else {
            self.gbt_next = Some(number.wrapping_add(1));
            Ok(None)
        }
    }
}

/// A complete APDU: ciphered or plain data-notification.
pub fn unwrap_apdu(apdu: &[u8], keys: Option<&Keys>) -> Result<Notification, ApduError> {
    match apdu.first() {
        Some(&GENERAL_GLO_CIPHERING) | Some(&GENERAL_DED_CIPHERING) => {
            let (plain, security) = decipher(apdu, keys)?;
            let encrypted = security.security & 0x20 != 0;
            let mut n = notification(plain).map_err(|e| match e {
                // Bytes that decrypted to no notification: the key is wrong (or the tag was not
                // there to tell).
                ApduError::Malformed { offset, why } if encrypted && !security.tag_checked => {
                    ApduError::Implausible { offset, why }
                }
                ApduError::Truncated { bytes, why } if encrypted && !security.tag_checked => {
                    ApduError::Implausible {
                        offset: bytes,
                        why: why.to_string(),
                    }
                }
                e => e,
            })?;
            n.security = Some(security);
            Ok(n)
        }
        Some(&DATA_NOTIFICATION) => notification(apdu.to_vec()),
        Some(&other) => Err(malformed(
            0,
            format!("APDU tag {other:02X} is not a data-notification or ciphered APDU"),
        )),
        None => Err(ApduError::Truncated {
            bytes: 0,
            why: "empty APDU",
        }),
    }
}

/// `DB/DF st-len system-title length security-byte frame-counter ciphertext [tag]`: the plaintext
/// APDU inside and the security header (the tag checked when the keys hold an authentication key).
pub fn decipher(apdu: &[u8], keys: Option<&Keys>) -> Result<(Vec<u8>, Security), ApduError> {
    let cut = |why| ApduError::Truncated {
        bytes: apdu.len(),
        why,
    };
    let st_len = usize::from(*apdu.get(1).ok_or(cut("ciphering header"))?);
    if st_len > 8 {
        return Err(malformed(
            1,
            format!("system title of {st_len} bytes (8 expected)"),
        ));
    }
    let system_title = apdu.get(2..2 + st_len).ok_or(cut("system title"))?.to_vec();
    let (len, used) = length(apdu, 2 + st_len).map_err(|e| malformed(e.offset, e.why))?;
    let start = 2 + st_len + used;
    let body = apdu
        .get(start..start + len)
        .ok_or(cut("ciphered APDU shorter than its length"))?;
    if body.len() < 5 {
        return Err(cut("security header"));
    }
    let sc = body[0];
    let fc = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
    let authenticated = sc & 0x10 != 0;
    let encrypted = sc & 0x20 != 0;
    let mut text = body[5..].to_vec();
    let tag = if authenticated {
        if text.len() < TAG_LEN {
            return Err(cut("authentication tag"));
        }
        Some(text.split_off(text.len() - TAG_LEN))
    } else {
        None
    };
    let mut security = Security {
        system_title: system_title.clone(),
        security: sc,
        frame_counter: fc,
        tag_checked: false,
    };
    if !encrypted && !authenticated {
        return Ok((text, security));
    }
    let Some(keys) = keys else {
        if encrypted {
            return Err(ApduError::NoKey { security: sc });
        }
        return Ok((text, security));
    };
    let mut iv = [0u8; 12];
    iv[..st_len].copy_from_slice(&system_title);
    iv[8..].copy_from_slice(&fc.to_be_bytes());
    match (&tag, &keys.authentication) {
        (Some(tag), Some(ak)) => {
            let mut aad = Vec::with_capacity(1 + ak.len() + if encrypted { 0 } else { text.len() });
            aad.push(sc);
            aad.extend_from_slice(ak);
            let cipher =
                AesGcm::<Aes128, U12, U12>::new(GenericArray::from_slice(&keys.encryption));
            let nonce = GenericArray::from_slice(&iv);
            let tag = GenericArray::from_slice(tag);
            if encrypted {
                cipher
                    .decrypt_in_place_detached(nonce, &aad, &mut text, tag)
                    .map_err(|_| ApduError::AuthFailed)?;
            } else {
                // Authentication only: the plaintext is part of the AAD, nothing is encrypted.
                aad.extend_from_slice(&text);
                cipher
                    .decrypt_in_place_detached(nonce, &aad, &mut [], tag)
                    .map_err(|_| ApduError::AuthFailed)?;
            }
            security.tag_checked = true;
        }
        _ if encrypted => ctr(&keys.encryption, &iv, &mut text),
        _ => {}
    }
    Ok((text, security))
}

/// GCM's counter mode alone (no tag): keystream block i is AES(IV || i+2), as GCM encrypts.
fn ctr(key: &[u8; 16], iv: &[u8; 12], text: &mut [u8]) {
    let aes = Aes128::new(GenericArray::from_slice(key));
    for (i, chunk) in text.chunks_mut(16).enumerate() {
        let mut block = [0u8; 16];
        block[..12].copy_from_slice(iv);
        block[12..].copy_from_slice(&(i as u32).wrapping_add(2).to_be_bytes());
        let mut block = GenericArray::from(block);
        aes.encrypt_block(&mut block);
        for (b, k) in chunk.iter_mut().zip(block.iter()) {
            *b ^= k;
        }
    }
}

/// `0F invoke-id(4) date-time body`, with the date-time as an octet string, null, or (some
/// Kamstrup meters) a bare 12-byte date-time behind tag `0C` or `19`. The body must be COSEM data
/// to its last byte.
pub fn notification(apdu: Vec<u8>) -> Result<Notification, ApduError> {
    if apdu.first() != Some(&DATA_NOTIFICATION) {
        return Err(malformed(
            0,
            format!(
                "APDU tag {:02X} is not a data-notification (0F)",
                apdu.first().copied().unwrap_or(0)
            ),
        ));
    }
    if apdu.len() < 6 {
        return Err(ApduError::Truncated {
            bytes: apdu.len(),
            why: "data-notification header",
        });
    }
    let invoke_id = u32::from_be_bytes([apdu[1], apdu[2], apdu[3], apdu[4]]);
    let (date_time, body) = match apdu[5] {
        cosem::tag::NULL => (None, 6),
        cosem::tag::OCTET_STRING => {
            let (n, used) = length(&apdu, 6).map_err(|e| malformed(e.offset, e.why))?;
            let start = 6 + used;
            let dt = apdu.get(start..start + n).ok_or(ApduError::Truncated {
                bytes: apdu.len(),
                why: "notification date-time",
            })?;
            ((n == 12).then(|| dt.to_vec()), start + n)
        }
        cosem::tag::UTF8_STRING | cosem::tag::DATE_TIME => {
            let dt = apdu.get(6..18).ok_or(ApduError::Truncated {
                bytes: apdu.len(),
                why: "notification date-time",
            })?;
            (Some(dt.to_vec()), 18)
        }
        other => {
            return Err(malformed(
                5,
                format!("notification date-time has type {other:02X}"),
            ))
        }
    };
    if body >= apdu.len() {
        return Err(ApduError::Truncated {
            bytes: apdu.len(),
            why: "data-notification without a body",
        });
    }
    cosem::parse_all(&apdu, body).map_err(|e| malformed(e.offset, e.why))?;
    Ok(Notification {
        apdu,
        invoke_id,
        date_time,
        body,
        security: None,
    })
}

/// Encrypt a data-notification as a meter does (tests, the simulator, fuzz seeds): returns the
/// general-glo-ciphering APDU.
pub fn encrypt(
    plain: &[u8],
    keys: &Keys,
    system_title: [u8; 8],
    security: u8,
    frame_counter: u32,
) -> Vec<u8> {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&system_title);
    iv[8..].copy_from_slice(&frame_counter.to_be_bytes());
    let mut text = plain.to_vec();
    let mut tag = Vec::new();
    if security & 0x10 != 0 {
        let mut aad = vec![security];
        aad.extend_from_slice(keys.authentication.as_deref().unwrap_or(&[0u8; 16]));
        let cipher = AesGcm::<Aes128, U12, U12>::new(GenericArray::from_slice(&keys.encryption));
        let t = cipher
            .encrypt_in_place_detached(GenericArray::from_slice(&iv), &aad, &mut text)
            .unwrap_or_default();
        tag = t.to_vec();
    } else {
        ctr(&keys.encryption, &iv, &mut text);
    }
    let len = 5 + text.len() + tag.len();
    let mut out = vec![GENERAL_GLO_CIPHERING, 8];
    out.extend_from_slice(&system_title);
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.push(0x82);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
    out.push(security);
    out.extend_from_slice(&frame_counter.to_be_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&tag);
    out
}
