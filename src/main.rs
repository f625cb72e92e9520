//! `backprop`: train and check the book's networks from the command line.
//! Flags are parsed here and handed to the library; no arithmetic lives in this file.

use std::path::PathBuf;
use std::process::ExitCode;

use backprop::data::Mnist;
use backprop::layers::Targets;
use backprop::train::{self, EpochReport, Summary, TrainConfig};
use backprop::{Error, Rng, TwoLayerNet};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Neural networks with hand-written backprop (Deep Learning from Scratch, ch. 5)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the two-layer network with mini-batch SGD (the book's ch05 train_neuralnet.py).
    Train(TrainArgs),
    /// Compare backprop with the numerical gradient (the book's gradient_check.py).
    Gradcheck(GradcheckArgs),
}

#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
struct TrainArgs {
    /// Directory with the four MNIST IDX files (gzip or raw).
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Hidden units.
    #[arg(long, default_value_t = 50)]
    hidden: usize,
    /// Mini-batch updates.
    #[arg(long, default_value_t = 10_000)]
    iters: usize,
    /// Samples per mini-batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// SGD learning rate.
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Standard deviation of the initial weights.
    #[arg(long, default_value_t = 0.01)]
    init_std: f64,
    /// Seed of the random generator (same seed, same run, bit for bit).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the final summary as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
struct GradcheckArgs {
    /// Directory with the four MNIST IDX files (gzip or raw).
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Fail when any parameter's max relative error exceeds this.
    #[arg(long, default_value_t = 1e-6)]
    tolerance: f64,
    /// Training images to check on.
    #[arg(long, default_value_t = 3)]
    samples: usize,
    /// Hidden units.
    #[arg(long, default_value_t = 50)]
    hidden: usize,
    /// Seed of the initial weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => run_train(args),
        Command::Gradcheck(args) => run_gradcheck(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_train(args: TrainArgs) -> Result<ExitCode, Error> {
    let cfg = TrainConfig {
        hidden: args.hidden,
        iters: args.iters,
        batch_size: args.batch_size,
        lr: args.lr,
        weight_init_std: args.init_std,
        seed: args.seed,
        ..TrainConfig::default()
    };
    cfg.validate()?;
    let data = Mnist::load(&args.data)?;
    println!(
        "data: {} training and {} test images of {}x{}, {} classes ({})",
        data.train.len(),
        data.test.len(),
        data.train.rows(),
        data.train.cols(),
        data.classes,
        args.data.display()
    );
    println!(
        "model: TwoLayerNet {}-{}-{}, SGD lr {}, batch {}, {} iterations, seed {}",
        data.train.input_size(),
        cfg.hidden,
        data.classes,
        cfg.lr,
        cfg.batch_size,
        cfg.iters,
        cfg.seed
    );
    let trained = train::train(&cfg, &data, print_epoch)?;
    let s = &trained.summary;
    println!(
        "done: {} iterations in {:.2} s, final loss {:.4}, train accuracy {:.4}, test accuracy {:.4}",
        s.iterations, s.elapsed_s, s.final_loss, s.train_accuracy, s.test_accuracy
    );
    if args.json {
        println!("{}", summary_json(s));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_epoch(r: &EpochReport) {
    println!(
        "epoch {:>3}  iter {:>6}  loss {:.4}  train acc {:.4}  test acc {:.4}  {:>7.2} s",
        r.epoch, r.iteration, r.loss, r.train_accuracy, r.test_accuracy, r.elapsed_s
    );
}

/// The summary as one line of JSON (flat numbers only, so no JSON library is needed).
fn summary_json(s: &Summary) -> String {
    format!(
        "{{\"elapsed_s\":{},\"iterations\":{},\"train_accuracy\":{},\"test_accuracy\":{},\"final_loss\":{}}}",
        json_number(s.elapsed_s),
        s.iterations,
        json_number(s.train_accuracy),
        json_number(s.test_accuracy),
        json_number(s.final_loss)
    )
}

/// JSON has no NaN or infinity: those become null.
fn json_number(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

fn run_gradcheck(args: GradcheckArgs) -> Result<ExitCode, Error> {
    if args.samples == 0 || args.hidden == 0 {
        return Err(Error::Config(
            "--samples and --hidden must be at least 1".into(),
        ));
    }
    if !(args.tolerance.is_finite() && args.tolerance > 0.0) {
        return Err(Error::Config(
            "--tolerance must be a positive number".into(),
        ));
    }
    let data = Mnist::load(&args.data)?;
    let n = args.samples.min(data.train.len());
    let (x, labels) = data.train.batch_range::<f64>(0..n);
    let mut rng = Rng::new(args.seed);
    let mut net = TwoLayerNet::new::<f64>(
        data.train.input_size(),
        args.hidden,
        data.classes,
        0.01,
        &mut rng,
    );
    println!(
        "gradient check: TwoLayerNet {}-{}-{} in f64 on the first {n} training images, h = {:e}",
        data.train.input_size(),
        args.hidden,
        data.classes,
        backprop::gradcheck::DEFAULT_H
    );
    let rows = net.gradient_check(
        &x.into_dyn(),
        Targets::Labels(&labels),
        backprop::gradcheck::DEFAULT_H,
    );
    println!(
        "{:<10} {:>12} {:>14} {:>14} {:>14}",
        "parameter", "shape", "mean abs diff", "max abs diff", "max rel err"
    );
    for row in &rows {
        println!("{row}");
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.max_rel_err > args.tolerance || r.max_rel_err.is_nan())
        .map(|r| r.name.as_str())
        .collect();
    if failed.is_empty() {
        println!("ok: every relative error is below {:e}", args.tolerance);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: relative error above {:e} for {}",
            args.tolerance,
            failed.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}
