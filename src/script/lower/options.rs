/*!
`=so` lines of `>M`: per-meter options. Those with a meaning off the ESP (sign from a status word,
OBIS flags, keys, block sync, SML CRC mode) go into the model; pin, UART and buffer options are
kept verbatim and noted as having no effect.
*/

use super::meter::MeterLowering;
use crate::hex;
use crate::script::ast::Sp;
use crate::script::model::*;
use crate::script::substitute::MappedText;

impl MeterLowering<'_, '_> {
    pub(super) fn option(
        &mut self,
        t: &MappedText,
        index: MeterIndex,
        name: Sp<&str>,
        args: &[Sp<&str>],
    ) {
        let (line, _) = t.origin(name.at);
        let raw_text = t.text[name.at..].to_string();
        self.builder(index).meter.options.raw.push((line, raw_text));
        let arg = |i: usize| args.get(i).map(|a| a.v.trim()).unwrap_or("");
        let missing = |s: &mut Self, what: &str| {
            s.err(
                t,
                name.at + name.v.len(),
                format!("`=so{}` needs {what}", name.v),
            )
        };
        match name.v {
            "1" => {
                if args.len() < 6 {
                    return missing(self, "`,BCDE,fc1,bit1,fc2,bit2,BCDE2`");
                }
                let obis = |s: &str| -> Option<[u8; 4]> {
                    let v = u32::from_str_radix(s, 16).ok()?;
                    (s.len() == 8).then(|| v.to_be_bytes())
                };
                let hex = |s: &str| u8::from_str_radix(s, 16).ok();
                let dec = |s: &str| s.parse::<u8>().ok();
                match (obis(arg(0)), hex(arg(1)), dec(arg(2)), hex(arg(3)), dec(arg(4)), obis(arg(5))) {
                    (Some(status_obis), Some(fc1), Some(bit1), Some(fc2), Some(bit2), Some(value_obis)) => {
                        self.builder(index).meter.options.sign_from_status =
                            Some(SignFromStatus { status_obis, fc1, bit1, fc2, bit2, value_obis })
                    }
                    _ => self.err(t, args[0].at, "`=so1` takes 8-digit hex OBIS codes, hex type bytes and decimal bit numbers"),
                }
            }
            "2" => match u16::from_str_radix(arg(0), 16) {
                Ok(f) => self.builder(index).meter.options.so2_flags = Some(f),
                Err(_) => missing(self, "a hex flag value"),
            },
            "3" => self.note(
                t,
                name.at,
                "`=so3` sets ESP buffer sizes: no effect off the ESP",
            ),
            "4" => {
                let key = hex_bytes(arg(0));
                match key.as_deref().and_then(|k| <[u8; 16]>::try_from(k).ok()) {
                    Some(k) => self.builder(index).meter.options.aes_key = Some(k),
                    None => self.warn(
                        t,
                        args.first().map(|a| a.at).unwrap_or(name.at),
                        "`=so4` needs a 32-digit hex AES key; this one is not (a placeholder?): encrypted telegrams will not decrypt",
                    ),
                }
            }
            "5" => match hex_bytes(arg(0)) {
                Some(k) if !k.is_empty() => self.builder(index).meter.options.auth_key = Some(k),
                _ => self.warn(
                    t,
                    args.first().map(|a| a.at).unwrap_or(name.at),
                    "`=so5` needs a hex authentication key; ignored",
                ),
            },
            "6" => match arg(0).parse::<u32>() {
                Ok(ms) => self.builder(index).meter.options.block_sync_ms = Some(ms),
                Err(_) => missing(self, "a time in ms"),
            },
            "7" => self.note(
                t,
                name.at,
                "`=so7` selects an ESP UART: no effect off the ESP",
            ),
            "8" | "9" => {}
            "C" => match (arg(0).parse::<u32>(), arg(1).parse::<u8>()) {
                (Ok(_), Ok(mode)) if mode <= 11 || mode == 15 => {
                    self.builder(index).meter.options.sml_crc = Some(SmlCrcMode(mode))
                }
                (Ok(_), Ok(mode)) => self.err(
                    t,
                    args[1].at,
                    format!("CRC mode {mode} is unknown (0..11 or 15)"),
                ),
                _ => missing(self, "`,<bufsize>,<crcmode>`"),
            },
            other => self.warn(t, name.at, format!("unknown option `=so{other}`: ignored")),
        }
    }
}

/// A key written as hex digits, nothing else (no blanks inside).
fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if s.bytes().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    hex::decode(s.as_bytes()).ok()
}
