//! `backprop gradcheck`: the book's gradient_check.py.

use std::path::PathBuf;
use std::process::ExitCode;

use backprop::budget::{Budget, Need};
use backprop::data::Mnist;
use backprop::layers::Targets;
use backprop::train::TrainConfig;
use backprop::{Error, Rng, TwoLayerNet};

#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
pub struct GradcheckArgs {
    /// Directory with the four MNIST IDX files (gzip or raw).
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
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
    /// The memory the check may take (8G, 512M) [default: what the machine has available]:
    /// one estimated to need more is refused before it starts.
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
}

pub fn run(args: GradcheckArgs) -> Result<ExitCode, Error> {
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
    // the book's TwoLayerNet of this width, as train describes it
    let two_layer = TrainConfig {
        hidden: vec![args.hidden],
        ..TrainConfig::default()
    };
    let spec = two_layer.spec(data.train.shape(), data.classes)?;
    // in f64, twice what f32 takes; the numerical gradient adds no more than a copy
    let need = Need::training(&spec, n, 1, 0, 1).times(2);
    let budget = Budget::or_machine(Budget::flag(args.max_memory.as_deref())?);
    budget.check(&need, "this check", "--hidden or --samples")?;
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
