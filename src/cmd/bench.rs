//! `backprop bench`: the three fixed workloads and this machine's sgemm peak.
//!
//! ```text
//! W1  the book's ch05 run: TwoLayerNet 784-50-10, SGD 0.1, batch 100, 10000 updates and its
//!     16 per-epoch evaluations
//! W2  MLP 784-256-256-10, He, ReLU, Adam 0.001, batch 128, one shuffled epoch
//! W3  SimpleConvNet, Adam 0.001, batch 100, one shuffled epoch
//! ```
//! Each workload is timed whole (updates and the evaluations the run makes) and as its updates
//! alone; FLOPs are counted from the layers ([`backprop::flops`]) and set against the sgemm
//! rate measured here on the same threads.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use backprop::data::Mnist;
use backprop::describe::Spec;
use backprop::flops::{inference_flops, layer_macs, step_flops};
use backprop::kernels::gemm;
use backprop::train::{self, Sampling, TrainConfig};
use backprop::{Error, Rng};
use ndarray::Array2;

use super::json_number;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// w1, w2, w3, sgemm, or all.
    #[arg(long, default_value = "all")]
    workload: String,
    /// Directory with the four MNIST IDX files.
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// One JSON object per line instead of the table.
    #[arg(long)]
    json: bool,
}

/// One measured workload.
struct Figures {
    name: &'static str,
    wall_s: f64,
    updates_s: f64,
    samples: usize,
    flops: u64,
    peak_rss_mb: Option<f64>,
}

pub fn run(args: BenchArgs) -> Result<ExitCode, Error> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let which = args.workload.to_ascii_lowercase();
    let known = ["all", "w1", "w2", "w3", "sgemm"];
    if !known.contains(&which.as_str()) {
        return Err(Error::Config(format!(
            "--workload: {which:?} is not w1, w2, w3, sgemm or all"
        )));
    }
    let peak = sgemm_peak(threads);
    if !args.json {
        println!(
            "sgemm 2048x2048x2048, {threads} threads: {:.1} GFLOP/s (best of 5)",
            peak / 1e9
        );
    } else {
        println!(
            "{{\"workload\":\"sgemm\",\"threads\":{threads},\"gflops\":{}}}",
            json_number(peak / 1e9)
        );
    }
    if which == "sgemm" {
        return Ok(ExitCode::SUCCESS);
    }
    let data = Mnist::load(&args.data)?;
    let mut rows = Vec::new();
    for (name, cfg) in train::workloads(threads) {
        if which != "all" && which != name.to_ascii_lowercase() {
            continue;
        }
        let (f, accuracy) = measure(name, &cfg, &data)?;
        if args.json {
            println!("{}", json_row(&f, threads, peak, accuracy));
        } else {
            rows.push((f, accuracy));
        }
    }
    if !args.json {
        print_table(&rows, peak);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs one workload: its times, samples, counted FLOPs and peak memory, and its test
/// accuracy.
fn measure(name: &'static str, cfg: &TrainConfig, data: &Mnist) -> Result<(Figures, f64), Error> {
    reset_peak_rss();
    let start = Instant::now();
    let trained = train::train(cfg, data, |_| {})?;
    let wall_s = start.elapsed().as_secs_f64();
    let updates_s: f64 = trained.epochs.iter().map(|e| e.train_s).sum();
    let spec = Spec::parse(&trained.network.description(), (1, 28, 28), data.classes)?;
    let macs = layer_macs(&spec);
    let steps = trained.summary.iterations;
    let n = data.train.len();
    let samples = match cfg.sampling {
        Sampling::Random => steps * cfg.batch_size,
        Sampling::Shuffle => n * steps / n.div_ceil(cfg.batch_size),
    };
    let evaluated = trained.epochs.len() * (n + data.test.len());
    let flops = step_flops(&macs, 1) * samples as u64 + inference_flops(&macs, evaluated);
    let f = Figures {
        name,
        wall_s,
        updates_s,
        samples,
        flops,
        peak_rss_mb: peak_rss_mb(),
    };
    Ok((f, trained.summary.test_accuracy))
}

/// One workload's figures as a JSON object.
fn json_row(f: &Figures, threads: usize, peak: f64, accuracy: f64) -> String {
    format!(
        "{{\"workload\":\"{}\",\"threads\":{threads},\"wall_s\":{},\"updates_s\":{},\"samples_per_s\":{},\"gflop\":{},\"gflops\":{},\"peak_fraction\":{},\"peak_rss_mb\":{},\"test_accuracy\":{}}}",
        f.name,
        json_number(f.wall_s),
        json_number(f.updates_s),
        json_number(f.samples as f64 / f.updates_s),
        json_number(f.flops as f64 / 1e9),
        json_number(f.flops as f64 / f.wall_s / 1e9),
        json_number(f.flops as f64 / f.wall_s / peak),
        f.peak_rss_mb.map_or("null".into(), json_number),
        json_number(accuracy)
    )
}

/// The workloads' figures as a table.
fn print_table(rows: &[(Figures, f64)], peak: f64) {
    println!();
    println!(
        "workload   wall s  updates s  samples/s  GFLOP  GFLOP/s  of peak  peak RSS MB  test acc"
    );
    for (f, acc) in rows {
        println!(
            "{:<8} {:>8.2} {:>10.2} {:>10.0} {:>6.0} {:>8.1} {:>7.0}% {:>12} {:>9.4}",
            f.name,
            f.wall_s,
            f.updates_s,
            f.samples as f64 / f.updates_s,
            f.flops as f64 / 1e9,
            f.flops as f64 / f.wall_s / 1e9,
            100.0 * f.flops as f64 / f.wall_s / peak,
            f.peak_rss_mb.map_or("-".into(), |m| format!("{m:.1}")),
            acc
        );
    }
    println!(
        "(wall: the whole run with the evaluations it makes; GFLOP/s over wall time; peak RSS:\n the process's high-water mark during the workload)"
    );
}

/// FLOP/s of the best of five 2048x2048x2048 f32 products on `threads` threads.
fn sgemm_peak(threads: usize) -> f64 {
    let n = 2048;
    let mut rng = Rng::new(1);
    let a = Array2::from_shape_simple_fn((n, n), || rng.normal() as f32);
    let b = Array2::from_shape_simple_fn((n, n), || rng.normal() as f32);
    let mut c = Array2::<f32>::zeros((n, n));
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        gemm(&a.view(), &b.view(), 0.0, &mut c.view_mut(), threads);
        best = best.min(start.elapsed().as_secs_f64());
    }
    2.0 * (n * n * n) as f64 / best
}

/// Resets the kernel's peak-RSS mark of this process (Linux: `clear_refs` 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident set since the last reset, in MB (Linux).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1000.0)
}
