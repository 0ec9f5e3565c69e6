/*!
The state file of the script's permanent `p:` variables (`--state-dir DIR`, default beside
`--spool`): saved at `>R`/shutdown and on `svars`, restored at start, so they survive a restart as
they do in Tasmota's flash.

The file is read back into the script's variables, so it is guarded as the spool is: the directory
is created `0700` and refused when another user owns it or group/others may write it; the file is
`0600`, opened without following a symbolic link (`O_NOFOLLOW`), and written atomically (a new
temporary file, synced, renamed over the old one). What it holds is only ever a value of a declared
variable of the declared type ([`super::Hooks::restore_permanent`]): never a topic or a command.
*/

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The file's name in the state directory.
pub const STATE_FILE: &str = "script-state.json";
/// A state file larger than this is not the script's variables.
const MAX_STATE_BYTES: u64 = 1 << 20;

pub type Values = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file or directory sml will not trust: someone else could choose the script's variables.
    #[error("state {path}: {why}")]
    Unsafe { path: PathBuf, why: String },
    #[error("state {path}: not the saved variables ({why}); remove it to start from the declared values")]
    Corrupt { path: PathBuf, why: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The saved variables; empty when nothing was saved yet.
pub fn load(dir: &Path) -> Result<Values, StateError> {
    load_file(dir, STATE_FILE)
}

/// [`load`] for another file of the state directory (the pulse counters' `counters.json`), guarded
/// the same way.
pub fn load_file(dir: &Path, name: &str) -> Result<Values, StateError> {
    let path = dir.join(name);
    if !dir.exists() {
        return Ok(Values::new());
    }
    check_dir(dir)?;
    let file = match open_no_follow(&path, OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Values::new()),
        Err(e) => return Err(refused_link(&path, e)),
    };
    let meta = file.metadata().map_err(io_error(&path))?;
    if !meta.is_file() {
        return Err(StateError::Unsafe {
            path,
            why: "is not a regular file".into(),
        });
    }
    check_owner_and_mode(&path, &meta, "chmod 600")?;
    let mut text = String::new();
    file.take(MAX_STATE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io_error(&path))?;
    if text.len() as u64 > MAX_STATE_BYTES {
        return Err(StateError::Corrupt {
            path,
            why: format!("larger than {MAX_STATE_BYTES} bytes"),
        });
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(StateError::Corrupt {
            path,
            why: "not a JSON object".into(),
        }),
        Err(e) => Err(StateError::Corrupt {
            path,
            why: e.to_string(),
        }),
    }
}

/// Save the variables atomically: a reader (or a crash) sees the old file or the new one.
pub fn save(dir: &Path, values: &Values) -> Result<(), StateError> {
    save_file(dir, STATE_FILE, values)
}

/// [`save`] to another file of the state directory.
pub fn save_file(dir: &Path, name: &str, values: &Values) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))?;
    check_dir(dir)?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(&tmp)(e)),
        _ => {}
    }
    let mut f = open_no_follow(
        &tmp,
        OpenOptions::new().write(true).create_new(true).mode(0o600),
    )
    .map_err(io_error(&tmp))?;
    let text = serde_json::to_string_pretty(values).expect("a JSON map serializes");
    f.write_all(text.as_bytes()).map_err(io_error(&tmp))?;
    f.sync_all().map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_error(&path))?;
    // The rename is durable once the directory is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    Ok(())
}

fn open_no_follow(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    // O_NONBLOCK: a FIFO put there must not block the start.
    options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

fn refused_link(path: &Path, e: io::Error) -> StateError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        StateError::Unsafe {
            path: path.to_path_buf(),
            why: "is a symbolic link".into(),
        }
    } else {
        io_error(path)(e)
    }
}

fn check_dir(dir: &Path) -> Result<(), StateError> {
    let meta = std::fs::symlink_metadata(dir).map_err(io_error(dir))?;
    if !meta.is_dir() {
        return Err(StateError::Unsafe {
            path: dir.to_path_buf(),
            why: "is not a directory".into(),
        });
    }
    check_owner_and_mode(dir, &meta, "chmod 700")
}

fn check_owner_and_mode(
    path: &Path,
    meta: &std::fs::Metadata,
    fix: &str,
) -> Result<(), StateError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(StateError::Unsafe {
            path: path.to_path_buf(),
            why: format!("is owned by user {}, not by sml's user {me}", meta.uid()),
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(StateError::Unsafe {
            path: path.to_path_buf(),
            why: format!(
                "is writable by group or others (mode {:o}); {fix} it",
                meta.mode() & 0o7777
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn saved_variables_come_back_and_the_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut values = Values::new();
        values.insert("total".into(), serde_json::json!(12.5));
        values.insert("name".into(), serde_json::json!("x"));
        save(&state, &values).unwrap();
        save(&state, &values).unwrap();
        assert_eq!(load(&state).unwrap(), values);
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(STATE_FILE)), 0o600);
    }

    #[test]
    fn nothing_saved_yet_is_an_empty_map() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("absent")).unwrap().is_empty());
        assert!(load(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_symbolic_link_at_the_state_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let target = dir.path().join("elsewhere.json");
        std::fs::write(&target, "{}").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(STATE_FILE)).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("chmod 700"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_a_json_object_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(&path, "[1,2]").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a JSON object"), "{e}");
    }
}
