/*!
`%var%` replacement in `>M` lines, done before a line is parsed, as Tasmota does. The replaced text
keeps a map back to the source (line, byte) of every byte, so a diagnostic about substituted text
still points at the place the user wrote.
*/

use std::collections::HashMap;

use super::model::{LineNo, Literal};

/// Text made from one or more source lines, with the source position of each byte.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MappedText {
    pub text: String,
    /// (line, byte offset in that line) for each byte of `text`, plus one entry for its end.
    origin: Vec<(LineNo, u32)>,
}

impl MappedText {
    /// Where byte `at` of the text came from.
    pub fn origin(&self, at: usize) -> (LineNo, u32) {
        let i = at.min(self.origin.len().saturating_sub(1));
        self.origin.get(i).copied().unwrap_or((0, 0))
    }

    /// Append another line's text (continuation lines).
    pub fn append(&mut self, other: MappedText) {
        self.origin.pop();
        self.text.push_str(&other.text);
        self.origin.extend(other.origin);
    }

    /// Drop the last character (a trailing comma that must not start another block).
    pub fn pop(&mut self) -> Option<char> {
        let c = self.text.pop()?;
        // `origin` has one entry per byte plus the end entry: keep the end, drop the char's bytes.
        let end = self.origin.pop();
        self.origin.truncate(self.text.len());
        self.origin.extend(end);
        Some(c)
    }

    fn push(&mut self, s: &str, from: (LineNo, u32)) {
        self.text.push_str(s);
        self.origin.extend(std::iter::repeat_n(from, s.len()));
    }
}

/// Variables of `>D` by name.
pub type Variables = HashMap<String, Literal>;

/// A `%name%` that names no `>D` variable: (byte offset in the line, name).
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownVariable {
    pub at: usize,
    pub name: String,
    /// The use as written, decimals included (`%0rxpin%`), for messages.
    pub written: String,
}

/// Replace `%name%`, `%Nname%` (N decimals) and `%%` in one line. Unknown names are reported and
/// left as written (Tasmota inserts `???`, which no line survives anyway).
pub fn substitute(
    line: &str,
    line_no: LineNo,
    vars: &Variables,
) -> (MappedText, Vec<UnknownVariable>) {
    let mut out = MappedText::default();
    let mut unknown = Vec::new();
    let mut i = 0;
    let bytes = line.as_bytes();
    while i < line.len() {
        let Some(rel) = line[i..].find('%') else {
            push_literal(&mut out, &line[i..], line_no, i);
            break;
        };
        let start = i + rel;
        push_literal(&mut out, &line[i..start], line_no, i);
        if bytes.get(start + 1) == Some(&b'%') {
            out.push("%", (line_no, start as u32));
            i = start + 2;
            continue;
        }
        let Some(len) = line[start + 1..].find('%') else {
            // A lone `%` (a unit like `%`) stays as written.
            push_literal(&mut out, &line[start..], line_no, start);
            break;
        };
        let spec = &line[start + 1..start + 1 + len];
        let (decimals, name) = split_decimals(spec);
        match vars.get(name) {
            Some(Literal::Text(t)) => out.push(t, (line_no, start as u32)),
            Some(Literal::Number(v)) => out.push(
                &format!("{:.*}", decimals.unwrap_or(2), v),
                (line_no, start as u32),
            ),
            None => {
                unknown.push(UnknownVariable {
                    at: start,
                    name: name.to_string(),
                    written: line[start..start + len + 2].to_string(),
                });
                push_literal(&mut out, &line[start..start + len + 2], line_no, start);
            }
        }
        i = start + len + 2;
    }
    out.origin.push((line_no, line.len() as u32));
    (out, unknown)
}

fn push_literal(out: &mut MappedText, s: &str, line_no: LineNo, from: usize) {
    out.text.push_str(s);
    out.origin
        .extend((0..s.len()).map(|k| (line_no, (from + k) as u32)));
}

/// `%2x%` -> (Some(2), "x"); `%2.3x%` -> (Some(3), "x"); `%x%` -> (None, "x").
fn split_decimals(spec: &str) -> (Option<usize>, &str) {
    let digits = spec.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return (None, spec);
    }
    let mut decimals: Option<usize> = spec[..digits].parse().ok();
    let mut rest = &spec[digits..];
    if let Some(after_dot) = rest.strip_prefix('.') {
        let more = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if more > 0 {
            decimals = after_dot[..more].parse().ok();
            rest = &after_dot[more..];
        }
    }
    (decimals.map(|d: usize| d.min(10)), rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Variables {
        let mut v = Variables::new();
        v.insert("r".into(), Literal::Text("1,0-0:98.1.0(@(".into()));
        v.insert("rxpin".into(), Literal::Number(3.0));
        v.insert("x".into(), Literal::Number(1.23456));
        v
    }

    #[test]
    fn string_variable_is_inserted_and_positions_map_back() {
        let (t, unknown) = substitute("%r%1:1,Energy import,kWh,e,3", 7, &vars());
        assert!(unknown.is_empty());
        assert_eq!(t.text, "1,0-0:98.1.0(@(1:1,Energy import,kWh,e,3");
        assert_eq!(t.origin(0), (7, 0));
        assert_eq!(t.origin(15), (7, 3));
        assert_eq!(t.origin(t.text.len()), (7, 28));
    }

    #[test]
    fn numbers_take_their_decimals() {
        let v = vars();
        assert_eq!(substitute("+1,%0rxpin%,s", 1, &v).0.text, "+1,3,s");
        assert_eq!(substitute("%rxpin%", 1, &v).0.text, "3.00");
        assert_eq!(substitute("%2x%", 1, &v).0.text, "1.23");
        assert_eq!(substitute("%1.3x%", 1, &v).0.text, "1.235");
    }

    #[test]
    fn percent_signs_and_unknown_names() {
        let v = vars();
        assert_eq!(substitute("a,%%,b", 1, &v).0.text, "a,%,b");
        assert_eq!(substitute("a,%,b", 1, &v).0.text, "a,%,b");
        let (t, unknown) = substitute("1,%nope%@1", 1, &v);
        assert_eq!(t.text, "1,%nope%@1");
        assert_eq!(
            unknown,
            vec![UnknownVariable {
                at: 2,
                name: "nope".into(),
                written: "%nope%".into(),
            }]
        );
    }

    #[test]
    fn popping_a_trailing_comma_keeps_the_end_position() {
        let (mut t, _) = substitute("+1,%r%,", 4, &vars());
        assert_eq!(t.pop(), Some(','));
        assert_eq!(t.text, "+1,1,0-0:98.1.0(@(");
        assert_eq!(t.origin(t.text.len()), (4, 7));
        assert_eq!(t.origin(3), (4, 3));
    }
}
