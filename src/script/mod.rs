/*!
The script front end: bytes of a Tasmota script in, a [`model::Script`] out, or diagnostics.

Staged like pest's own meta grammar: the pest grammar (`grammar/tasmota.pest`) splits the file into
sections and lines (`parse.rs` -> the spanned tree in `ast.rs`); each `>M` line is `%var%`-substituted
(`substitute.rs`) and parsed with its own rule, so one broken line gives one error and the rest is
still checked; lowering (`lower/`) turns the tree into the typed model and collects every problem it
finds. Request blocks stay as written; the decode layer frames them (`decode::request`).
[`read_script`] is the one way a command reads a script file (size cap, binary files refused).
*/

mod ast;
pub mod diagnostic;
mod file;
mod grammar;
mod lower;
pub mod model;
mod parse;
mod substitute;

pub use diagnostic::{Diagnostic, Severity};
pub use file::{read_script, ScriptFileError, MAX_SCRIPT_BYTES};
pub use model::Script;

/// `--define NAME=VALUE`: a variable of the host script a meter file is pasted into, used in
/// `%NAME%` of `>M` lines. A value that reads as a number is a number, anything else text.
#[derive(Debug, Clone, PartialEq)]
pub struct Define {
    pub name: String,
    pub value: String,
}

/// Why a `--define` argument is not `NAME=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefineError {
    #[error("'{0}': expected NAME=VALUE, e.g. smlf=0")]
    NoEquals(String),
    #[error("'{0}': the name before '=' is empty")]
    EmptyName(String),
}

impl std::str::FromStr for Define {
    type Err = DefineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((name, value)) = s.split_once('=') else {
            return Err(DefineError::NoEquals(s.to_string()));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(DefineError::EmptyName(s.to_string()));
        }
        Ok(Define {
            name: name.to_string(),
            value: value.to_string(),
        })
    }
}

impl Define {
    fn literal(&self) -> model::Literal {
        match self.value.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => model::Literal::Number(n),
            _ => model::Literal::Text(self.value.clone()),
        }
    }
}

/// What a compile may be told beyond the script text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompileOptions {
    /// Host variables (`--define`), applied after `>D`, so they replace a declaration.
    pub defines: Vec<Define>,
}

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
    compile_with(source, &CompileOptions::default())
}

/// Compile a script from its raw bytes, with host variables.
pub fn compile_with(source: &[u8], options: &CompileOptions) -> Compiled {
    let mut diagnostics = encoding_errors(source);
    let mut text = String::from_utf8_lossy(source);
    if let Some(at) = lone_carriage_return(&text) {
        // Old Mac editors end lines with CR alone; Tasmota's scripter stops a line at `\r` as at
        // `\n`, so a lone CR is a line end here too. Same length, so every offset stays right.
        let line = text[..at].matches('\n').count() as u32 + 1;
        diagnostics.push(Diagnostic {
            severity: Severity::Note,
            line,
            col: 1,
            message: "lines end with a carriage return alone (CR, old Mac style): read as line ends, as Tasmota does".into(),
            source_line: String::new(),
        });
        text = std::borrow::Cow::Owned(cr_to_lf(&text));
    }
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
    let defines: Vec<(String, model::Literal)> = options
        .defines
        .iter()
        .map(|d| (d.name.clone(), d.literal()))
        .collect();
    let (script, mut more) = lower::lower(&file, &lines, &defines);
    let had_encoding_errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    diagnostics.append(&mut more);
    diagnostics.sort_by_key(|d| (d.line, d.col));
    Compiled {
        script: if had_encoding_errors { None } else { script },
        diagnostics,
    }
}

/// The offset of the first CR that is not followed by LF.
fn lone_carriage_return(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    memchr::memchr_iter(b'\r', b).find(|&i| b.get(i + 1) != Some(&b'\n'))
}

/// Every lone CR turned into LF; CR LF stays.
fn cr_to_lf(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for i in memchr::memchr_iter(b'\r', b) {
        if b.get(i + 1) != Some(&b'\n') {
            out.push_str(&text[from..i]);
            out.push('\n');
            from = i + 1;
        }
    }
    out.push_str(&text[from..]);
    out
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
        // As written: framing (count, CRC) is the decode layer's, see `decode::request`.
        assert_eq!(
            m.requests.blocks,
            vec![
                RequestBlock {
                    raw: false,
                    bytes: vec![0x01, 0x04, 0x00, 0x00]
                },
                RequestBlock {
                    raw: true,
                    bytes: vec![0x01, 0x04, 0x00, 0x00, 0x00, 0x12]
                }
            ]
        );
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
    fn a_bracketed_address_is_a_modbus_tcp_source() {
        let m = meter("+1,[192.168.1.10],m,0,502,TCP,0,10,01040000\n1,010404ffffffff@i0:1,V,V,v,1");
        assert_eq!(
            m.source,
            MeterSource::ModbusTcp {
                host: "192.168.1.10".into(),
                port: 502
            }
        );
        assert_eq!(m.requests.blocks[0].bytes, vec![0x01, 0x04, 0x00, 0x00]);
    }

    #[test]
    fn obis_requests_are_kept_as_written_with_the_so2_flags() {
        let m = meter("+1,3,o,0,300,zm,1,100,2F3F210D0A\n1,=so2,20\n1,1.8.0(@1,t,,t,0");
        assert_eq!(m.requests.blocks[0].bytes, b"/?!\r\n");
        assert_eq!(m.options.so2_flags, Some(0x20));
    }

    #[test]
    fn other_meter_types() {
        let m = meter("+1,3,k,0,9600,K,1,10,3F1001003C\n1,3F10x5kstr@1,E,,e,0");
        assert!(
            matches!(&m.decoding, Decoding::Kamstrup(v) if v[0].pattern.ops.last() == Some(&ByteOp::Extract(Extract::Kamstrup)))
        );
        assert_eq!(m.requests.blocks[0].bytes[0], 0x3F);
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
        assert_eq!(m.requests.blocks.len(), 2);
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
            compile(b">D\nx=1\n>B  \nx=2\n; comment\n\n>S\nx=3\n#sub(a b)\nx=4\n>xM\nignored\n>M 1\n+1,3,s,0,9600,A\n1,77070100010800ff@1,a,,a,0\n#\n");
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

    fn diagnostics(text: &str, options: &CompileOptions) -> (Compiled, Vec<String>) {
        let c = compile_with(text.as_bytes(), options);
        let shown = c
            .diagnostics
            .iter()
            .map(|d| format!("{}:{}: {:?}: {}", d.line, d.col, d.severity, d.message))
            .collect();
        (c, shown)
    }

    #[test]
    fn a_string_initializer_longer_than_the_capacity_is_kept_whole() {
        let text =
            ">D\nr=\"1,AA100021421000010774\"\n>M 1\n+1,3,v,0,9600,V\n%r%vo0uw@1,T,C,t,1\n#\n";
        let (c, shown) = diagnostics(text, &CompileOptions::default());
        assert!(!c.has_errors(), "{shown:#?}");
        let script = c.script.unwrap();
        assert_eq!(
            script.declarations[0].initial,
            Literal::Text("1,AA100021421000010774".into())
        );
        let Decoding::Vbus(v) = &script.meters[0].decoding else {
            panic!("a VBus meter")
        };
        assert_eq!(v[0].pattern.header.len(), 10, "the whole 20-digit header");
        assert!(
            shown[0].contains("Note: the initial value has 22 characters"),
            "{shown:#?}"
        );
    }

    #[test]
    fn a_meter_section_ends_at_the_next_section_or_the_end_of_the_file_with_a_note() {
        let meter = ">D\n>M 1\n+1,3,s,0,9600,A\n1,77070100010800ff@1,a,,a,0\n";
        let (c, shown) = diagnostics(&format!("{meter}>B\nx=1\n"), &CompileOptions::default());
        assert!(!c.has_errors(), "{shown:#?}");
        assert_eq!(
            shown,
            vec!["5:1: Note: the `>M` section ends here, at `>B`, without a `#` line: Tasmota ends it at the next section too, and so does sml"]
        );
        let (c, shown) = diagnostics(meter, &CompileOptions::default());
        assert!(!c.has_errors(), "{shown:#?}");
        assert!(
            shown[0].starts_with("4:28: Note: the `>M` section ends at the end of the file"),
            "{shown:#?}"
        );
        let (_, shown) = diagnostics(&format!("{meter}#\n"), &CompileOptions::default());
        assert!(shown.is_empty(), "`#` is the normal end: {shown:#?}");
    }

    #[test]
    fn a_meter_section_without_metric_lines_warns_and_the_script_still_runs() {
        let (c, shown) = diagnostics(
            ">D\n>B\n=>sensor53 r\n>M 1\n+1,3,s,0,9600,A\n#\n",
            &CompileOptions::default(),
        );
        assert!(!c.has_errors(), "{shown:#?}");
        assert_eq!(c.script.unwrap().meters.len(), 1);
        assert!(
            shown[0].starts_with("4:1: Warning: the `>M` section has no metric lines: Tasmota leaves its meter driver not ready"),
            "{shown:#?}"
        );
    }

    #[test]
    fn a_trailing_comma_in_the_request_list_says_tasmota_sends_the_next_line() {
        let e =
            errors(">D\n>M 1\n+1,3,m,0,9600,MB,1,10,01040000,\n1,010404ffffffff@i0:1,V,V,v,1\n#\n");
        assert_eq!(
            e,
            vec!["3:31: the request list ends with a comma, so Tasmota continues it on the next line and sends line 4 (`1,010404ffffffff@i0:1,V,V,v,1`) as request blocks: remove the trailing comma"]
        );
        // A hex continuation line is still joined, as Tasmota joins it.
        let m = meter("+1,3,m,0,9600,MB,1,1,01030271,\n0103028D\n1,010304SSss@i1:1,P,W,p,0");
        assert_eq!(m.requests.blocks.len(), 2);
    }

    #[test]
    fn more_value_lines_than_entry_numbers_is_an_error_not_a_panic() {
        let mut text = String::from(">D\n>M 1\n+1,3,s,0,9600,A\n");
        for _ in 0..=u16::MAX as usize {
            text.push_str("1,77070100010800ff@1,a,,a,0\n");
        }
        text.push_str("#\n");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "reported once: {:?}", e.first());
        assert!(
            e[0].starts_with("65539:1: more than 65535 value lines"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn an_empty_or_blank_script_is_an_error_as_run_refuses_it() {
        for text in ["", "\r", "\r\r\r", "\n\n", "; only a comment\n"] {
            let e = errors(text);
            assert_eq!(
                e,
                vec!["1:1: the script is empty: sml needs a `>M` section with at least one meter"],
                "{text:?}"
            );
        }
        let e = errors(">D\nx=1\n>B\nx=2\n");
        assert_eq!(
            e,
            vec!["1:1: the script has no `>M` section: sml reads meters, and this script defines none"]
        );
    }

    #[test]
    fn cr_only_line_ends_read_as_line_ends() {
        let text = ">D\r>M 1\r+1,3,s,0,9600,A\r1,77070100010800ff@1,a,,a,0\r#\r";
        let (c, shown) = diagnostics(text, &CompileOptions::default());
        assert!(!c.has_errors(), "{shown:#?}");
        assert_eq!(c.script.unwrap().meters[0].decoding.metric_count(), 1);
        assert_eq!(shown.len(), 1, "{shown:#?}");
        assert!(shown[0].contains("carriage return alone"));
        let e = errors(">D\r>M 1\r+1,3,s,0,9600,A\r1,7707zz@1,a,,a,0\r#\r");
        assert!(
            e[0].starts_with("4:7:"),
            "lines and columns count CR as a line end: {e:?}"
        );
    }

    #[test]
    fn host_pins_are_supplied_with_a_note_quoting_the_use_as_written() {
        let text = ">M 1\n+1,%0rxpin%,m,%0smlf%,9600,MB,%0txpin%,10,01040000\n1,010404ffffffff@i0:1,V,V,v,1\n#\n";
        let (c, shown) = diagnostics(text, &CompileOptions::default());
        assert!(!c.has_errors(), "{shown:#?}");
        let m = &c.script.unwrap().meters[0];
        assert_eq!(m.source, MeterSource::Pin(-1));
        assert_eq!(m.tx.as_ref().map(|t| t.pin), Some(-1));
        assert_eq!(m.flags, 0);
        let notes: Vec<&String> = shown.iter().filter(|s| s.contains("Note: `%0")).collect();
        assert_eq!(notes.len(), 3, "{shown:#?}");
        assert!(
            notes[0].starts_with("2:4: Note: `%0rxpin%` is not declared"),
            "{}",
            notes[0]
        );
    }

    #[test]
    fn a_define_supplies_a_host_variable_and_replaces_a_declaration() {
        let text = ">D\nsmlf=0\n>M 1\n+1,3,s,%0smlf%,9600,%pfx%\n1,77070100010800ff@1,a,,a,0\n#\n";
        let e = errors(text);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("4:21: `%pfx%` names no variable declared in `>D`"),
            "{}",
            e[0]
        );
        let options = CompileOptions {
            defines: vec!["pfx=Haus".parse().unwrap(), "smlf=16".parse().unwrap()],
        };
        let (c, shown) = diagnostics(text, &options);
        assert!(!c.has_errors(), "{shown:#?}");
        let m = &c.script.unwrap().meters[0];
        assert_eq!((m.prefix.as_deref(), m.flags), (Some("Haus"), 16));
        assert!(shown[0].contains("`--define smlf=16` replaces `smlf` declared here"));
        assert_eq!(
            "novalue".parse::<Define>().unwrap_err().to_string(),
            "'novalue': expected NAME=VALUE, e.g. smlf=0"
        );
    }

    /// Pieces of scripts, so random sequences reach deep into the grammar and the lowering.
    const PIECES: &[&str] = &[
        ">D",
        ">D 30",
        ">M 1",
        ">M 2",
        ">B",
        ">S",
        "#",
        "\n",
        "\r",
        "\r\n",
        " ",
        ",",
        "@",
        "=",
        "+1,3,s,0,9600,SML",
        "+2,%0rxpin%,m,%0smlf%,9600,MB,%0txpin%,10,01040000,",
        "1,77070100010800ff@1000,T,kWh,t,3",
        "1,=m 1+2 @1,s,,s,0",
        "1,=d 1 10 @1,d,,d,0",
        "2,010404ffffffff@i0:1,V,V,v,1",
        "r=\"1,AA100021421000010774\"",
        "%r%",
        "%ms%",
        "1,=so2,20",
        "ff",
        "xx",
        "(@(1:",
        "\u{feff}",
        "\u{1b}",
        "é",
        ";",
    ];

    proptest::proptest! {
        #[test]
        fn any_sequence_of_script_pieces_compiles_or_is_diagnosed_without_panicking(
            picks in proptest::collection::vec(0..PIECES.len(), 0..40)
        ) {
            let text: String = picks.iter().map(|&i| PIECES[i]).collect();
            let options = CompileOptions { defines: vec!["ms=1".parse().unwrap()] };
            let c = compile_with(text.as_bytes(), &options);
            proptest::prop_assert_eq!(c.script.is_some(), !c.has_errors());
            for d in &c.diagnostics {
                proptest::prop_assert!(d.line >= 1 && d.col >= 1, "{:?}", d);
                let shown = d.render("p.sml");
                proptest::prop_assert!(!shown.contains('\u{1b}'), "no raw escape reaches the terminal");
            }
            if let Some(script) = &c.script {
                proptest::prop_assert!(!script.meters.is_empty(), "a model always has a meter to run");
                for m in &script.meters {
                    let _ = crate::decode::request::frame(m);
                }
            }
        }
    }
}
