//! The IDX reader and the MNIST loader on broken input: every failure is a typed error whose
//! message names the file and the problem.

mod common;

use std::fs;
use std::path::Path;

use backprop::Error;
use backprop::data::Mnist;
use backprop::data::idx::{read_images, read_labels};
use backprop::error::IdxProblem;
use common::{gzip, idx_images, idx_labels, scratch_dir};

fn problem(result: Result<impl std::fmt::Debug, Error>, path: &Path) -> IdxProblem {
    match result {
        Err(Error::Idx { path: p, problem }) => {
            assert_eq!(p, path);
            problem
        }
        other => panic!("expected an IDX error, got {other:?}"),
    }
}

#[test]
fn reads_raw_and_gzip_alike() {
    let dir = scratch_dir("idx-ok");
    let bytes = idx_images(2, 2, 3, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    fs::write(dir.join("raw"), &bytes).unwrap();
    fs::write(dir.join("raw.gz"), gzip(&bytes)).unwrap();
    let a = read_images(&dir.join("raw")).unwrap();
    let b = read_images(&dir.join("raw.gz")).unwrap();
    assert_eq!(a, b);
    assert_eq!((a.count, a.rows, a.cols), (2, 2, 3));
    assert_eq!(a.pixels[11], 11);
    fs::write(dir.join("labels"), idx_labels(3, &[0, 9, 4])).unwrap();
    assert_eq!(
        read_labels(&dir.join("labels"), Some(10)).unwrap(),
        [0, 9, 4]
    );
}

#[test]
fn bad_magic_numbers_are_named() {
    let dir = scratch_dir("idx-magic");
    let labels = dir.join("labels-given-as-images");
    fs::write(&labels, idx_labels(1, &[3])).unwrap();
    assert_eq!(
        problem(read_images(&labels), &labels),
        IdxProblem::BadMagic {
            found: 2049,
            expected: 2051
        }
    );
    let images = dir.join("images-given-as-labels");
    fs::write(&images, idx_images(1, 1, 1, &[3])).unwrap();
    assert_eq!(
        problem(read_labels(&images, None), &images),
        IdxProblem::BadMagic {
            found: 2051,
            expected: 2049
        }
    );
    // A text file, for instance.
    let text = dir.join("notes.txt");
    fs::write(&text, "these are my notes, not an image file\n").unwrap();
    assert!(matches!(
        problem(read_images(&text), &text),
        IdxProblem::BadMagic { .. }
    ));
}

#[test]
fn truncated_header_is_an_error() {
    let dir = scratch_dir("idx-header");
    let path = dir.join("short");
    fs::write(&path, &idx_images(1, 1, 1, &[])[..10]).unwrap(); // magic and 6 bytes
    assert_eq!(
        problem(read_images(&path), &path),
        IdxProblem::TruncatedHeader {
            found: 10,
            needed: 16
        }
    );
    fs::write(&path, []).unwrap();
    assert_eq!(
        problem(read_labels(&path, None), &path),
        IdxProblem::TruncatedHeader {
            found: 0,
            needed: 8
        }
    );
}

#[test]
fn zero_or_overflowing_dimensions_are_errors_and_nothing_is_allocated_from_them() {
    let dir = scratch_dir("idx-dims");
    let path = dir.join("zero");
    fs::write(&path, idx_images(5, 0, 28, &[])).unwrap();
    assert_eq!(
        problem(read_images(&path), &path),
        IdxProblem::BadDimensions {
            dims: vec![5, 0, 28]
        }
    );
    // 4e9 x 4e9 x 4e9 overflows u64; 4e9 x 28 x 28 does not, and is over the data limit: the
    // reader refuses both from the header, and allocates nothing for them
    fs::write(&path, idx_images(u32::MAX, u32::MAX, u32::MAX, &[1, 2])).unwrap();
    assert!(matches!(
        problem(read_images(&path), &path),
        IdxProblem::BadDimensions { .. }
    ));
    fs::write(&path, idx_images(u32::MAX, 28, 28, &[1, 2])).unwrap();
    assert_eq!(
        problem(read_images(&path), &path),
        IdxProblem::TooLarge {
            expected: u32::MAX as u64 * 784,
            limit: 4 << 30
        }
    );
    // under the limit, a header that promises more than the file has is simply truncated
    fs::write(&path, idx_images(1000, 28, 28, &[1, 2])).unwrap();
    assert_eq!(
        problem(read_images(&path), &path),
        IdxProblem::Truncated {
            expected: 784_000,
            found: 2
        }
    );
}

#[test]
fn truncated_and_overlong_data_are_errors() {
    let dir = scratch_dir("idx-length");
    let path = dir.join("images");
    fs::write(&path, idx_images(2, 2, 2, &[1; 7])).unwrap();
    assert_eq!(
        problem(read_images(&path), &path),
        IdxProblem::Truncated {
            expected: 8,
            found: 7
        }
    );
    fs::write(&path, idx_images(2, 2, 2, &[1; 9])).unwrap();
    assert_eq!(
        problem(read_images(&path), &path),
        IdxProblem::Overlong { expected: 8 }
    );
    let labels = dir.join("labels.gz");
    fs::write(&labels, gzip(&idx_labels(4, &[1, 2, 3]))).unwrap();
    assert_eq!(
        problem(read_labels(&labels, None), &labels),
        IdxProblem::Truncated {
            expected: 4,
            found: 3
        }
    );
}

#[test]
fn labels_must_be_below_the_class_count() {
    let dir = scratch_dir("idx-labels");
    let path = dir.join("labels");
    fs::write(&path, idx_labels(3, &[1, 10, 2])).unwrap();
    assert_eq!(
        problem(read_labels(&path, Some(10)), &path),
        IdxProblem::LabelOutOfRange {
            index: 1,
            label: 10,
            classes: 10
        }
    );
}

#[test]
fn corrupt_or_cut_gzip_is_an_io_error_naming_the_file() {
    let dir = scratch_dir("idx-gzip");
    let good = gzip(&idx_images(10, 28, 28, &[7; 7840]));
    let cut = dir.join("cut.gz");
    fs::write(&cut, &good[..good.len() / 2]).unwrap();
    let corrupt = dir.join("corrupt.gz");
    let mut bad = good.clone();
    for b in &mut bad[12..40] {
        *b ^= 0x5a;
    }
    fs::write(&corrupt, &bad).unwrap();
    for path in [cut, corrupt] {
        match read_images(&path) {
            Err(e @ Error::Io { .. }) => {
                assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}")
            }
            Err(e @ Error::Idx { .. }) => {
                assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}")
            }
            other => panic!("{}: expected an error, got {other:?}", path.display()),
        }
    }
}

#[test]
fn missing_directory_and_files_are_named() {
    let missing = Path::new("no/such/dir");
    let e = Mnist::load(missing).unwrap_err();
    assert!(
        e.to_string().contains("no/such/dir") && e.to_string().contains("not found"),
        "{e}"
    );

    let dir = scratch_dir("idx-missing-file");
    let e = Mnist::load(&dir).unwrap_err();
    assert!(e.to_string().contains("train-images-idx3-ubyte"), "{e}");
}

#[test]
fn the_four_files_must_agree() {
    let dir = scratch_dir("idx-agree");
    let write = |name: &str, bytes: Vec<u8>| fs::write(dir.join(name), bytes).unwrap();
    write("train-images-idx3-ubyte", idx_images(3, 2, 2, &[0; 12]));
    write("train-labels-idx1-ubyte", idx_labels(3, &[0, 1, 2]));
    write("t10k-images-idx3-ubyte", idx_images(2, 2, 2, &[0; 8]));
    write("t10k-labels-idx1-ubyte", idx_labels(2, &[2, 1]));
    let data = Mnist::load(&dir).unwrap();
    assert_eq!(
        (
            data.train.len(),
            data.test.len(),
            data.classes,
            data.train.input_size()
        ),
        (3, 2, 3, 4)
    );

    // One label fewer than images.
    write("t10k-labels-idx1-ubyte", idx_labels(1, &[2]));
    let e = Mnist::load(&dir).unwrap_err();
    assert!(
        e.to_string().contains("has 2 images but") && e.to_string().contains("1 labels"),
        "{e}"
    );

    // A test label the training set never uses (classes = 3).
    write("t10k-labels-idx1-ubyte", idx_labels(2, &[2, 3]));
    let e = Mnist::load(&dir).unwrap_err();
    assert!(
        e.to_string()
            .contains("label 3 at index 1 is not below the class count 3"),
        "{e}"
    );

    // Test images of another size.
    write("t10k-labels-idx1-ubyte", idx_labels(2, &[2, 1]));
    write("t10k-images-idx3-ubyte", idx_images(2, 3, 3, &[0; 18]));
    let e = Mnist::load(&dir).unwrap_err();
    assert!(e.to_string().contains("3x3"), "{e}");
}

#[test]
fn the_repository_copy_of_mnist_loads_whole() {
    let data = common::mnist();
    assert_eq!(
        (data.train.len(), data.test.len(), data.classes),
        (60_000, 10_000, 10)
    );
    assert_eq!((data.train.rows(), data.train.cols()), (28, 28));
    // The first training label of MNIST is a 5, the first test label a 7.
    assert_eq!((data.train.labels()[0], data.test.labels()[0]), (5, 7));
}

#[test]
fn random_damage_never_panics() {
    // Truncations, flipped bytes and random garbage, raw and gzipped: every outcome is an
    // Ok or an Err, never a panic or a huge allocation.
    let dir = scratch_dir("idx-fuzz");
    let mut rng = backprop::Rng::new(99);
    let good = idx_images(3, 4, 5, &(0..60).map(|i| i as u8).collect::<Vec<_>>());
    let path = dir.join("damaged");
    for round in 0..600 {
        let mut bytes = good.clone();
        match round % 4 {
            0 => bytes.truncate(rng.below(bytes.len() + 1)),
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                }
            }
            2 => bytes = (0..rng.below(64)).map(|_| rng.below(256) as u8).collect(),
            _ => {
                bytes = gzip(&bytes);
                let i = rng.below(bytes.len());
                bytes[i] = rng.below(256) as u8;
                bytes.truncate(bytes.len() - rng.below(4));
            }
        }
        fs::write(&path, &bytes).unwrap();
        if let Ok(images) = read_images(&path) {
            assert_eq!(
                images.pixels.len(),
                images.count * images.rows * images.cols
            );
        }
        let _ = read_labels(&path, Some(10));
    }
}
