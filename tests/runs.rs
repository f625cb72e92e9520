//! Runs from the command line: run directories, checkpoints, resume, Ctrl-C, SIGKILL,
//! eval, predict, plots, settings files, and the weights read back by Python.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backprop::Network;
use backprop::checkpoint::SavedFile;
use common::{backprop, ok, path, python_with, scratch_dir, small_data};

fn weight_bits(file: &Path) -> Vec<(String, Vec<u32>)> {
    let mut net: Network<f32> = SavedFile::read(file).unwrap().network().unwrap();
    net.params()
        .into_iter()
        .map(|(n, p)| (n, p.value.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

#[test]
fn a_run_resumed_from_its_checkpoint_ends_bit_identical() {
    let data = small_data("runs-resume");
    let (a, b) = (scratch_dir("runs-resume-a"), scratch_dir("runs-resume-b"));
    let common = [
        "train",
        "--data",
        &data,
        "--model",
        "mlp",
        "--hidden",
        "32",
        "--dropout",
        "0.1",
        "--optimizer",
        "adam",
        "--batch-size",
        "100",
        "-q",
    ];
    let (a_dir, b_dir) = (path(&a), path(&b));
    let straight = [&common[..], &["--epochs", "3", "--save", &a_dir]].concat();
    ok(&backprop(&straight));
    let first = [&common[..], &["--epochs", "1", "--save", &b_dir]].concat();
    ok(&backprop(&first));
    let last = b.join("last.safetensors");
    // the checkpoint's settings, with more epochs
    ok(&backprop(&[
        "train",
        "--data",
        &data,
        "--resume",
        &path(&last),
        "--epochs",
        "3",
        "-q",
    ]));
    assert_eq!(weight_bits(&a.join("last.safetensors")), weight_bits(&last));
    // the metrics go on where they were: one row per epoch, in order
    let metrics = std::fs::read_to_string(b.join("metrics.csv")).unwrap();
    let epochs: Vec<&str> = metrics
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(epochs, ["1", "2", "3"]);
    assert!(b.join("best.safetensors").exists() && b.join("config.toml").exists());
}

/// Starts a long run saving into `dir`, and waits until its first checkpoint exists.
fn start_long_run(data: &str, dir: &Path) -> std::process::Child {
    // one update an epoch (batch = the whole training set): a checkpoint every few ms
    let child = Command::new(env!("CARGO_BIN_EXE_backprop"))
        .args([
            "train",
            "--data",
            data,
            "--epochs",
            "100000",
            "--batch-size",
            "2000",
            "--save",
            &path(dir),
            "-q",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !dir.join("last.safetensors").exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

#[test]
fn sigkill_during_checkpoint_writes_leaves_a_loadable_checkpoint() {
    let data = small_data("runs-kill");
    let dir = scratch_dir("runs-kill-save");
    let mut iterations = Vec::new();
    for round in 0..6u64 {
        let mut child = start_long_run(&data, &dir);
        // kill at a moment that varies from round to round: mostly mid-write
        std::thread::sleep(Duration::from_millis(37 * round + 20));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for name in ["last.safetensors", "best.safetensors"] {
            let saved = SavedFile::read(&dir.join(name))
                .unwrap_or_else(|e| panic!("round {round}: {name}: {e}"));
            assert!(saved.is_checkpoint());
            saved.network().unwrap();
        }
        iterations.push(
            SavedFile::read(&dir.join("last.safetensors"))
                .unwrap()
                .iteration(),
        );
        // start over for the next round
        std::fs::remove_file(dir.join("last.safetensors")).unwrap();
    }
    assert!(iterations.iter().all(|&i| i > 0), "{iterations:?}");
}

#[test]
fn ctrl_c_stops_saves_and_says_how_to_resume() {
    let data = small_data("runs-int");
    let dir = scratch_dir("runs-int-save");
    let child = start_long_run(&data, &dir);
    std::thread::sleep(Duration::from_millis(200));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("resume with: backprop train --resume"),
        "{stderr}"
    );
    let saved = SavedFile::read(&dir.join("last.safetensors")).unwrap();
    assert!(saved.iteration() > 0);
    // and the run goes on from there
    let out = backprop(&[
        "train",
        "--data",
        &data,
        "--resume",
        &path(&dir.join("last.safetensors")),
        "--epochs",
        &(saved.iteration() + 2).to_string(),
        "-q",
    ]);
    let stdout = ok(&out);
    assert!(stdout.contains(&format!("done: {} iterations", saved.iteration() + 2)));
}

#[test]
fn eval_predict_and_plot_a_saved_model() {
    let data = small_data("runs-eval");
    let dir = scratch_dir("runs-eval-save");
    ok(&backprop(&[
        "train",
        "--data",
        &data,
        "--epochs",
        "3",
        "--save",
        &path(&dir),
        "--plot",
        "-q",
    ]));
    let model = path(&dir.join("best.safetensors"));
    let stdout = ok(&backprop(&["eval", &model, "--data", &data]));
    assert!(
        stdout.contains("test set: 500 images; accuracy 0."),
        "{stdout}"
    );
    assert!(stdout.contains("confusion matrix"), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("    7 ")).count(),
        1
    );

    // a digit as a dark-on-light PNG of another size, and as a PGM
    let mnist = common::mnist();
    let (x, labels) = mnist.test.batch::<f32>(&[0]);
    let (w, h) = (56usize, 70usize);
    let big: Vec<u8> = (0..w * h)
        .map(|k| {
            let (px, py) = (k % w * 28 / w, (k / w) * 28 / h);
            255 - (x[[0, py * 28 + px]] * 255.0) as u8
        })
        .collect();
    let png_path = dir.join("digit.png");
    {
        let file = std::fs::File::create(&png_path).unwrap();
        let mut enc = png::Encoder::new(file, w as u32, h as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&big).unwrap();
    }
    let pgm_path = dir.join("digit.pgm");
    let mut pgm = format!("P5\n{w} {h}\n255\n").into_bytes();
    pgm.extend(&big);
    std::fs::write(&pgm_path, pgm).unwrap();
    let stdout = ok(&backprop(&[
        "predict",
        &model,
        &path(&png_path),
        &path(&pgm_path),
    ]));
    for line in stdout.lines() {
        // "…digit.png: 7 (98.1%), 9 (1.0%), 2 (0.4%)"
        let top = line.split(": ").nth(1).unwrap();
        assert!(
            top.starts_with(&format!("{} (", labels[0])),
            "expected {}: {line}",
            labels[0]
        );
        assert_eq!(top.matches('%').count(), 3, "{line}");
    }

    // the plots: PNGs decode to their size, SVGs are well-formed
    for name in ["loss", "accuracy", "confusion"] {
        let png_file = std::fs::File::open(dir.join(format!("{name}.png"))).unwrap();
        let mut reader = png::Decoder::new(std::io::BufReader::new(png_file))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut buf).unwrap();
        assert!(frame.width >= 400 && frame.height >= 400, "{name}");
        // not blank: some ink, some background
        let dark = buf.iter().filter(|&&v| v < 100).count();
        assert!(
            dark > 500 && dark < buf.len() / 2,
            "{name}: {dark} dark values"
        );
        let svg = std::fs::read_to_string(dir.join(format!("{name}.svg"))).unwrap();
        assert_well_formed(&svg, name);
    }
    // `backprop plot` draws them again
    let stdout = ok(&backprop(&["plot", &path(&dir)]));
    assert_eq!(stdout.lines().count(), 6);
}

/// Every tag closed in order, attributes quoted: a small XML check.
fn assert_well_formed(svg: &str, name: &str) {
    assert!(svg.starts_with("<?xml") && svg.contains("<svg "), "{name}");
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("unclosed <") + open;
        let tag = &rest[open + 1..close];
        if tag.starts_with('?') {
        } else if let Some(end) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(end), "{name}: </{end}>");
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap().to_string());
        }
        assert_eq!(tag.matches('"').count() % 2, 0, "{name}: <{tag}>");
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "{name}: unclosed {stack:?}");
}

#[test]
fn bad_model_and_image_files_give_one_line_errors() {
    let dir = scratch_dir("runs-bad");
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a model at all").unwrap();
    let text = dir.join("digit.png");
    std::fs::write(&text, b"hello").unwrap();
    for (args, what) in [
        (
            vec!["eval".into(), path(&dir.join("missing.safetensors"))],
            "missing.safetensors",
        ),
        (vec!["eval".into(), path(&junk)], "junk.safetensors"),
        (
            vec!["predict".into(), path(&junk), path(&text)],
            "junk.safetensors",
        ),
        (
            vec!["train".into(), "--resume".into(), path(&junk)],
            "junk.safetensors",
        ),
        (vec!["plot".into(), path(&dir)], "metrics.csv"),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = backprop(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(what),
            "{stderr}"
        );
    }
}

#[test]
fn a_settings_file_is_read_and_flags_override_it() {
    let data = small_data("runs-config");
    let dir = scratch_dir("runs-config-out");
    let config = dir.join("exp.toml");
    std::fs::write(
        &config,
        format!(
            "data = {data:?}\nmodel = \"mlp\"\nhidden = \"24,12\"\noptimizer = \"adam\"\niters = 40\nbatch-size = 50\n"
        ),
    )
    .unwrap();
    let out_dir = dir.join("run");
    let stdout = ok(&backprop(&[
        "train",
        "--config",
        &path(&config),
        "--iters",
        "30",
        "--out",
        &path(&out_dir),
    ]));
    assert!(stdout.contains("MultiLayerNet 784-24-12-10"), "{stdout}");
    assert!(stdout.contains("done: 30 iterations"), "{stdout}");
    let resolved = std::fs::read_to_string(out_dir.join("config.toml")).unwrap();
    assert!(resolved.contains("iters = 30") && resolved.contains("optimizer = \"adam\""));

    std::fs::write(&config, "modle = \"mlp\"\n").unwrap();
    let out = backprop(&["train", "--config", &path(&config)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("exp.toml") && stderr.contains("modle"),
        "{stderr}"
    );
}

#[test]
fn the_reference_flag_trains_on_the_books_code_and_is_recorded() {
    let data = small_data("runs-reference");
    let dir = scratch_dir("runs-reference-out");
    let args = |out: &Path, reference: bool| {
        let mut a = vec![
            "train",
            "--data",
            &data,
            "--model",
            "simple-cnn",
            "--optimizer",
            "adam",
        ];
        a.extend(["--iters", "20", "--batch-size", "50", "--json", "--out"]);
        let mut a: Vec<String> = a.into_iter().map(String::from).collect();
        a.push(path(out));
        if reference {
            a.push("--reference".into());
        }
        a
    };
    let run = |out: &Path, reference: bool| {
        let a = args(out, reference);
        let stdout = ok(&backprop(&a.iter().map(String::as_str).collect::<Vec<_>>()));
        let last = stdout.lines().last().unwrap().to_string();
        let json: serde_json::Value = serde_json::from_str(&last).unwrap();
        (stdout, json["test_accuracy"].as_f64().unwrap())
    };
    let (stdout, book) = run(&dir.join("book"), true);
    assert!(stdout.contains("the book's code alone"), "{stdout}");
    let saved = std::fs::read_to_string(dir.join("book/config.toml")).unwrap();
    assert!(saved.contains("reference = true"), "{saved}");
    let (_, fast) = run(&dir.join("fast"), false);
    // the same run to rounding: after 20 steps the test accuracies agree closely
    assert!((book - fast).abs() < 0.02, "book {book}, fast {fast}");
}

#[test]
fn python_reads_the_weights_and_predicts_as_we_do() {
    let data = small_data("runs-python");
    let dir = scratch_dir("runs-python-save");
    ok(&backprop(&[
        "train",
        "--data",
        &data,
        "--iters",
        "200",
        "--save",
        &path(&dir),
        "-q",
    ]));
    let model = dir.join("last.safetensors");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/forward_pass.py");
    let Some(python) = python_with("numpy, safetensors") else {
        return;
    };
    let out = Command::new(python)
        .args([path(&script), path(&model), data.clone(), "100".into()])
        .output()
        .unwrap();
    let stdout = ok(&out);
    let net = SavedFile::read(&model).unwrap().network().unwrap();
    let mnist = backprop::data::Mnist::load(Path::new(&data)).unwrap();
    let (x, _) = mnist.test.input_batch::<f32>(&(0..100).collect::<Vec<_>>());
    let scores = net.predict(x);
    let p = backprop::layers::softmax(&scores.into_dimensionality().unwrap().view());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 100);
    for (i, line) in lines.iter().enumerate() {
        let mut words = line.split_whitespace();
        let class: usize = words.next().unwrap().parse().unwrap();
        let probs: Vec<f32> = words.map(|w| w.parse().unwrap()).collect();
        let row = p.row(i);
        let ours = row
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (k, &v)| if v > b.1 { (k, v) } else { b })
            .0;
        assert_eq!(class, ours, "image {i}");
        for (a, b) in probs.iter().zip(row.iter()) {
            assert!((a - b).abs() < 1e-5, "image {i}: {a} vs {b}");
        }
    }
}
