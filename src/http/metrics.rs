/*!
`GET /metrics` in Prometheus' text format, for Grafana: each value with its meter, name and unit,
and the health of each meter (telegrams, rejected telegrams by reason, link drops) and of the MQTT
queue.

The rejected telegrams are counted where they happen, in the meter's decoder, by wrapping the
decoder factory ([`counting`]): the meter tasks stay as they are and the counts need no channel.
*/

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::live::{queue_len, DecodeCounts, Live, Row};
use crate::decode::{DecodeError, DecodeEvent, DecodeStats, Decoder};
use crate::runner::meter_task::DecoderFactory;
use crate::script::model::MeterIndex;

/// A label value with Prometheus' escapes.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition.
pub fn render(live: &Live, now: Instant) -> String {
    let mut out = String::new();
    out.push_str("# HELP sml_value The latest value of a metric line, as SENSOR publishes it.\n");
    out.push_str("# TYPE sml_value gauge\n");
    for m in &live.meters {
        // A meter without a prefix publishes nothing, and so shows nothing here.
        let Some(prefix) = &m.prefix else { continue };
        for r in &m.rows {
            let Row::Value(v) = r else { continue };
            if let Some(n) = live.number(v.entry, now) {
                let _ = writeln!(
                    out,
                    "sml_value{{meter=\"{}\",name=\"{}\",unit=\"{}\"}} {}",
                    label(prefix),
                    label(&v.name),
                    label(&v.unit),
                    prom_number(n)
                );
            }
        }
    }
    let per_meter = |out: &mut String, name: &str, help: &str, get: &dyn Fn(MeterIndex) -> u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for m in &live.meters {
            let _ = writeln!(
                out,
                "{name}{{meter=\"{}\"}} {}",
                label(&m.label()),
                get(m.index)
            );
        }
    };
    per_meter(
        &mut out,
        "sml_telegrams_total",
        "Telegrams decoded.",
        &|i| live.telegrams.get(&i).copied().unwrap_or(0),
    );
    let decode = |i: MeterIndex, f: fn(&DecodeCounts) -> &std::sync::atomic::AtomicU64| {
        live.decode
            .get(&i)
            .map_or(0, |c| f(c).load(Ordering::Relaxed))
    };
    per_meter(
        &mut out,
        "sml_crc_errors_total",
        "Telegrams rejected for a bad CRC.",
        &|i| decode(i, |c| &c.crc),
    );
    per_meter(
        &mut out,
        "sml_timeouts_total",
        "Telegrams cut off by silence before they were complete.",
        &|i| decode(i, |c| &c.truncated),
    );
    let _ = writeln!(
        out,
        "# HELP sml_rejected_total Telegrams rejected, by reason.\n# TYPE sml_rejected_total counter"
    );
    for m in &live.meters {
        for (reason, n) in [
            ("crc", decode(m.index, |c| &c.crc)),
            ("missing_crc", decode(m.index, |c| &c.missing_crc)),
            ("truncated", decode(m.index, |c| &c.truncated)),
            ("too_long", decode(m.index, |c| &c.too_long)),
            ("malformed", decode(m.index, |c| &c.malformed)),
        ] {
            let _ = writeln!(
                out,
                "sml_rejected_total{{meter=\"{}\",reason=\"{reason}\"}} {n}",
                label(&m.label())
            );
        }
    }
    per_meter(
        &mut out,
        "sml_link_drops_total",
        "Times the meter's link dropped and was reopened.",
        &|i| live.link_drops.get(&i).copied().unwrap_or(0),
    );
    if let Some(q) = &live.mqtt_queue {
        // One queue serves every meter: payloads carry all of them.
        let _ = writeln!(
            out,
            "# HELP sml_mqtt_queue_length Payloads waiting for the broker.\n\
             # TYPE sml_mqtt_queue_length gauge\nsml_mqtt_queue_length {}",
            queue_len(q)
        );
    }
    out
}

/// Prometheus reads Go's float syntax; Rust's `Display` is a subset of it for finite numbers.
fn prom_number(n: f64) -> String {
    format!("{n}")
}

/// Wrap a decoder factory so that each decoder's rejections are counted in `counts`.
pub fn counting(
    inner: DecoderFactory,
    counts: Arc<HashMap<MeterIndex, DecodeCounts>>,
) -> DecoderFactory {
    Arc::new(move |meter| {
        let decoder = inner(meter)?;
        Ok(Box::new(Counting {
            inner: decoder,
            counts: counts.clone(),
            meter: meter.index,
        }) as Box<dyn Decoder>)
    })
}

struct Counting {
    inner: Box<dyn Decoder>,
    counts: Arc<HashMap<MeterIndex, DecodeCounts>>,
    meter: MeterIndex,
}

impl Decoder for Counting {
    fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        self.inner.handle_bytes(now, bytes)
    }

    fn poll_event(&mut self) -> Option<DecodeEvent> {
        let ev = self.inner.poll_event()?;
        if let (DecodeEvent::Error(e), Some(c)) = (&ev, self.counts.get(&self.meter)) {
            let counter = match e {
                DecodeError::BadCrc { .. } => &c.crc,
                DecodeError::MissingCrc { .. } => &c.missing_crc,
                DecodeError::Truncated { .. } => &c.truncated,
                DecodeError::TooLong { .. } => &c.too_long,
                DecodeError::Malformed { .. } => &c.malformed,
                // Not a telegram: no rejection counter (the decoder's stats count it).
                DecodeError::NoAnswer { .. } => return Some(ev),
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Some(ev)
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.inner.poll_transmit(now)
    }

    fn queue_request(&mut self, request: &crate::script::model::RequestBlock) -> Option<Vec<u8>> {
        self.inner.queue_request(request)
    }

    fn poll_framing(&mut self) -> Option<crate::decode::obis::iec::FramingChange> {
        self.inner.poll_framing()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now)
    }

    fn handle_end(&mut self) {
        self.inner.handle_end()
    }

    fn stats(&self) -> DecodeStats {
        self.inner.stats()
    }
}
