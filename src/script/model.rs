/*!
The compiled model of a Tasmota script: what the decoders, links and engine use without reading text
again.

The meter's protocol and its metric patterns live in one enum ([`Decoding`]), so a Modbus pattern
cannot sit on an OBIS meter. Entries (the values a script defines, `sml[n]` in Tasmota) are numbered
1-based across all meters in file order, as Tasmota numbers them; each value line carries its number.
*/

use std::fmt;

/// A whole compiled script.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Script {
    /// `>D [n]`: the string capacity `n` (Tasmota's default 19).
    pub string_capacity: u16,
    /// Variables declared in `>D`, in file order.
    pub declarations: Vec<Declaration>,
    /// Every script section other than `>D` and `>M`, in file order, with its statement lines.
    pub sections: Vec<Section>,
    /// The meters of the `>M` section, ordered by index (1, 2, ...).
    pub meters: Vec<Meter>,
}

/// A meter number (`+1`), 1-based. Tasmota allows 5; sml carries thousands in one script.
pub type MeterIndex = u16;

/// A 1-based source line number.
pub type LineNo = u32;

/// A statement line of a script section, kept verbatim (comments and blank lines dropped) for the hooks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceLine {
    pub line: LineNo,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Section {
    pub kind: SectionKind,
    /// Line of the marker (`>S`, `#name`).
    pub line: LineNo,
    pub lines: Vec<SourceLine>,
}

/// Script section markers (see spec/tasmota-script-to-rhai.md section 1.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SectionKind {
    /// `>B`: at boot.
    Boot,
    /// `>BS`: once after start-up.
    BootSecond,
    /// `>S`: every second.
    EverySecond,
    /// `>F`: every 100 ms.
    Every100ms,
    /// `>R`: on restart.
    Restart,
    /// `>T`: at teleperiod.
    Teleperiod,
    /// `>E`: on an event.
    Event,
    /// `>J`: lines appended to the teleperiod JSON.
    Json,
    /// `>W`: web page lines.
    Web,
    /// `>WS`: web status lines.
    WebStatus,
    /// `>G`: global variables.
    Global,
    /// `#name(p1 p2)`: a subroutine.
    Subroutine { name: String, params: Vec<String> },
    /// Any other marker (`>xM`, `>on1`, `>ah`, ...): kept so nothing is lost, never run.
    Other(String),
}

/// A `>D` variable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Declaration {
    pub line: LineNo,
    pub name: String,
    /// Prefix flags (`p:`, `t:`, `i:`, `g:`, `I:`, `m:`, `M:`) in the order written.
    pub kinds: Vec<VarKind>,
    pub initial: Literal,
    /// `M:arr=0 10`: array length.
    pub array_len: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VarKind {
    Permanent,
    Timer,
    AutoIncrement,
    Global,
    Integer,
    Median,
    MovingAverage,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Literal {
    Number(f64),
    Text(String),
}

/// One meter: its `+` definition line and its metric lines.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Meter {
    /// 1-based meter index (`+1`).
    pub index: MeterIndex,
    /// Line of the `+` definition.
    pub line: LineNo,
    /// The rx field: a GPIO pin (meaningless off the ESP) or a Modbus TCP address.
    pub source: MeterSource,
    /// UART framing. For `o` meters this is 8N1 with 7E1 emulated in software, as Tasmota does.
    pub serial: SerialSettings,
    /// The flag field (bit 16: median filter; bit 32: SML without `77` sync).
    pub flags: u16,
    /// The param field as written: baud rate (serial), TCP port (Modbus TCP), poll/debounce ms
    /// (counter), bit-rate code + buffers x 100 (CAN).
    pub param: i32,
    /// JSON key of this meter's object, already cut to 7 characters; `None` for `*` (no JSON output).
    pub prefix: Option<String>,
    /// Transmit side, when the meter must be asked.
    pub tx: Option<TxPin>,
    /// Request telegrams sent in turn every `period_ms`. Empty when the meter only pushes.
    pub requests: Requests,
    /// `=so...` options that apply to this meter.
    pub options: MeterOptions,
    /// The protocol with its typed metric lines.
    pub decoding: Decoding,
    /// `=m` and `=d` lines (derived values), in file order.
    pub derived: Vec<Derived>,
    /// `=h` lines, each with the entry count before it (for a web page); not in JSON.
    pub html: Vec<HtmlLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum MeterSource {
    /// A GPIO pin number (`3`, or negative for none).
    Pin(i32),
    /// `[192.168.1.10]`: Modbus TCP; the port is in `param` (stored in `serial.baud` would be wrong, so here).
    ModbusTcp { host: String, port: u16 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SerialSettings {
    pub baud: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Parity {
    None,
    Even,
    Odd,
}

impl fmt::Display for SerialSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        };
        write!(f, "{} {}{}{}", self.baud, self.data_bits, p, self.stop_bits)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxPin {
    pub pin: i32,
    /// RS485 driver-enable pin `(<pin>)` / `(i<pin>)` (inverted).
    pub driver_enable: Option<DriverEnable>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DriverEnable {
    pub pin: i32,
    pub inverted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Requests {
    /// The period between two blocks, in ms (the script gives units of 100 ms).
    pub period_ms: u32,
    /// The blocks as the script gives them, read the way Tasmota reads the hex. The decode layer
    /// frames them for the wire (`decode::request::frame`: Modbus count and CRC, `o` parity,
    /// Kamstrup CRC and stuffing), since framing is the protocol's business, not the script's.
    pub blocks: Vec<RequestBlock>,
}

/// One request block before framing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RequestBlock {
    /// `r` before the hex (Modbus): send the block as given, without the register count `0002`.
    pub raw: bool,
    pub bytes: Vec<u8>,
}

/// `=so` options. Pin, UART and buffer options are parsed and kept but have no effect off the ESP.
/// The `=so4`/`=so5` keys are secrets: `Debug` and `Serialize` (snapshots, `--explain`, logs) show
/// only whether they are set, and their verbatim lines are hidden alike.
#[derive(Clone, PartialEq, Default, Serialize)]
pub struct MeterOptions {
    /// `=so1`: negate a value when a status bit is set.
    pub sign_from_status: Option<SignFromStatus>,
    /// `=so2,N` flags (hex): bit 2 clear turns OBIS line mode off.
    pub so2_flags: Option<u16>,
    /// `=so4`: AES-128 key for encrypted meters.
    #[serde(serialize_with = "redact_key")]
    pub aes_key: Option<[u8; 16]>,
    /// `=so5`: authentication key.
    #[serde(serialize_with = "redact_key")]
    pub auth_key: Option<Vec<u8>>,
    /// `=so6,ms`: block sync time for `R` meters.
    pub block_sync_ms: Option<u32>,
    /// `=soC,<bufsize>,<crcmode>`: SML CRC check mode.
    pub sml_crc: Option<SmlCrcMode>,
    /// Every `=so` line verbatim (line, text after `=so`), including the ignored ones.
    #[serde(serialize_with = "redact_raw")]
    pub raw: Vec<(LineNo, String)>,
}

/// What a key shows outside the decoder: that it is set, never its bytes.
fn redacted<T>(key: &Option<T>) -> Option<&'static str> {
    key.as_ref().map(|_| "<redacted>")
}

fn redact_key<T, S: serde::Serializer>(key: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    redacted(key).serialize(s)
}

/// The verbatim `=so` lines with the text of key options (`=so4`, `=so5`) hidden.
fn redact_raw_lines(raw: &[(LineNo, String)]) -> Vec<(LineNo, String)> {
    raw.iter()
        .map(|(line, text)| {
            let secret = text.starts_with('4') || text.starts_with('5');
            let shown = if secret {
                format!("{},<redacted>", &text[..1])
            } else {
                text.clone()
            };
            (*line, shown)
        })
        .collect()
}

fn redact_raw<S: serde::Serializer>(raw: &[(LineNo, String)], s: S) -> Result<S::Ok, S::Error> {
    redact_raw_lines(raw).serialize(s)
}

impl std::fmt::Debug for MeterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeterOptions")
            .field("sign_from_status", &self.sign_from_status)
            .field("so2_flags", &self.so2_flags)
            .field("aes_key", &redacted(&self.aes_key))
            .field("auth_key", &redacted(&self.auth_key))
            .field("block_sync_ms", &self.block_sync_ms)
            .field("sml_crc", &self.sml_crc)
            .field("raw", &redact_raw_lines(&self.raw))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignFromStatus {
    pub status_obis: [u8; 4],
    pub fc1: u8,
    pub bit1: u8,
    pub fc2: u8,
    pub bit2: u8,
    pub value_obis: [u8; 4],
}

/// `=soC` CRC mode: 0 x25, 1 ccitt, 2 kermit, 3 modbus, 4 xmodem, 5 mcrf4xx, 6..11 swapped, 15 auto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SmlCrcMode(pub u8);

/// The protocol of a meter and its value lines, typed per protocol.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Decoding {
    /// `o`: OBIS ASCII (DSMR P1, IEC 62056-21).
    Obis(Vec<Metric<ObisPattern>>),
    /// `s`: SML binary.
    Sml(Vec<Metric<SmlPattern>>),
    /// `m` (8N1) / `M` (8E1): Modbus RTU, or Modbus TCP when the source is an address.
    Modbus(Vec<Metric<BytePattern>>),
    /// `e`: eBus.
    Ebus(Vec<Metric<BytePattern>>),
    /// `k`: Kamstrup.
    Kamstrup(Vec<Metric<BytePattern>>),
    /// `r` (sliding window) / `R` (frame ends after a silence).
    Raw {
        shift: bool,
        metrics: Vec<Metric<BytePattern>>,
    },
    /// `v`: VBus.
    Vbus(Vec<Metric<VbusPattern>>),
    /// `C`: CAN bus.
    Can(Vec<Metric<BytePattern>>),
    /// `c`: pulse counter.
    Counter {
        /// Positive: poll interval in ms; negative: debounce time in ms.
        param: i32,
        metrics: Vec<Metric<CounterField>>,
    },
    /// `p`: PZEM.
    Pzem(Vec<Metric<BytePattern>>),
}

impl Decoding {
    /// The meter type letter as written in scripts.
    pub fn type_letter(&self) -> char {
        match self {
            Decoding::Obis(_) => 'o',
            Decoding::Sml(_) => 's',
            Decoding::Modbus(_) => 'm',
            Decoding::Ebus(_) => 'e',
            Decoding::Kamstrup(_) => 'k',
            Decoding::Raw { shift: true, .. } => 'r',
            Decoding::Raw { shift: false, .. } => 'R',
            Decoding::Vbus(_) => 'v',
            Decoding::Can(_) => 'C',
            Decoding::Counter { .. } => 'c',
            Decoding::Pzem(_) => 'p',
        }
    }

    /// Number of value lines (not counting `=m`/`=d`).
    pub fn metric_count(&self) -> usize {
        match self {
            Decoding::Obis(m) => m.len(),
            Decoding::Sml(m) => m.len(),
            Decoding::Modbus(m)
            | Decoding::Ebus(m)
            | Decoding::Kamstrup(m)
            | Decoding::Can(m)
            | Decoding::Pzem(m)
            | Decoding::Raw { metrics: m, .. } => m.len(),
            Decoding::Vbus(m) => m.len(),
            Decoding::Counter { metrics, .. } => metrics.len(),
        }
    }
}

/// 1-based entry number across all meters, in file order (Tasmota's `sml[n]`).
pub type EntryNo = u16;

/// What every value line shares: where it goes in JSON and how its number is shaped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    pub entry: EntryNo,
    pub line: LineNo,
    /// Web label; `*` hides it on the web page (still published).
    pub label: String,
    pub unit: String,
    /// Key in the meter's JSON object.
    pub name: String,
    pub precision: Precision,
}

/// A value line of a meter: the protocol's pattern, then how the raw number becomes the published one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric<P> {
    pub pattern: P,
    pub value: ValueSpec,
    pub output: Output,
}

/// What follows `@` on a metric line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ValueSpec {
    /// `@<scale>[+-offset]`: published = (raw + offset) / divisor.
    Number { divisor: f64, offset: f64 },
    /// `@#`: capture as text (one per meter in Tasmota, any number here). `#x`: a hex id shown as ASCII.
    Text { hex_as_ascii: bool },
}

/// Precision field: low 4 bits = decimals; +16 = publish on every decode of the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Precision {
    pub decimals: u8,
    pub publish_each: bool,
}

impl Precision {
    pub fn from_field(v: u32) -> Precision {
        Precision {
            decimals: (v & 0x0f) as u8,
            publish_each: v & 16 != 0,
        }
    }
}

/// `o` meters: the text a received line must start with, and which bracket holds the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObisPattern {
    /// The code as written, up to and including `(` (`1-0:1.8.0(`, `.8.1(`, `1.8.1*00(`).
    pub code: String,
    /// `(@(N:scale`: bracket N (0-based) after the code; 0 for plain `(@scale`.
    pub bracket: u8,
    /// `@#)`: the character that ends a text capture (`)` in `(@#)`); `None` ends at `)` or line end.
    pub text_terminator: Option<char>,
    /// `s<delim> N:`: field N of the line split by `delim` (Kamstrup heat meters).
    pub split: Option<(char, u8)>,
}

/// `s` meters: the OBIS hex to find (`77070100010800ff`), `None` bytes are wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmlPattern {
    pub bytes: Vec<Option<u8>>,
    /// `bx:`: publish bit x of the value.
    pub bit: Option<u8>,
}

/// Binary meters (Modbus, eBus, Kamstrup, raw, CAN): a byte mask compared with the telegram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BytePattern {
    pub ops: Vec<ByteOp>,
    /// `bx:`: bit x of the extracted value.
    pub bit: Option<u8>,
    /// `iN:`: only while request block N (0-based) is the current one.
    pub block: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ByteOp {
    /// A byte that must match.
    Literal(u8),
    /// `xx` (1) or `xN` (N): bytes skipped.
    Skip(u8),
    /// A value taken from the telegram here.
    Extract(Extract),
    /// `pm(...)`: find this byte sequence anywhere, value follows it.
    Find(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Extract {
    /// `uu` / `ss`.
    U8,
    I8,
    /// `UUuu` big endian, `uuUU` little endian; `SSss` / `ssSS` signed.
    U16 {
        big_endian: bool,
    },
    I16 {
        big_endian: bool,
    },
    /// `UUuuUUuu`/`U32` big, `uuUUuuUU`/`u32` little; `word_swap` for the trailing `s`.
    U32 {
        big_endian: bool,
        word_swap: bool,
    },
    I32 {
        big_endian: bool,
        word_swap: bool,
    },
    U64 {
        big_endian: bool,
    },
    I64 {
        big_endian: bool,
    },
    /// `ffffffff` big endian IEEE754, `FFffFFff` reversed.
    F32 {
        big_endian: bool,
    },
    F64 {
        big_endian: bool,
    },
    /// `bcdN`: N BCD digits.
    Bcd(u8),
    /// `kstr`: Kamstrup value (mantissa, exponent).
    Kamstrup,
}

/// `v` meters: header bytes, then `v` and the field (`vo0uw`: offset 0, unsigned word).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VbusPattern {
    pub header: Vec<u8>,
    pub offset: u16,
    pub signed: bool,
    pub word: bool,
    /// `t`: a time word (minutes since midnight), shown as `hh:mm`.
    pub time: bool,
    /// `bx:`: bit x of the value (the relay and error bits of a solar controller).
    pub bit: Option<u8>,
}

/// `c` meters: which value of the counter a line publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CounterField {
    /// `1-0:1.8.0*255`: the pulse count.
    Count,
    /// `1-0:1.7.0*255`: pulses per minute.
    Rate,
}

/// `=m` and `=d` lines: values computed from other entries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Derived {
    pub kind: DerivedKind,
    pub divisor: f64,
    pub output: Output,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum DerivedKind {
    /// `=m 3+4+5/#3`: strictly left to right.
    Math {
        first: Operand,
        ops: Vec<(MathOp, Operand)>,
    },
    /// `=d 3 10`: change of entry 3 over 10 s as hourly rate x 1000.
    Difference { entry: EntryNo, interval_s: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Operand {
    Entry(EntryNo),
    /// `#3`: an integer constant.
    Constant(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MathOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HtmlLine {
    pub line: LineNo,
    pub html: String,
}

impl Script {
    /// The meter with this 1-based index.
    pub fn meter(&self, index: MeterIndex) -> Option<&Meter> {
        self.meters.iter().find(|m| m.index == index)
    }

    /// Every value output of every meter (metric lines and `=m`/`=d`), ordered by entry number.
    pub fn outputs(&self) -> Vec<(&Meter, &Output)> {
        let mut all: Vec<(&Meter, &Output)> = Vec::new();
        for m in &self.meters {
            for o in m.outputs() {
                all.push((m, o));
            }
        }
        all.sort_by_key(|(_, o)| o.entry);
        all
    }
}

impl Meter {
    /// The outputs of this meter: metric lines and derived lines, in entry order.
    pub fn outputs(&self) -> Vec<&Output> {
        fn outs<P>(v: &[Metric<P>]) -> impl Iterator<Item = &Output> {
            v.iter().map(|m| &m.output)
        }
        let mut v: Vec<&Output> = match &self.decoding {
            Decoding::Obis(m) => outs(m).collect(),
            Decoding::Sml(m) => outs(m).collect(),
            Decoding::Modbus(m)
            | Decoding::Ebus(m)
            | Decoding::Kamstrup(m)
            | Decoding::Can(m)
            | Decoding::Pzem(m)
            | Decoding::Raw { metrics: m, .. } => outs(m).collect(),
            Decoding::Vbus(m) => outs(m).collect(),
            Decoding::Counter { metrics, .. } => outs(metrics).collect(),
        };
        v.extend(self.derived.iter().map(|d| &d.output));
        v.sort_by_key(|o| o.entry);
        v
    }
}

use serde::Serialize;
