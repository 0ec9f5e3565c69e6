/*!
The `--spool DIR` journal on disk: opening it safely, and a writer thread so that the disk never
holds up the runtime that serves the meters.

**Why a thread.** A journal line is written for every payload queued and every payload done. On
the runtime thread a slow SD card, a full disk or a hung NFS mount would stop every meter with it.
So the [`Outbox`](super::outbox::Outbox) only hands lines to a bounded channel; this thread writes
them and fsyncs. When the channel is full (the disk does not keep up) lines are not waited for: the
journal is marked out of sync and rewritten whole from the in-memory queue once there is room.

**What a power cut loses.** Appended lines are fsynced in batches: a line is on disk at most
[`SYNC_EVERY`] (1 s) after the thread wrote it, and it writes each line as soon as it gets it
while the disk keeps up. So a power cut loses at most the payloads of the last second (and may
replay the last second's delivered ones once more). A crash of sml alone loses only the lines
still in the channel, normally none: what was written is in the kernel's page cache.

**When the disk fails** (full, read-only, I/O error) the thread logs one error, empties the journal
if it still can (a journal with holes would replay delivered payloads) and writes nothing more until
the outbox rewrites the journal whole, which it tries every [`RESYNC_EVERY`]. The in-memory queue
goes on meanwhile.

**The directory is an attack surface**: its lines are published with sml's credentials. It is
created `0700` and its files `0600`; a directory or journal owned by another user or writable by
group or others is refused, and so is a symbolic link at the journal (opened `O_NOFOLLOW`). The
temporary file of a rewrite is removed and created anew (`O_EXCL`), never followed. What the
journal holds is checked when it is read back: the outbox queues only lines for sml's own topic.
*/

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::PublishError;

/// The journal's file name in the spool directory.
pub const JOURNAL: &str = "outbox.jsonl";
/// The temporary file a rewrite goes to before it replaces the journal.
pub const JOURNAL_TMP: &str = "outbox.jsonl.tmp";
/// An appended line reaches the disk (fsync) at most this long after it was written.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// After the journal fell out of sync, the outbox tries a whole rewrite this often.
pub const RESYNC_EVERY: Duration = Duration::from_secs(5);
/// Journal operations waiting for the writer thread; past this the journal falls out of sync.
const QUEUE: usize = 4096;
/// How long the end of a run waits for the writer thread to finish its lines.
const FINISH_WAIT: Duration = Duration::from_secs(5);

/// What the writer thread does to the journal.
pub(crate) trait JournalFile: Send + 'static {
    /// Add a line (with its `\n`) at the end.
    fn append(&mut self, line: &[u8]) -> io::Result<()>;
    /// Make what was appended durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Replace the whole journal with `content`, durably.
    fn replace(&mut self, content: &[u8]) -> io::Result<()>;
}

/// The journal as a file in the spool directory.
struct FileJournal {
    dir: PathBuf,
    file: File,
}

impl FileJournal {
    fn path(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }
}

impl JournalFile for FileJournal {
    fn append(&mut self, line: &[u8]) -> io::Result<()> {
        self.file.write_all(line)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn replace(&mut self, content: &[u8]) -> io::Result<()> {
        if content.is_empty() {
            // Appends go to the end, which is now 0.
            self.file.set_len(0)?;
            return self.file.sync_data();
        }
        let tmp = self.dir.join(JOURNAL_TMP);
        // Whatever is there (a leftover, a planted symbolic link) goes; O_EXCL then refuses to
        // follow anything that appears in between.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.path())?;
        // The rename is durable once the directory is.
        File::open(&self.dir)?.sync_all()?;
        self.file = open_journal(&self.path())?;
        Ok(())
    }
}

/// Open the journal for reading and appending, without following a link or blocking on a FIFO.
fn open_journal(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        // O_NONBLOCK only matters if a FIFO was put there: opening it would wait for a writer.
        // Regular files ignore it.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

fn unsafe_spool(path: &Path, why: String) -> PublishError {
    PublishError::SpoolUnsafe {
        path: path.display().to_string(),
        why,
    }
}

fn spool_io(path: &Path) -> impl Fn(io::Error) -> PublishError + '_ {
    move |source| PublishError::Spool {
        path: path.display().to_string(),
        source,
    }
}

/// sml's effective user, the one that must own the spool.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Create the directory (0700) or check the one there, then open the journal in it. Returns the
/// journal's bytes (what a previous run left) and the open file.
pub(crate) fn open_dir(dir: &Path) -> Result<(Vec<u8>, File), PublishError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(spool_io(dir))?;
    let meta = std::fs::metadata(dir).map_err(spool_io(dir))?;
    if !meta.is_dir() {
        return Err(unsafe_spool(dir, "is not a directory".into()));
    }
    check_owner_and_mode(dir, &meta, "directory", "chmod 700")?;

    let path = dir.join(JOURNAL);
    let file = open_journal(&path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            unsafe_spool(
                &path,
                "is a symbolic link; sml does not follow links in its spool (it would write \
                 wherever the link points). Remove the link"
                    .into(),
            )
        } else {
            spool_io(&path)(e)
        }
    })?;
    let meta = file.metadata().map_err(spool_io(&path))?;
    if !meta.is_file() {
        return Err(unsafe_spool(&path, "is not a regular file".into()));
    }
    check_owner_and_mode(&path, &meta, "file", "chmod 600")?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut &file, &mut bytes).map_err(spool_io(&path))?;
    Ok((bytes, file))
}

/// Another user, or anyone in the group, who can write here can make sml publish what they like.
fn check_owner_and_mode(
    path: &Path,
    meta: &std::fs::Metadata,
    what: &str,
    fix: &str,
) -> Result<(), PublishError> {
    let me = euid();
    if meta.uid() != me {
        return Err(unsafe_spool(
            path,
            format!(
                "the {what} belongs to user id {}, not to sml's user id {me}; its lines would be \
                 published with sml's credentials. Give sml a spool directory of its own",
                meta.uid()
            ),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_spool(
            path,
            format!(
                "the {what} is writable by group or others (mode {mode:o}); its lines would be \
                 published with sml's credentials. Fix it with `{fix} {}`",
                path.display()
            ),
        ));
    }
    Ok(())
}

enum Op {
    Append(String),
    Replace(String),
}

/// State the writer thread shares with the outbox.
struct Shared {
    /// Lines were lost (the channel was full, or the disk failed): the journal needs a rewrite.
    out_of_sync: AtomicBool,
}

/// The outbox's handle on the journal: every call returns at once.
pub(crate) struct SpoolWriter {
    path: PathBuf,
    tx: Option<SyncSender<Op>>,
    shared: Arc<Shared>,
    finished: Receiver<()>,
    last_resync: Option<Instant>,
    /// Whether "the spool falls behind" was said for the current episode.
    said_behind: bool,
}

impl SpoolWriter {
    /// Start the writer thread on the journal of `dir`, opened by [`open_dir`].
    pub(crate) fn start(dir: &Path, file: File) -> io::Result<SpoolWriter> {
        let journal = FileJournal {
            dir: dir.to_path_buf(),
            file,
        };
        SpoolWriter::with_journal(dir.join(JOURNAL), Box::new(journal))
    }

    /// Start the writer thread on any journal (tests give one that blocks).
    pub(crate) fn with_journal(
        path: PathBuf,
        journal: Box<dyn JournalFile>,
    ) -> io::Result<SpoolWriter> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let (finished_tx, finished) = mpsc::channel();
        let shared = Arc::new(Shared {
            out_of_sync: AtomicBool::new(false),
        });
        let thread_shared = shared.clone();
        let shown = path.display().to_string();
        std::thread::Builder::new()
            .name("sml-spool".into())
            .spawn(move || {
                write_journal(journal, rx, &thread_shared, &shown);
                let _ = finished_tx.send(());
            })?;
        Ok(SpoolWriter {
            path,
            tx: Some(tx),
            shared,
            finished,
            last_resync: None,
            said_behind: false,
        })
    }

    /// Whether the journal lost lines and should be rewritten now (throttled to
    /// [`RESYNC_EVERY`]). The caller then sends [`SpoolWriter::replace`].
    pub(crate) fn wants_resync(&self) -> bool {
        self.shared.out_of_sync.load(Ordering::Relaxed)
            && self.last_resync.is_none_or(|t| t.elapsed() >= RESYNC_EVERY)
    }

    pub(crate) fn append(&mut self, line: String) {
        self.send(Op::Append(line));
    }

    pub(crate) fn replace(&mut self, content: String) {
        let resync = self.shared.out_of_sync.swap(false, Ordering::Relaxed);
        if resync {
            self.last_resync = Some(Instant::now());
        }
        if self.send(Op::Replace(content)) && resync {
            self.said_behind = false;
        }
    }

    fn send(&mut self, op: Op) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(op) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.shared.out_of_sync.store(true, Ordering::Relaxed);
                if !self.said_behind {
                    self.said_behind = true;
                    warn!(
                        "spool {}: the disk does not keep up ({QUEUE} lines waiting); payloads \
                         are kept in memory and the journal is rewritten when it catches up",
                        self.path.display()
                    );
                }
                false
            }
            // The thread is gone (it cannot panic; a failed spawn is reported at start).
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Let the writer finish its lines, waiting at most a few seconds (a dead disk must not hold
    /// up the end of a run). Blocks: call it off the runtime thread.
    pub(crate) fn finish(mut self) {
        self.tx = None;
        if self.finished.recv_timeout(FINISH_WAIT).is_err() {
            warn!(
                "spool {}: the disk did not take the last lines within {FINISH_WAIT:?}",
                self.path.display()
            );
        }
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        // Dropping the sender ends the thread once its lines are written; `finish` waits for it.
        self.tx = None;
    }
}

/// The writer thread: lines in order, fsync in batches, one error per failure.
fn write_journal(mut journal: Box<dyn JournalFile>, rx: Receiver<Op>, shared: &Shared, path: &str) {
    // The oldest line written and not yet fsynced.
    let mut unsynced_since: Option<Instant> = None;
    let mut failed = false;
    loop {
        let op = match unsynced_since {
            Some(t) => match rx.recv_timeout(SYNC_EVERY.saturating_sub(t.elapsed())) {
                Ok(op) => Some(op),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(op) => Some(op),
                Err(_) => break,
            },
        };
        let result = match op {
            // After a failure the journal has a hole: nothing is added until it is rewritten.
            Some(Op::Append(_)) if failed => Ok(()),
            Some(Op::Append(line)) => journal.append(line.as_bytes()).map(|()| {
                unsynced_since.get_or_insert_with(Instant::now);
            }),
            Some(Op::Replace(content)) => journal.replace(content.as_bytes()).map(|()| {
                unsynced_since = None;
                if failed {
                    failed = false;
                    info!("spool {path}: written again");
                }
            }),
            None => Ok(()),
        };
        let result = result.and_then(|()| match unsynced_since {
            Some(t) if t.elapsed() >= SYNC_EVERY => {
                unsynced_since = None;
                journal.sync()
            }
            _ => Ok(()),
        });
        if let Err(e) = result {
            if !failed {
                error!(
                    "spool {path}: {e}; payloads are kept in memory only until the journal can \
                     be written again"
                );
            }
            failed = true;
            unsynced_since = None;
            shared.out_of_sync.store(true, Ordering::Relaxed);
            // A journal with holes would replay payloads already delivered: empty it if we can.
            let _ = journal.replace(b"");
        }
    }
    if unsynced_since.is_some() {
        if let Err(e) = journal.sync() {
            error!("spool {path}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_directory_is_made_0700_and_the_journal_0600() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("spool");
        let (bytes, _file) = open_dir(&dir).unwrap();
        assert!(bytes.is_empty());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(JOURNAL)), 0o600);
    }

    #[test]
    fn a_rewritten_journal_is_0600_too() {
        let dir = tempfile::tempdir().unwrap();
        let (_, file) = open_dir(dir.path()).unwrap();
        let mut j = FileJournal {
            dir: dir.path().into(),
            file,
        };
        j.replace(b"{\"done\":1}\n").unwrap();
        assert_eq!(mode(&dir.path().join(JOURNAL)), 0o600);
    }

    #[test]
    fn a_directory_writable_by_group_or_others_is_refused() {
        for m in [0o770, 0o707, 0o777, 0o1777] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(m)).unwrap();
            let e = open_dir(dir.path()).unwrap_err().to_string();
            assert!(e.contains("writable by group or others"), "{m:o}: {e}");
            assert!(e.contains("chmod 700"), "{e}");
            assert!(!dir.path().join(JOURNAL).exists(), "nothing is created");
        }
    }

    #[test]
    fn a_journal_writable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL);
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = open_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    /// Only root can give a directory away; elsewhere there is nothing to check.
    #[test]
    fn a_directory_owned_by_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let nobody = 65534;
        if std::os::unix::fs::chown(dir.path(), Some(nobody), Some(nobody)).is_err() {
            eprintln!("skipped: cannot chown (not root)");
            return;
        }
        let e = open_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("belongs to user id 65534"), "{e}");
    }

    #[test]
    fn a_symlink_at_the_journal_is_refused_and_its_target_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&victim, spool.join(JOURNAL)).unwrap();
        let e = open_dir(&spool).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }

    #[test]
    fn a_fifo_at_the_journal_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::ffi::CString::new(dir.path().join(JOURNAL).to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates a node.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let e = open_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_symlink_at_the_temporary_file_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim_dir = tempfile::tempdir().unwrap();
        let victim = victim_dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let (_, file) = open_dir(dir.path()).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(JOURNAL_TMP)).unwrap();
        let mut j = FileJournal {
            dir: dir.path().into(),
            file,
        };
        j.replace(b"{\"done\":1}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap(),
            "{\"done\":1}\n"
        );
        assert!(!dir.path().join(JOURNAL_TMP).exists());
    }

    /// A journal whose disk fails on the second line.
    struct FailingJournal {
        lines: Arc<std::sync::Mutex<Vec<String>>>,
        fail_from: usize,
    }

    impl JournalFile for FailingJournal {
        fn append(&mut self, line: &[u8]) -> io::Result<()> {
            let mut lines = self.lines.lock().unwrap();
            if lines.len() >= self.fail_from {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            lines.push(String::from_utf8_lossy(line).into());
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn replace(&mut self, content: &[u8]) -> io::Result<()> {
            let mut lines = self.lines.lock().unwrap();
            lines.clear();
            lines.extend(
                String::from_utf8_lossy(content)
                    .lines()
                    .map(|l| format!("{l}\n")),
            );
            Ok(())
        }
    }

    #[test]
    fn a_failing_disk_empties_the_journal_and_asks_for_a_rewrite() {
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let journal = FailingJournal {
            lines: lines.clone(),
            fail_from: 1,
        };
        let mut w = SpoolWriter::with_journal("j".into(), Box::new(journal)).unwrap();
        w.append("a\n".into());
        w.append("b\n".into());
        let asked = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            w.wants_resync()
        });
        assert!(asked, "the failure is reported to the outbox");
        assert!(lines.lock().unwrap().is_empty(), "the journal was emptied");
        // Lines after the failure would leave a hole: none until the rewrite.
        w.append("c\n".into());
        w.replace("a\nc\n".into());
        assert!(!w.wants_resync());
        w.finish();
        assert_eq!(*lines.lock().unwrap(), ["a\n", "c\n"]);
    }
}
