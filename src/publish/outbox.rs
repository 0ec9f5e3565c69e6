/*!
The outbox: payloads waiting for the broker's acknowledgement, in order, bounded. A payload leaves
only when the broker has acknowledged it (QoS 1) or it was written to the socket (QoS 0); when the
outbox is full the oldest is dropped and counted. Each payload keeps the `Time` it was made with.

With a spool directory the outbox is also a journal file (`outbox.jsonl`): one line per payload
queued, one per payload done (acknowledged or dropped). On start the journal is read back and the
payloads not done are queued first, so a restart loses nothing; the file is truncated whenever the
outbox empties and rewritten when it grows long. Lines are written (not fsynced) at once: a crash
of sml loses nothing, a power cut may lose the last few.
*/

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

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

pub struct Outbox {
    entries: VecDeque<Entry>,
    capacity: usize,
    next_seq: u64,
    dropped: u64,
    spool: Option<Spool>,
}

struct Spool {
    path: PathBuf,
    file: File,
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

    /// An outbox journaled in `dir/outbox.jsonl`, with what a previous run left in it.
    pub fn with_spool(capacity: usize, dir: &Path) -> Result<Outbox, PublishError> {
        let path = dir.join("outbox.jsonl");
        let err = |source| PublishError::Spool {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut outbox = Outbox::new(capacity);
        if let Ok(f) = File::open(&path) {
            let mut done = std::collections::HashSet::new();
            let mut queued = Vec::new();
            for (i, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(err)?;
                match serde_json::from_str::<JournalLine>(&line) {
                    Ok(JournalLine::Queued(e)) => queued.push(e),
                    Ok(JournalLine::Done { done: seq }) => {
                        done.insert(seq);
                    }
                    // A line cut by a crash mid-write: the rest is still good.
                    Err(e) => warn!(
                        "spool {}: line {} unreadable ({e}); skipped",
                        path.display(),
                        i + 1
                    ),
                }
            }
            queued.retain(|e| !done.contains(&e.seq));
            queued.sort_by_key(|e| e.seq);
            for e in queued {
                outbox.next_seq = outbox.next_seq.max(e.seq + 1);
                outbox.entries.push_back(e);
            }
            while outbox.entries.len() > outbox.capacity {
                outbox.entries.pop_front();
                outbox.dropped += 1;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        outbox.spool = Some(Spool {
            path,
            file,
            lines: 0,
        });
        outbox.rewrite_spool();
        Ok(outbox)
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
            return Some(old);
        }
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
        self.journal(&JournalLine::Done { done: seq });
        if self.entries.is_empty() {
            self.rewrite_spool();
        }
        Some(e)
    }

    fn journal(&mut self, line: &JournalLine) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        let mut text = serde_json::to_string(line).unwrap_or_default();
        text.push('\n');
        if let Err(e) = spool.file.write_all(text.as_bytes()) {
            warn!(
                "spool {}: {e}; payloads are kept in memory only",
                spool.path.display()
            );
        }
        spool.lines += 1;
        let too_long = spool.lines > 2 * self.capacity + 1000;
        if too_long {
            self.rewrite_spool();
        }
    }

    /// Replace the journal with just the entries queued now.
    fn rewrite_spool(&mut self) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        let result = (|| -> std::io::Result<()> {
            if self.entries.is_empty() {
                spool.file.set_len(0)?;
            } else {
                let tmp = spool.path.with_extension("jsonl.tmp");
                let mut f = File::create(&tmp)?;
                for e in &self.entries {
                    let mut text = serde_json::to_string(e)?;
                    text.push('\n');
                    f.write_all(text.as_bytes())?;
                }
                f.sync_all()?;
                std::fs::rename(&tmp, &spool.path)?;
                spool.file = OpenOptions::new().append(true).open(&spool.path)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => spool.lines = self.entries.len(),
            Err(e) => warn!("spool {}: rewriting failed: {e}", spool.path.display()),
        }
    }
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
            let mut o = Outbox::with_spool(10, dir.path()).unwrap();
            for p in ["a", "b", "c", "d"] {
                o.push("tele/x/SENSOR".into(), p.into());
            }
            let first = o.get(0).unwrap().seq;
            o.complete(first);
        }
        let mut o = Outbox::with_spool(10, dir.path()).unwrap();
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
        assert_eq!(
            std::fs::metadata(dir.path().join("outbox.jsonl"))
                .unwrap()
                .len(),
            0
        );
        assert_eq!(Outbox::with_spool(10, dir.path()).unwrap().len(), 0);
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("outbox.jsonl"),
            "{\"seq\":1,\"topic\":\"t\",\"payload\":\"a\"}\n{\"seq\":2,\"to",
        )
        .unwrap();
        let o = Outbox::with_spool(10, dir.path()).unwrap();
        assert_eq!(o.len(), 1);
        assert_eq!(o.get(0).unwrap().payload, "a");
    }
}
