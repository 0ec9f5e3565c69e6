/*!
The outbox: payloads waiting for the broker's acknowledgement, in order, bounded. A payload leaves
only when the broker has acknowledged it (QoS 1) or it was written to the socket (QoS 0); when the
outbox is full the oldest is dropped and counted. Each payload keeps the `Time` it was made with.

With a spool directory the outbox is also a journal (`outbox.jsonl`, see [`super::spool`] for the
file's safety and durability): one line per payload queued, one per payload done (acknowledged or
dropped). On start the journal is read back and the payloads not done are queued first, so a
restart loses nothing; the journal is emptied whenever the outbox empties and rewritten whole when
it grows long. Journal lines go to a writer thread: no call here waits for a disk.
*/

use std::collections::{HashSet, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::spool::{self, SpoolWriter};
use super::PublishError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub topic: String,
    pub payload: String,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum JournalLine {
    Queued(Entry),
    Done { done: u64 },
}

/// Unreadable or refused journal lines logged one by one; the rest are only counted.
const LINES_LOGGED: usize = 5;

pub struct Outbox {
    entries: VecDeque<Entry>,
    capacity: usize,
    next_seq: u64,
    dropped: u64,
    spool: Option<Spool>,
}

struct Spool {
    writer: SpoolWriter,
    /// Lines in the journal now; past a bound it is rewritten with just the queue.
    lines: usize,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 1,
            dropped: 0,
            spool: None,
        }
    }

    /// An outbox journaled in `dir/outbox.jsonl`, with what a previous run left in it. Only
    /// lines for `topic` are taken back: sml publishes nowhere else, whatever the file says.
    pub fn with_spool(capacity: usize, dir: &Path, topic: &str) -> Result<Outbox, PublishError> {
        let (bytes, file) = spool::open_dir(dir)?;
        let path = dir.join(spool::JOURNAL);
        let mut outbox = Outbox::new(capacity);
        outbox.recover(&bytes, &path, topic);
        let writer = SpoolWriter::start(dir, file).map_err(|source| PublishError::Spool {
            path: path.display().to_string(),
            source,
        })?;
        outbox.spool = Some(Spool { writer, lines: 0 });
        // Start from a journal of just what is queued.
        outbox.rewrite_spool();
        Ok(outbox)
    }

    /// An outbox journaled through `writer` (tests give one whose disk blocks).
    #[cfg(test)]
    pub(crate) fn with_writer(capacity: usize, writer: SpoolWriter) -> Outbox {
        let mut outbox = Outbox::new(capacity);
        outbox.spool = Some(Spool { writer, lines: 0 });
        outbox
    }

    /// Queue what a journal's bytes say is not done yet.
    fn recover(&mut self, bytes: &[u8], path: &Path, topic: &str) {
        let mut done = HashSet::new();
        let mut queued = Vec::new();
        let mut refused = 0;
        let mut refuse = |line_no: usize, why: String| {
            refused += 1;
            if refused <= LINES_LOGGED {
                warn!("spool {}: line {line_no} {why}; skipped", path.display());
            }
        };
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<JournalLine>(line) {
                Ok(JournalLine::Queued(e)) if e.topic != topic => refuse(
                    i + 1,
                    format!(
                        "is for topic {:?}, not sml's {topic:?} (a line sml did not write, or \
                         from a run with another --topic)",
                        e.topic
                    ),
                ),
                Ok(JournalLine::Queued(e)) => queued.push(e),
                Ok(JournalLine::Done { done: seq }) => {
                    done.insert(seq);
                }
                // A line cut by a crash mid-write: the rest is still good.
                Err(e) => refuse(i + 1, format!("is unreadable ({e})")),
            }
        }
        if refused > LINES_LOGGED {
            warn!("spool {}: {refused} lines skipped in all", path.display());
        }
        queued.retain(|e| !done.contains(&e.seq));
        queued.sort_by_key(|e| e.seq);
        queued.dedup_by_key(|e| e.seq);
        for e in queued {
            self.next_seq = self.next_seq.max(e.seq + 1);
            self.entries.push_back(e);
        }
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
            self.dropped += 1;
        }
        if !self.entries.is_empty() {
            info!(
                "spool {}: {} payloads from an earlier run wait for the broker",
                path.display(),
                self.entries.len()
            );
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Payloads dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Queue a payload; returns the entry dropped to make room, if any.
    pub fn push(&mut self, topic: String, payload: String) -> Option<Entry> {
        let entry = Entry {
            seq: self.next_seq,
            topic,
            payload,
        };
        self.next_seq += 1;
        self.journal(&JournalLine::Queued(entry.clone()));
        self.entries.push_back(entry);
        if self.entries.len() > self.capacity {
            let old = self.entries.pop_front()?;
            self.dropped += 1;
            self.journal(&JournalLine::Done { done: old.seq });
            self.maybe_rewrite_spool();
            return Some(old);
        }
        self.maybe_rewrite_spool();
        None
    }

    /// The `i`-th entry from the oldest.
    pub fn get(&self, i: usize) -> Option<&Entry> {
        self.entries.get(i)
    }

    /// The oldest entry whose sequence number is `seq` or later.
    pub fn first_from(&self, seq: u64) -> Option<&Entry> {
        self.entries
            .get(self.entries.partition_point(|e| e.seq < seq))
    }

    /// Position of the entry with this sequence number.
    pub fn position(&self, seq: u64) -> Option<usize> {
        // Sequence numbers increase along the queue.
        self.entries.binary_search_by_key(&seq, |e| e.seq).ok()
    }

    /// The broker has it: remove it.
    pub fn complete(&mut self, seq: u64) -> Option<Entry> {
        let i = self.position(seq)?;
        let e = self.entries.remove(i)?;
        if self.entries.is_empty() {
            self.rewrite_spool();
        } else {
            self.journal(&JournalLine::Done { done: seq });
            self.maybe_rewrite_spool();
        }
        Some(e)
    }

    /// Stop journaling and let the writer thread finish its lines. Blocks for at most a few
    /// seconds on a dead disk: call it off the runtime thread.
    pub fn close_spool(&mut self) {
        if let Some(spool) = self.spool.take() {
            spool.writer.finish();
        }
    }

    fn journal(&mut self, line: &JournalLine) {
        if let Some(spool) = self.spool.as_mut() {
            spool.writer.append(line_text(line));
            spool.lines += 1;
        }
    }

    /// Rewrite the journal whole when it grew long or lost lines; called once the queue is
    /// up to date, so the rewrite holds the last change.
    fn maybe_rewrite_spool(&mut self) {
        let Some(spool) = self.spool.as_ref() else {
            return;
        };
        if spool.writer.wants_resync() || spool.lines > 2 * self.capacity + 1000 {
            self.rewrite_spool();
        }
    }

    /// Replace the journal with just the entries queued now.
    fn rewrite_spool(&mut self) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        let mut content = String::new();
        for e in &self.entries {
            content.push_str(&line_text(&JournalLine::Queued(e.clone())));
        }
        spool.writer.replace(content);
        spool.lines = self.entries.len();
    }
}

fn line_text(line: &JournalLine) -> String {
    // Serializing strings and integers cannot fail.
    let mut text = serde_json::to_string(line).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_outbox_drops_the_oldest_and_counts_it() {
        let mut o = Outbox::new(2);
        assert!(o.push("t".into(), "1".into()).is_none());
        assert!(o.push("t".into(), "2".into()).is_none());
        assert_eq!(o.push("t".into(), "3".into()).unwrap().payload, "1");
        assert_eq!(o.dropped(), 1);
        assert_eq!(o.get(0).unwrap().payload, "2");
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn completed_entries_leave_in_any_order() {
        let mut o = Outbox::new(10);
        for p in ["a", "b", "c"] {
            o.push("t".into(), p.into());
        }
        let b = o.get(1).unwrap().seq;
        assert_eq!(o.complete(b).unwrap().payload, "b");
        assert!(o.complete(b).is_none());
        assert_eq!(o.get(1).unwrap().payload, "c");
    }

    #[test]
    fn the_spool_gives_back_what_was_not_done_in_order_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Outbox::with_spool(10, dir.path(), "tele/x/SENSOR").unwrap();
            for p in ["a", "b", "c", "d"] {
                o.push("tele/x/SENSOR".into(), p.into());
            }
            let first = o.get(0).unwrap().seq;
            o.complete(first);
            o.close_spool();
        }
        let mut o = Outbox::with_spool(10, dir.path(), "tele/x/SENSOR").unwrap();
        let got: Vec<_> = (0..o.len())
            .map(|i| o.get(i).unwrap().payload.clone())
            .collect();
        assert_eq!(got, ["b", "c", "d"]);
        // New entries follow the old ones.
        o.push("tele/x/SENSOR".into(), "e".into());
        assert!(o.get(3).unwrap().seq > o.get(2).unwrap().seq);
        // Emptied, the journal is empty too.
        while let Some(e) = o.get(0).cloned() {
            o.complete(e.seq);
        }
        o.close_spool();
        assert_eq!(
            std::fs::metadata(dir.path().join("outbox.jsonl"))
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            Outbox::with_spool(10, dir.path(), "tele/x/SENSOR")
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("outbox.jsonl"),
            "{\"seq\":1,\"topic\":\"t\",\"payload\":\"a\"}\n{\"seq\":2,\"to",
        )
        .unwrap();
        let o = Outbox::with_spool(10, dir.path(), "t").unwrap();
        assert_eq!(o.len(), 1);
        assert_eq!(o.get(0).unwrap().payload, "a");
    }

    #[test]
    fn a_spooled_line_for_another_topic_is_never_queued() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("outbox.jsonl"),
            concat!(
                "{\"seq\":1,\"topic\":\"tele/x/SENSOR\",\"payload\":\"a\"}\n",
                "{\"seq\":2,\"topic\":\"cmnd/victim/POWER\",\"payload\":\"ON\"}\n",
                "{\"seq\":3,\"topic\":\"tele/x/SENSOR\",\"payload\":\"b\"}\n",
            ),
        )
        .unwrap();
        let mut o = Outbox::with_spool(10, dir.path(), "tele/x/SENSOR").unwrap();
        let got: Vec<_> = (0..o.len()).map(|i| o.get(i).unwrap().clone()).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().all(|e| e.topic == "tele/x/SENSOR"), "{got:?}");
        // Nor is it kept for a later run: the journal was rewritten without it.
        o.close_spool();
        let journal = std::fs::read_to_string(dir.path().join("outbox.jsonl")).unwrap();
        assert!(!journal.contains("victim"), "{journal}");
    }

    #[test]
    fn journal_lines_reach_the_file_without_closing() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::with_spool(10, dir.path(), "t").unwrap();
        o.push("t".into(), "a".into());
        o.push("t".into(), "b".into());
        let path = dir.path().join("outbox.jsonl");
        let written = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            std::fs::read_to_string(&path).unwrap().lines().count() == 2
        });
        assert!(written, "{}", std::fs::read_to_string(&path).unwrap());
        // A crash now (no close): a new run finds both.
        let again = Outbox::with_spool(10, dir.path(), "t").unwrap();
        assert_eq!(again.len(), 2);
    }
}
