//! MNIST (or any data set in the same four IDX files) in memory.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ndarray::Array2;

use super::folder::FolderOptions;
use super::idx::{check_labels, read_images, read_labels};
use crate::Float;
use crate::error::{Error, Result};
use crate::kernels::pixels::{extend_entries, prefetch, scale_into};
use crate::kernels::sparse::SparseRows;
use crate::layers::Input;

/// The four files, by their standard names; each may also be present without `.gz`.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Below this share of zeros a batch goes to the first layer dense: where the two paths cost
/// the same on W1 (Fashion-MNIST with its zeros partly filled; docs/benchmarks.md).
pub const DENSE_BATCH_ZERO_FRACTION: f64 = 0.5;

/// Images and their labels, as bytes, with an index of each image's inked (non-zero) pixels.
#[derive(Clone, Debug)]
pub struct Dataset {
    images: Vec<u8>, // (len, channels·rows·cols), each image's channels one after another
    labels: Vec<u8>, // (len)
    channels: usize,
    rows: usize,
    cols: usize,
    ink: Option<InkIndex>, // None for images of more than 65536 pixels
}

/// The non-zero pixels of every image, in pixel order: a fifth of MNIST's bytes, so that a
/// random mini-batch reads 7 cache lines an image instead of 13, mostly from the L3 cache.
#[derive(Clone, Debug)]
struct InkIndex {
    start: Vec<usize>, // (len + 1): image i is entries start[i]..start[i + 1]
    pixel: Vec<u16>,   // (nnz) position of the pixel in its image
    value: Vec<u8>,    // (nnz) its grey level, 1..=255
}

/// The training and test sets.
#[derive(Clone, Debug)]
pub struct Mnist {
    pub train: Dataset,
    pub test: Dataset,
    /// Number of classes: one more than the largest training label.
    pub classes: usize,
    /// What the classes are called, `classes` of them ([`super::classes::class_names`]).
    pub class_names: Vec<String>,
    /// The files of an image folder that were left out, and why (empty for IDX files).
    pub skipped: Vec<super::folder::Skipped>,
}

impl Dataset {
    /// A data set of `labels.len()` grey images of `rows x cols` bytes, row-major in
    /// `images`.
    pub fn new(images: Vec<u8>, labels: Vec<u8>, rows: usize, cols: usize) -> Result<Dataset> {
        Self::with_channels(images, labels, 1, rows, cols)
    }

    /// A data set of `labels.len()` images of `channels x rows x cols` bytes (each channel
    /// a row-major plane, as a convolution takes them).
    pub fn with_channels(
        images: Vec<u8>,
        labels: Vec<u8>,
        channels: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Dataset> {
        let d = channels.checked_mul(rows).and_then(|n| n.checked_mul(cols));
        if d.is_none_or(|d| d == 0 || labels.len().checked_mul(d) != Some(images.len())) {
            return Err(Error::Data(format!(
                "{} image bytes do not make {} images of {channels}x{rows}x{cols}",
                images.len(),
                labels.len()
            )));
        }
        let d = channels * rows * cols;
        let ink = (d <= 1 << 16).then(|| InkIndex::new(&images, d));
        Ok(Dataset {
            images,
            labels,
            channels,
            rows,
            cols,
            ink,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Channels per image: 1 grey, 3 RGB.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// One image's shape, (C, H, W).
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.channels, self.rows, self.cols)
    }

    /// Image height.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Image width.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Values per image (the network's input size): channels · rows · cols.
    pub fn input_size(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// All images, (len, channels·rows·cols) bytes, 0 = background.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// All labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The samples in `range`, copied.
    #[track_caller]
    pub fn slice(&self, range: Range<usize>) -> Dataset {
        let d = self.input_size();
        let images = self.images[range.start * d..range.end * d].to_vec();
        let (c, h, w) = self.shape();
        Dataset::with_channels(images, self.labels[range].to_vec(), c, h, w)
            .expect("a slice of a valid data set")
    }

    /// The samples at `indices`, copied, in that order.
    #[track_caller]
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let d = self.input_size();
        let images = indices
            .iter()
            .flat_map(|&i| &self.images[i * d..(i + 1) * d])
            .copied()
            .collect();
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        let (c, h, w) = self.shape();
        Dataset::with_channels(images, labels, c, h, w).expect("a subset of a valid data set")
    }

    /// The samples at `indices` as a (batch, rows·cols) matrix of pixels scaled to [0, 1]
    /// (`x / 255`, as the book's `normalize=True`), and their labels.
    pub fn batch<T: Float>(&self, indices: &[usize]) -> (Array2<T>, Vec<usize>) {
        let d = self.input_size();
        let scale = pixel_table::<T>();
        let mut x = Array2::zeros((indices.len(), d));
        let out = x.as_slice_mut().expect("new arrays are contiguous");
        for (row, &i) in out.chunks_exact_mut(d).zip(indices) {
            scale_into(row, &self.images[i * d..(i + 1) * d], &scale);
        }
        (x, self.labels_at(indices))
    }

    /// The samples at `indices` as [`Dataset::batch`] gives them, but by their non-zero pixels
    /// only (a fifth of MNIST's): what the first layer's product reads, without a dense
    /// (batch, rows·cols) matrix being written and scanned. Dense for images of more than
    /// 65536 pixels, and for a batch of fewer than [`DENSE_BATCH_ZERO_FRACTION`] zeros.
    pub fn input_batch<T: Float>(&self, indices: &[usize]) -> (Input<T>, Vec<usize>) {
        let Some(ink) = &self.ink else {
            let (x, labels) = self.batch(indices);
            return (x.into(), labels);
        };
        let scale = pixel_table::<T>();
        let nnz: usize = indices
            .iter()
            .map(|&i| ink.start[i + 1] - ink.start[i])
            .sum();
        let entries = indices.len() * self.input_size();
        if (nnz as f64) > (1.0 - DENSE_BATCH_ZERO_FRACTION) * entries as f64 {
            let (x, labels) = self.batch(indices);
            return (x.into(), labels);
        }
        let mut col = Vec::with_capacity(nnz);
        let mut val = Vec::with_capacity(nnz);
        let mut row_start = Vec::with_capacity(indices.len() + 1);
        row_start.push(0);
        for (r, &i) in indices.iter().enumerate() {
            match indices.get(r + 4) {
                Some(&ahead) if ahead != i + 4 => ink.prefetch(ahead), // random images: start
                _ => {} // reading a later one now; in order, the processor sees it coming
            }
            let (s, e) = (ink.start[i], ink.start[i + 1]);
            extend_entries(
                &mut col,
                &mut val,
                &ink.pixel[s..e],
                &ink.value[s..e],
                &scale,
            );
            row_start.push(col.len());
        }
        // NOTE: the ink index was checked when the data set was made: no second pass here
        let x = SparseRows::from_parts_trusted(self.input_size(), row_start, col, val);
        (Input::Sparse(x), self.labels_at(indices))
    }

    /// The samples in `range`, as [`Dataset::batch`] does.
    pub fn batch_range<T: Float>(&self, range: Range<usize>) -> (Array2<T>, Vec<usize>) {
        self.batch(&range.collect::<Vec<_>>())
    }

    fn labels_at(&self, indices: &[usize]) -> Vec<usize> {
        indices.iter().map(|&i| self.labels[i] as usize).collect()
    }
}

impl InkIndex {
    /// Lists the non-zero bytes of each image of `d` pixels (d ≤ 65536).
    fn new(images: &[u8], d: usize) -> InkIndex {
        let nnz = count_nonzero_bytes(images);
        let mut ink = InkIndex {
            start: Vec::with_capacity(images.len() / d + 1),
            pixel: Vec::with_capacity(nnz),
            value: Vec::with_capacity(nnz),
        };
        ink.start.push(0);
        for image in images.chunks_exact(d) {
            // A word of 8 background bytes is skipped with one comparison.
            for (w, bytes) in image.chunks(8).enumerate() {
                if bytes.iter().any(|&b| b != 0) {
                    for (j, &b) in bytes.iter().enumerate().filter(|&(_, &b)| b != 0) {
                        ink.pixel.push((w * 8 + j) as u16);
                        ink.value.push(b);
                    }
                }
            }
            ink.start.push(ink.pixel.len());
        }
        ink
    }

    /// Asks the processor to start loading image `i`'s entries into the cache.
    fn prefetch(&self, i: usize) {
        let (s, e) = (self.start[i], self.start[i + 1]);
        prefetch(&self.pixel[s..e]);
        prefetch(&self.value[s..e]);
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

/// `p / 255` for every byte value, rounded once from the exact quotient (as NumPy's
/// `x.astype(float32) / 255.0` does).
pub(crate) fn pixel_table<T: Float>() -> [T; 256] {
    std::array::from_fn(|p| T::of(p as f64) / T::of(255.0))
}

impl Mnist {
    /// Loads the four IDX files from `dir` (or, for `fashion`, from Fashion-MNIST's
    /// installed folder: [`super::classes::resolve`]) and checks that they agree; or, for a
    /// folder of class subfolders, its images as they are ([`super::folder`]).
    pub fn load(dir: &Path) -> Result<Mnist> {
        Self::load_with(dir, &FolderOptions::default())
    }

    /// [`Mnist::load`], an image folder's images prepared for a model that takes
    /// `input = [C, H, W]`.
    pub fn load_for_input(dir: &Path, input: [usize; 3]) -> Result<Mnist> {
        if holds_image_folder(&super::classes::resolve(dir)?) {
            let [c, h, w] = input;
            let options = FolderOptions {
                size: Some((h, w)),
                channels: Some(c),
            };
            return Self::load_with(dir, &options);
        }
        Self::load(dir)
    }

    /// [`Mnist::load`], an image folder's images prepared as `options` say.
    pub fn load_with(dir: &Path, options: &FolderOptions) -> Result<Mnist> {
        let dir = &super::classes::resolve(dir)?;
        if !dir.is_dir() {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotFound, "data directory not found"),
            });
        }
        if holds_image_folder(dir) {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let f = super::folder::load_folder(dir, options, threads)?;
            return Ok(Mnist {
                classes: f.class_names.len(),
                train: f.train,
                test: f.test,
                class_names: f.class_names,
                skipped: f.skipped,
            });
        }
        if *options != FolderOptions::default() {
            return Err(Error::Config(format!(
                "{}: --image-size and --channels apply to folders of images, not IDX files",
                dir.display()
            )));
        }
        let train = load_pair(dir, TRAIN_IMAGES, TRAIN_LABELS, None)?;
        let classes = train
            .labels
            .iter()
            .map(|&l| l as usize + 1)
            .max()
            .unwrap_or(0);
        let test = load_pair(dir, TEST_IMAGES, TEST_LABELS, Some(classes))?;
        if test.shape() != train.shape() {
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
            class_names: super::classes::class_names(dir, classes)?,
            skipped: Vec::new(),
        })
    }
}

/// True when `dir` is a folder of class subfolders of images rather than of IDX files.
fn holds_image_folder(dir: &Path) -> bool {
    find(dir, TRAIN_IMAGES).is_err() && super::folder::is_image_folder(dir)
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
    Dataset::new(imgs.pixels, labels, imgs.rows, imgs.cols)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_f32_batch_holds_the_dense_batchs_bits() {
        // every byte value, and runs of ink and background of odd lengths (the vector path's
        // blocks of 8 and their remainders)
        let mut images: Vec<u8> = (0..=255).collect();
        images.extend((0..256).map(|j| if (j / 3) % 2 == 0 { 255 - j as u8 } else { 0 }));
        images.extend((0..256).map(|j| {
            if (j / 5) % 3 == 0 {
                (j * 7 % 256) as u8
            } else {
                0
            }
        }));
        images.extend([0u8; 256]); // a blank image: batches with it are mostly zeros
        let data = Dataset::new(images, vec![0, 1, 2, 3], 16, 16).unwrap();
        let seen: std::collections::BTreeSet<u8> = data.images().iter().copied().collect();
        assert_eq!(seen.len(), 256, "the images hold every byte value");
        let indices = [2, 0, 3, 1, 3, 2, 3];
        let (dense, _) = data.batch::<f32>(&indices);
        let Input::Sparse(sparse) = data.input_batch::<f32>(&indices).0 else {
            panic!("a batch of mostly zeros comes as sparse rows");
        };
        let same = dense
            .iter()
            .zip(sparse.to_dense())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "the sparse batch's values differ from the dense batch's"
        );
        // a batch of mostly ink comes dense, with the same values
        let inked = [0, 2, 0];
        let Input::Dense(x) = data.input_batch::<f32>(&inked).0 else {
            panic!("a batch of fewer than half zeros comes dense");
        };
        assert_eq!(x, data.batch::<f32>(&inked).0.into_dyn());
    }
}
