//! `backprop export MODEL --onnx OUT`: a saved model as an ONNX file.

use std::path::PathBuf;
use std::process::ExitCode;

use backprop::Error;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// A model or checkpoint file (.safetensors) saved by `backprop train --save`.
    model: PathBuf,
    /// The ONNX file to write: input `input` (N, C, H, W), outputs `logits` and
    /// `probabilities`, opset 17.
    #[arg(long, value_name = "OUT.onnx")]
    onnx: PathBuf,
}

pub fn run(args: ExportArgs) -> Result<ExitCode, Error> {
    backprop::onnx::export_file(&args.model, &args.onnx)?;
    println!("{} -> {}", args.model.display(), args.onnx.display());
    Ok(ExitCode::SUCCESS)
}
