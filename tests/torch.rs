//! `python/backprop_torch.py`, the way to PyTorch and back. Its NumPy part (the description
//! read, the weights in PyTorch's layouts and back) runs wherever NumPy does, CI included;
//! the PyTorch part where PyTorch is installed ($BACKPROP_TORCH_PYTHON): predictions equal
//! both ways on the whole test set, and a model trained here goes on training in PyTorch for
//! an epoch and is read back.

mod common;

use std::path::Path;
use std::process::Command;

use backprop::Network;
use backprop::checkpoint::SavedFile;
use common::torch_python;
use common::{EVERY_LAYER, backprop, ok, path, python_with, repo, scratch_dir, small_data};

/// Trains the every-layer stack briefly on a slice of MNIST; returns its model file.
fn trained_model(dir: &Path) -> String {
    let data = small_data(&format!(
        "torch-{}",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let layers = dir.join("layers.txt");
    std::fs::write(&layers, EVERY_LAYER).unwrap();
    let (layers, save) = (path(&layers), path(&dir.join("run")));
    let flags = ["--layers", &layers, "--optimizer", "adam", "--iters", "100"];
    let mut args = vec!["train", "--data", &data, "--save", &save, "-q"];
    args.extend_from_slice(&flags);
    ok(&backprop(&args));
    path(&dir.join("run/last.safetensors"))
}

fn tensor_bits(file: &str) -> Vec<(String, Vec<u32>)> {
    let mut net: Network<f32> = SavedFile::read(Path::new(file)).unwrap().network().unwrap();
    let bits = |a: ndarray::ArrayViewMutD<'_, f32>| a.iter().map(|v| v.to_bits()).collect();
    let mut all: Vec<(String, Vec<u32>)> = net
        .params()
        .into_iter()
        .map(|(n, p)| (n, bits(p.value)))
        .collect();
    all.extend(net.buffers().into_iter().map(|(n, b)| (n, bits(b))));
    all
}

fn script(python: &Path, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg(repo("python/backprop_torch.py"))
        .args(args)
        .output()
        .unwrap();
    ok(&out)
}

#[test]
fn the_numpy_path_goes_through_pytorchs_layouts_and_back_bit_for_bit() {
    let Some(python) = python_with("numpy, safetensors") else {
        return;
    };
    let dir = scratch_dir("torch-numpy");
    let model = trained_model(&dir);
    let back = path(&dir.join("back.safetensors"));
    script(&python, &["roundtrip", &model, &back]);
    assert_eq!(tensor_bits(&back), tensor_bits(&model));
    // the layouts are PyTorch's: Linear (out, in), Conv2d (out, in, kh, kw), BatchNorm (C)
    let check = "import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import backprop_torch as bt
info, tensors = bt.read(sys.argv[2]); state = bt.to_state_dict(info, tensors)
for l in bt.parse(info):
    w = state.get(l['name'] + '.weight')
    if l['word'] == 'affine': assert w.shape == (l['outputs'], int(np.prod(l['input']))), (l, w.shape)
    if l['word'] == 'conv': assert w.shape == (l['filters'], l['input'][0]) + l['kernel'], (l, w.shape)
    if l['word'] == 'batchnorm': assert w.shape == (l['input'][0],), (l, w.shape)
print(' '.join(l['name'] for l in bt.parse(info)))";
    let out = Command::new(&python)
        .args(["-c", check, &repo("python"), &model])
        .output()
        .unwrap();
    let names = ok(&out);
    let net = SavedFile::read(Path::new(&model))
        .unwrap()
        .network()
        .unwrap();
    assert_eq!(
        names.split_whitespace().collect::<Vec<_>>(),
        net.layer_names()
    );
}

/// `backprop eval --probabilities` of `model`, on the whole test set.
fn our_probabilities(model: &str, out: &str) {
    ok(&backprop(&[
        "eval",
        model,
        "--data",
        &repo("data/mnist"),
        "--probabilities",
        out,
    ]));
}

/// (argmax mismatches, max difference) of two probability files.
fn compare(python: &Path, a: &str, b: &str) -> (usize, f64) {
    let code = "import sys, numpy as np; from safetensors.numpy import load_file
a, b = (load_file(f)['probabilities'] for f in sys.argv[1:3])
assert a.shape == b.shape == (10000, 10), (a.shape, b.shape)
print((a.argmax(1) != b.argmax(1)).sum(), np.abs(a - b).max())";
    let out = Command::new(python)
        .args(["-c", code, a, b])
        .output()
        .unwrap();
    let line = ok(&out);
    let mut words = line.split_whitespace();
    let mismatches = words.next().unwrap().parse().unwrap();
    (mismatches, words.next().unwrap().parse().unwrap())
}

#[test]
fn pytorch_predicts_as_we_do_trains_on_and_we_read_it_back() {
    let Some(python) = torch_python("numpy, safetensors") else {
        return;
    };
    let dir = scratch_dir("torch-both-ways");
    let model = trained_model(&dir);
    let d = |f: &str| path(&dir.join(f));
    let data = repo("data/mnist");
    // ours -> PyTorch
    our_probabilities(&model, &d("ours.safetensors"));
    script(
        &python,
        &["probabilities", &model, &data, &d("theirs.safetensors")],
    );
    let (m, diff) = compare(&python, &d("ours.safetensors"), &d("theirs.safetensors"));
    eprintln!("ours -> PyTorch: {m} mismatches, max difference {diff:.3e}");
    assert!(m == 0 && diff < 1e-5, "{m} {diff}");
    // an epoch in PyTorch, then PyTorch -> ours
    let trained = d("pytorch.safetensors");
    let log = script(
        &python,
        &["train", &model, &data, &trained, "--epochs", "1"],
    );
    eprintln!("{}", log.trim());
    our_probabilities(&trained, &d("ours-after.safetensors"));
    script(
        &python,
        &[
            "probabilities",
            &trained,
            &data,
            &d("theirs-after.safetensors"),
        ],
    );
    let (m, diff) = compare(
        &python,
        &d("ours-after.safetensors"),
        &d("theirs-after.safetensors"),
    );
    eprintln!("PyTorch -> ours: {m} mismatches, max difference {diff:.3e}");
    assert!(m == 0 && diff < 1e-5, "{m} {diff}");
    let before = ok(&backprop(&["eval", &model, "--data", &data]));
    let after = ok(&backprop(&["eval", &trained, "--data", &data]));
    let accuracy = |s: &str| -> f64 {
        let at = s.find("accuracy ").unwrap() + 9;
        s[at..at + 6].parse().unwrap()
    };
    eprintln!(
        "test accuracy: here {} -> PyTorch epoch {}",
        accuracy(&before),
        accuracy(&after)
    );
    assert!(accuracy(&after) > accuracy(&before));
}
