/*!
`--shard K/N`: one script and one config file serving N hosts, each running the meters whose
number modulo N is K. Meter numbers are Tasmota's, from 1: with three hosts, `1/3` runs meters 1, 4,
7, ..., `2/3` runs 2, 5, 8, ... and `0/3` runs 3, 6, 9, ....

Only the meter tasks are split. The engine still holds the whole script, so entry numbers, `=m`
lines and the hooks' `sml[n]` keep their meaning; the entries of another host's meters simply never
get a value here (they are left out of SENSOR, STATE's `Silent` list does not name them, and `sml[n]`
reads them as 0, a meter not heard from yet, as Tasmota does before the first telegram). A hook that combines meters of several hosts must
therefore run where those meters are (or on a subscriber of the hosts' SENSOR topics).
*/

use std::fmt;
use std::str::FromStr;

use crate::link::Binding;
use crate::script::model::{MeterIndex, Script};

/// `K/N`: keep the meters whose number modulo `n` is `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub k: u16,
    pub n: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardError {
    #[error(
        "'{0}': expected K/N, e.g. 0/3 (this host runs the meters whose number modulo N is K)"
    )]
    Syntax(String),
    #[error("'{0}': N must be at least 1")]
    NoHosts(String),
    #[error("'{0}': K must be less than N (the remainders of N are 0 to N-1)")]
    KTooLarge(String),
    #[error("--shard {shard} keeps none of the script's meters ({have}): with meter numbers from 1, K/N keeps those whose number modulo N is K")]
    NoMeter { shard: Shard, have: String },
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ShardError::Syntax(s.to_string());
        let (k, n) = s.trim().split_once('/').ok_or_else(syntax)?;
        let k: u16 = k.trim().parse().map_err(|_| syntax())?;
        let n: u16 = n.trim().parse().map_err(|_| syntax())?;
        if n == 0 {
            return Err(ShardError::NoHosts(s.to_string()));
        }
        if k >= n {
            return Err(ShardError::KTooLarge(s.to_string()));
        }
        Ok(Shard { k, n })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

impl Shard {
    pub fn keeps(self, meter: MeterIndex) -> bool {
        meter % self.n == self.k
    }

    /// The meters of `script` this host runs, in order; an error when there is none.
    pub fn kept(self, script: &Script) -> Result<Vec<MeterIndex>, ShardError> {
        let kept: Vec<MeterIndex> = script
            .meters
            .iter()
            .map(|m| m.index)
            .filter(|&m| self.keeps(m))
            .collect();
        if kept.is_empty() && !script.meters.is_empty() {
            let have: Vec<String> = script.meters.iter().map(|m| m.index.to_string()).collect();
            return Err(ShardError::NoMeter {
                shard: self,
                have: have.join(", "),
            });
        }
        Ok(kept)
    }

    /// `bindings` split into this host's and the others' (which are ignored here).
    pub fn split(self, bindings: Vec<Binding>) -> (Vec<Binding>, Vec<Binding>) {
        bindings.into_iter().partition(|b| self.keeps(b.meter))
    }
}

/// The script as far as the meter tasks are concerned: only the meters `shard` keeps (all without
/// one). The engine gets the whole script; this copy is for checking bindings and starting links.
pub fn running(script: &Script, shard: Option<Shard>) -> std::borrow::Cow<'_, Script> {
    match shard {
        None => std::borrow::Cow::Borrowed(script),
        Some(s) => {
            let mut mine = script.clone();
            mine.meters.retain(|m| s.keeps(m.index));
            std::borrow::Cow::Owned(mine)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A script of `n` OBIS meters, one line each.
    fn meters(n: usize) -> Script {
        let mut text = format!(">D\n>M {n}\n");
        for i in 1..=n {
            text.push_str(&format!(
                "+{i},3,o,0,9600,M{i}\n{i},1-0:1.8.0(@1,E,kWh,e,3\n"
            ));
        }
        text.push_str("#\n");
        crate::script::compile(text.as_bytes())
            .script
            .expect("compiles")
    }

    #[test]
    fn shards_are_parsed_and_bad_ones_quoted() {
        assert_eq!("1/3".parse(), Ok(Shard { k: 1, n: 3 }));
        assert_eq!(" 0 / 1 ".parse(), Ok(Shard { k: 0, n: 1 }));
        for (bad, says) in [
            ("3/3", "'3/3': K must be less than N"),
            ("0/0", "'0/0': N must be at least 1"),
            ("1", "'1': expected K/N"),
            ("a/3", "'a/3': expected K/N"),
            ("-1/3", "'-1/3': expected K/N"),
            ("1/3/5", "'1/3/5': expected K/N"),
        ] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.starts_with(says), "{bad}: {e}");
        }
    }

    #[test]
    fn three_shards_split_the_meters_by_number_modulo_three() {
        let s = meters(7);
        let kept = |k| Shard { k, n: 3 }.kept(&s).unwrap();
        assert_eq!(kept(1), [1, 4, 7]);
        assert_eq!(kept(2), [2, 5]);
        assert_eq!(kept(0), [3, 6]);
    }

    #[test]
    fn a_shard_that_keeps_no_meter_says_which_meters_there_are() {
        let e = Shard { k: 0, n: 3 }
            .kept(&meters(2))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--shard 0/3 keeps none of the script's meters (1, 2)"),
            "{e}"
        );
    }

    #[test]
    fn the_running_script_has_only_the_kept_meters_and_the_bindings_split_alike() {
        let s = meters(4);
        let shard = Shard { k: 0, n: 2 };
        let mine = running(&s, Some(shard));
        let numbers: Vec<MeterIndex> = mine.meters.iter().map(|m| m.index).collect();
        assert_eq!(numbers, [2, 4]);
        assert_eq!(running(&s, None).meters.len(), 4);
        let bindings: Vec<Binding> = (1..=4)
            .map(|i| format!("{i}=/dev/ttyUSB{i}").parse().unwrap())
            .collect();
        let (kept, ignored) = shard.split(bindings);
        let meters_of = |b: &[Binding]| b.iter().map(|b| b.meter).collect::<Vec<_>>();
        assert_eq!(
            (meters_of(&kept), meters_of(&ignored)),
            (vec![2, 4], vec![1, 3])
        );
    }
}
