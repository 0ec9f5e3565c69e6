/*! Placeholder: replaced by the obis decoder. */

use std::time::Instant;

use crate::decode::{DecodeEvent, DecodeStats, Decoder};
use crate::script::model::Meter;

pub struct ObisDecoder {
    stats: DecodeStats,
}

impl ObisDecoder {
    pub fn new(_meter: &Meter) -> Self {
        ObisDecoder {
            stats: DecodeStats::default(),
        }
    }
}

impl Decoder for ObisDecoder {
    fn handle_bytes(&mut self, _now: Instant, bytes: &[u8]) {
        self.stats.bytes_in += bytes.len() as u64;
    }
    fn poll_event(&mut self) -> Option<DecodeEvent> {
        None
    }
    fn stats(&self) -> DecodeStats {
        self.stats
    }
}
