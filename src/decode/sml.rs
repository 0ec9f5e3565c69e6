/*! Placeholder: replaced by the sml decoder. */

use std::time::Instant;

use crate::decode::{DecodeEvent, DecodeStats, Decoder};
use crate::script::model::Meter;

pub struct SmlDecoder {
    stats: DecodeStats,
}

impl SmlDecoder {
    pub fn new(_meter: &Meter) -> Self {
        SmlDecoder { stats: DecodeStats::default() }
    }
}

impl Decoder for SmlDecoder {
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
