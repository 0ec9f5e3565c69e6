/*!
Reading a script file: the one reader `check`, `decode` and `run` use, so each refuses the same
inputs with the same words. A script is a few kilobytes of text; a size cap keeps `/dev/zero` or a
log file named by mistake from growing memory to gigabytes, and a file holding NUL or terminal
control bytes is refused once, as not text, instead of echoing raw bytes in every diagnostic.
*/

use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest script sml reads: far above any real script (the community's largest is a few
/// hundred lines), far below what would strain a Raspberry Pi.
pub const MAX_SCRIPT_BYTES: u64 = 16 << 20;

/// Why a script file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ScriptFileError {
    /// The reason is part of the message (not a `source`), so it is said once however the error
    /// is printed.
    #[error("cannot read {}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} is a directory, not a script", path.display())]
    Directory { path: PathBuf },
    #[error("{} is larger than {} MiB: a script is text of a few kilobytes; is it the right file?", path.display(), MAX_SCRIPT_BYTES >> 20)]
    TooLarge { path: PathBuf },
    #[error("{} is not a text file (byte 0x{byte:02X} at offset {offset}): a script is text; is it the right file?", path.display())]
    NotText {
        path: PathBuf,
        byte: u8,
        offset: usize,
    },
}

/// Read a script: at most [`MAX_SCRIPT_BYTES`] (never more is held in memory, even from an
/// endless device), and only text. Invalid UTF-8 in a text file is left to the compiler, which
/// names each line.
pub fn read_script(path: &Path) -> Result<Vec<u8>, ScriptFileError> {
    let io = |cause| ScriptFileError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(ScriptFileError::Directory {
            path: path.to_path_buf(),
        });
    }
    if meta.is_file() && meta.len() > MAX_SCRIPT_BYTES {
        return Err(ScriptFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    // Devices and pipes report no size: read one byte past the cap to tell "exactly at the cap"
    // from "more", into room reserved once, so the buffer never doubles past the cap (the pages
    // of untouched room cost nothing).
    let room = if meta.is_file() {
        meta.len() + 1
    } else {
        MAX_SCRIPT_BYTES + 1
    };
    let mut bytes = Vec::with_capacity(room as usize);
    file.take(MAX_SCRIPT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_SCRIPT_BYTES {
        return Err(ScriptFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    if let Some(offset) = bytes.iter().position(|&b| is_binary(b)) {
        return Err(ScriptFileError::NotText {
            path: path.to_path_buf(),
            byte: bytes[offset],
            offset,
        });
    }
    Ok(bytes)
}

/// Control bytes no script holds: all C0 controls but tab, LF, FF and CR, and DEL. Escape is one
/// of them, so a refused file never reaches the terminal.
fn is_binary(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\t' | b'\n' | 0x0C | b'\r')) || b == 0x7F
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn a_text_script_is_read_whole() {
        let f = file_with(b">D\r\n>M 1\r\n");
        assert_eq!(read_script(f.path()).unwrap(), b">D\r\n>M 1\r\n");
    }

    #[test]
    fn a_binary_file_is_refused_once_naming_the_first_control_byte() {
        let f = file_with(b">D\nabc\x00\x1b[2J");
        let e = read_script(f.path()).unwrap_err();
        assert!(
            matches!(
                e,
                ScriptFileError::NotText {
                    byte: 0,
                    offset: 6,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .contains("is not a text file (byte 0x00 at offset 6)"));
    }

    #[test]
    fn latin1_text_is_left_to_the_compiler() {
        let f = file_with(b">D\nname=\"Z\xe4hler\"\n");
        assert!(read_script(f.path()).is_ok());
    }

    #[test]
    fn an_endless_device_stops_at_the_cap() {
        let e = read_script(Path::new("/dev/zero"));
        assert!(matches!(e, Err(ScriptFileError::TooLarge { .. })), "{e:?}");
    }

    #[test]
    fn a_directory_and_a_missing_file_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_script(dir.path()).unwrap_err();
        assert!(
            e.to_string().ends_with("is a directory, not a script"),
            "{e}"
        );
        let missing = dir.path().join("x.sml");
        let e = read_script(&missing).unwrap_err();
        assert!(e.to_string().starts_with("cannot read "), "{e}");
        assert!(e.to_string().contains("x.sml"), "{e}");
    }
}
