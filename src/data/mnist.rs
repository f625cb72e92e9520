//! MNIST (or any data set in the same four IDX files) in memory.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ndarray::Array2;

use super::idx::{check_labels, read_images, read_labels};
use crate::Float;
use crate::error::{Error, Result};
use crate::linalg::sparse::SparseRows;

/// The four files, by their standard names; each may also be present without `.gz`.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Images and their labels, as bytes.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub images: Vec<u8>, // (len, rows·cols)
    pub labels: Vec<u8>, // (len)
    pub rows: usize,
    pub cols: usize,
}

/// The training and test sets.
#[derive(Clone, Debug)]
pub struct Mnist {
    pub train: Dataset,
    pub test: Dataset,
    /// Number of classes: one more than the largest training label.
    pub classes: usize,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image (the network's input size): rows · cols.
    pub fn input_size(&self) -> usize {
        self.rows * self.cols
    }

    /// The samples in `range`, copied.
    #[track_caller]
    pub fn slice(&self, range: Range<usize>) -> Dataset {
        let d = self.input_size();
        Dataset {
            images: self.images[range.start * d..range.end * d].to_vec(),
            labels: self.labels[range].to_vec(),
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// The samples at `indices` as a (batch, rows·cols) matrix of pixels scaled to [0, 1]
    /// (`x / 255`, as the book's `normalize=True`), and their labels.
    pub fn batch<T: Float>(&self, indices: &[usize]) -> (Array2<T>, Vec<usize>) {
        let d = self.input_size();
        let scale = pixel_table::<T>();
        let mut x = Array2::zeros((indices.len(), d));
        let out = x.as_slice_mut().expect("new arrays are contiguous");
        for (row, &i) in out.chunks_exact_mut(d).zip(indices) {
            let pixels = &self.images[i * d..(i + 1) * d];
            // Background is 0 and the output starts at 0: skip 8 zero bytes at a time.
            let mut words = pixels.chunks_exact(8);
            for (o, p) in row.chunks_exact_mut(8).zip(&mut words) {
                if u64::from_ne_bytes(p.try_into().unwrap()) != 0 {
                    o.iter_mut()
                        .zip(p)
                        .for_each(|(o, &p)| *o = scale[p as usize]);
                }
            }
            let rest = words.remainder();
            let tail = &mut row[d - rest.len()..];
            tail.iter_mut()
                .zip(rest)
                .for_each(|(o, &p)| *o = scale[p as usize]);
        }
        let labels = indices.iter().map(|&i| self.labels[i] as usize).collect();
        (x, labels)
    }

    /// The samples at `indices` as [`Dataset::batch`] gives them, but by their non-zero pixels
    /// only (a fifth of MNIST's): what the first layer's product reads, without the dense
    /// (batch, rows·cols) matrix being written and scanned.
    pub fn sparse_batch<T: Float>(&self, indices: &[usize]) -> (SparseRows<T>, Vec<usize>) {
        let d = self.input_size();
        let image = |i: usize| &self.images[i * d..(i + 1) * d];
        // Random images: ask for the memory of the ones two ahead while counting this one.
        let mut nnz = 0;
        for (r, &i) in indices.iter().enumerate() {
            if let Some(&ahead) = indices.get(r + 2) {
                prefetch(image(ahead));
            }
            nnz += count_nonzero_bytes(image(i));
        }
        let scale = pixel_table::<T>();
        // 8 slots of slack: the compaction below writes 8 entries for every inked word.
        let mut col = vec![0u32; nnz + 8];
        let mut val = vec![T::zero(); nnz + 8];
        let mut row_start = Vec::with_capacity(indices.len() + 1);
        let mut n = 0;
        for &i in indices {
            row_start.push(n);
            // A word of 8 background bytes is skipped with one comparison; in an inked word
            // every pixel is written and the cursor advances past the non-zero ones only (an
            // `if` per pixel would mispredict at every edge of a pen stroke).
            for (w, p) in image(i).chunks(8).enumerate() {
                if p.iter().fold(0u8, |any, &b| any | b) != 0 {
                    for (j, &p) in p.iter().enumerate() {
                        col[n] = (w * 8 + j) as u32;
                        val[n] = scale[p as usize];
                        n += (p != 0) as usize;
                    }
                }
            }
        }
        row_start.push(n);
        col.truncate(n);
        val.truncate(n);
        let labels = indices.iter().map(|&i| self.labels[i] as usize).collect();
        (SparseRows::from_parts(d, row_start, col, val), labels)
    }

    /// The samples in `range`, as [`Dataset::batch`] does.
    pub fn batch_range<T: Float>(&self, range: Range<usize>) -> (Array2<T>, Vec<usize>) {
        self.batch(&range.collect::<Vec<_>>())
    }
}

/// Number of non-zero bytes, 8 at a time.
fn count_nonzero_bytes(bytes: &[u8]) -> usize {
    let mut words = bytes.chunks_exact(8);
    let mut count = 0;
    for w in &mut words {
        let w = u64::from_ne_bytes(w.try_into().unwrap());
        // High bit of each byte set iff the byte is non-zero.
        let low7 = (w & 0x7f7f_7f7f_7f7f_7f7f) + 0x7f7f_7f7f_7f7f_7f7f;
        count += ((low7 | w) & 0x8080_8080_8080_8080).count_ones() as usize;
    }
    count + words.remainder().iter().filter(|&&b| b != 0).count()
}

/// Asks the processor to start loading `bytes` into the cache (a hint; no effect elsewhere
/// than on x86-64).
#[inline(always)]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for offset in (0..bytes.len()).step_by(64) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch only hints; the address lies inside `bytes`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().add(offset) as *const i8) };
    }
}

/// `p / 255` for every byte value, rounded once from the exact quotient (as NumPy's
/// `x.astype(float32) / 255.0` does).
fn pixel_table<T: Float>() -> [T; 256] {
    std::array::from_fn(|p| T::of(p as f64) / T::of(255.0))
}

impl Mnist {
    /// Loads the four IDX files from `dir` and checks that they agree with each other.
    pub fn load(dir: &Path) -> Result<Mnist> {
        if !dir.is_dir() {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotFound, "data directory not found"),
            });
        }
        let train = load_pair(dir, TRAIN_IMAGES, TRAIN_LABELS, None)?;
        let classes = train
            .labels
            .iter()
            .map(|&l| l as usize + 1)
            .max()
            .unwrap_or(0);
        let test = load_pair(dir, TEST_IMAGES, TEST_LABELS, Some(classes))?;
        if (test.rows, test.cols) != (train.rows, train.cols) {
            return Err(Error::Data(format!(
                "{}: test images are {}x{}, training images {}x{}",
                dir.display(),
                test.rows,
                test.cols,
                train.rows,
                train.cols
            )));
        }
        Ok(Mnist {
            train,
            test,
            classes,
        })
    }
}

/// One images file and its labels file; their counts must agree.
fn load_pair(dir: &Path, images: &str, labels: &str, classes: Option<usize>) -> Result<Dataset> {
    let images_path = find(dir, images)?;
    let labels_path = find(dir, labels)?;
    let imgs = read_images(&images_path)?;
    let labels = read_labels(&labels_path, None)?;
    if let Some(classes) = classes {
        check_labels(&labels_path, &labels, classes)?;
    }
    if labels.len() != imgs.count {
        return Err(Error::Data(format!(
            "{} has {} images but {} has {} labels",
            images_path.display(),
            imgs.count,
            labels_path.display(),
            labels.len()
        )));
    }
    Ok(Dataset {
        images: imgs.pixels,
        labels,
        rows: imgs.rows,
        cols: imgs.cols,
    })
}

/// `dir/name.gz`, else `dir/name`.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    let raw = dir.join(name);
    if gz.is_file() {
        Ok(gz)
    } else if raw.is_file() {
        Ok(raw)
    } else {
        Err(Error::Io {
            path: gz,
            source: io::Error::new(
                io::ErrorKind::NotFound,
                format!("file not found (nor {name} uncompressed)"),
            ),
        })
    }
}
