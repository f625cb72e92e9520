//! `backprop`: train, check and compare the book's networks from the command line.
//! Flags are parsed here (and in `cmd/`) and handed to the library; no arithmetic lives here.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Neural networks with hand-written backprop (Deep Learning from Scratch)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a network on MNIST (defaults: the book's ch05 train_neuralnet.py).
    Train(Box<cmd::train::TrainArgs>),
    /// Compare backprop with the numerical gradient (the book's gradient_check.py).
    Gradcheck(cmd::gradcheck::GradcheckArgs),
    /// Train SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam and AdamW side by side
    /// (the book's optimizer_compare_mnist.py).
    CompareOptimizers(cmd::compare::CompareArgs),
    /// Train with std 0.01, Xavier and He initial weights side by side (the book's
    /// weight_init_compare.py).
    CompareInit(cmd::compare::CompareArgs),
}

fn main() -> ExitCode {
    backprop::alloc::keep_freed_memory();
    let result = match Cli::parse().command {
        Command::Train(args) => cmd::train::run(*args),
        Command::Gradcheck(args) => cmd::gradcheck::run(args),
        Command::CompareOptimizers(args) => {
            cmd::compare::run(args, cmd::compare::Contest::Optimizers)
        }
        Command::CompareInit(args) => cmd::compare::run(args, cmd::compare::Contest::Init),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
