//! `backprop eval MODEL`: accuracy, loss, per-class accuracy and the confusion matrix on the
//! test set.

use std::path::PathBuf;
use std::process::ExitCode;

use backprop::Error;
use backprop::checkpoint::{SavedFile, save_arrays};
use backprop::data::Mnist;
use backprop::evaluate::{Evaluation, evaluate, evaluate_with_probabilities};

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
    let data = Mnist::load_for_input(&args.data, saved.info.input)?;
    let [c, h, w] = saved.info.input;
    let (dc, dh, dw) = data.test.shape();
    if (c, h, w) != (dc, dh, dw) || saved.info.classes != data.classes {
        return Err(Error::file(
            &args.model,
            format!(
                "the model takes {c}x{h}x{w} images of {} classes, the data in {} has {dc}x{dh}x{dw} of {}",
                saved.info.classes,
                args.data.display(),
                data.classes
            ),
        ));
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let e = match &args.probabilities {
        None => evaluate(&net, &data.test, data.classes, threads),
        Some(out) => {
            let (e, p) = evaluate_with_probabilities(&net, &data.test, data.classes, threads);
            save_arrays(out, &[("probabilities", p.view().into_dyn())])?;
            e
        }
    };
    println!("model: {}", args.model.display());
    println!(
        "test set: {} images; accuracy {:.4}, loss {:.4}",
        e.samples, e.accuracy, e.loss
    );
    let names = if saved.info.class_names.is_empty() {
        data.class_names.clone()
    } else {
        saved.info.class_names.clone()
    };
    print_tables(&e, &names);
    Ok(ExitCode::SUCCESS)
}

/// The per-class accuracy and the confusion matrix, classes by name (columns by index).
fn print_tables(e: &Evaluation, names: &[String]) {
    let width = names.iter().map(|n| n.len()).max().unwrap_or(1).max(5);
    println!();
    println!("{:>width$}  samples  accuracy", "class");
    for (k, acc) in e.per_class().iter().enumerate() {
        let n: usize = e.confusion[k].iter().sum();
        println!("{:>width$}  {n:>7}  {acc:>8.4}", names[k]);
    }
    println!();
    println!("confusion matrix (rows: true class, columns: predicted, by index)");
    let label = |t: usize| match &names[t] {
        name if *name == t.to_string() => name.clone(),
        name => format!("{name} {t}"),
    };
    let width = width + 4;
    print!("{:>width$}", "");
    (0..names.len()).for_each(|p| print!("{p:>6}"));
    println!();
    for (t, row) in e.confusion.iter().enumerate() {
        print!("{:>width$}", label(t));
        row.iter().for_each(|n| print!("{n:>6}"));
        println!();
    }
}
