//! Hostile input against the binary: images too small for the model, sizes that would take
//! terabytes, counts that overflow, headers that lie, files that are not files. Each must be
//! refused before anything large is allocated or waited for: exit status 1, one line on
//! stderr naming the flag, file or layer, no panic, no signal, no hang.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{gzip, idx_images, idx_labels, path, repo, scratch_dir};
use serde_json::Value;

/// Runs the binary with `args` (and `env`), killed after 60 s: its exit status and stderr.
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backprop"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("{args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `args` must end with exit status 1 and one line saying `says`.
fn refused(args: &[&str], env: &[(&str, &str)], says: &str) {
    let (code, stderr) = run(args, env);
    assert_eq!(code, Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    assert!(
        stderr.contains(says),
        "{args:?}: wanted {says:?}, got {stderr}"
    );
}

/// Four IDX files of `n` blank images of `rows` x `cols` (labels 0 and 1).
fn image_set(dir: &Path, rows: u32, cols: u32) -> String {
    fs::create_dir_all(dir).unwrap();
    let n = 20;
    let pixels = vec![0u8; (n * rows * cols) as usize];
    let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
    for prefix in ["train", "t10k"] {
        let images = gzip(&idx_images(n, rows, cols, &pixels));
        fs::write(dir.join(format!("{prefix}-images-idx3-ubyte.gz")), images).unwrap();
        let labels = gzip(&idx_labels(n, &labels));
        fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte.gz")), labels).unwrap();
    }
    path(dir)
}

#[test]
fn models_that_do_not_fit_the_images_are_refused_naming_the_layer() {
    let dir = scratch_dir("hostile-shapes");
    for (rows, cols, model) in [
        (1, 1, "simple-cnn"),
        (2, 2, "simple-cnn"),
        (1, 300, "simple-cnn"),
    ] {
        let data = image_set(&dir.join(format!("{rows}x{cols}")), rows, cols);
        let args = ["train", "--data", &data, "--model", model, "--iters", "1"];
        refused(
            &args,
            &[],
            &format!("--model {model} on 1x{rows}x{cols} images"),
        );
    }
    let data = image_set(&dir.join("2x2deep"), 2, 2);
    let args = [
        "train", "--data", &data, "--model", "deep-cnn", "--iters", "1",
    ];
    refused(&args, &[], "does not fit the 1x1 image");
    let layers = dir.join("pad.txt");
    fs::write(
        &layers,
        "conv 4 3 pad=9223372036854775807\nrelu\naffine classes\n",
    )
    .unwrap();
    let args = ["train", "--layers", &path(&layers), "--iters", "1"];
    refused(&args, &[], "padding 9223372036854775807 is too large");
    let many = dir.join("many.txt");
    fs::write(&many, "relu\n".repeat(20_000) + "affine classes\n").unwrap();
    let args = ["train", "--layers", &path(&many), "--iters", "1"];
    refused(&args, &[], "line 10001: more than 10000 layers");
}

#[test]
fn runs_past_the_memory_budget_are_refused_before_they_allocate() {
    let mnist = repo("data/mnist");
    let train = |flags: &[&str]| {
        let mut args = vec!["train", "--data", &mnist, "--iters", "1"];
        args.extend(flags);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    for (flags, says) in [
        (&["--batch-size", "1000000000"][..], "lower --batch-size"),
        (
            &["--batch-size", "18446744073709551615"],
            "lower --batch-size",
        ),
        (&["--hidden", "5000000"], "this run needs about"),
        (
            &["--hidden", "1000000000"],
            "784x1000000000 weights are too many",
        ),
        (
            &["--hidden", "18446744073709551615"],
            "weights are too many",
        ),
        (
            &["--max-memory", "1M"],
            "more than the 1.0 MB of --max-memory",
        ),
        (
            &["--max-memory", "lots"],
            "--max-memory: \"lots\" is not a size",
        ),
    ] {
        let args = train(flags);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, &[], says);
    }
    let args = [
        "train",
        "--data",
        &mnist,
        "--epochs",
        "18446744073709551615",
    ];
    refused(&args, &[], "more updates than can be counted");
    let args = ["gradcheck", "--data", &mnist, "--hidden", "5000000"];
    refused(&args, &[], "this check needs about");
    let args = [
        "compare-optimizers",
        "--data",
        &mnist,
        "--batch-size",
        "1000000000",
    ];
    refused(&args, &[], "this comparison needs about");
    let args = ["compare-init", "--data", &mnist, "--max-memory", "1M"];
    refused(
        &args,
        &[],
        "more than the 1.0 MB of --max-memory: lower --batch-size",
    );
    let args = ["gradcheck", "--data", &mnist, "--max-memory", "100K"];
    refused(
        &args,
        &[],
        "more than the 100 KB of --max-memory: lower --hidden",
    );
}

/// A PNG's bytes: the signature, a header claiming `side` x `side`, a little data.
fn png_claiming(side: u32, colour: u8, depth: u8) -> Vec<u8> {
    fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        let mut crc = flate2::Crc::new();
        crc.update(&body);
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc.sum().to_be_bytes());
        out
    }
    let mut header = side.to_be_bytes().to_vec();
    header.extend_from_slice(&side.to_be_bytes());
    header.extend_from_slice(&[depth, colour, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &header));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

#[test]
fn files_that_lie_or_are_not_files_are_refused() {
    let dir = scratch_dir("hostile-files");
    let model = dir.join("two");
    let mnist = repo("data/mnist");
    let save = path(&model);
    let trained = [
        "train",
        "-q",
        "--data",
        &mnist,
        "--iters",
        "20",
        "--optimizer",
        "adam",
    ];
    common::ok(&common::backprop(
        &[&trained[..], &["--save", &save]].concat(),
    ));
    let last = path(&model.join("last.safetensors"));
    for (name, png, says) in [
        (
            "huge.png",
            png_claiming(100_000, 0, 8),
            "100000x100000, over the limit",
        ),
        (
            "huge16.png",
            png_claiming(1_000_000, 6, 16),
            "1000000x1000000, over the limit",
        ),
    ] {
        fs::write(dir.join(name), png).unwrap();
        refused(&["predict", &last, &path(&dir.join(name))], &[], says);
    }
    let fifo = dir.join("digit.png");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        refused(
            &["predict", &last, &path(&fifo)],
            &[],
            "is not a regular file",
        );
        refused(&["eval", &path(&fifo)], &[], "is not a regular file");
    }
    refused(&["eval", &path(&dir)], &[], "is a directory");

    // a model file whose description asks for 3.9e9 weights it does not hold
    let (header, data) = safetensors_parts(&model.join("last.safetensors"));
    let mut big = header.clone();
    let info = big["__metadata__"]["backprop.model"].as_str().unwrap();
    let info = info.replacen("affine 50", "affine 5000000", 1);
    big["__metadata__"]["backprop.model"] = Value::String(info);
    let lying = dir.join("lying.safetensors");
    write_safetensors(&lying, &big, &data);
    refused(
        &["eval", &path(&lying)],
        &[],
        "the file holds 39760 values: it is corrupt",
    );

    // a checkpoint whose Adam moment has another shape than its parameter
    let mut swapped = header;
    swapped["optimizer.m.W1"]["shape"] = serde_json::json!([50, 784]);
    let bad = dir.join("swapped.safetensors");
    write_safetensors(&bad, &swapped, &data);
    let resume = [
        "train",
        "--data",
        &mnist,
        "--resume",
        &path(&bad),
        "--iters",
        "40",
    ];
    refused(
        &resume,
        &[],
        "tensor optimizer.m.W1 is [50, 784], but the parameter W1 is [784, 50]",
    );
}

#[test]
fn idx_headers_announcing_too_much_are_refused_before_reading() {
    let dir = scratch_dir("hostile-idx");
    let data = image_set(&dir.join("small"), 28, 28);
    let args = ["train", "--data", &data, "--iters", "1"];
    let limit = [("BACKPROP_MAX_DATA_BYTES", "1000")];
    refused(
        &args,
        &limit,
        "over the limit of 1000 (BACKPROP_MAX_DATA_BYTES)",
    );
    // a gzip bomb's header: 65535^3 bytes announced, 64 KiB of zeros behind it
    let bomb = dir.join("bomb");
    image_set(&bomb, 28, 28);
    let mut images = idx_images(65535, 65535, 65535, &[]);
    images.extend(vec![0u8; 1 << 16]);
    fs::write(bomb.join("train-images-idx3-ubyte.gz"), gzip(&images)).unwrap();
    let args = ["train", "--data", &path(&bomb), "--iters", "1"];
    refused(
        &args,
        &[],
        "announces 281462092005375 data bytes, over the limit",
    );
}

/// A safetensors file's JSON header and its data bytes.
fn safetensors_parts(file: &Path) -> (Value, Vec<u8>) {
    let bytes = fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn write_safetensors(file: &Path, header: &Value, data: &[u8]) {
    let mut text = serde_json::to_vec(header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend(text);
    bytes.extend_from_slice(data);
    fs::write(file, bytes).unwrap();
}
