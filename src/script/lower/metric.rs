/*!
Value lines of `>M`: metric lines (`1,77070100010800ff@1000,Total,kWh,total,3`), `=m` and `=d`
derived values, `=h` web lines, each checked against the protocol of its meter and numbered as an
entry in file order, as Tasmota numbers `sml[n]`.
*/

use super::meter::{At, MeterLowering};
use crate::script::ast::*;
use crate::script::model::*;
use crate::script::parse::{self, SyntaxError};
use crate::script::substitute::MappedText;

/// The line being lowered: its text, its meter, and the entry it defines.
pub(super) struct LineContext<'t> {
    text: &'t MappedText,
    meter: MeterIndex,
    entry: EntryNo,
    /// Source line of the meter number (the first line of a joined text).
    line: LineNo,
}

impl MeterLowering<'_, '_> {
    /// The next entry number, or `None` (reported once) when the entry type is full.
    fn next_entry(&mut self, t: &MappedText, at: At) -> Option<EntryNo> {
        match self.entries.checked_add(1) {
            Some(e) => {
                self.entries = e;
                Some(e)
            }
            None => {
                if !self.entries_overflowed {
                    self.entries_overflowed = true;
                    self.err(
                        t,
                        at,
                        format!(
                            "more than {} value lines: sml numbers entries with 16 bits, so this line and the ones after it cannot be numbered",
                            EntryNo::MAX
                        ),
                    );
                }
                None
            }
        }
    }

    pub(super) fn metric_line(&mut self, t: &MappedText) {
        let line = match parse::parse_meter_line(&t.text) {
            Ok(l) => l,
            Err((at, message)) => {
                // Keep entry numbers of later lines right when a value line is broken.
                if t.text.contains('@') {
                    let _ = self.next_entry(t, 0);
                }
                self.err(t, at, message);
                return;
            }
        };
        let counts_entry = matches!(
            line.kind,
            MeterLineKind::Metric { .. }
                | MeterLineKind::Math { .. }
                | MeterLineKind::Difference { .. }
        );
        let entry = if counts_entry {
            match self.next_entry(t, line.meter.at) {
                Some(e) => e,
                None => return,
            }
        } else {
            self.entries
        };
        let index = line.meter.v.parse::<MeterIndex>().ok();
        let Some(index) = index.filter(|i| self.meters.contains_key(i)) else {
            if !index.is_some_and(|i| self.broken.contains(&i)) {
                self.err(
                    t,
                    line.meter.at,
                    format!(
                        "meter {} is not defined by a `+{},...` line",
                        line.meter.v, line.meter.v
                    ),
                );
            }
            return;
        };
        let (src_line, _) = t.origin(line.meter.at);
        let cx = LineContext {
            text: t,
            meter: index,
            entry,
            line: src_line,
        };
        match line.kind {
            MeterLineKind::Html(html) => self.builder(index).meter.html.push(HtmlLine {
                line: src_line,
                html: html.to_string(),
            }),
            MeterLineKind::Option { name, args } => self.option(t, index, name, &args),
            MeterLineKind::Unknown(text) => self.warn(
                t,
                text.at,
                format!("unknown special line `{}`: ignored", text.v),
            ),
            MeterLineKind::Math(m) => self.math(&cx, m),
            MeterLineKind::Difference(d) => self.difference(&cx, d),
            MeterLineKind::Metric(m) => self.metric(&cx, m),
        }
    }

    /// `=m`: entries and constants combined strictly left to right.
    fn math(&mut self, cx: &LineContext<'_>, m: MathAst<'_>) {
        let t = cx.text;
        let Some(output) = self.output(cx, &m.fields) else {
            return;
        };
        let Some(divisor) = self.divisor(t, &m.value) else {
            return;
        };
        let first = self.operand(t, &m.first);
        if m.ops.len() > 8 {
            self.warn(
                t,
                m.value.at,
                "more than 8 operations: Tasmota stops after 8; sml computes all",
            );
        }
        let ops = m
            .ops
            .iter()
            .map(|(op, o)| {
                let op = match op {
                    '+' => MathOp::Add,
                    '-' => MathOp::Sub,
                    '*' => MathOp::Mul,
                    _ => MathOp::Div,
                };
                (op, self.operand(t, o))
            })
            .collect();
        self.builder(cx.meter).meter.derived.push(Derived {
            kind: DerivedKind::Math { first, ops },
            divisor,
            output,
        });
    }

    /// `=d`: the change of an entry over an interval, as an hourly rate.
    fn difference(&mut self, cx: &LineContext<'_>, d: DifferenceAst<'_>) {
        let t = cx.text;
        let Some(output) = self.output(cx, &d.fields) else {
            return;
        };
        let Some(divisor) = self.divisor(t, &d.value) else {
            return;
        };
        let e = d.entry;
        let entry_no = e.v.parse::<EntryNo>().unwrap_or(0);
        if entry_no == 0 {
            self.warn(t, e.at, "`=d 0` refers to no entry: the value stays 0");
        }
        let interval_s = match d.interval {
            Some(i) => i.v.parse().unwrap_or(u32::MAX),
            None => {
                if entry_no != 0 {
                    self.warn(t, e.at, "`=d` without an interval: the value stays 0");
                }
                0
            }
        };
        let count = self
            .meters
            .values()
            .flat_map(|b| &b.meter.derived)
            .filter(|d| matches!(d.kind, DerivedKind::Difference { .. }))
            .count();
        if count >= 10 {
            self.warn(
                t,
                e.at,
                "more than 10 `=d` lines: Tasmota ignores the rest; sml computes them",
            );
        }
        self.builder(cx.meter).meter.derived.push(Derived {
            kind: DerivedKind::Difference {
                entry: entry_no,
                interval_s,
            },
            divisor,
            output,
        });
    }

    fn operand(&mut self, t: &MappedText, o: &Sp<OperandAst<'_>>) -> Operand {
        match o.v {
            OperandAst::Entry(e) => {
                let n = e.parse::<EntryNo>().unwrap_or(0);
                if n == 0 {
                    self.warn(t, o.at, "entry 0 does not exist (entries count from 1)");
                }
                Operand::Entry(n)
            }
            OperandAst::Constant(c) => Operand::Constant(c.parse().unwrap_or(0.0)),
        }
    }

    /// The output fields `,label,unit,name,precision`.
    fn output(&mut self, cx: &LineContext<'_>, fields: &[Sp<&str>]) -> Option<Output> {
        let t = cx.text;
        if fields.len() < 4 {
            let at = fields
                .last()
                .map(|f| f.at + f.v.len())
                .unwrap_or(t.text.len());
            self.err(
                t,
                at,
                format!(
                    "expected `,label,unit,json name,precision` after the value; found {} field(s)",
                    fields.len()
                ),
            );
            return None;
        }
        let p = fields[3];
        let digits = p.v.trim_start();
        let lead = p.v.len() - digits.len();
        let n = digits.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            self.err(t, p.at, format!("precision `{}` is not a number", p.v));
            return None;
        }
        let after = digits[n..].trim();
        if !after.is_empty() && !after.starts_with(';') {
            self.warn(
                t,
                p.at + lead + n,
                format!("`{after}` after the precision is ignored, as Tasmota does"),
            );
        }
        if fields.len() > 4 && !after.starts_with(';') {
            self.warn(
                t,
                fields[4].at,
                "fields after the precision are ignored, as Tasmota does",
            );
        }
        let precision = Precision::from_field(digits[..n].parse().unwrap_or(u32::MAX));
        Some(Output {
            entry: cx.entry,
            line: cx.line,
            label: fields[0].v.to_string(),
            unit: fields[1].v.to_string(),
            name: fields[2].v.to_string(),
            precision,
        })
    }

    /// The divisor of a value spec (`=m`/`=d` lines take only a number).
    fn divisor(&mut self, t: &MappedText, v: &ValueSpecAst<'_>) -> Option<f64> {
        match &v.kind {
            ValueKindAst::Number { scale, .. } => {
                self.ignored(t, v);
                Some(self.scale(t, *scale))
            }
            ValueKindAst::Text(_) => {
                self.err(t, v.at, "`=m`/`=d` lines need a number after `@`, not `#`");
                None
            }
        }
    }

    fn scale(&mut self, t: &MappedText, s: Sp<&str>) -> f64 {
        let v: f64 = s.v.parse().unwrap_or(f64::NAN);
        if v == 0.0 {
            self.warn(
                t,
                s.at,
                "scale 0 would divide by zero: sml publishes the value undivided, as if the scale were 1",
            );
        }
        v
    }

    fn ignored(&mut self, t: &MappedText, v: &ValueSpecAst<'_>) {
        let ig = v.ignored;
        if !ig.v.is_empty() && ig.v != ")" {
            self.warn(
                t,
                ig.at,
                format!("`{}` after the scale is ignored, as Tasmota does", ig.v),
            );
        }
    }

    fn value_spec(&mut self, t: &MappedText, v: &ValueSpecAst<'_>, hex_ids: bool) -> ValueSpec {
        self.ignored(t, v);
        match &v.kind {
            ValueKindAst::Number { scale, offset } => ValueSpec::Number {
                divisor: self.scale(t, *scale),
                offset: offset.map(|o| o.v.parse().unwrap_or(0.0)).unwrap_or(0.0),
            },
            ValueKindAst::Text(flag) => ValueSpec::Text {
                hex_as_ascii: hex_ids && *flag == Some('x'),
            },
        }
    }

    /// A metric line: the pattern of its meter's protocol, the value spec, the output fields.
    fn metric(&mut self, cx: &LineContext<'_>, m: MetricAst<'_>) {
        let t = cx.text;
        let Some(output) = self.output(cx, &m.fields) else {
            return;
        };
        let letter = self.builder(cx.meter).meter.decoding.type_letter();
        let is_obis = matches!(letter, 'o' | 'c');
        // `@#x` shows a hex id as ASCII on every binary type, SML included; on OBIS text `x` is
        // just the capture's terminator.
        let value = self.value_spec(t, &m.value, !is_obis);
        let Some(selectors) = self.selectors(cx, &m.value, is_obis) else {
            return;
        };
        let meter = cx.meter;
        match letter {
            'o' => {
                let Some(pattern) = self.obis_pattern(cx, &m) else {
                    return;
                };
                if let Decoding::Obis(v) = &mut self.builder(meter).meter.decoding {
                    v.push(Metric {
                        pattern,
                        value,
                        output,
                    });
                }
            }
            's' => {
                let Some(bytes) = self.sml_pattern(cx, m.decoder) else {
                    return;
                };
                if let Decoding::Sml(v) = &mut self.builder(meter).meter.decoding {
                    v.push(Metric {
                        pattern: SmlPattern {
                            bytes,
                            bit: selectors.bit,
                        },
                        value,
                        output,
                    });
                }
            }
            'v' => {
                let pattern = match parse::parse_vbus_pattern(m.decoder.v) {
                    Ok(p) => VbusPattern {
                        bit: selectors.bit,
                        ..p
                    },
                    Err(e) => return self.decoder_error(cx, m.decoder, e),
                };
                if let Decoding::Vbus(v) = &mut self.builder(meter).meter.decoding {
                    v.push(Metric {
                        pattern,
                        value,
                        output,
                    });
                }
            }
            'c' => {
                let pattern = if m.decoder.v.contains("1.8.0") {
                    CounterField::Count
                } else if m.decoder.v.contains("1.7.0") {
                    CounterField::Rate
                } else {
                    self.err(t, m.decoder.at, "a counter line reads `1-0:1.8.0*255` (count) or `1-0:1.7.0*255` (pulses per minute)");
                    return;
                };
                if let Decoding::Counter { metrics, .. } = &mut self.builder(meter).meter.decoding {
                    metrics.push(Metric {
                        pattern,
                        value,
                        output,
                    });
                }
            }
            _ => {
                let ops = match parse::parse_byte_pattern(m.decoder.v) {
                    Ok(o) => o,
                    Err(e) => return self.decoder_error(cx, m.decoder, e),
                };
                let metric = Metric {
                    pattern: BytePattern {
                        ops,
                        bit: selectors.bit,
                        block: selectors.block,
                    },
                    value,
                    output,
                };
                match &mut self.builder(meter).meter.decoding {
                    Decoding::Modbus(v)
                    | Decoding::Ebus(v)
                    | Decoding::Kamstrup(v)
                    | Decoding::Can(v)
                    | Decoding::Pzem(v)
                    | Decoding::Raw { metrics: v, .. } => v.push(metric),
                    _ => {}
                }
            }
        }
    }

    /// An error inside the decoder pattern, at its place in the line.
    fn decoder_error(
        &mut self,
        cx: &LineContext<'_>,
        decoder: Sp<&str>,
        (at, message): SyntaxError,
    ) {
        self.err(cx.text, decoder.at + at, message)
    }

    /// `bN:` and `iN:` (binary meters), with warnings for selectors the meter type ignores.
    /// `None` when a number is out of range (reported).
    fn selectors(
        &mut self,
        cx: &LineContext<'_>,
        v: &ValueSpecAst<'_>,
        is_obis: bool,
    ) -> Option<Selectors> {
        let t = cx.text;
        let bit = match v.bit {
            Some(b) => match b.v.parse::<u8>() {
                Ok(n) if n < 64 => Some(n),
                _ => {
                    self.err(t, b.at, format!("bit `{}` is out of range (0 to 63)", b.v));
                    return None;
                }
            },
            None => None,
        };
        let block = match v.block {
            Some(b) => match b.v.parse::<u16>() {
                Ok(n) => {
                    let builder = self.builder(cx.meter);
                    let blocks = builder.meter.requests.blocks.len();
                    if n as usize >= blocks && !builder.definition_error {
                        self.warn(t, b.at, format!("`i{n}:` names request block {n}, but the meter sends {blocks} block(s): the line never matches"));
                    }
                    Some(n)
                }
                Err(_) => {
                    self.err(
                        t,
                        b.at,
                        format!("block `{}` is out of range (0 to {})", b.v, u16::MAX),
                    );
                    return None;
                }
            },
            None => None,
        };
        if !is_obis {
            if let Some(b) = v.bracket {
                self.warn(
                    t,
                    b.at,
                    "`(N:` selects an OBIS bracket; ignored on this meter type",
                );
            }
            if let Some((_, f)) = v.split {
                self.warn(
                    t,
                    f.at,
                    "`s<delim>N:` splits OBIS text lines; ignored on this meter type",
                );
            }
        } else if bit.is_some() || block.is_some() {
            self.warn(
                t,
                v.at,
                "`bN:`/`iN:` apply to binary meters; ignored on this meter type",
            );
        }
        Some(Selectors { bit, block })
    }

    /// An `o` line: the code to find, and which bracket or field holds the value.
    fn obis_pattern(&mut self, cx: &LineContext<'_>, m: &MetricAst<'_>) -> Option<ObisPattern> {
        let (t, v, decoder) = (cx.text, &m.value, m.decoder);
        let bracket = match v.bracket {
            Some(b) => match b.v.parse::<u8>() {
                Ok(n) => n,
                Err(_) => {
                    self.err(
                        t,
                        b.at,
                        format!("bracket `{}` is out of range (0 to 255)", b.v),
                    );
                    return None;
                }
            },
            None => 0,
        };
        let text_terminator = match v.kind {
            ValueKindAst::Text(Some(c)) => Some(c),
            _ => None,
        };
        let split = match v.split {
            Some((d, n)) => match n.v.parse::<u8>() {
                Ok(n) => Some((d, n)),
                Err(_) => {
                    self.err(
                        t,
                        n.at,
                        format!("field `{}` is out of range (0 to 255)", n.v),
                    );
                    return None;
                }
            },
            None => None,
        };
        if decoder.v.starts_with('.') {
            // The Logarex seed's `.8.1(` matched in Tasmota's old sliding-window mode only.
            self.warn(
                t,
                decoder.at,
                format!(
                    "`{}` matches no line in line mode (Tasmota's default): meter lines start with the whole code, e.g. `1{}`; it matches only in window mode (`=so2,1`)",
                    decoder.v, decoder.v
                ),
            );
        }
        Some(ObisPattern {
            code: decoder.v.to_string(),
            bracket,
            text_terminator,
            split,
        })
    }

    /// An `s` line: the OBIS code as hex bytes with wildcards.
    fn sml_pattern(&mut self, cx: &LineContext<'_>, decoder: Sp<&str>) -> Option<Vec<Option<u8>>> {
        let bytes = match parse::parse_sml_pattern(decoder.v) {
            Ok(b) => b,
            Err(e) => {
                self.decoder_error(cx, decoder, e);
                return None;
            }
        };
        if bytes.is_empty() {
            self.err(
                cx.text,
                decoder.at,
                "an SML line needs the OBIS code as hex before `@`",
            );
            return None;
        }
        let flags = self.builder(cx.meter).meter.flags;
        if bytes.first() != Some(&Some(0x77)) && flags & 32 == 0 {
            self.warn(cx.text, decoder.at, "pattern does not start with `77`: recent Tasmota matches it only with flag 32; sml matches it anyway");
        }
        Some(bytes)
    }
}

/// The `bN:` and `iN:` selectors of a value spec.
struct Selectors {
    bit: Option<u8>,
    block: Option<u16>,
}
