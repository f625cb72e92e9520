//! The IDX file format of MNIST (gzip-compressed or raw), read strictly.
//!
//! ```text
//! images: magic 2051 (0x00000803), N, rows, cols (big-endian u32), then N·rows·cols bytes
//! labels: magic 2049 (0x00000801), N,                              then N bytes
//! ```
//! Every header field is checked, and the data must be exactly as long as the header says.
//! Nothing is allocated from a header's numbers: the data buffer grows only with bytes that are
//! really in the file, and reading stops one byte past the announced length.

use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::GzDecoder;

use crate::error::{Error, IdxProblem, Result};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 2051;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 2049;

/// Images as stored: `count` images of `rows x cols` bytes, row-major, 0 = background.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>, // (count, rows, cols)
}

/// Reads an IDX image file (gzip or raw, told apart by the gzip magic bytes).
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let reader = open_maybe_gzip(path).map_err(|e| Error::io(path, e))?;
    images_from(path, reader)
}

/// [`read_images`] of a file's bytes already read; `path` names them in errors.
pub fn parse_images(path: &Path, bytes: &[u8]) -> Result<IdxImages> {
    let reader = maybe_gzip(bytes).map_err(|e| Error::io(path, e))?;
    images_from(path, reader)
}

/// [`read_labels`] of a file's bytes already read; `path` names them in errors.
pub fn parse_labels(path: &Path, bytes: &[u8], classes: Option<usize>) -> Result<Vec<u8>> {
    let reader = maybe_gzip(bytes).map_err(|e| Error::io(path, e))?;
    labels_from(path, reader, classes)
}

fn images_from(path: &Path, reader: Box<dyn Read + '_>) -> Result<IdxImages> {
    let (dims, pixels) = read_idx(path, reader, IMAGES_MAGIC, 3)?;
    Ok(IdxImages {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels,
    })
}

/// Reads an IDX label file; with `classes`, every label must be below it.
pub fn read_labels(path: &Path, classes: Option<usize>) -> Result<Vec<u8>> {
    let reader = open_maybe_gzip(path).map_err(|e| Error::io(path, e))?;
    labels_from(path, reader, classes)
}

fn labels_from(path: &Path, reader: Box<dyn Read + '_>, classes: Option<usize>) -> Result<Vec<u8>> {
    let (_, labels) = read_idx(path, reader, LABELS_MAGIC, 1)?;
    if let Some(classes) = classes {
        check_labels(path, &labels, classes)?;
    }
    Ok(labels)
}

/// Fails on the first label that is not below `classes`.
pub fn check_labels(path: &Path, labels: &[u8], classes: usize) -> Result<()> {
    match labels.iter().position(|&l| l as usize >= classes) {
        Some(index) => Err(Error::Idx {
            path: path.to_path_buf(),
            problem: IdxProblem::LabelOutOfRange {
                index,
                label: labels[index],
                classes,
            },
        }),
        None => Ok(()),
    }
}

/// Checks and reads one IDX file from `reader`: returns its dimensions and its data bytes.
fn read_idx(
    path: &Path,
    mut reader: Box<dyn Read + '_>,
    magic: u32,
    ndims: usize,
) -> Result<(Vec<usize>, Vec<u8>)> {
    let io_err = |source: io::Error| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let idx_err = |problem: IdxProblem| Error::Idx {
        path: path.to_path_buf(),
        problem,
    };

    // Header: the magic number first (so a file of the other kind is named as such, however
    // short), then one big-endian u32 per dimension.
    let needed = 4 * (1 + ndims);
    let mut header = vec![0u8; needed];
    let found = read_up_to(&mut reader, &mut header[..4]).map_err(io_err)?;
    if found < 4 {
        return Err(idx_err(IdxProblem::TruncatedHeader { found, needed }));
    }
    let found_magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if found_magic != magic {
        return Err(idx_err(IdxProblem::BadMagic {
            found: found_magic,
            expected: magic,
        }));
    }
    let found = 4 + read_up_to(&mut reader, &mut header[4..]).map_err(io_err)?;
    if found < needed {
        return Err(idx_err(IdxProblem::TruncatedHeader { found, needed }));
    }
    let words: Vec<u32> = header
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let dims = &words[1..];
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| {
            if d == 0 {
                None
            } else {
                acc.checked_mul(d as u64)
            }
        })
        .ok_or_else(|| {
            idx_err(IdxProblem::BadDimensions {
                dims: dims.to_vec(),
            })
        })?;

    let limit = crate::limits::max_data_bytes();
    if expected > limit {
        return Err(idx_err(IdxProblem::TooLarge { expected, limit }));
    }

    // Data: read at most one byte more than announced, so an overlong file is caught (and a
    // gzip stream is inflated no further).
    let mut data = Vec::new();
    reader
        .take(expected.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(io_err)?;
    let found = data.len() as u64;
    if found < expected {
        return Err(idx_err(IdxProblem::Truncated { expected, found }));
    }
    if found > expected {
        return Err(idx_err(IdxProblem::Overlong { expected }));
    }
    Ok((dims.iter().map(|&d| d as usize).collect(), data))
}

/// A reader over the file's contents, gunzipped when it starts with the gzip magic 1f 8b.
fn open_maybe_gzip(path: &Path) -> io::Result<Box<dyn Read>> {
    maybe_gzip(BufReader::new(crate::limits::open_regular(path)?))
}

/// `reader`, gunzipped when it starts with the gzip magic 1f 8b.
fn maybe_gzip<'a>(mut reader: impl BufRead + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let is_gzip = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if is_gzip {
        Box::new(GzDecoder::new(reader))
    } else {
        Box::new(reader)
    })
}

/// Like `read_exact`, but returns how many bytes it got when the stream ends early.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
