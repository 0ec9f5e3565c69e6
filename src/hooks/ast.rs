/*!
The statement tree of a Tasmota script section, with the script's own line and column on every
statement, so a translation or run-time error points at what the user wrote, not at generated Rhai.

Names are not resolved here (is `x` a declared number, a string, an array or a built-in?): the tree
says what was written; [`super::translate`] decides what it means with the `>D` declarations at hand.
*/

use crate::script::model::LineNo;

/// Where a statement or an expression starts: the script's line and 1-based column within the line as
/// the front end keeps it (leading blanks trimmed; [`super::check`] adds the indentation back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: LineNo,
    pub col: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub pos: Pos,
    pub kind: StmtKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StmtKind {
    /// `v=e`, `v+=e`, `arr[i]=e`.
    Assign {
        target: Target,
        op: AssignOp,
        value: Expr,
    },
    /// `if` (both forms): the conditions in source order, combined without precedence.
    If {
        cond: Vec<(Logic, Cond)>,
        then: Vec<Statement>,
        otherwise: Vec<Statement>,
    },
    /// `switch e` / `case v` ... / `ends`: every case compares again (no fall-through, no default).
    Switch {
        value: Expr,
        cases: Vec<(Pos, Expr, Vec<Statement>)>,
    },
    /// `for v from to step` ... `next`: the body runs at least once.
    For {
        var: String,
        from: Expr,
        to: Expr,
        step: Expr,
        body: Vec<Statement>,
    },
    Break,
    Return(Option<Expr>),
    /// `->cmd`, `=>cmd`, `+>cmd`.
    Command {
        kind: CommandKind,
        text: Template,
    },
    Print(Template),
    /// `=#name(a b)`.
    CallSub {
        name: String,
        args: Vec<Expr>,
    },
    /// A line that is only a function call: `sml(1 0 300)`.
    Call(Expr),
    Svars,
    Delay(Expr),
    /// `dpN` / `dpN.M`.
    Dp(u8),
    /// `wcs ...`: web page content, only meaningful on the ESP's web page.
    Web,
    /// A line Tasmota reads as an unknown name and ignores (`TelePeriod 30`).
    Ignored {
        word: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Var(String),
    Element { name: String, index: Expr },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignOp {
    Set,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// `->`: silent.
    Silent,
    /// `=>`: logged, its result published.
    Logged,
    /// `+>`: like `=>`, may trigger `>E` again.
    Recursive,
}

/// How a condition joins the ones before it (the first one's is `First`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logic {
    First,
    And,
    Or,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Compare {
        left: Expr,
        op: CmpOp,
        right: Expr,
    },
    /// `((a==1) and (b==2))`.
    Group(Vec<(Logic, Cond)>),
    /// An expression without a comparison: false in Tasmota.
    Bare(Expr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Ge,
    Le,
    Gt,
    Lt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

/// An expression as written. A chain `a+b*c` is evaluated strictly left to right.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub pos: Pos,
    pub first: Operand,
    pub rest: Vec<(BinOp, Operand)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Operand {
    pub pos: Pos,
    pub negate: bool,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// The literal as written (`0x1F`, `3.5`).
    Number(String),
    Text(String),
    Paren(Box<Expr>),
    /// `name` alone: a variable or a built-in (`upsecs`).
    Name(String),
    /// `name[index]`: an array element, `sml[n]`, `chg[v]`.
    Index {
        name: String,
        index: Box<Expr>,
    },
    /// `name(args)`.
    Call {
        name: String,
        args: Vec<Arg>,
    },
    /// `#name(args)`.
    SubCall {
        name: String,
        args: Vec<Expr>,
    },
    /// `PREFIX#key`.
    JsonPath(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Expr(Expr),
    /// `s(2.0(x))`, `s(0x)`: decimals given before the value.
    Formatted {
        spec: String,
        value: Expr,
    },
    /// `mp(x <a r >b r)`: a bound.
    Range {
        below: bool,
        value: Expr,
    },
}

/// A `%var%` template: text pieces and substitutions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    pub pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    /// `%3name%`: the value, with decimals (`None`: the `dp` default).
    Value {
        decimals: Option<u8>,
        value: Expr,
    },
}
