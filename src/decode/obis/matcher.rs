/*!
Value matching: the metric lines of an `o` meter applied to the lines of a checked telegram, by
Tasmota's rules (spec section 3).

- A metric matches a line that starts with its code (`1-0:1.8.0(`, `15.8.0(`, `1-0:1.8.1*255(`), as
  Tasmota's default OBIS line mode compares it. With `=so2` clearing line mode, the code may sit
  anywhere in the line (Tasmota's sliding window).
- The value is read from bracket `N` (`(@(N:scale`; 0 is the bracket the code ends with): optional
  spaces, sign, digits and one `.`, stopping at the first other character (`*kWh`, `)`, the `W` of a
  timestamp). No digit there (`(ON)`, `()`) gives no reading, counted as unparsed: never a made-up 0.
- `@#` captures text up to the terminator written after `#` (`)` when none), as Tasmota does, but
  without its 22-character cut (a DSMR equipment id is 34 characters); `#x` turns hex into ASCII.
- `s<delim> N:` (Kamstrup Multical): field N of the line split by `delim`.

Speed: almost every code ends with its only `(`, so it matches a line exactly when it equals the line's
text up to its first `(`: one hash lookup per line instead of a compare per metric. Other codes are
compared on every line.
*/

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::decode::{scale, Reading, Value};
use crate::hex;
use crate::script::model::{EntryNo, Metric, ObisPattern, ValueSpec};

/// The compiled metric lines of one meter.
#[derive(Debug, Clone)]
pub struct Matcher {
    metrics: Vec<Compiled>,
    /// Code (up to and including its `(`) -> metrics with that code, in script order.
    by_code: HashMap<Box<[u8]>, Vec<usize>, BuildHasherDefault<Fnv>>,
    /// Metrics compared with every line (codes that are not `text(`, or all in window mode).
    scanned: Vec<usize>,
    line_mode: bool,
}

#[derive(Debug, Clone)]
struct Compiled {
    code: Box<[u8]>,
    bracket: u8,
    split: Option<(u8, u8)>,
    kind: Kind,
    entry: EntryNo,
}

#[derive(Debug, Clone)]
enum Kind {
    Number { spec: ValueSpec },
    Text { terminator: u8, hex_as_ascii: bool },
}

impl Matcher {
    /// `line_mode`: Tasmota's OBIS line mode (the default; `=so2` without bit 2 turns it off).
    pub fn new(metrics: &[Metric<ObisPattern>], line_mode: bool) -> Self {
        let mut m = Matcher {
            metrics: Vec::new(),
            by_code: HashMap::default(),
            scanned: Vec::new(),
            line_mode,
        };
        for (i, metric) in metrics.iter().enumerate() {
            let p = &metric.pattern;
            let code: Box<[u8]> = p.code.bytes().map(|b| b & 0x7f).collect();
            let kind = match metric.value {
                ValueSpec::Text { hex_as_ascii } => Kind::Text {
                    terminator: p.text_terminator.map_or(b')', |c| c as u32 as u8),
                    hex_as_ascii,
                },
                ValueSpec::Number { .. } => Kind::Number {
                    spec: metric.value.clone(),
                },
            };
            let split = p.split.map(|(d, n)| (d as u32 as u8, n));
            let exact =
                line_mode && code.last() == Some(&b'(') && !code[..code.len() - 1].contains(&b'(');
            if exact {
                m.by_code.entry(code.clone()).or_default().push(i);
            } else {
                m.scanned.push(i);
            }
            m.metrics.push(Compiled {
                code,
                bracket: p.bracket,
                split,
                kind,
                entry: metric.output.entry,
            });
        }
        m
    }

    /// Number of metric lines (the most readings one line can give is fewer; a telegram usually
    /// gives about this many).
    pub fn len(&self) -> usize {
        self.metrics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// Match every line of `text` (bit 7 already cleared); readings in line order, then script order.
    /// Returns the number of matched lines whose value did not parse.
    pub fn match_text(&self, text: &[u8], readings: &mut Vec<Reading>) -> u64 {
        let mut unparsed = 0;
        let mut start = 0;
        let ends = memchr::memchr_iter(b'\n', text).chain(std::iter::once(text.len()));
        for end in ends {
            let line = &text[start..end];
            start = end + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = line.strip_prefix(&[0x02]).unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            unparsed += self.match_line(line, readings);
        }
        unparsed
    }

    fn match_line(&self, line: &[u8], readings: &mut Vec<Reading>) -> u64 {
        let mut unparsed = 0;
        if !self.by_code.is_empty() {
            if let Some(p) = memchr::memchr(b'(', line) {
                if let Some(list) = self.by_code.get(&line[..=p]) {
                    // Many lines on one code (the 19 monthly values of `0-0:98.1.0`): find the
                    // brackets once, not once per line.
                    let mut opens = [0usize; MAX_BRACKETS];
                    let mut n = 0;
                    if list.len() > 1 {
                        for at in memchr::memchr_iter(b'(', &line[p + 1..]).take(MAX_BRACKETS) {
                            opens[n] = p + 1 + at + 1;
                            n += 1;
                        }
                    }
                    for &i in list {
                        let m = &self.metrics[i];
                        let cached = usize::from(m.bracket);
                        if list.len() > 1 && m.split.is_none() && cached >= 1 && cached <= n {
                            unparsed += self.read_from(i, line, opens[cached - 1], readings);
                        } else if list.len() > 1
                            && m.split.is_none()
                            && n < MAX_BRACKETS
                            && cached > n
                        {
                            // The line has fewer brackets than this metric asks for.
                            unparsed += 1;
                        } else {
                            unparsed += self.read(i, line, p + 1, readings);
                        }
                    }
                }
            }
        }
        for &i in &self.scanned {
            let code = &self.metrics[i].code;
            let at = if self.line_mode {
                line.starts_with(code).then_some(0)
            } else {
                find(line, code)
            };
            if let Some(at) = at {
                unparsed += self.read(i, line, at + code.len(), readings);
            }
        }
        unparsed
    }

    /// Read metric `i`'s value from `line`, its code ending at `pos`. Returns 1 when it did not parse.
    fn read(&self, i: usize, line: &[u8], pos: usize, readings: &mut Vec<Reading>) -> u64 {
        match value_start(line, pos, &self.metrics[i]) {
            Some(start) => self.read_from(i, line, start, readings),
            None => 1,
        }
    }

    /// Read metric `i`'s value starting at `start`.
    fn read_from(&self, i: usize, line: &[u8], start: usize, readings: &mut Vec<Reading>) -> u64 {
        let m = &self.metrics[i];
        let field = &line[start..];
        let value = match &m.kind {
            Kind::Number { spec } => match parse_number(field) {
                Some(raw) => Value::Number(scale(raw, spec)),
                None => return 1,
            },
            Kind::Text {
                terminator,
                hex_as_ascii,
            } => {
                let end = field
                    .iter()
                    .position(|b| b == terminator)
                    .unwrap_or(field.len());
                let text = &field[..end];
                let text = if *hex_as_ascii {
                    hex_to_ascii(text)
                } else {
                    String::from_utf8_lossy(text).into_owned()
                };
                Value::Text(text)
            }
        };
        readings.push(Reading {
            entry: m.entry,
            value,
        });
        0
    }
}

/// Brackets remembered per line for codes with several metric lines (a `(@(N:` beyond this is found
/// by scanning).
const MAX_BRACKETS: usize = 32;

/// Where metric `m`'s value starts, its code ending at `pos`: after `N` more `(` for `(@(N:`, after
/// `N` delimiters for `s<delim> N:`.
fn value_start(line: &[u8], mut pos: usize, m: &Compiled) -> Option<usize> {
    if let Some((delim, n)) = m.split {
        for _ in 0..n {
            pos += line[pos..].iter().position(|&b| b == delim)? + 1;
        }
    }
    for _ in 0..m.bracket {
        pos += line[pos..].iter().position(|&b| b == b'(')? + 1;
    }
    // A code written without its `(` (`1.8.0@1`): the value is inside the bracket that follows.
    if m.bracket == 0
        && m.split.is_none()
        && m.code.last() != Some(&b'(')
        && line.get(pos) == Some(&b'(')
    {
        pos += 1;
    }
    Some(pos)
}

/// Tasmota's number: leading spaces, optional sign, digits with at most one `.`, up to the first
/// other character. `None` when there is no digit.
pub fn parse_number(s: &[u8]) -> Option<f64> {
    let mut i = 0;
    while s.get(i) == Some(&b' ') {
        i += 1;
    }
    let negative = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    let mut mantissa: u64 = 0;
    let mut digits = 0u32;
    let mut decimals = 0i32;
    let mut seen_dot = false;
    while let Some(&c) = s.get(i) {
        match c {
            b'0'..=b'9' => {
                digits += 1;
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                if seen_dot {
                    decimals += 1;
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => break,
        }
        i += 1;
    }
    if digits == 0 {
        return None;
    }
    let value = if digits <= 15 {
        // Exact: the mantissa and the power of ten are both exact doubles, so one rounding.
        mantissa as f64 / POW10[decimals as usize]
    } else {
        let text = std::str::from_utf8(&s[start..i]).ok()?;
        text.strip_suffix('.').unwrap_or(text).parse::<f64>().ok()?
    };
    Some(if negative { -value } else { value })
}

const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `#x`: a hex id shown as ASCII (`4B464D` -> `KFM`); text that is not hex pairs stays as it is.
fn hex_to_ascii(text: &[u8]) -> String {
    let pair = |p: &[u8]| Some(hex::nibble(p[0])? << 4 | hex::nibble(p[1])?);
    let bytes: Option<Vec<u8>> = if text.len() % 2 == 0 {
        text.chunks_exact(2).map(pair).collect()
    } else {
        None
    };
    match bytes {
        Some(bytes) => bytes.iter().map(|&b| char::from(b & 0x7f)).collect(),
        None => String::from_utf8_lossy(text).into_owned(),
    }
}

/// FNV-1a: codes are short, so a simple hash beats SipHash here (the table holds only the script's codes).
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}
