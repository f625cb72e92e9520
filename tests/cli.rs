//! The `backprop` command: its output, and one-line errors with a non-zero exit on bad input.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{scratch_dir, small_data, write_dataset};

fn backprop(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backprop"));
    cmd.args(args);
    // a training run writes its run directory: into a scratch one, not the repository
    if args.first() == Some(&"train") && !args.iter().any(|a| ["--out", "--save"].contains(a)) {
        let out = scratch_dir(&format!("run-{}", RUNS.fetch_add(1, Ordering::SeqCst)));
        cmd.arg("--out").arg(out);
    }
    cmd.output().expect("the binary runs")
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// Exit code non-zero, one line on stderr naming `what`, and no panic.
fn assert_one_line_error(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded; stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(
        stderr.starts_with("error: ") && stderr.contains(what),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn train_prints_epochs_and_a_json_summary() {
    let data = small_data("cli-train");
    let args = [
        "train",
        "--data",
        &data,
        "--iters",
        "60",
        "--batch-size",
        "50",
        "--seed",
        "3",
        "--json",
    ];
    let out = backprop(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("TwoLayerNet 784-50-10"), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("epoch")).count(),
        1,
        "{stdout}"
    );
    let json = stdout.lines().last().unwrap();
    for key in [
        "\"elapsed_s\":",
        "\"iterations\":60",
        "\"train_accuracy\":",
        "\"test_accuracy\":",
        "\"final_loss\":",
    ] {
        assert!(
            json.starts_with('{') && json.ends_with('}') && json.contains(key),
            "{json}"
        );
    }
    // Same seed, same numbers (the timings aside).
    let again = backprop(&args);
    let strip = |s: &str| s.split("\"train_accuracy\"").nth(1).unwrap().to_string();
    assert_eq!(
        strip(json),
        strip(
            String::from_utf8_lossy(&again.stdout)
                .lines()
                .last()
                .unwrap()
        )
    );
}

#[test]
fn gradcheck_passes_and_fails_on_its_tolerance() {
    let data = small_data("cli-gradcheck");
    let out = backprop(&["gradcheck", "--data", &data, "--hidden", "10"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["W1", "b1", "W2", "b2", "max rel err"] {
        assert!(stdout.contains(name), "{stdout}");
    }
    let out = backprop(&[
        "gradcheck",
        "--data",
        &data,
        "--hidden",
        "10",
        "--tolerance",
        "1e-30",
    ]);
    assert_one_line_error(&out, "relative error above");
}

#[test]
fn bad_input_gives_one_line_errors() {
    let data = small_data("cli-bad");
    assert_one_line_error(
        &backprop(&["train", "--data", "no/such/dir"]),
        "no/such/dir",
    );
    assert_one_line_error(
        &backprop(&["train", "--data", &data, "--batch-size", "0"]),
        "--batch-size",
    );
    assert_one_line_error(
        &backprop(&["train", "--data", &data, "--hidden", "0"]),
        "--hidden",
    );
    assert_one_line_error(&backprop(&["train", "--data", &data, "--lr", "-1"]), "--lr");
    assert_one_line_error(
        &backprop(&["train", "--data", &data, "--lr", "1e30", "--init-std", "1"]),
        "diverged",
    );
    assert_one_line_error(
        &backprop(&["gradcheck", "--data", "no/such/dir"]),
        "no/such/dir",
    );

    // A corrupt file: the message names it.
    let labels = Path::new(&data).join("t10k-labels-idx1-ubyte");
    std::fs::write(&labels, b"not an IDX file at all").unwrap();
    assert_one_line_error(
        &backprop(&["train", "--data", &data]),
        "t10k-labels-idx1-ubyte",
    );
}

#[test]
fn unknown_flags_are_usage_errors() {
    let out = backprop(&["train", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}

#[test]
fn bad_training_flags_name_the_flag() {
    let data = small_data("cli-flags");
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--data", &data, "--model", "mlp", "--iters", "5"];
        args.extend_from_slice(extra);
        backprop(&args)
    };
    assert_one_line_error(&train(&["--optimizer", "adamax"]), "--optimizer");
    assert_one_line_error(&train(&["--dropout", "1.0"]), "--dropout");
    assert_one_line_error(&train(&["--dropout", "-0.1"]), "--dropout");
    assert_one_line_error(&train(&["--hidden", ""]), "--hidden");
    assert_one_line_error(&train(&["--hidden", "256,,256"]), "--hidden");
    assert_one_line_error(&train(&["--lr", "-0.001"]), "--lr");
    assert_one_line_error(&train(&["--weight-decay", "-1e-4"]), "--weight-decay");
    assert_one_line_error(&train(&["--clip-grad-norm", "0"]), "--clip-grad-norm");
    assert_one_line_error(&train(&["--validation", "1.5"]), "--validation");
    assert_one_line_error(&train(&["--activation", "gelu"]), "--activation");
    assert_one_line_error(&train(&["--init", "uniform"]), "--init");
    assert_one_line_error(&train(&["--lr-schedule", "linear"]), "--lr-schedule");
    assert_one_line_error(
        &backprop(&["train", "--data", &data, "--model", "cnn"]),
        "--model",
    );
    assert_one_line_error(
        &backprop(&["train", "--data", &data, "--hidden", "50,50"]),
        "--model",
    );
}

#[test]
fn mlp_trains_from_the_command_line() {
    let data = small_data("cli-mlp");
    let out = backprop(&[
        "train",
        "--data",
        &data,
        "--model",
        "mlp",
        "--hidden",
        "32,16",
        "--optimizer",
        "adam",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--batch-norm",
        "--dropout",
        "0.1",
        "--validation",
        "0.1",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("MultiLayerNet 784-32-16-10, relu, He init, batch norm, dropout 0.1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("val acc") && stdout.contains("\"epochs\":2"),
        "{stdout}"
    );
}

#[test]
fn the_books_convnets_train_from_the_command_line() {
    let dir = scratch_dir("cli-cnn");
    let data = common::mnist();
    write_dataset(&dir, &data.train.slice(0..300), &data.test.slice(0..100));
    let dir = dir.to_string_lossy().into_owned();
    for model in ["simple-cnn", "deep-cnn"] {
        let out = backprop(&[
            "train",
            "--data",
            &dir,
            "--model",
            model,
            "--optimizer",
            "adam",
            "--iters",
            "3",
            "--batch-size",
            "20",
            "--json",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{model}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.lines().last().unwrap().contains("\"iterations\":3"),
            "{stdout}"
        );
    }
    assert_one_line_error(
        &backprop(&[
            "train",
            "--data",
            &dir,
            "--model",
            "simple-cnn",
            "--hidden",
            "20",
        ]),
        "--hidden",
    );
}

#[test]
fn a_layer_description_trains_and_its_mistakes_name_the_line() {
    let dir = scratch_dir("cli-layers");
    let data = common::mnist();
    write_dataset(&dir, &data.train.slice(0..200), &data.test.slice(0..100));
    let net = dir.join("net.txt");
    std::fs::write(&net, "conv 4 3 pad=1\nrelu\npool max 2\naffine classes\n").unwrap();
    let (dir, net) = (
        dir.to_string_lossy().into_owned(),
        net.to_string_lossy().into_owned(),
    );
    let out = backprop(&[
        "train",
        "--data",
        &dir,
        "--layers",
        &net,
        "--iters",
        "3",
        "--batch-size",
        "20",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&net, "conv 4 3\nrelu\nmaxpool 2\naffine classes\n").unwrap();
    let out = backprop(&["train", "--data", &dir, "--layers", &net, "--iters", "3"]);
    assert_one_line_error(&out, "line 3: unknown layer \"maxpool\"");
    assert_one_line_error(
        &backprop(&["train", "--data", &dir, "--layers", "no/such/net.txt"]),
        "no/such/net.txt",
    );
}
