//! Fuzz the M-Bus long-frame check, the record walker and `--explain`: arbitrary bytes, with a
//! correct length and checksum forced onto them half the time so the walker sees deep input.
//! Invariants: no panic; a frame that passes is exactly L + 6 bytes; every record the walker
//! returns lies inside the frame's user data, in order.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sml::decode::mbus::{check_long_frame, explain, long_frame, records};

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let bytes = if control & 1 == 1 && data.len() >= 3 && data.len() <= 255 {
        long_frame(data[0], data[1], data[2], &data[3..])
    } else {
        data.to_vec()
    };
    let _ = explain(&bytes);
    if let Ok(frame) = check_long_frame(&bytes) {
        assert_eq!(frame.len(), usize::from(frame[1]) + 6);
        let walked = records(frame);
        let mut last_end = 7;
        for r in &walked.records {
            assert!(r.offset >= last_end, "records overlap at {}", r.offset);
            assert!(r.data_offset + r.data_len <= frame.len() - 2, "record past the data");
            last_end = r.data_offset + r.data_len;
        }
    }
});
