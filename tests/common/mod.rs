//! Helpers shared by the integration tests: scratch directories and small IDX files.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use backprop::data::{Dataset, Mnist};

/// A fresh, empty directory under the system's temp dir, unique to this test and process.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("backprop-test-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The repository's MNIST copy.
pub fn mnist() -> Mnist {
    Mnist::load(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/mnist")
            .as_path(),
    )
    .expect("data/mnist loads")
}

/// An IDX image file's bytes: header then pixels.
pub fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for w in [2051u32, count, rows, cols] {
        b.extend_from_slice(&w.to_be_bytes());
    }
    b.extend_from_slice(pixels);
    b
}

/// An IDX label file's bytes: header then labels.
pub fn idx_labels(count: u32, labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for w in [2049u32, count] {
        b.extend_from_slice(&w.to_be_bytes());
    }
    b.extend_from_slice(labels);
    b
}

/// Gzip-compresses bytes.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes a data set as the four raw (uncompressed) IDX files into `dir`.
pub fn write_dataset(dir: &Path, train: &Dataset, test: &Dataset) {
    for (prefix, set) in [("train", train), ("t10k", test)] {
        let (n, r, c) = (set.len() as u32, set.rows() as u32, set.cols() as u32);
        let images = idx_images(n, r, c, set.images());
        fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        let labels = idx_labels(n, set.labels());
        fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
}

/// A small data set (2000 training, 500 test images of MNIST) as raw IDX files in a scratch
/// directory named `name`; returns the directory.
pub fn small_data(name: &str) -> String {
    let dir = scratch_dir(name);
    let data = mnist();
    write_dataset(&dir, &data.train.slice(0..2000), &data.test.slice(0..500));
    dir.to_string_lossy().into_owned()
}

/// The Python for the tests that run Python: $BACKPROP_PYTHON, else python3, if it imports
/// `modules` (`"numpy, safetensors"`). Without them the test is skipped, saying so; where
/// BACKPROP_REQUIRE_PYTHON is set (CI installs them) that is a failure instead.
pub fn python_with(modules: &str) -> Option<PathBuf> {
    python_for(modules, "BACKPROP_PYTHON", "BACKPROP_REQUIRE_PYTHON")
}

/// The Python with PyTorch: $BACKPROP_TORCH_PYTHON, else python3, if it imports `torch`
/// and `modules`; skipped without, failed where BACKPROP_REQUIRE_TORCH is set. (CI leaves
/// PyTorch out: with its CUDA libraries it is a download of gigabytes.)
pub fn torch_python(modules: &str) -> Option<PathBuf> {
    let modules = format!("torch, {modules}");
    python_for(&modules, "BACKPROP_TORCH_PYTHON", "BACKPROP_REQUIRE_TORCH")
}

fn python_for(modules: &str, python_var: &str, require_var: &str) -> Option<PathBuf> {
    let python = std::env::var_os(python_var).map_or_else(|| "python3".into(), PathBuf::from);
    let probe = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output();
    if probe.is_ok_and(|o| o.status.success()) {
        return Some(python);
    }
    assert!(
        std::env::var_os(require_var).is_none(),
        "{} cannot import {modules}",
        python.display()
    );
    eprintln!(
        "SKIPPED: {} cannot import {modules} (pip install {})",
        python.display(),
        modules.replace(',', "")
    );
    None
}

/// Runs the `backprop` binary with `args`.
pub fn backprop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backprop"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// The stdout of a run that must have succeeded (else its output, in the panic).
pub fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A path as a string argument.
pub fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A path in the repository, as a string argument.
pub fn repo(p: &str) -> String {
    path(&Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
}

/// A layer description of every layer kind and option: strides and padding, pooling windows
/// that overlap or do not divide the image (max padding over negative values, after tanh),
/// batch norm per channel and per feature, dropout, affine on images and on flat values.
pub const EVERY_LAYER: &str = "
conv 8 3 pad=1
batchnorm
relu
pool avg 3x2 stride=3
conv 12 5x3 stride=2 pad=2
tanh
pool max 3 stride=2 pad=1
pool avg 2 stride=1 pad=1
affine 40
batchnorm
sigmoid
dropout 0.3
affine classes
";

pub mod server;
