/*!
SENSOR payloads on stdout, one JSON object per line, for running with no broker at all (and for
piping into `jq`). STATE is left out: it is about the MQTT device, not the meter.
*/

use std::io::Write;

use super::{PublishError, Sink};
use crate::engine::scheduler::Publication;

pub struct StdoutSink<W: Write> {
    out: W,
}

impl StdoutSink<std::io::Stdout> {
    pub fn new() -> Self {
        StdoutSink {
            out: std::io::stdout(),
        }
    }
}

impl Default for StdoutSink<std::io::Stdout> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W: Write> StdoutSink<W> {
    pub fn with_writer(out: W) -> Self {
        StdoutSink { out }
    }
}

impl<W: Write> Sink for StdoutSink<W> {
    fn publish(&mut self, p: Publication) -> Result<(), PublishError> {
        if let Publication::Sensor(payload) = p {
            // One write per line and a flush, so a reader sees each payload as it is made.
            let mut line = payload.into_bytes();
            line.push(b'\n');
            self.out
                .write_all(&line)
                .and_then(|_| self.out.flush())
                .map_err(PublishError::Stdout)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensor_payloads_become_lines_and_state_is_left_out() {
        let mut sink = StdoutSink::with_writer(Vec::new());
        sink.publish(Publication::Sensor(r#"{"Time":"x","A":{"b":1}}"#.into()))
            .unwrap();
        sink.publish(Publication::State(r#"{"Time":"x","UptimeSec":1}"#.into()))
            .unwrap();
        assert_eq!(
            String::from_utf8(sink.out).unwrap(),
            "{\"Time\":\"x\",\"A\":{\"b\":1}}\n"
        );
    }
}
