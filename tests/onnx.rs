//! ONNX export checked by ONNX Runtime: five networks, briefly trained, exported with
//! `backprop export`, run by ONNX Runtime on the whole MNIST test set
//! (`tests/python/onnx_check.py`), and compared with `backprop eval --probabilities`: the
//! same class for all 10000 images and probabilities within 1e-5.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{EVERY_LAYER, backprop, ok, python_with, repo, scratch_dir, small_data};

/// Trains with `flags` on a slice of MNIST, exports, evaluates on the whole test set, and
/// has ONNX Runtime run the export: returns (argmax mismatches, max probability difference).
fn agreement(name: &str, flags: &[&str]) -> Option<(usize, f64)> {
    let python = python_with("numpy, safetensors, onnx, onnxruntime")?;
    let data = small_data(&format!("onnx-{name}"));
    let dir: PathBuf = scratch_dir(&format!("onnx-{name}-run"));
    let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let save = d("");
    let mut train = vec!["train", "--data", &data, "--save", &save, "-q"];
    train.extend_from_slice(flags);
    ok(&backprop(&train));
    let model = d("last.safetensors");
    ok(&backprop(&["export", &model, "--onnx", &d("model.onnx")]));
    let full = repo("data/mnist");
    let probs = d("ours.safetensors");
    ok(&backprop(&[
        "eval",
        &model,
        "--data",
        &full,
        "--probabilities",
        &probs,
    ]));
    let script = repo("tests/python/onnx_check.py");
    let out = Command::new(python)
        .args([&script, &d("model.onnx"), &probs, &full])
        .output()
        .unwrap();
    let line = ok(&out);
    eprintln!("{name}: {}", line.trim());
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "mismatches", "{line}");
    assert_eq!(words[5], "10000", "{line}");
    let _ = std::fs::remove_dir_all(&dir);
    Some((words[1].parse().unwrap(), words[3].parse().unwrap()))
}

fn assert_agrees(name: &str, flags: &[&str]) {
    if let Some((mismatches, max_diff)) = agreement(name, flags) {
        assert_eq!(
            mismatches, 0,
            "{name}: {mismatches} images classified otherwise"
        );
        assert!(
            max_diff < 1e-5,
            "{name}: probabilities differ by {max_diff}"
        );
    }
}

#[test]
fn two_layer_net() {
    assert_agrees("two-layer", &["--iters", "300"]);
}

#[test]
fn mlp_with_batch_norm_and_dropout() {
    assert_agrees(
        "mlp",
        &[
            "--model",
            "mlp",
            "--hidden",
            "100,50",
            "--batch-norm",
            "--dropout",
            "0.2",
            "--optimizer",
            "adam",
            "--iters",
            "200",
        ],
    );
}

#[test]
fn simple_convnet() {
    let flags = [
        "--model",
        "simple-cnn",
        "--optimizer",
        "adam",
        "--iters",
        "60",
    ];
    assert_agrees("simple-cnn", &flags);
}

#[test]
fn deep_convnet() {
    let flags = [
        "--model",
        "deep-cnn",
        "--optimizer",
        "adam",
        "--iters",
        "30",
    ];
    assert_agrees("deep-cnn", &flags);
}

#[test]
fn a_stack_of_every_layer_and_option() {
    let dir = scratch_dir("onnx-every-layers");
    let layers = dir.join("layers.txt");
    std::fs::write(&layers, EVERY_LAYER).unwrap();
    let layers = layers.to_string_lossy().into_owned();
    let flags = ["--layers", &layers, "--optimizer", "adam", "--iters", "100"];
    assert_agrees("every-layer", &flags);
}

#[test]
fn export_errors_are_one_line_and_exit_1() {
    let dir = scratch_dir("onnx-errors");
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"\x02\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    let out_file = dir.join("out.onnx");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    for (model, out, expected) in [
        (s(&junk), s(&out_file), "not a model saved by backprop"),
        (
            s(&dir.join("missing.safetensors")),
            s(&out_file),
            "missing.safetensors",
        ),
    ] {
        let run = backprop(&["export", &model, "--onnx", &out]);
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!out_file.exists());
    let no_flag = backprop(&["export", &s(&junk)]);
    assert_eq!(no_flag.status.code(), Some(2), "--onnx is required");
}
