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
    /// What a data set holds: counts, classes, shape, pixel statistics, files left out.
    Data(cmd::data::DataArgs),
    /// Accuracy, loss, per-class accuracy and confusion matrix of a saved model on the test
    /// set.
    Eval(cmd::eval::EvalArgs),
    /// Write a saved model as an ONNX file (for ONNX Runtime, Netron, PyTorch).
    Export(cmd::export::ExportArgs),
    /// The top three classes of digit images (PNG, JPEG, PGM) by a saved model.
    Predict(cmd::predict::PredictArgs),
    /// A page on this machine: draw a digit and watch each layer respond, see the filters,
    /// train and watch the curves live; and the JSON endpoints behind it.
    Serve(cmd::serve::ServeArgs),
    /// Draw a run's learning curves and confusion matrix (SVG and PNG).
    Plot(cmd::plot::PlotArgs),
    /// Time the three fixed workloads (W1 the book's run, W2 an MLP epoch, W3 a SimpleConvNet
    /// epoch) and this machine's sgemm peak.
    Bench(cmd::bench::BenchArgs),
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
        Command::Data(args) => cmd::data::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Export(args) => cmd::export::run(args),
        Command::Predict(args) => cmd::predict::run(args),
        Command::Plot(args) => cmd::plot::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Bench(args) => cmd::bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
