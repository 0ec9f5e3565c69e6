/*!
The script front end: bytes of a Tasmota script in, a [`model::Script`] out, or diagnostics.

Staged like pest's own meta grammar: the pest grammar (`grammar/tasmota.pest`) splits the file into
sections and lines (`parse.rs` -> the spanned tree in `ast.rs`); each `>M` line is `%var%`-substituted
(`substitute.rs`) and parsed with its own rule, so one broken line gives one error and the rest is
still checked; lowering (`lower.rs`) turns the tree into the typed model, framing request telegrams
(`telegram.rs`) and collecting every problem it finds.
*/

mod ast;
pub mod diagnostic;
mod grammar;
mod lower;
pub mod model;
mod parse;
mod substitute;
pub mod telegram;

pub use diagnostic::{Diagnostic, Severity};
pub use model::Script;

/// The result of compiling one script: the model when there was no error, and every diagnostic.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub script: Option<Script>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// At most this many invalid-UTF-8 reports per file; a binary file would otherwise flood the output.
const MAX_ENCODING_ERRORS: usize = 10;

/// Compile a script from its raw bytes.
pub fn compile(source: &[u8]) -> Compiled {
    let mut diagnostics = encoding_errors(source);
    let mut text = String::from_utf8_lossy(source);
    if let Some(rest) = text.strip_prefix('\u{feff}') {
        // Editors on Windows add a byte-order mark; Tasmota would see it as text before `>D`.
        diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            line: 1,
            col: 1,
            message: "the file starts with a UTF-8 byte-order mark: Tasmota would not run it; sml ignores the mark".into(),
            source_line: rest.lines().next().unwrap_or("").to_string(),
        });
        text = std::borrow::Cow::Owned(rest.to_string());
    }
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let file = match parse::parse_file(&text) {
        Ok(f) => f,
        Err((at, message)) => {
            // The file grammar accepts any text; this is a safety net, never a panic.
            let line = text[..at.min(text.len())].matches('\n').count();
            diagnostics.push(Diagnostic {
                severity: Severity::Error,
                line: line as u32 + 1,
                col: 1,
                message,
                source_line: lines.get(line).unwrap_or(&"").to_string(),
            });
            return Compiled {
                script: None,
                diagnostics,
            };
        }
    };
    let (script, mut more) = lower::lower(&file, &lines);
    let had_encoding_errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    diagnostics.append(&mut more);
    diagnostics.sort_by_key(|d| (d.line, d.col));
    Compiled {
        script: if had_encoding_errors { None } else { script },
        diagnostics,
    }
}

/// One error per line holding bytes that are not UTF-8, naming the line and the byte.
fn encoding_errors(source: &[u8]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut last_line = 0;
    while offset < source.len() {
        let Err(e) = std::str::from_utf8(&source[offset..]) else {
            break;
        };
        let bad = offset + e.valid_up_to();
        let line_start = source[..bad]
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(0);
        let line = source[..bad].iter().filter(|&&b| b == b'\n').count() as u32 + 1;
        let line_end = source[bad..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| bad + p)
            .unwrap_or(source.len());
        let shown = String::from_utf8_lossy(&source[line_start..line_end]);
        let shown = shown.strip_suffix('\r').unwrap_or(&shown).to_string();
        if line != last_line {
            if out.len() == MAX_ENCODING_ERRORS {
                break;
            }
            let col = String::from_utf8_lossy(&source[line_start..bad])
                .chars()
                .count() as u32
                + 1;
            out.push(Diagnostic {
                severity: Severity::Error,
                line,
                col,
                message: format!(
                    "byte 0x{:02X} (byte {} of the line, offset {bad} in the file) is not UTF-8: save the script as UTF-8",
                    source[bad],
                    bad - line_start + 1
                ),
                source_line: shown,
            });
            last_line = line;
        }
        offset = bad + e.error_len().unwrap_or(source.len() - bad).max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::model::*;
    use super::*;

    fn meter(body: &str) -> Meter {
        let text = format!(">D\nr=\"1,0-0:98.1.0(@(\"\nn=3\n>B\n=>sensor53 r\n>M 1\n{body}\n#\n");
        let c = compile(text.as_bytes());
        assert!(!c.has_errors(), "{:#?}", c.diagnostics);
        c.script.unwrap().meters.remove(0)
    }

    fn errors(text: &str) -> Vec<String> {
        compile(text.as_bytes())
            .diagnostics
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
            .collect()
    }

    #[test]
    fn hash_x_shows_an_sml_hex_id_as_text_but_is_a_terminator_on_obis() {
        use model::{Decoding, ValueSpec};
        let text = ">D\n>M 2\n+1,3,s,0,9600,A\n+2,4,o,0,9600,B\n1,77078181c78203ff@#x,m,,m,0\n2,0.2.0(@#x,v,,v,0\n#\n";
        let script = compile(text.as_bytes()).script.unwrap();
        let Decoding::Sml(sml) = &script.meters[0].decoding else {
            panic!("meter 1 is SML")
        };
        assert_eq!(sml[0].value, ValueSpec::Text { hex_as_ascii: true });
        let Decoding::Obis(obis) = &script.meters[1].decoding else {
            panic!("meter 2 is OBIS")
        };
        assert_eq!(
            obis[0].value,
            ValueSpec::Text {
                hex_as_ascii: false
            }
        );
        assert_eq!(obis[0].pattern.text_terminator, Some('x'));
    }

    #[test]
    fn obis_meter_with_substituted_billing_line() {
        let m = meter("+1,3,o,16,115200,EON,1\n%r%14:1,Peak,kW,pk,3\n1,0.2.0(@#),ver,,ver,0\n1,1.8.0(@1),x,,x,20");
        let Decoding::Obis(metrics) = &m.decoding else {
            panic!("{:?}", m.decoding)
        };
        assert_eq!(metrics[0].pattern.code, "0-0:98.1.0(");
        assert_eq!(metrics[0].pattern.bracket, 14);
        assert_eq!(metrics[1].pattern.text_terminator, Some(')'));
        assert_eq!(
            metrics[1].value,
            ValueSpec::Text {
                hex_as_ascii: false
            }
        );
        assert_eq!(
            metrics[2].output.precision,
            Precision {
                decimals: 4,
                publish_each: true
            }
        );
        assert_eq!(m.flags, 16);
        assert_eq!(m.serial.to_string(), "115200 8N1");
    }

    #[test]
    fn sml_meter_with_wildcards_and_offset() {
        let m = meter("+1,3,s,0,9600,SML\n1,77070100xx0800ff@1000-5,Total,kWh,total,3");
        let Decoding::Sml(metrics) = &m.decoding else {
            panic!()
        };
        assert_eq!(metrics[0].pattern.bytes[4], None);
        assert_eq!(
            metrics[0].value,
            ValueSpec::Number {
                divisor: 1000.0,
                offset: -5.0
            }
        );
    }

    #[test]
    fn modbus_meter_requests_and_block_selectors() {
        let m = meter("+1,%0n%,mE1,0,9600,MB,1(i4),10,01040000,r010400000012\n1,010404ffffffff@i1:1,V,V,v,1\n1,010404UUuu@b3:i0:1,B,,b,0");
        assert_eq!(m.source, MeterSource::Pin(3));
        assert_eq!(m.serial.parity, Parity::Even);
        assert_eq!(
            m.tx,
            Some(TxPin {
                pin: 1,
                driver_enable: Some(DriverEnable {
                    pin: 4,
                    inverted: true
                })
            })
        );
        assert_eq!(m.requests.period_ms, 1000);
        assert_eq!(
            m.requests.telegrams[0],
            vec![0x01, 0x04, 0x00, 0x00, 0x00, 0x02, 0x71, 0xCB]
        );
        assert_eq!(m.requests.telegrams[1].len(), 8);
        let Decoding::Modbus(metrics) = &m.decoding else {
            panic!()
        };
        assert_eq!(metrics[0].pattern.block, Some(1));
        assert_eq!(
            (metrics[1].pattern.bit, metrics[1].pattern.block),
            (Some(3), Some(0))
        );
    }

    #[test]
    fn modbus_tcp_has_no_crc() {
        let m = meter("+1,[192.168.1.10],m,0,502,TCP,0,10,01040000\n1,010404ffffffff@i0:1,V,V,v,1");
        assert_eq!(
            m.source,
            MeterSource::ModbusTcp {
                host: "192.168.1.10".into(),
                port: 502
            }
        );
        assert_eq!(
            m.requests.telegrams[0],
            vec![0x01, 0x04, 0x00, 0x00, 0x00, 0x02]
        );
    }

    #[test]
    fn obis_requests_lose_parity_with_so2_flag_20() {
        let m = meter("+1,3,o,0,300,zm,1,100,2F3F210D0A\n1,=so2,20\n1,1.8.0(@1,t,,t,0");
        assert_eq!(m.requests.telegrams[0], vec![0x2F, 0x3F, 0x21, 0x0D, 0x0A]);
        assert_eq!(m.options.so2_flags, Some(0x20));
    }

    #[test]
    fn other_meter_types() {
        let m = meter("+1,3,k,0,9600,K,1,10,3F1001003C\n1,3F10x5kstr@1,E,,e,0");
        assert!(
            matches!(&m.decoding, Decoding::Kamstrup(v) if v[0].pattern.ops.last() == Some(&ByteOp::Extract(Extract::Kamstrup)))
        );
        assert_eq!(m.requests.telegrams[0][0], 0x80);
        let m = meter("+1,3,e,0,2400,EB\n1,xxxxxxxx5017xxuu@1,T,C,t,1");
        assert!(matches!(&m.decoding, Decoding::Ebus(v) if v[0].pattern.ops[0] == ByteOp::Skip(1)));
        let m = meter("+1,3,R,0,2400,RAW\n1,68xx08bcd8@1,N,,n,0");
        assert!(
            matches!(&m.decoding, Decoding::Raw { shift: false, metrics } if metrics.len() == 1)
        );
        let m = meter("+1,3,v,0,9600,V\n1,AA1000vo2sw@10,T,C,t,1");
        assert!(
            matches!(&m.decoding, Decoding::Vbus(v) if v[0].pattern.offset == 2 && v[0].pattern.signed)
        );
        let m = meter(
            "+1,21,c,1,-50,GAS\n1,1-0:1.8.0*255(@100,Gas,m3,gas,2\n1,1-0:1.7.0*255(@1,Rate,,rate,0",
        );
        assert!(
            matches!(&m.decoding, Decoding::Counter { param: -50, metrics } if metrics[1].pattern == CounterField::Rate)
        );
        assert_eq!(m.serial.baud, 0);
        let m = meter("+1,7,C,0,3203,CAN,6,10,908040FE08\n1,908040FEx4UUuu@1,V,V,v,1");
        assert!(matches!(&m.decoding, Decoding::Can(v) if v.len() == 1));
        let m = meter("+1,3,p,0,9600,PZ\n1,F804xxUUuu@10,V,V,v,1");
        assert!(matches!(&m.decoding, Decoding::Pzem(_)));
    }

    #[test]
    fn entries_count_values_and_derived_lines_across_meters() {
        let text = ">D\n>M 2\n+1,3,s,0,9600,A\n+2,4,o,0,9600,B\n1,77070100010800ff@1,a,,a,0\n1,=h<hr/>\n2,1.8.0(@1,b,,b,0\n1,=m 1+2 @1,s,,s,0\n1,=so3,100\n2,=d 2 10 @1,d,,d,0\n#\n";
        let c = compile(text.as_bytes());
        let script = c.script.unwrap();
        let entries: Vec<(u16, EntryNo, &str)> = script
            .outputs()
            .iter()
            .map(|(m, o)| (m.index, o.entry, o.name.as_str()))
            .collect();
        assert_eq!(
            entries,
            vec![(1, 1, "a"), (2, 2, "b"), (1, 3, "s"), (2, 4, "d")]
        );
    }

    #[test]
    fn continuation_lines_join_telegrams_but_not_an_empty_prefix() {
        let m = meter("+1,3,m,0,9600,MB,1,1,01030271,\n0103028D\n1,010304SSss@i1:1,P,W,p,0");
        assert_eq!(m.requests.telegrams.len(), 2);
        let m = meter("+1,3,s,0,9600,\n1,77070100010800ff@1,a,,a,0");
        assert_eq!(m.prefix.as_deref(), Some(""));
        assert_eq!(m.decoding.metric_count(), 1);
    }

    #[test]
    fn one_broken_line_gives_one_error_and_the_rest_is_checked() {
        let e = errors(">D\n>M 1\n+1,3,s,0,9600,A\n1,7707zz@1,a,,a,0\n1,77070100010800ff@x,b,,b,0\n1,77070100010800ff@1,c,,c,q\n#\n");
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(e[0].starts_with("4:7:"));
        assert!(e[1].starts_with("5:20:"));
        assert!(e[2].starts_with("6:27:"), "{}", e[2]);
    }

    #[test]
    fn a_byte_order_mark_is_skipped_with_a_warning() {
        let c = compile(
            "\u{feff}>D\n>M 1\n+1,3,s,0,9600,A\n1,77070100010800ff@1,a,,a,0\n#\n".as_bytes(),
        );
        assert!(!c.has_errors(), "{:?}", c.diagnostics);
        assert!(c.diagnostics[0].message.contains("byte-order mark"));
    }

    #[test]
    fn prefixes_are_cut_and_star_hides() {
        let m = meter("+1,3,s,0,9600,Haushalt\n1,77070100010800ff@1,a,,a,0");
        assert_eq!(m.prefix.as_deref(), Some("Haushal"));
        let m = meter("+1,3,s,0,9600,*\n1,77070100010800ff@1,a,,a,0");
        assert_eq!(m.prefix, None);
    }

    #[test]
    fn sections_keep_their_statement_lines() {
        let c =
            compile(b">D\nx=1\n>B  \nx=2\n; comment\n\n>S\nx=3\n#sub(a b)\nx=4\n>xM\nignored\n");
        let s = c.script.unwrap();
        let kinds: Vec<_> = s.sections.iter().map(|s| s.kind.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                SectionKind::Boot,
                SectionKind::EverySecond,
                SectionKind::Subroutine {
                    name: "sub".into(),
                    params: vec!["a".into(), "b".into()]
                },
                SectionKind::Other(">xM".into())
            ]
        );
        assert_eq!(
            s.sections[0].lines,
            vec![SourceLine {
                line: 4,
                text: "x=2".into()
            }]
        );
        assert_eq!(s.declarations[0].initial, Literal::Number(1.0));
    }
}
