//! Data beyond the repository's MNIST: Fashion-MNIST by name, and folders of images of any
//! size and colour (made here from MNIST digits written as PNG, and from the colour JPEGs in
//! tests/data/jpeg), with every kind of unusable file reported by name.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use backprop::data::classes::FASHION_DIR;
use common::{backprop, ok, path, repo, scratch_dir};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes a grey PNG of `w x h` bytes.
fn write_png(file: &Path, w: usize, h: usize, pixels: &[u8]) {
    let f = fs::File::create(file).unwrap();
    let mut encoder = png::Encoder::new(f, w as u32, h as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(pixels).unwrap();
}

/// `pixels` (28x28) enlarged to 42x42 by repeating every other pixel: another size.
fn enlarged(pixels: &[u8]) -> Vec<u8> {
    (0..42 * 42)
        .map(|i| pixels[(i / 42) * 2 / 3 * 28 + (i % 42) * 2 / 3])
        .collect()
}

/// DIR/train/<digit>/ and DIR/test/<digit>/ of MNIST digits as PNG, every third at 42x42.
fn digit_folder(dir: &Path, per_class_train: usize, per_class_test: usize) {
    let mnist = common::mnist();
    for (part, set, per_class) in [
        ("train", &mnist.train, per_class_train),
        ("test", &mnist.test, per_class_test),
    ] {
        let mut written = [0usize; 10];
        for i in 0..set.len() {
            let label = set.labels()[i] as usize;
            if written[label] == per_class {
                continue;
            }
            let class = dir.join(part).join(label.to_string());
            fs::create_dir_all(&class).unwrap();
            let pixels = &set.images()[i * 784..(i + 1) * 784];
            let file = class.join(format!("{i:05}.png"));
            if i % 3 == 0 {
                write_png(&file, 42, 42, &enlarged(pixels));
            } else {
                write_png(&file, 28, 28, pixels);
            }
            written[label] += 1;
        }
    }
}

#[test]
fn a_folder_of_digit_pngs_of_two_sizes_trains_end_to_end() {
    let dir = scratch_dir("folder-digits");
    digit_folder(&dir, 60, 20);
    let data = path(&dir);
    let info = ok(&backprop(&["data", &data, "--image-size", "28"]));
    assert!(
        info.contains("images: 600 training, 200 test, each 28x28"),
        "{info}"
    );
    assert!(info.contains("files left out: none"), "{info}");
    // without --image-size the 42x42 third is left out, each one named
    let mixed = ok(&backprop(&["data", &data]));
    assert!(
        mixed.contains("42x42, not the 28x28 of the others"),
        "{mixed}"
    );
    let run = path(&dir.join("run"));
    let out = backprop(&[
        "train",
        "--data",
        &data,
        "--image-size",
        "28",
        "--model",
        "simple-cnn",
        "--optimizer",
        "adam",
        "--epochs",
        "8",
        "--batch-size",
        "20",
        "--save",
        &run,
        "-q",
    ]);
    let summary = ok(&out);
    let accuracy: f64 = summary
        .split("test accuracy ")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(accuracy > 0.8, "{summary}");
    // eval prepares the folder as the model takes it (its input is 1x28x28)
    let model = path(&dir.join("run/best.safetensors"));
    let eval = ok(&backprop(&["eval", &model, "--data", &data]));
    assert!(eval.contains("test set: 200 images"), "{eval}");
}

/// The colour JPEGs of tests/data/jpeg copied into two classes, four of each, one folder.
fn colour_folder(dir: &Path) {
    let jpegs = PathBuf::from(repo("tests/data/jpeg"));
    for class in ["disc", "bar"] {
        fs::create_dir_all(dir.join(class)).unwrap();
        for copy in 0..2 {
            for i in 0..3 {
                let from = jpegs.join(format!("{class}{i}.jpg"));
                fs::copy(from, dir.join(class).join(format!("{class}{i}-{copy}.jpg"))).unwrap();
            }
        }
    }
}

#[test]
fn colour_jpegs_make_a_three_channel_data_set_with_a_held_out_fifth() {
    let dir = scratch_dir("folder-colour");
    colour_folder(&dir);
    let data = path(&dir);
    let info = ok(&backprop(&["data", &data]));
    assert!(
        info.contains("images: 10 training, 2 test, each 3x20x24"),
        "{info}"
    );
    let layers = dir.join("layers.txt");
    fs::write(
        &layers,
        "conv 4 3 pad=1\nrelu\npool max 2 stride=2\naffine classes\n",
    )
    .unwrap();
    let run = path(&dir.join("run"));
    let args = [
        "train",
        "--data",
        &data,
        "--layers",
        &path(&layers),
        "--optimizer",
        "adam",
        "--iters",
        "40",
        "--batch-size",
        "5",
        "--save",
        &run,
        "-q",
    ];
    let summary = ok(&backprop(&args));
    assert!(summary.contains("train accuracy 1.0000"), "{summary}");
    let model = backprop::checkpoint::SavedFile::read(&dir.join("run/last.safetensors")).unwrap();
    assert_eq!(model.info.input, [3, 20, 24]);
    assert_eq!(model.info.class_names, ["bar", "disc"]);
    // forced to grey and resized, the same folder is 1x16x16
    let grey = ok(&backprop(&[
        "data",
        &data,
        "--channels",
        "1",
        "--image-size",
        "16",
    ]));
    assert!(grey.contains("each 16x16 (1 channel"), "{grey}");
}

#[test]
fn every_unusable_file_is_named_with_its_reason() {
    let dir = scratch_dir("folder-bad");
    colour_folder(&dir);
    let jpegs = PathBuf::from(repo("tests/data/jpeg"));
    let cases: [(&str, &[u8]); 3] = [
        (
            "disc/truncated.png",
            &fs::read(repo("docs/netron-simple-cnn.png")).unwrap()[..200],
        ),
        ("disc/notes.png", b"not an image at all"),
        ("bar/empty.jpg", b""),
    ];
    for (name, bytes) in cases {
        fs::write(dir.join(name), bytes).unwrap();
    }
    fs::copy(jpegs.join("cmyk.jpg"), dir.join("bar/cmyk.jpg")).unwrap(); // 16x16: another size
    fs::create_dir_all(dir.join("bar/nested")).unwrap();
    fs::create_dir_all(dir.join("kite")).unwrap(); // a class with no images
    let data = path(&dir);
    let info = ok(&backprop(&["data", &data]));
    for (file, reason) in [
        ("disc/truncated.png", "unreadable PNG"),
        ("disc/notes.png", "not a PNG, JPEG or PGM image"),
        ("bar/empty.jpg", "not a PNG, JPEG or PGM image"),
        ("bar/cmyk.jpg", "16x16, not the 24x20 of the others"),
        ("bar/nested", "not a regular file"),
        ("kite", "an empty class"),
    ] {
        let line = format!("{}: {reason}", dir.join(file).display());
        assert!(info.contains(&line), "{line} missing from:\n{info}");
    }
    assert!(info.contains("files left out: 6"), "{info}");
    // training says how many were left out even with -q
    let run = path(&dir.join("run"));
    let out = backprop(&[
        "train", "--data", &data, "--iters", "2", "--save", &run, "-q",
    ]);
    ok(&out);
    assert!(
        stderr(&out).contains("left out 6 file(s)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_folder_with_nothing_usable_is_one_line_and_exit_1() {
    let dir = scratch_dir("folder-nothing");
    fs::create_dir_all(dir.join("a")).unwrap();
    fs::write(dir.join("a/x.png"), b"junk").unwrap();
    let out = backprop(&["data", &path(&dir)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no usable training images"), "{err}");
    assert!(err.contains("x.png: not a PNG, JPEG or PGM image"), "{err}");
    // and image options on IDX files are refused rather than ignored
    let out = backprop(&["data", &repo("data/mnist"), "--image-size", "14"]);
    assert!(
        stderr(&out).contains("apply to folders of images"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn fashion_by_name_trains_and_names_its_classes() {
    let missing = scratch_dir("fashion-missing").join("nowhere");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backprop"))
        .args(["data", "fashion"])
        .env("BACKPROP_FASHION_MNIST", &missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("apt-get install dataset-fashion-mnist"),
        "{}",
        stderr(&out)
    );
    if !Path::new(FASHION_DIR).is_dir() {
        // CI installs the package and sets BACKPROP_REQUIRE_FASHION: there this fails
        assert!(
            std::env::var_os("BACKPROP_REQUIRE_FASHION").is_none(),
            "no {FASHION_DIR}"
        );
        eprintln!("SKIPPED: no {FASHION_DIR} (apt-get install dataset-fashion-mnist)");
        return;
    }
    let dir = scratch_dir("fashion-run");
    let run = path(&dir);
    let summary = ok(&backprop(&[
        "train", "--data", "fashion", "--iters", "600", "--save", &run, "-q",
    ]));
    let accuracy: f64 = summary
        .split("test accuracy ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(accuracy > 0.75, "{summary}");
    let model = path(&dir.join("best.safetensors"));
    let eval = ok(&backprop(&["eval", &model, "--data", "fashion"]));
    assert!(
        eval.contains("Ankle boot") && eval.contains("T-shirt/top"),
        "{eval}"
    );
    // predict names the class: a test image of a trouser, written as PNG
    let fashion = backprop::data::Mnist::load(Path::new("fashion")).unwrap();
    let i = fashion.test.labels().iter().position(|&l| l == 1).unwrap();
    let png = dir.join("trouser.png");
    write_png(&png, 28, 28, &fashion.test.images()[i * 784..(i + 1) * 784]);
    let predicted = ok(&backprop(&["predict", &model, &path(&png)]));
    assert!(predicted.contains("Trouser ("), "{predicted}");
}
