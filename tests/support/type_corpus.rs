/*!
The loop every per-type corpus test (`tests/<type>_corpus.rs`) runs: find the community corpus
(`$SML_SHARED` or `../shared`; skip cleanly when absent), compile each script as it runs on a host,
let the test judge the scripts of its meter type against its simulator, hold the outcomes against
the test's `KNOWN_BROKEN` list (a listed script that now runs fails, an unlisted failure fails) and
print runs/total. Each test keeps only its simulator glue and its list.
*/
#![allow(dead_code)]

#[path = "corpus.rs"]
mod corpus;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use sml::decode::{DecodeEvent, Decoder};
use sml::script::model::{Meter, Metric, Script};

#[allow(unused_imports)] // only the tests that read captures use it
pub use corpus::shared_dir;

/// What a test makes of one compiled script.
pub enum Verdict {
    /// No meter of the test's type: not counted.
    NotOfType,
    /// Every line of its meters got what the simulator sent.
    Runs,
    /// Counted, and does not run: why.
    Broken(String),
}

/// One meter type's corpus run.
pub struct TypeCorpus {
    /// Printed before runs/total: `modbus corpus`.
    pub label: &'static str,
    /// What the corpus must hold at least one of: `Modbus scripts`.
    pub kind: &'static str,
    /// Scripts that do not run against a well-behaved simulator, and why.
    pub known_broken: &'static [(&'static str, &'static str)],
    /// Whether a script's text is of this type, so a script that does not compile is still counted.
    pub mentions: fn(&str) -> bool,
    /// The bytes compiled for a corpus file (usually [`source_of`]).
    pub source: fn(&Path) -> Vec<u8>,
}

impl TypeCorpus {
    /// Judge every script of the corpus with `judge(script, text)`; panics with every problem.
    pub fn check_every_script(&self, mut judge: impl FnMut(&Script, &str) -> Verdict) {
        let Some(dir) = corpus::corpus_dir() else {
            eprintln!("the community corpus is absent: skipped");
            return;
        };
        let (mut total, mut runs) = (0, 0);
        let (mut failures, mut report) = (Vec::new(), Vec::new());
        for path in corpus::corpus_files(&dir) {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            let broken = match sml::script::compile(&(self.source)(&path)).script {
                // A compile failure is tests/corpus.rs's business; say so if it is of this type.
                None if (self.mentions)(&text) => Some("does not compile".to_string()),
                None => continue,
                Some(script) => match judge(&script, &text) {
                    Verdict::NotOfType => continue,
                    Verdict::Runs => None,
                    Verdict::Broken(why) => Some(why),
                },
            };
            total += 1;
            match &broken {
                None => runs += 1,
                Some(why) => report.push(format!("{name}: {why}")),
            }
            failures.extend(self.check(&name, broken.as_deref()));
        }
        eprintln!("{}: {runs}/{total} scripts run end to end", self.label);
        for r in &report {
            eprintln!("  {r}");
        }
        assert!(total > 0, "the corpus has {}", self.kind);
        assert!(
            failures.is_empty(),
            "{} problem(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// One script's outcome against `known_broken`: the problem, if any.
    fn check(&self, name: &str, broken: Option<&str>) -> Option<String> {
        let listed = self.known_broken.iter().find(|(n, _)| *n == name);
        match (broken, listed) {
            (None, None) | (Some(_), Some(_)) => None,
            (None, Some((_, reason))) => Some(format!(
                "{name} runs now; take it off KNOWN_BROKEN ({reason})"
            )),
            (Some(why), None) => Some(format!("{name} does not run: {why}")),
        }
    }
}

/// Whether a `+` (meter definition) line of `text` has a type starting with one of `letters`.
pub fn defines_meter_of(text: &str, letters: &[char]) -> bool {
    text.lines().any(|l| {
        let f: Vec<&str> = l.split(',').collect();
        l.starts_with('+') && f.len() > 2 && f[2].starts_with(letters)
    })
}

/// The script as it runs: a fragment without `>D` goes into the host template (as `tests/corpus.rs`
/// does), and a script with `>D` gets the template's variables it uses but does not declare, so
/// `%rxpin%` and friends resolve.
pub fn source_of(path: &Path) -> Vec<u8> {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
    let template = host_template();
    let Some(d) = text.lines().position(|l| l.trim_start().starts_with(">D")) else {
        return format!("{template}{text}").into_bytes();
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    let host: Vec<&str> = template
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with('>'))
        .filter(|l| {
            let name = l.split('=').next().unwrap_or("");
            text.contains(&format!("{name}%"))
                && !text
                    .lines()
                    .any(|x| x.trim_start().starts_with(&format!("{name}=")))
        })
        .collect();
    for (i, h) in host.iter().enumerate() {
        lines.insert(d + 1 + i, h);
    }
    lines.join("\n").into_bytes()
}

/// `tests/fixtures/fragment-template.sml`: the host script a fragment is pasted into.
pub fn host_template() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fragment-template.sml"
    ))
    .unwrap()
}

/// Drain `d`'s events: the entries that got a value, and the decoder's complaints (skipped bytes
/// among them when `discards_complain`).
pub fn drain(d: &mut dyn Decoder, discards_complain: bool) -> (BTreeSet<u16>, Vec<String>) {
    let (mut got, mut complaints) = (BTreeSet::new(), Vec::new());
    while let Some(ev) = d.poll_event() {
        match ev {
            DecodeEvent::Telegram(t) => got.extend(t.readings.iter().map(|r| r.entry)),
            DecodeEvent::Error(e) => complaints.push(e.to_string()),
            DecodeEvent::Discarded { bytes } if discards_complain => {
                complaints.push(format!("{bytes} bytes skipped"))
            }
            DecodeEvent::Discarded { .. } => {}
        }
    }
    (got, complaints)
}

/// `meter`'s lines that got no value: `meter 1 line 3 `Power``.
pub fn missing<P>(meter: &Meter, metrics: &[Metric<P>], got: &BTreeSet<u16>) -> Vec<String> {
    metrics
        .iter()
        .filter(|m| !got.contains(&m.output.entry))
        .map(|m| {
            format!(
                "meter {} line {} `{}`",
                meter.index, m.output.line, m.output.name
            )
        })
        .collect()
}

/// The verdict of a script whose lines got no value (`missing`) and whose decoder said
/// `complaints`: it runs when nothing is missing (and, if `complaints_fail`, nothing was said).
pub fn verdict(missing: &[String], mut complaints: Vec<String>, complaints_fail: bool) -> Verdict {
    if missing.is_empty() && (!complaints_fail || complaints.is_empty()) {
        return Verdict::Runs;
    }
    complaints.dedup();
    Verdict::Broken(format!(
        "no value for {} (decoder said: {})",
        missing.join(", "),
        complaints.join("; ")
    ))
}

/// The verdict of a script by its meters that `metrics_of` picks (the test's type): each is run by
/// `run` (the entries that got a value, the decoder's complaints); [`Verdict::NotOfType`] when the
/// script has none.
pub fn judge_meters<'s, P: 's>(
    script: &'s Script,
    metrics_of: impl Fn(&'s Meter) -> Option<&'s [Metric<P>]>,
    mut run: impl FnMut(&Meter) -> (BTreeSet<u16>, Vec<String>),
    complaints_fail: bool,
) -> Verdict {
    let (mut any, mut lacking, mut complaints) = (false, Vec::new(), Vec::new());
    for meter in &script.meters {
        let Some(metrics) = metrics_of(meter) else {
            continue;
        };
        any = true;
        let (got, errs) = run(meter);
        lacking.extend(missing(meter, metrics, &got));
        complaints.extend(errs);
    }
    if !any {
        return Verdict::NotOfType;
    }
    verdict(&lacking, complaints, complaints_fail)
}

/// Poll `meter`'s decoder for two rounds of its request blocks on an injected clock, `answer`
/// replying to each request (or not); the entries that got a value, and the decoder's complaints.
pub fn poll_two_rounds(
    meter: &Meter,
    answer: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> (BTreeSet<u16>, Vec<String>) {
    let mut d = sml::decode::decoder_for(meter).unwrap();
    let blocks = meter.requests.blocks.len().max(1);
    let period = Duration::from_millis(u64::from(meter.requests.period_ms.max(100)));
    let t0 = Instant::now();
    let (mut got, mut complaints) = (BTreeSet::new(), Vec::new());
    for tick in 0..(2 * blocks as u32 + 1) {
        let now = t0 + period * tick;
        while let Some(request) = d.poll_transmit(now) {
            if let Some(reply) = answer(&request) {
                d.handle_bytes(now, &reply);
            }
        }
        d.handle_timeout(now);
        let (entries, said) = drain(d.as_mut(), false);
        got.extend(entries);
        complaints.extend(said);
    }
    (got, complaints)
}
