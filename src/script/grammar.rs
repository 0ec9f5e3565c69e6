/*!
The pest parser generated from `grammar/tasmota.pest`, and the friendly names its rules get in error
messages (as pest's own meta grammar renames its rules), so a user reads "expected a scale (number)"
rather than "expected scale".
*/

use pest::error::{Error, ErrorVariant, InputLocation};
use pest_derive::Parser;

#[derive(Parser)]
#[grammar = "../grammar/tasmota.pest"]
pub struct TasmotaParser;

/// How a rule is called in an error message.
pub fn describe(rule: &Rule) -> &'static str {
    match rule {
        Rule::meter_index => "the meter number",
        Rule::pin | Rule::tcp_address => "a pin number or `[ip address]`",
        Rule::meter_type | Rule::type_letter => "the meter type letter",
        Rule::framing | Rule::parity => "a parity (`N`, `E`, `O`)",
        Rule::stop_bits => "stop bits (`1` or `2`)",
        Rule::flag => "the flag field (a number)",
        Rule::param => "the baud rate / parameter (a number)",
        Rule::prefix => "the JSON prefix",
        Rule::tx => "the transmit pin (a number)",
        Rule::driver_enable => "a driver-enable pin `(pin)`",
        Rule::tx_period => "the request period (a number, in 100 ms)",
        Rule::meter_ref => "the meter number",
        Rule::decoder => "a decoder pattern",
        Rule::value_spec => "a value after `@`",
        Rule::split_field => "`s<delim>N:`",
        Rule::bracket => "`(N:`",
        Rule::bit_select => "`bN:`",
        Rule::block_select => "`iN:`",
        Rule::text_capture => "`#`",
        Rule::number_value | Rule::scale => "a scale (number)",
        Rule::offset => "an offset (`+N` or `-N`)",
        Rule::math_expr | Rule::entry_ref | Rule::constant => "an entry number or `#constant`",
        Rule::math_op => "an operator (`+ - * /`)",
        Rule::interval => "an interval in seconds",
        Rule::hex_byte => "two hex digits",
        Rule::wildcard => "`xx`",
        Rule::vbus_offset => "an offset number",
        Rule::vbus_sign => "`u` or `s`",
        Rule::vbus_width => "`w`, `b` or `t`",
        Rule::digit_count => "a number",
        Rule::var_name => "a variable name",
        Rule::string_literal | Rule::hex_literal | Rule::decimal_literal => {
            "a value (number or \"text\")"
        }
        Rule::EOI => "the end of the line",
        _ => "valid syntax",
    }
}

/// A pest error as (byte offset in the parsed text, message).
pub fn explain(err: &Error<Rule>, context: &str) -> (usize, String) {
    let pos = match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((p, _)) => p,
    };
    let message = match &err.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<&str> = positives.iter().map(describe).collect();
            names.dedup();
            names.sort_unstable();
            names.dedup();
            if names.is_empty() {
                format!("unexpected text in {context}")
            } else {
                format!("{context}: expected {}", join_or(&names))
            }
        }
        ErrorVariant::CustomError { message } => message.clone(),
    };
    (pos, message)
}

fn join_or(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
