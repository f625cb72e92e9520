//! `backprop compare-optimizers` and `backprop compare-init`.

use std::path::PathBuf;
use std::process::ExitCode;

use backprop::Error;
use backprop::budget::Budget;
use backprop::compare::{self, CompareConfig, Outcome};
use backprop::data::Mnist;

#[derive(clap::Args)]
pub struct CompareArgs {
    /// Directory with the four MNIST IDX files (gzip or raw).
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Mini-batch updates of each network.
    #[arg(long, default_value_t = 2000)]
    iters: usize,
    /// Samples per mini-batch.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Print the losses every this many iterations.
    #[arg(long, default_value_t = 100)]
    every: usize,
    /// Seed of the initial weights and the batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The memory the comparison may take (8G, 512M) [default: what the machine has
    /// available]: one estimated to need more is refused before it starts.
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
}

/// Which comparison.
pub enum Contest {
    Optimizers,
    Init,
}

pub fn run(args: CompareArgs, contest: Contest) -> Result<ExitCode, Error> {
    let data = Mnist::load(&args.data)?;
    let cfg = CompareConfig {
        iters: args.iters,
        batch_size: args.batch_size,
        every: args.every,
        seed: args.seed,
        max_memory: Budget::flag(args.max_memory.as_deref())?,
        ..CompareConfig::default()
    };
    let sizes: Vec<String> = cfg.hidden.iter().map(|h| h.to_string()).collect();
    println!(
        "MultiLayerNet {}-{}-{} relu, batch {}, {} iterations, the same batches for all; loss of the current batch:",
        data.train.input_size(),
        sizes.join("-"),
        data.classes,
        cfg.batch_size,
        cfg.iters
    );
    let mut header = false;
    let print = |i: usize, losses: &[(String, f64)]| {
        if !header {
            let names: Vec<String> = losses.iter().map(|(n, _)| format!("{n:>10}")).collect();
            println!("{:>6} {}", "iter", names.join(" "));
            header = true;
        }
        let values: Vec<String> = losses.iter().map(|(_, l)| format!("{l:>10.4}")).collect();
        println!("{:>6} {}", i, values.join(" "));
    };
    let outcomes = match contest {
        Contest::Optimizers => compare::compare_optimizers(&data, &cfg, print)?,
        Contest::Init => compare::compare_init(&data, &cfg, print)?,
    };
    print_table(&outcomes, cfg.every);
    Ok(ExitCode::SUCCESS)
}

/// Final table, best first: mean loss of the last `every` iterations and test accuracy.
fn print_table(outcomes: &[Outcome], every: usize) {
    let mut rows: Vec<&Outcome> = outcomes.iter().collect();
    rows.sort_by(|a, b| a.final_loss(every).total_cmp(&b.final_loss(every)));
    println!(
        "\n{:<10} {:>22} {:>14}",
        "",
        format!("mean loss, last {every}"),
        "test accuracy"
    );
    for o in rows {
        println!(
            "{:<10} {:>22.4} {:>14.4}",
            o.name,
            o.final_loss(every),
            o.test_accuracy
        );
    }
}
