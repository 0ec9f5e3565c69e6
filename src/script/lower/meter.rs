/*!
The `>M` section: its lines substituted and joined, the `+` definition lines read into meters, then
every other line handed to `metric` (value lines) or `options` (`=so` lines) against its meter.
*/

use std::collections::BTreeMap;

use super::requests::read_blocks;
use super::{is_code, Sink, METER_TYPES};
use crate::script::ast::*;
use crate::script::diagnostic::Severity;
use crate::script::model::*;
use crate::script::parse;
use crate::script::substitute::{substitute, MappedText, Variables};

/// A meter while its lines are collected.
pub(super) struct MeterBuilder {
    pub(super) meter: Meter,
    /// The `+` line had an error: its request blocks may be missing, so `iN:` is not checked.
    pub(super) definition_error: bool,
}

pub(super) struct MeterLowering<'s, 'a> {
    vars: &'s Variables,
    pub(super) sink: &'s mut Sink<'a>,
    pub(super) meters: BTreeMap<MeterIndex, MeterBuilder>,
    /// Meters whose definition failed: their lines are skipped without more errors.
    pub(super) broken: Vec<MeterIndex>,
    /// Entries numbered so far (value lines and `=m`/`=d` lines, across meters).
    pub(super) entries: EntryNo,
    /// More value lines than [`EntryNo`] counts: reported once, the script is refused.
    pub(super) entries_overflowed: bool,
}

/// Where a text's position `at` points, for a diagnostic.
pub(super) type At = usize;

impl<'s, 'a> MeterLowering<'s, 'a> {
    pub(super) fn new(vars: &'s Variables, sink: &'s mut Sink<'a>) -> Self {
        MeterLowering {
            vars,
            sink,
            meters: BTreeMap::new(),
            broken: Vec::new(),
            entries: 0,
            entries_overflowed: false,
        }
    }

    pub(super) fn err(&mut self, t: &MappedText, at: At, msg: impl Into<String>) {
        self.sink.in_text(Severity::Error, t, at, msg)
    }

    pub(super) fn warn(&mut self, t: &MappedText, at: At, msg: impl Into<String>) {
        self.sink.in_text(Severity::Warning, t, at, msg)
    }

    pub(super) fn note(&mut self, t: &MappedText, at: At, msg: impl Into<String>) {
        self.sink.in_text(Severity::Note, t, at, msg)
    }

    pub(super) fn run(mut self, section: &SectionAst<'_>) -> Vec<Meter> {
        let rest = section.rest.v;
        let declared: Option<usize> = match rest.trim().parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.sink.error(
                    section.head.line,
                    section.rest.at,
                    "`>M` needs the number of meters (`>M 1`)",
                );
                None
            }
        };

        let texts = self.substituted_texts(section);
        for t in texts
            .iter()
            .filter(|t| t.text.trim_start().starts_with('+'))
        {
            self.definition(t, declared);
        }
        if let Some(n) = declared {
            self.check_declared_count(section, n);
        }
        for t in texts
            .iter()
            .filter(|t| !t.text.trim_start().starts_with('+'))
        {
            self.metric_line(t);
        }
        if self.entries == 0 && !self.meters.is_empty() {
            self.sink.warn(
                section.head.line,
                0,
                "the `>M` section has no metric lines: Tasmota leaves its meter driver not ready (\"sml memory error\") and reads nothing; sml runs the rest of the script, and its meters publish nothing",
            );
        }
        let total = self.entries;
        let mut out = Vec::new();
        for (_, b) in std::mem::take(&mut self.meters) {
            out.push(self.finish(b, total));
        }
        out
    }

    /// Every code line of the section `%var%`-substituted, definition lines joined with the lines
    /// that continue their request list. Lines using an unknown variable are reported and skipped.
    fn substituted_texts(&mut self, section: &SectionAst<'_>) -> Vec<MappedText> {
        let mut texts: Vec<MappedText> = Vec::new();
        let mut continuing = false;
        // Unknown `%name%`: one error at the first use, with the count; the lines are skipped.
        let mut unknown_uses: Vec<(String, LineNo, usize, usize)> = Vec::new();
        for l in section.body.iter().filter(|l| is_code(l.text)) {
            let text = l.text.trim_end();
            let (mapped, unknown) = substitute(text, l.line, self.vars);
            if !unknown.is_empty() {
                for u in unknown {
                    match unknown_uses.iter_mut().find(|(w, ..)| *w == u.written) {
                        Some(entry) => entry.3 += 1,
                        None => unknown_uses.push((u.written, l.line, u.at, 1)),
                    }
                }
                if let Some(i) = leading_index(text) {
                    self.broken.push(i);
                }
                continuing = false;
                continue;
            }
            if continuing {
                if let Some(prev) = texts.last_mut() {
                    if looks_like_meter_line(&mapped.text) {
                        // Tasmota would read this line as more request blocks; sml says so
                        // instead, and checks the line as the value line it was meant to be.
                        let comma = prev.text.len() - 1;
                        self.sink.in_text(
                            Severity::Error,
                            prev,
                            comma,
                            format!(
                                "the request list ends with a comma, so Tasmota continues it on the next line and sends line {} (`{}`) as request blocks: remove the trailing comma",
                                l.line,
                                l.text.trim()
                            ),
                        );
                        // Reported: the comma must not also count as an empty last block.
                        prev.pop();
                    } else {
                        prev.append(mapped);
                        continuing = continues(&prev.text);
                        continue;
                    }
                }
            }
            continuing = continues(&mapped.text);
            texts.push(mapped);
        }

        for (written, line, at, uses) in unknown_uses {
            let more = if uses > 1 {
                format!(" (used {uses} times; the lines using it are skipped)")
            } else {
                String::new()
            };
            self.sink.error(
                line,
                at,
                format!("`{written}` names no variable declared in `>D`{more}; a variable of a host script can be given with `--define NAME=VALUE`"),
            );
        }
        texts
    }

    /// Every meter `>M n` declares needs its `+` line; one error lists those that have none.
    fn check_declared_count(&mut self, section: &SectionAst<'_>, n: usize) {
        const SHOWN: usize = 10;
        let missing: Vec<usize> = (1..=n.min(MeterIndex::MAX as usize))
            .filter(|&i| {
                let i = i as MeterIndex;
                !self.meters.contains_key(&i) && !self.broken.contains(&i)
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        let mut names: Vec<String> = missing
            .iter()
            .take(SHOWN)
            .map(|i| format!("`+{i},...`"))
            .collect();
        if missing.len() > SHOWN {
            names.push(format!("and {} more", missing.len() - SHOWN));
        }
        let message = match missing.as_slice() {
            [i] => format!(
                "`>M {n}` declares {n} meter(s), but meter {i} has no `+{i},...` definition line"
            ),
            _ => format!(
                "`>M {n}` declares {n} meter(s), but {} of them have no definition line: {}",
                missing.len(),
                names.join(", ")
            ),
        };
        self.sink.error(section.head.line, section.rest.at, message);
    }

    /// A `+` line: a new meter of its type, with its source, serial settings, prefix and
    /// requests. A meter whose line has an error is still kept, so its metric lines are checked
    /// against its type (no model is produced anyway).
    fn definition(&mut self, t: &MappedText, declared: Option<usize>) {
        let def = match parse::parse_meter_def(&t.text) {
            Ok(d) => d,
            Err((at, message)) => {
                self.err(t, at, message);
                if let Some(i) = leading_index(&t.text) {
                    self.broken.push(i);
                }
                return;
            }
        };
        let index = match def.index.v.parse::<MeterIndex>() {
            Ok(i) if i >= 1 => i,
            _ => {
                self.err(
                    t,
                    def.index.at,
                    format!(
                        "meter number `{}` is out of range: meters are numbered from 1 to {}",
                        def.index.v,
                        MeterIndex::MAX
                    ),
                );
                return;
            }
        };
        if self.meters.contains_key(&index) {
            self.err(t, def.index.at, format!("meter {index} is defined twice"));
            return;
        }
        let errors_before = self.sink.error_count();
        if let Some(n) = declared.filter(|&n| index as usize > n) {
            self.err(
                t,
                def.index.at,
                format!("meter {index} is defined, but `>M {n}` declares {n} meter(s)"),
            );
        }
        let param: i32 = match def.param.v.parse() {
            Ok(p) => p,
            Err(_) => {
                self.err(
                    t,
                    def.param.at,
                    format!("parameter `{}` is out of range", def.param.v),
                );
                0
            }
        };
        let letter = def.type_letter.v;
        let Some(decoding) = empty_decoding(letter, param) else {
            self.err(
                t,
                def.type_letter.at,
                format!("unknown meter type `{letter}` (known: {METER_TYPES})"),
            );
            self.broken.push(index);
            return;
        };
        let source = self.source(t, &def, param);
        let serial = self.serial_settings(t, &def, param);
        let flags = match def.flag.v.split('.').next().unwrap_or("").parse::<u16>() {
            Ok(f) => f,
            Err(_) => {
                self.err(
                    t,
                    def.flag.at,
                    format!("flag `{}` is out of range (0 to {})", def.flag.v, u16::MAX),
                );
                0
            }
        };
        let (prefix, rest_read) = self.prefix(t, &def);
        let (tx, requests) = if rest_read {
            self.transmit(t, &def)
        } else {
            (None, Requests::default())
        };
        let (line, _) = t.origin(0);
        self.meters.insert(
            index,
            MeterBuilder {
                meter: Meter {
                    index,
                    line,
                    source,
                    serial,
                    flags,
                    param,
                    prefix,
                    tx,
                    requests,
                    options: MeterOptions::default(),
                    decoding,
                    derived: Vec::new(),
                    html: Vec::new(),
                },
                definition_error: self.sink.error_count() > errors_before,
            },
        );
    }

    /// The rx field: a pin, or `[address]` for Modbus TCP with the port in the param field.
    fn source(&mut self, t: &MappedText, def: &MeterDefAst<'_>, param: i32) -> MeterSource {
        let host = match def.rx.v {
            RxAst::Pin(p) => return MeterSource::Pin(self.pin(t, def.rx.at, p)),
            RxAst::Tcp(host) => host.to_string(),
        };
        if !matches!(def.type_letter.v, 'm' | 'M') {
            self.err(
                t,
                def.rx.at,
                "an `[address]` (Modbus TCP) needs meter type `m` or `M`",
            );
        }
        let port = u16::try_from(param).unwrap_or_else(|_| {
            self.err(
                t,
                def.param.at,
                format!("TCP port `{param}` is out of range (0 to {})", u16::MAX),
            );
            0
        });
        MeterSource::ModbusTcp { host, port }
    }

    /// Baud rate and framing. Counters, CAN and Modbus TCP have no serial line: baud 0.
    fn serial_settings(
        &mut self,
        t: &MappedText,
        def: &MeterDefAst<'_>,
        param: i32,
    ) -> SerialSettings {
        let letter = def.type_letter.v;
        let serial_line = matches!(def.rx.v, RxAst::Pin(_)) && !matches!(letter, 'c' | 'C');
        let baud = match u32::try_from(param) {
            _ if !serial_line => 0,
            Ok(b) if b > 0 => b,
            _ => {
                self.err(
                    t,
                    def.param.at,
                    format!("baud rate `{param}` must be a positive number"),
                );
                0
            }
        };
        SerialSettings {
            baud,
            data_bits: 8,
            parity: match def.parity {
                Some('E') => Parity::Even,
                Some('O') => Parity::Odd,
                Some(_) => Parity::None,
                None if letter == 'M' => Parity::Even,
                None => Parity::None,
            },
            stop_bits: if def.stop_bits == Some('2') { 2 } else { 1 },
        }
    }

    /// The JSON prefix, cut to 7 characters as Tasmota cuts it (`None` for `*`), and whether the
    /// fields after it are read: Tasmota stops reading the line after a prefix of 9 or more.
    fn prefix(&mut self, t: &MappedText, def: &MeterDefAst<'_>) -> (Option<String>, bool) {
        let Some(p) = def.prefix else {
            return (Some(String::new()), true);
        };
        let len = p.v.chars().count();
        let mut rest_read = true;
        if len > 8 && def.tx.is_some() {
            self.warn(
                t,
                p.at,
                format!("prefix `{}` has {len} characters: Tasmota cuts it to 7 and stops reading the line, so the transmit pin, period and telegrams after it are ignored (as here)", p.v),
            );
            rest_read = false;
        } else if len > 7 {
            self.warn(
                t,
                p.at,
                format!("prefix `{}` is cut to 7 characters, as Tasmota does", p.v),
            );
        }
        let prefix: String = p.v.chars().take(7).collect();
        ((prefix != "*").then_some(prefix), rest_read)
    }

    /// The transmit pin, the request period and the request blocks as written.
    fn transmit(&mut self, t: &MappedText, def: &MeterDefAst<'_>) -> (Option<TxPin>, Requests) {
        let tx = def.tx.as_ref().map(|txa| TxPin {
            pin: self.pin(t, txa.pin.at, txa.pin.v),
            driver_enable: txa.enable.as_ref().map(|(inverted, p)| DriverEnable {
                pin: self.pin(t, p.at, p.v),
                inverted: *inverted,
            }),
        });
        let mut requests = Requests::default();
        if let Some(period) = def.tx_period {
            match period.v.parse::<u32>() {
                Ok(p) => requests.period_ms = p.saturating_mul(100),
                Err(_) => self.err(
                    t,
                    period.at,
                    format!("period `{}` is out of range", period.v),
                ),
            }
        }
        if let Some(text) = def.telegrams {
            match read_blocks(text.v, matches!(def.type_letter.v, 'm' | 'M')) {
                Ok((blocks, warnings)) => {
                    for (at, w) in warnings {
                        self.warn(t, text.at + at, w);
                    }
                    requests.blocks = blocks;
                }
                Err((at, e)) => self.err(t, text.at + at, e),
            }
        }
        (tx, requests)
    }

    /// A pin number; `3.00` (a `%rxpin%` without decimals) reads as 3, as Tasmota's atoi does.
    fn pin(&mut self, t: &MappedText, at: At, text: &str) -> i32 {
        let int = text.split('.').next().unwrap_or("");
        match int.parse::<i32>() {
            Ok(p) => p,
            Err(_) => {
                self.err(t, at, format!("pin `{text}` is out of range"));
                0
            }
        }
    }

    pub(super) fn builder(&mut self, index: MeterIndex) -> &mut MeterBuilder {
        self.meters
            .get_mut(&index)
            .expect("meter checked by the caller")
    }

    /// The meter once all its lines are read: check the entry numbers its `=m`/`=d` lines use.
    fn finish(&mut self, b: MeterBuilder, total: EntryNo) -> Meter {
        let meter = b.meter;
        for d in &meter.derived {
            let entries: Vec<EntryNo> = match &d.kind {
                DerivedKind::Math { first, ops } => std::iter::once(first)
                    .chain(ops.iter().map(|(_, o)| o))
                    .filter_map(|o| match o {
                        Operand::Entry(e) => Some(*e),
                        Operand::Constant(_) => None,
                    })
                    .collect(),
                DerivedKind::Difference { entry, .. } => vec![*entry],
            };
            if let Some(e) = entries.iter().find(|&&e| e > total) {
                let line = d.output.line;
                self.sink.warn(line, 0, format!("entry {e} does not exist: the script has {total} entries (Tasmota reads entry 1 instead)"));
            }
        }
        meter
    }
}

/// Does a `>M` definition line continue on the next line? Only when it ends with a comma inside
/// its telegrams (8 or more commas), so `+1,3,s,0,9600,` (empty prefix) is complete.
fn continues(text: &str) -> bool {
    let t = text.trim_end();
    t.trim_start().starts_with('+') && t.ends_with(',') && t.matches(',').count() >= 8
}

/// A value or special line (`1,77070100010800ff@1,...`, `1,=h...`): a meter number, a comma, and a
/// line that is no request block (a block is hex, or `r` + hex).
fn looks_like_meter_line(text: &str) -> bool {
    let t = text.trim_start();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0
        && t[digits..].starts_with(',')
        && t[digits + 1..].bytes().any(|b| matches!(b, b'@' | b'='))
}

/// The meter's protocol with no metric lines yet; `None` for a letter Tasmota does not know.
fn empty_decoding(letter: char, param: i32) -> Option<Decoding> {
    Some(match letter {
        'o' => Decoding::Obis(Vec::new()),
        's' => Decoding::Sml(Vec::new()),
        'm' | 'M' => Decoding::Modbus(Vec::new()),
        'e' => Decoding::Ebus(Vec::new()),
        'k' => Decoding::Kamstrup(Vec::new()),
        'r' => Decoding::Raw {
            shift: true,
            metrics: Vec::new(),
        },
        'R' => Decoding::Raw {
            shift: false,
            metrics: Vec::new(),
        },
        'v' => Decoding::Vbus(Vec::new()),
        'C' => Decoding::Can(Vec::new()),
        'c' => Decoding::Counter {
            param,
            metrics: Vec::new(),
        },
        'p' => Decoding::Pzem(Vec::new()),
        _ => return None,
    })
}

pub(super) fn leading_index(text: &str) -> Option<MeterIndex> {
    let t = text.trim_start().strip_prefix('+')?;
    t.split(',').next()?.parse().ok()
}
