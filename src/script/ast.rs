/*!
The spanned syntax tree between pest's pairs and the model: what each line says, as text slices with
their byte offsets, before anything is checked. Lowering (`lower/`) validates it and builds the model;
keeping the two apart lets validation collect every problem instead of stopping at the first.
*/

use super::model::LineNo;

/// A value with the byte offset (in the text that was parsed) where it starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sp<T> {
    pub at: usize,
    pub v: T,
}

/// A whole file split into sections.
#[derive(Debug, Clone, PartialEq)]
pub struct FileAst<'a> {
    /// Lines before the first marker.
    pub preamble: Vec<TextLine<'a>>,
    pub sections: Vec<SectionAst<'a>>,
}

/// One source line (without its line end).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextLine<'a> {
    pub line: LineNo,
    pub text: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SectionAst<'a> {
    pub marker: Marker<'a>,
    /// The marker line as written.
    pub head: TextLine<'a>,
    /// Text after the marker, and its byte offset in the line.
    pub rest: Sp<&'a str>,
    pub body: Vec<TextLine<'a>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Marker<'a> {
    /// `#` alone.
    End,
    Subroutine {
        name: &'a str,
        params: Vec<&'a str>,
    },
    Declarations,
    Meters,
    BootSecond,
    Boot,
    EverySecond,
    Every100ms,
    Restart,
    Teleperiod,
    Event,
    Json,
    WebStatus,
    Web,
    Global,
    /// Any other marker; the text is the marker as written (`>xM`).
    Other(&'a str),
}

/// A `>D` line.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclarationAst<'a> {
    pub kinds: Vec<char>,
    pub name: Sp<&'a str>,
    pub value: Sp<LiteralAst<'a>>,
    pub array_len: Option<Sp<&'a str>>,
    pub trailing: Sp<&'a str>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LiteralAst<'a> {
    /// The characters between the quotes, escapes not yet resolved.
    Text(&'a str),
    Hex(&'a str),
    Decimal(&'a str),
}

/// A `+` meter definition line.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterDefAst<'a> {
    pub index: Sp<&'a str>,
    pub rx: Sp<RxAst<'a>>,
    pub type_letter: Sp<char>,
    pub parity: Option<char>,
    pub stop_bits: Option<char>,
    pub flag: Sp<&'a str>,
    pub param: Sp<&'a str>,
    pub prefix: Option<Sp<&'a str>>,
    pub tx: Option<TxAst<'a>>,
    pub tx_period: Option<Sp<&'a str>>,
    pub telegrams: Option<Sp<&'a str>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RxAst<'a> {
    Pin(&'a str),
    /// The text between the brackets.
    Tcp(&'a str),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TxAst<'a> {
    pub pin: Sp<&'a str>,
    /// `(i4)`: (inverted, pin).
    pub enable: Option<(bool, Sp<&'a str>)>,
}

/// A metric or special line of `>M`.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterLineAst<'a> {
    pub meter: Sp<&'a str>,
    pub kind: MeterLineKind<'a>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MeterLineKind<'a> {
    Html(&'a str),
    Math(MathAst<'a>),
    Difference(DifferenceAst<'a>),
    Option {
        name: Sp<&'a str>,
        args: Vec<Sp<&'a str>>,
    },
    Unknown(Sp<&'a str>),
    Metric(MetricAst<'a>),
}

/// `=m 3+4/#2@1,...`: entries combined strictly left to right.
#[derive(Debug, Clone, PartialEq)]
pub struct MathAst<'a> {
    pub first: Sp<OperandAst<'a>>,
    pub ops: Vec<(char, Sp<OperandAst<'a>>)>,
    pub value: ValueSpecAst<'a>,
    pub fields: Vec<Sp<&'a str>>,
}

/// `=d 3 10@1,...`: the change of an entry over an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct DifferenceAst<'a> {
    pub entry: Sp<&'a str>,
    pub interval: Option<Sp<&'a str>>,
    pub value: ValueSpecAst<'a>,
    pub fields: Vec<Sp<&'a str>>,
}

/// A metric line after the meter number: `decoder@value,label,unit,name,precision`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricAst<'a> {
    pub decoder: Sp<&'a str>,
    pub value: ValueSpecAst<'a>,
    pub fields: Vec<Sp<&'a str>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OperandAst<'a> {
    Entry(&'a str),
    /// Without the `#`.
    Constant(&'a str),
}

/// What follows `@`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueSpecAst<'a> {
    pub at: usize,
    pub split: Option<(char, Sp<&'a str>)>,
    pub bracket: Option<Sp<&'a str>>,
    pub bit: Option<Sp<&'a str>>,
    pub block: Option<Sp<&'a str>>,
    pub kind: ValueKindAst<'a>,
    /// Text Tasmota ignores between the value and the next comma.
    pub ignored: Sp<&'a str>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ValueKindAst<'a> {
    /// `#` and the character after it.
    Text(Option<char>),
    Number {
        scale: Sp<&'a str>,
        offset: Option<Sp<&'a str>>,
    },
}
