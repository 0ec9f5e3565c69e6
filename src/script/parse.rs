/*!
From pest pairs to the spanned syntax tree (`ast.rs`) and to the typed decoder patterns. This is the
one module that walks pest pairs, so the `.unwrap()`s on pairs the grammar guarantees live here and
nowhere else. Every function takes one text (the whole file, or one substituted line) and returns
its tree or a (byte offset, message) error.
*/

use pest::iterators::Pair;
use pest::Parser;

use super::ast::*;
use super::grammar::{explain, Rule, TasmotaParser};
use super::model::{ByteOp, Extract, VbusPattern};

/// A syntax error: byte offset in the parsed text and a message.
pub type SyntaxError = (usize, String);

fn sp<'a>(p: &Pair<'a, Rule>) -> Sp<&'a str> {
    Sp {
        at: p.as_span().start(),
        v: p.as_str(),
    }
}

/// Split a whole file into sections. Lines are numbered from 1.
pub fn parse_file(text: &str) -> Result<FileAst<'_>, SyntaxError> {
    let mut pairs = TasmotaParser::parse(Rule::script, text).map_err(|e| explain(&e, "script"))?;
    let script = pairs.next().unwrap();
    let mut line: u32 = 0;
    let mut next_line = || {
        line += 1;
        line
    };
    let mut file = FileAst {
        preamble: Vec::new(),
        sections: Vec::new(),
    };
    for p in script.into_inner() {
        match p.as_rule() {
            Rule::preamble => {
                for l in p.into_inner() {
                    file.preamble.push(text_line(l, next_line()));
                }
            }
            Rule::section => {
                let mut inner = p.into_inner();
                let head = inner.next().unwrap();
                let body = inner.next().unwrap();
                let head_line = next_line();
                let head_text = strip_line_end(head.as_str());
                let line_start = head.as_span().start();
                let mut marker = Marker::Other("");
                let mut rest = Sp { at: 0, v: "" };
                for part in head.into_inner() {
                    match part.as_rule() {
                        Rule::marker_rest => {
                            rest = Sp {
                                at: part.as_span().start() - line_start,
                                v: part.as_str(),
                            };
                        }
                        Rule::EOI => {}
                        rule => marker = marker_of(rule, part),
                    }
                }
                let body = body
                    .into_inner()
                    .map(|l| text_line(l, next_line()))
                    .collect();
                file.sections.push(SectionAst {
                    marker,
                    head: TextLine {
                        line: head_line,
                        text: head_text,
                    },
                    rest,
                    body,
                });
            }
            _ => {}
        }
    }
    Ok(file)
}

fn strip_line_end(s: &str) -> &str {
    let s = s.strip_suffix('\n').unwrap_or(s);
    s.strip_suffix('\r').unwrap_or(s)
}

fn text_line(p: Pair<'_, Rule>, line: u32) -> TextLine<'_> {
    let text = p.into_inner().next().map(|t| t.as_str()).unwrap_or("");
    TextLine {
        line,
        text: text.strip_suffix('\r').unwrap_or(text),
    }
}

fn marker_of<'a>(rule: Rule, p: Pair<'a, Rule>) -> Marker<'a> {
    match rule {
        Rule::end_marker => Marker::End,
        Rule::subroutine_marker => {
            let mut inner = p.into_inner();
            let name = inner.next().unwrap().as_str();
            let params = inner
                .next()
                .map(|ps| {
                    let s = ps.as_str();
                    s[1..s.len() - 1].split_whitespace().collect()
                })
                .unwrap_or_default();
            Marker::Subroutine { name, params }
        }
        Rule::declarations_marker => Marker::Declarations,
        Rule::meters_marker => Marker::Meters,
        Rule::boot_second_marker => Marker::BootSecond,
        Rule::boot_marker => Marker::Boot,
        Rule::every_second_marker => Marker::EverySecond,
        Rule::every_100ms_marker => Marker::Every100ms,
        Rule::restart_marker => Marker::Restart,
        Rule::teleperiod_marker => Marker::Teleperiod,
        Rule::event_marker => Marker::Event,
        Rule::json_marker => Marker::Json,
        Rule::web_status_marker => Marker::WebStatus,
        Rule::web_marker => Marker::Web,
        Rule::global_marker => Marker::Global,
        _ => Marker::Other(p.as_str()),
    }
}

/// One `>D` line.
pub fn parse_declaration(text: &str) -> Result<DeclarationAst<'_>, SyntaxError> {
    let mut pairs =
        TasmotaParser::parse(Rule::declaration, text).map_err(|e| explain(&e, "declaration"))?;
    let mut decl = DeclarationAst {
        kinds: Vec::new(),
        name: Sp { at: 0, v: "" },
        value: Sp {
            at: 0,
            v: LiteralAst::Decimal("0"),
        },
        array_len: None,
        trailing: Sp {
            at: text.len(),
            v: "",
        },
    };
    for p in pairs.next().unwrap().into_inner() {
        match p.as_rule() {
            Rule::var_kind => decl.kinds.push(p.as_str().chars().next().unwrap()),
            Rule::var_name => decl.name = sp(&p),
            Rule::string_literal => {
                let at = p.as_span().start();
                decl.value = Sp {
                    at,
                    v: LiteralAst::Text(p.into_inner().next().unwrap().as_str()),
                };
            }
            Rule::hex_literal => {
                decl.value = Sp {
                    at: p.as_span().start(),
                    v: LiteralAst::Hex(p.as_str()),
                }
            }
            Rule::decimal_literal => {
                decl.value = Sp {
                    at: p.as_span().start(),
                    v: LiteralAst::Decimal(p.as_str()),
                }
            }
            Rule::array_len => decl.array_len = Some(sp(&p)),
            Rule::trailing => decl.trailing = sp(&p),
            _ => {}
        }
    }
    Ok(decl)
}

/// One `+` meter definition line.
pub fn parse_meter_def(text: &str) -> Result<MeterDefAst<'_>, SyntaxError> {
    let mut pairs =
        TasmotaParser::parse(Rule::meter_def, text).map_err(|e| explain(&e, "meter definition"))?;
    let mut def = MeterDefAst {
        index: Sp { at: 0, v: "" },
        rx: Sp {
            at: 0,
            v: RxAst::Pin(""),
        },
        type_letter: Sp { at: 0, v: ' ' },
        parity: None,
        stop_bits: None,
        flag: Sp { at: 0, v: "" },
        param: Sp { at: 0, v: "" },
        prefix: None,
        tx: None,
        tx_period: None,
        telegrams: None,
    };
    for p in pairs.next().unwrap().into_inner() {
        match p.as_rule() {
            Rule::meter_index => def.index = sp(&p),
            Rule::pin => {
                def.rx = Sp {
                    at: p.as_span().start(),
                    v: RxAst::Pin(p.as_str()),
                }
            }
            Rule::tcp_address => {
                let s = p.as_str();
                def.rx = Sp {
                    at: p.as_span().start(),
                    v: RxAst::Tcp(&s[1..s.len() - 1]),
                };
            }
            Rule::meter_type => {
                for t in p.into_inner() {
                    match t.as_rule() {
                        Rule::type_letter => {
                            def.type_letter = Sp {
                                at: t.as_span().start(),
                                v: t.as_str().chars().next().unwrap(),
                            }
                        }
                        Rule::framing => {
                            for f in t.into_inner() {
                                let c = f.as_str().chars().next().unwrap();
                                match f.as_rule() {
                                    Rule::parity => def.parity = Some(c),
                                    _ => def.stop_bits = Some(c),
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            Rule::flag => def.flag = sp(&p),
            Rule::param => def.param = sp(&p),
            Rule::prefix => def.prefix = Some(sp(&p)),
            Rule::tx => {
                let mut inner = p.into_inner();
                let pin = sp(&inner.next().unwrap());
                let enable = inner.next().map(|en| {
                    let mut inverted = false;
                    let mut pin = Sp { at: 0, v: "" };
                    for e in en.into_inner() {
                        match e.as_rule() {
                            Rule::inverted => inverted = true,
                            _ => pin = sp(&e),
                        }
                    }
                    (inverted, pin)
                });
                def.tx = Some(TxAst { pin, enable });
            }
            Rule::tx_period => def.tx_period = Some(sp(&p)),
            Rule::telegrams => def.telegrams = Some(sp(&p)),
            _ => {}
        }
    }
    Ok(def)
}

/// One metric or special line of `>M`.
pub fn parse_meter_line(text: &str) -> Result<MeterLineAst<'_>, SyntaxError> {
    // Two common slips get a plain message rather than a list of what the grammar expected.
    let start = text.len() - text.trim_start().len();
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 {
        let after = start + digits;
        if !text[after..].starts_with(',') {
            return Err((after, "expected `,` after the meter number".to_string()));
        }
        let body = &text[after + 1..];
        if !body.starts_with('=') && !body.contains('@') {
            return Err((after + 1, "a metric line needs `@` between the decoder and the value (`<decoder>@<scale>,label,unit,name,precision`)".to_string()));
        }
    }
    let mut pairs =
        TasmotaParser::parse(Rule::metric_line, text).map_err(|e| explain(&e, "metric line"))?;
    let mut inner = pairs.next().unwrap().into_inner();
    let meter = sp(&inner.next().unwrap());
    let body = inner.next().unwrap();
    let kind = match body.as_rule() {
        Rule::html_line => MeterLineKind::Html(body.into_inner().next().unwrap().as_str()),
        Rule::math_line => {
            let mut parts = body.into_inner();
            let mut expr = parts.next().unwrap().into_inner();
            let first = operand(expr.next().unwrap());
            let mut ops = Vec::new();
            while let Some(op) = expr.next() {
                let c = op.as_str().chars().next().unwrap();
                ops.push((c, operand(expr.next().unwrap())));
            }
            let value = value_spec(parts.next().unwrap());
            let fields = out_fields(parts.next().unwrap());
            MeterLineKind::Math(MathAst {
                first,
                ops,
                value,
                fields,
            })
        }
        Rule::difference_line => {
            let mut entry = Sp { at: 0, v: "" };
            let mut interval = None;
            let mut value = None;
            let mut fields = Vec::new();
            for p in body.into_inner() {
                match p.as_rule() {
                    Rule::entry_ref => entry = sp(&p),
                    Rule::interval => interval = Some(sp(&p)),
                    Rule::value_spec => value = Some(value_spec(p)),
                    Rule::out_fields => fields = out_fields(p),
                    _ => {}
                }
            }
            MeterLineKind::Difference(DifferenceAst {
                entry,
                interval,
                value: value.unwrap(),
                fields,
            })
        }
        Rule::option_line => {
            let mut parts = body.into_inner();
            let name = sp(&parts.next().unwrap());
            let args = parts.map(|a| sp(&a)).collect();
            MeterLineKind::Option { name, args }
        }
        Rule::unknown_special => MeterLineKind::Unknown(sp(&body)),
        _ => {
            let mut parts = body.into_inner();
            let decoder = sp(&parts.next().unwrap());
            let value = value_spec(parts.next().unwrap());
            let fields = out_fields(parts.next().unwrap());
            MeterLineKind::Metric(MetricAst {
                decoder,
                value,
                fields,
            })
        }
    };
    Ok(MeterLineAst { meter, kind })
}

fn operand(p: Pair<'_, Rule>) -> Sp<OperandAst<'_>> {
    let at = p.as_span().start();
    match p.as_rule() {
        Rule::constant => Sp {
            at,
            v: OperandAst::Constant(&p.as_str()[1..]),
        },
        _ => Sp {
            at,
            v: OperandAst::Entry(p.as_str()),
        },
    }
}

fn out_fields(p: Pair<'_, Rule>) -> Vec<Sp<&str>> {
    p.into_inner().map(|f| sp(&f)).collect()
}

fn value_spec(p: Pair<'_, Rule>) -> ValueSpecAst<'_> {
    let mut spec = ValueSpecAst {
        at: p.as_span().start(),
        split: None,
        bracket: None,
        bit: None,
        block: None,
        kind: ValueKindAst::Text(None),
        ignored: Sp {
            at: p.as_span().end(),
            v: "",
        },
    };
    for part in p.into_inner() {
        match part.as_rule() {
            Rule::split_field => {
                let mut inner = part.into_inner();
                let delim = inner.next().unwrap().as_str().chars().next().unwrap();
                spec.split = Some((delim, sp(&inner.next().unwrap())));
            }
            Rule::bracket => spec.bracket = Some(sp(&part.into_inner().next().unwrap())),
            Rule::bit_select => spec.bit = Some(sp(&part.into_inner().next().unwrap())),
            Rule::block_select => spec.block = Some(sp(&part.into_inner().next().unwrap())),
            Rule::text_capture => {
                let flag = part
                    .into_inner()
                    .next()
                    .map(|f| f.as_str().chars().next().unwrap());
                spec.kind = ValueKindAst::Text(flag);
            }
            Rule::number_value => {
                let mut inner = part.into_inner();
                let scale = sp(&inner.next().unwrap());
                let offset = inner.next().map(|o| sp(&o));
                spec.kind = ValueKindAst::Number { scale, offset };
            }
            Rule::ignored => spec.ignored = sp(&part),
            _ => {}
        }
    }
    spec
}

/// `s` meters: hex bytes, `xx` wildcards.
pub fn parse_sml_pattern(text: &str) -> Result<Vec<Option<u8>>, SyntaxError> {
    let mut pairs = TasmotaParser::parse(Rule::sml_pattern, text).map_err(|e| {
        let (at, _) = explain(&e, "SML pattern");
        let rest = text.get(at..).unwrap_or("");
        (at, format!("`{rest}` is not a hex byte: an SML pattern is the OBIS code as pairs of hex digits (`xx` for any byte)"))
    })?;
    Ok(pairs
        .next()
        .unwrap()
        .into_inner()
        .filter_map(|p| match p.as_rule() {
            Rule::hex_byte => Some(Some(hex_byte(p.as_str()))),
            Rule::wildcard => Some(None),
            _ => None,
        })
        .collect())
}

/// Two hex digits the grammar has already checked.
fn hex_byte(s: &str) -> u8 {
    let b = s.as_bytes();
    let digit = |i: usize| b.get(i).and_then(|&c| crate::hex::nibble(c)).unwrap_or(0);
    digit(0) << 4 | digit(1)
}

/// Binary meters: the byte mask.
pub fn parse_byte_pattern(text: &str) -> Result<Vec<ByteOp>, SyntaxError> {
    let mut pairs = TasmotaParser::parse(Rule::byte_pattern, text).map_err(|e| {
        let (at, _) = explain(&e, "byte pattern");
        let rest = text.get(at..).unwrap_or("");
        (at, format!("`{rest}` is not a hex byte or a value mask (`uu`, `ss`, `UUuu`, `SSss`, `UUuuUUuu`, `ffffffff`, `xx`, `xN`, `bcdN`, `kstr`, `pm(...)`)"))
    })?;
    let mut ops = Vec::new();
    for p in pairs.next().unwrap().into_inner() {
        let swap = |p: Pair<'_, Rule>| p.into_inner().next().is_some();
        let op = match p.as_rule() {
            Rule::hex_byte => ByteOp::Literal(hex_byte(p.as_str())),
            Rule::skip_one => ByteOp::Skip(1),
            Rule::skip_n => {
                let n = p.into_inner().next().unwrap();
                match n.as_str().parse::<u8>() {
                    Ok(n) => ByteOp::Skip(n),
                    Err(_) => {
                        return Err((
                            n.as_span().start(),
                            format!("skip count `{}` is over 255", n.as_str()),
                        ))
                    }
                }
            }
            Rule::find => {
                let body = p.into_inner().next().unwrap();
                ByteOp::Find(
                    find_bytes(body.as_str())
                        .map_err(|(at, m)| (body.as_span().start() + at, m))?,
                )
            }
            Rule::kamstrup_value => ByteOp::Extract(Extract::Kamstrup),
            Rule::bcd => {
                let n = p.into_inner().next().unwrap();
                match n.as_str().parse::<u8>() {
                    Ok(d @ 1..=16) => ByteOp::Extract(Extract::Bcd(d)),
                    _ => {
                        return Err((
                            n.as_span().start(),
                            format!("`bcd{}`: digit count must be 1..16", n.as_str()),
                        ))
                    }
                }
            }
            Rule::u64_be => ByteOp::Extract(Extract::U64 { big_endian: true }),
            Rule::u64_le => ByteOp::Extract(Extract::U64 { big_endian: false }),
            Rule::i64_be => ByteOp::Extract(Extract::I64 { big_endian: true }),
            Rule::i64_le => ByteOp::Extract(Extract::I64 { big_endian: false }),
            Rule::u32_be | Rule::u32_be_short => ByteOp::Extract(Extract::U32 {
                big_endian: true,
                word_swap: swap(p),
            }),
            Rule::u32_le | Rule::u32_le_short => ByteOp::Extract(Extract::U32 {
                big_endian: false,
                word_swap: swap(p),
            }),
            Rule::i32_be | Rule::i32_be_short => ByteOp::Extract(Extract::I32 {
                big_endian: true,
                word_swap: swap(p),
            }),
            Rule::i32_le | Rule::i32_le_short => ByteOp::Extract(Extract::I32 {
                big_endian: false,
                word_swap: swap(p),
            }),
            Rule::f32_be => ByteOp::Extract(Extract::F32 { big_endian: true }),
            Rule::f32_le => ByteOp::Extract(Extract::F32 { big_endian: false }),
            Rule::u16_be => ByteOp::Extract(Extract::U16 { big_endian: true }),
            Rule::u16_le => ByteOp::Extract(Extract::U16 { big_endian: false }),
            Rule::i16_be => ByteOp::Extract(Extract::I16 { big_endian: true }),
            Rule::i16_le => ByteOp::Extract(Extract::I16 { big_endian: false }),
            Rule::u8 => ByteOp::Extract(Extract::U8),
            Rule::i8 => ByteOp::Extract(Extract::I8),
            _ => continue,
        };
        ops.push(op);
    }
    Ok(ops)
}

/// `pm(1.8.0)` OBIS text as ASCII, `pm(h...)` / `pm(r...)` hex.
fn find_bytes(body: &str) -> Result<Vec<u8>, SyntaxError> {
    if let Some(hex) = body.strip_prefix('h').or_else(|| body.strip_prefix('r')) {
        let mut out = Vec::new();
        let b = hex.as_bytes();
        if b.len() % 2 != 0 {
            return Err((
                body.len() - 1,
                "`pm(...)`: odd number of hex digits".to_string(),
            ));
        }
        for (i, pair) in b.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).unwrap_or("");
            match u8::from_str_radix(s, 16) {
                Ok(v) => out.push(v),
                Err(_) => return Err((1 + 2 * i, format!("`pm(...)`: `{s}` is not hex"))),
            }
        }
        Ok(out)
    } else if body.is_empty() {
        Err((0, "`pm()` needs a pattern".to_string()))
    } else {
        Ok(body.as_bytes().to_vec())
    }
}

/// `v` meters: header, offset, sign and width.
pub fn parse_vbus_pattern(text: &str) -> Result<VbusPattern, SyntaxError> {
    let mut pairs =
        TasmotaParser::parse(Rule::vbus_pattern, text).map_err(|e| explain(&e, "VBus pattern"))?;
    let mut pattern = VbusPattern {
        header: Vec::new(),
        offset: 0,
        signed: false,
        word: false,
        time: false,
        bit: None,
    };
    for p in pairs.next().unwrap().into_inner() {
        match p.as_rule() {
            Rule::hex_byte => pattern.header.push(hex_byte(p.as_str())),
            Rule::vbus_offset => {
                pattern.offset = p.as_str().parse().map_err(|_| {
                    (
                        p.as_span().start(),
                        format!("offset `{}` is too large", p.as_str()),
                    )
                })?
            }
            Rule::vbus_sign => pattern.signed = p.as_str() == "s",
            Rule::vbus_width => match p.as_str() {
                "w" => pattern.word = true,
                "t" => {
                    pattern.word = true;
                    pattern.time = true;
                }
                _ => {}
            },
            _ => {}
        }
    }
    Ok(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_is_split_into_sections_with_line_numbers() {
        let f =
            parse_file(">D\r\nr=\"x\"\r\n>B  \n=>sensor53 r\n>M 1\n+1,3,o,0,9600,A\n#\n").unwrap();
        assert!(f.preamble.is_empty());
        let markers: Vec<_> = f
            .sections
            .iter()
            .map(|s| (s.marker.clone(), s.head.line))
            .collect();
        assert_eq!(
            markers,
            vec![
                (Marker::Declarations, 1),
                (Marker::Boot, 3),
                (Marker::Meters, 5),
                (Marker::End, 7)
            ]
        );
        assert_eq!(f.sections[0].body[0].text, "r=\"x\"");
        assert_eq!(f.sections[1].rest.v, "  ");
        assert_eq!(f.sections[2].rest.v, " 1");
        assert_eq!(f.sections[2].body[0].line, 6);
    }

    #[test]
    fn unknown_markers_and_subroutines_are_sections() {
        let f = parse_file(">xM\n#sub(a b)\nx=1\n# odd\n").unwrap();
        assert_eq!(f.sections[0].marker, Marker::Other(">"));
        assert_eq!(
            f.sections[1].marker,
            Marker::Subroutine {
                name: "sub",
                params: vec!["a", "b"]
            }
        );
        assert_eq!(f.sections[2].marker, Marker::Other("#"));
    }

    #[test]
    fn meter_definition_with_framing_and_driver_enable() {
        let d = parse_meter_def("+1,3,mE2,0,9600,SDM,1(i4),10,01040000,r0104").unwrap();
        assert_eq!(d.type_letter.v, 'm');
        assert_eq!((d.parity, d.stop_bits), (Some('E'), Some('2')));
        let tx = d.tx.unwrap();
        assert_eq!(tx.pin.v, "1");
        assert!(tx.enable.unwrap().0);
        assert_eq!(d.telegrams.unwrap().v, "01040000,r0104");
    }

    #[test]
    fn obis_line_with_bracket_and_text_capture() {
        let l = parse_meter_line("1,0-0:98.1.0(@(1:1,Energy,kWh,e,3").unwrap();
        match l.kind {
            MeterLineKind::Metric(MetricAst {
                decoder,
                value,
                fields,
            }) => {
                assert_eq!(decoder.v, "0-0:98.1.0(");
                assert_eq!(value.bracket.unwrap().v, "1");
                assert_eq!(fields.len(), 4);
            }
            other => panic!("{other:?}"),
        }
        let l = parse_meter_line("1,0.2.0(@#),ver,,ver,3").unwrap();
        match l.kind {
            MeterLineKind::Metric(MetricAst { value, .. }) => {
                assert_eq!(value.kind, ValueKindAst::Text(Some(')')))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn modbus_masks() {
        let ops = parse_byte_pattern("010304x2UUuuUUuusxxss").unwrap();
        assert_eq!(
            ops,
            vec![
                ByteOp::Literal(1),
                ByteOp::Literal(3),
                ByteOp::Literal(4),
                ByteOp::Skip(2),
                ByteOp::Extract(Extract::U32 {
                    big_endian: true,
                    word_swap: true
                }),
                ByteOp::Skip(1),
                ByteOp::Extract(Extract::I8),
            ]
        );
        assert_eq!(
            parse_byte_pattern("0104ffffffff").unwrap()[2],
            ByteOp::Extract(Extract::F32 { big_endian: true })
        );
        assert_eq!(
            parse_byte_pattern("pm(1.8.0)").unwrap()[0],
            ByteOp::Find(b"1.8.0".to_vec())
        );
        assert_eq!(
            parse_byte_pattern("68bcd8").unwrap()[1],
            ByteOp::Extract(Extract::Bcd(8))
        );
        assert!(parse_byte_pattern("0103g").is_err());
    }

    #[test]
    fn sml_patterns_with_wildcards() {
        assert_eq!(
            parse_sml_pattern("7707xx00").unwrap(),
            vec![Some(0x77), Some(7), None, Some(0)]
        );
        let (at, _) = parse_sml_pattern("77070").unwrap_err();
        assert_eq!(at, 4);
    }

    #[test]
    fn vbus_fields() {
        let v = parse_vbus_pattern("AA10vo12sw").unwrap();
        assert_eq!(
            v,
            VbusPattern {
                header: vec![0xAA, 0x10],
                offset: 12,
                signed: true,
                word: true,
                time: false,
                bit: None
            }
        );
    }
}

#[cfg(test)]
mod end_marker_tests {
    use super::*;

    #[test]
    fn hash_at_end_of_file_without_newline_ends_the_section() {
        for text in [">M 1\n#", ">M 1\n#\n", ">M 1\r\n#\r\n", ">M 1\n#  "] {
            let f = parse_file(text).unwrap();
            assert_eq!(f.sections.last().unwrap().marker, Marker::End, "{text:?}");
        }
    }
}
