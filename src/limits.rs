//! The largest inputs read, and the kinds of file read: a header that announces terabytes, a
//! PNG of 10^12 pixels or a FIFO named like an image is refused before anything is allocated
//! or waited for, with a line naming the file. Each limit has an environment variable that
//! raises (or lowers) it.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::error::{Error, Result};

/// Pixels an image may have (width times height), by default 100 megapixels:
/// `BACKPROP_MAX_PIXELS` sets another.
pub fn max_pixels() -> u64 {
    from_env("BACKPROP_MAX_PIXELS", 100_000_000)
}

/// Data bytes an IDX file may announce, by default 4 GiB (MNIST's training images are 47 MB):
/// `BACKPROP_MAX_DATA_BYTES` sets another.
pub fn max_data_bytes() -> u64 {
    from_env("BACKPROP_MAX_DATA_BYTES", 4 << 30)
}

fn from_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Refuses an image of `width` x `height` above [`max_pixels`].
pub fn check_pixels(width: u64, height: u64) -> std::result::Result<(), String> {
    let limit = max_pixels();
    match width.checked_mul(height) {
        Some(n) if n <= limit => Ok(()),
        _ => Err(format!(
            "the image is {width}x{height}, over the limit of {limit} pixels (BACKPROP_MAX_PIXELS)"
        )),
    }
}

/// Opens `path` for reading if it is a regular file (or a link to one): a directory, a FIFO
/// or a device is refused at once rather than read forever.
pub fn open_regular(path: &Path) -> io::Result<File> {
    // asked of the path, before opening: opening a FIFO waits for a writer
    let kind = std::fs::metadata(path)?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is {what}"),
        ));
    }
    File::open(path)
}

/// The whole of a regular file ([`open_regular`]).
pub fn read_regular(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut file = open_regular(path).map_err(|e| Error::io(path, e))?;
    io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// A regular file's text ([`open_regular`]), refused if it is not UTF-8.
pub fn read_text(path: &Path) -> Result<String> {
    String::from_utf8(read_regular(path)?).map_err(|_| Error::file(path, "is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read() {
        let dir = std::env::temp_dir();
        let err = read_regular(&dir).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        assert!(read_regular(Path::new("/dev/null")).is_err());
        assert!(check_pixels(10_000, 10_000).is_ok());
        let err = check_pixels(100_000, 100_000).unwrap_err();
        assert!(err.contains("100000x100000, over the limit"), "{err}");
        assert!(check_pixels(u64::MAX, 2).is_err());
    }
}
