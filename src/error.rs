//! Errors the outside world can cause: files, data, flags, a diverging run. Each message names
//! the file or flag and what is wrong, on one line. (Shape mismatches between layers are bugs in
//! the calling code and panic with the shapes instead.)

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What is wrong inside an IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdxProblem {
    /// The file ends before the 8- or 16-byte header does.
    TruncatedHeader { found: usize, needed: usize },
    /// The magic number is not the one for this kind of file (2051 images, 2049 labels).
    BadMagic { found: u32, expected: u32 },
    /// A dimension in the header is zero, or their product overflows.
    BadDimensions { dims: Vec<u32> },
    /// Fewer data bytes than the header announces.
    Truncated { expected: u64, found: u64 },
    /// More data bytes than the header announces.
    Overlong { expected: u64 },
    /// The header announces more data than [`crate::limits::max_data_bytes`].
    TooLarge { expected: u64, limit: u64 },
    /// A label is not below the number of classes.
    LabelOutOfRange {
        index: usize,
        label: u8,
        classes: usize,
    },
}

impl fmt::Display for IdxProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdxProblem::TruncatedHeader { found, needed } => {
                write!(f, "header truncated: {found} bytes, need {needed}")
            }
            IdxProblem::BadMagic { found, expected } => write!(
                f,
                "bad magic number {found} (expected {expected}: is this the right kind of IDX file?)"
            ),
            IdxProblem::BadDimensions { dims } => {
                write!(f, "invalid dimensions {dims:?} in header")
            }
            IdxProblem::Truncated { expected, found } => write!(
                f,
                "truncated: header announces {expected} data bytes, file has {found}"
            ),
            IdxProblem::Overlong { expected } => write!(
                f,
                "overlong: data continues past the {expected} bytes the header announces"
            ),
            IdxProblem::TooLarge { expected, limit } => write!(
                f,
                "the header announces {expected} data bytes, over the limit of {limit} (BACKPROP_MAX_DATA_BYTES)"
            ),
            IdxProblem::LabelOutOfRange {
                index,
                label,
                classes,
            } => write!(
                f,
                "label {label} at index {index} is not below the class count {classes}"
            ),
        }
    }
}

/// The library's error type.
#[derive(Debug)]
pub enum Error {
    /// Reading a file failed (missing, unreadable, corrupt gzip stream).
    Io { path: PathBuf, source: io::Error },
    /// An IDX file is malformed.
    Idx { path: PathBuf, problem: IdxProblem },
    /// A data set's parts do not agree (image and label counts, image sizes of train and test).
    Data(String),
    /// A setting is invalid; the message names the flag or field.
    Config(String),
    /// The training loss became NaN or infinite.
    Diverged { iteration: usize, loss: f64 },
    /// A model, checkpoint, image or run file is unusable: corrupt, truncated, of another
    /// model, or missing what is needed.
    File { path: PathBuf, problem: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Idx { path, problem } => write!(f, "{}: {problem}", path.display()),
            Error::File { path, problem } => write!(f, "{}: {problem}", path.display()),
            Error::Data(msg) | Error::Config(msg) => f.write_str(msg),
            Error::Diverged { iteration, loss } => write!(
                f,
                "training diverged: loss is {loss} at iteration {iteration} (try a smaller --lr)"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `Result` with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::File`] for `path`.
    pub fn file(path: &std::path::Path, problem: impl Into<String>) -> Error {
        Error::File {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: &std::path::Path, source: io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
