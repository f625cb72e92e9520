//! `backprop eval MODEL`: accuracy, loss, per-class accuracy and the confusion matrix on the
//! test set.

use std::path::PathBuf;
use std::process::ExitCode;

use backprop::Error;
use backprop::checkpoint::{SavedFile, save_arrays};
use backprop::data::Mnist;
use backprop::evaluate::{evaluate, probabilities};

#[derive(clap::Args)]
pub struct EvalArgs {
    /// A model or checkpoint file (.safetensors) saved by `backprop train --save`.
    model: PathBuf,
    /// Directory with the four MNIST IDX files (the test set is used).
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Also write every test image's class probabilities, `probabilities` (N, classes) in
    /// the test set's order, to this safetensors file (to compare with ONNX Runtime or
    /// PyTorch).
    #[arg(long, value_name = "OUT.safetensors")]
    probabilities: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> Result<ExitCode, Error> {
    let saved = SavedFile::read(&args.model)?;
    let net = saved.network()?;
    let data = Mnist::load(&args.data)?;
    let [c, h, w] = saved.info.input;
    if (c, h, w) != (1, data.test.rows(), data.test.cols()) || saved.info.classes != data.classes {
        return Err(Error::file(
            &args.model,
            format!(
                "the model takes {c}x{h}x{w} images of {} classes, the data in {} has 1x{}x{} of {}",
                saved.info.classes,
                args.data.display(),
                data.test.rows(),
                data.test.cols(),
                data.classes
            ),
        ));
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let e = evaluate(&net, &data.test, data.classes, threads);
    if let Some(out) = &args.probabilities {
        let p = probabilities(&net, &data.test, threads);
        save_arrays(out, &[("probabilities", p.view().into_dyn())])?;
    }
    println!("model: {}", args.model.display());
    println!(
        "test set: {} images; accuracy {:.4}, loss {:.4}",
        e.samples, e.accuracy, e.loss
    );
    println!();
    println!("class  samples  accuracy");
    for (k, acc) in e.per_class().iter().enumerate() {
        let n: usize = e.confusion[k].iter().sum();
        println!("{k:>5}  {n:>7}  {acc:>8.4}");
    }
    println!();
    println!("confusion matrix (rows: true class, columns: predicted)");
    print!("      ");
    (0..data.classes).for_each(|p| print!("{p:>6}"));
    println!();
    for (t, row) in e.confusion.iter().enumerate() {
        print!("{t:>6}");
        row.iter().for_each(|n| print!("{n:>6}"));
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
