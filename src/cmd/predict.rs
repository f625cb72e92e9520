//! `backprop predict MODEL IMAGE...`: the top three classes of each image.

use std::path::PathBuf;
use std::process::ExitCode;

use backprop::Error;
use backprop::checkpoint::SavedFile;
use backprop::image::model_input;
use backprop::layers::softmax;
use ndarray::{Array2, Ix2};

#[derive(clap::Args)]
pub struct PredictArgs {
    /// A model or checkpoint file (.safetensors) saved by `backprop train --save`.
    model: PathBuf,
    /// PNG, JPEG or PGM images, any size: for a digit model one digit each, dark on light or
    /// light on dark (prepared as MNIST's digits); for other classes, resized to the model's
    /// input as its data set's images were.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(args: PredictArgs) -> Result<ExitCode, Error> {
    let saved = SavedFile::read(&args.model)?;
    let net = saved.network()?;
    let [c, h, w] = saved.info.input;
    // digits are prepared as MNIST's were; other classes as their data set's images were
    let digits = backprop::data::classes::are_digits(&saved.info.class_names);
    // all images first: a bad file is reported before any prediction
    let mut rows = Vec::with_capacity(args.images.len() * c * h * w);
    for path in &args.images {
        let bytes = backprop::limits::read_regular(path)?;
        rows.extend(model_input(path, &bytes, saved.info.input, digits)?);
    }
    let x = Array2::from_shape_vec((args.images.len(), c * h * w), rows).expect("one row an image");
    let scores = net
        .predict(x)
        .into_dimensionality::<Ix2>()
        .expect("the network gives (N, classes)");
    let p = softmax(&scores.view());
    for (path, probs) in args.images.iter().zip(p.rows()) {
        let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top: Vec<String> = ranked
            .iter()
            .take(3)
            .map(|&(k, q)| format!("{} ({:.1}%)", saved.info.class_name(k), 100.0 * q))
            .collect();
        println!("{}: {}", path.display(), top.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
