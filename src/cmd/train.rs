//! `backprop train`.

use std::path::PathBuf;
use std::process::ExitCode;

use backprop::data::Mnist;
use backprop::train::{self, EpochReport, Length, Model, Sampling, Schedule, Summary, TrainConfig};
use backprop::{Activation, Error, Init};

use super::json_number;

#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Directory with the four MNIST IDX files (gzip or raw).
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// two-layer (the book's TwoLayerNet), mlp (MultiLayerNet: any depth, batch norm,
    /// dropout), simple-cnn (SimpleConvNet, ch. 7) or deep-cnn (DeepConvNet, ch. 8).
    #[arg(long, default_value = "two-layer")]
    model: String,
    /// A file describing the layers, one a line (conv, pool, affine, relu, ...; see the
    /// README), instead of --model.
    #[arg(long, conflicts_with = "model")]
    layers: Option<PathBuf>,
    /// Hidden units, one number per hidden layer: 50, or 256,256.
    #[arg(long, default_value = "50")]
    hidden: String,
    /// Activation of the hidden layers (mlp): relu, sigmoid or tanh.
    #[arg(long, default_value = "relu")]
    activation: String,
    /// Initial weights: he/relu, xavier/sigmoid, or a standard deviation [default: 0.01 for
    /// two-layer, else he for relu and xavier for sigmoid and tanh].
    #[arg(long, alias = "init-std")]
    init: Option<String>,
    /// Batch normalization after each hidden affine layer (mlp).
    #[arg(long)]
    batch_norm: bool,
    /// Dropout ratio after each hidden activation, in [0, 1) (mlp).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    dropout: f64,
    /// L2 weight decay λ (the book's weight_decay_lambda).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    weight_decay: f64,
    /// sgd, momentum, nesterov, adagrad, rmsprop, adam or adamw.
    #[arg(long, default_value = "sgd")]
    optimizer: String,
    /// Learning rate [default: 0.1 for sgd (the book's ch05), else the book's rate for the
    /// optimizer: 0.01, and 0.001 for adam and adamw].
    #[arg(long, allow_hyphen_values = true)]
    lr: Option<f64>,
    /// constant, cosine, or step:EVERY:GAMMA (times GAMMA every EVERY epochs).
    #[arg(long, default_value = "constant")]
    lr_schedule: String,
    /// Rescale the gradients when their global L2 norm exceeds this.
    #[arg(long, allow_hyphen_values = true)]
    clip_grad_norm: Option<f64>,
    /// Mini-batch updates [default: 10000, unless --epochs].
    #[arg(long, conflicts_with = "epochs")]
    iters: Option<usize>,
    /// Passes over the training set (batches then shuffled: each sample once per epoch).
    #[arg(long)]
    epochs: Option<usize>,
    /// random (with replacement, as the book) or shuffle [default: random with --iters,
    /// shuffle with --epochs].
    #[arg(long)]
    sampling: Option<String>,
    /// Samples per mini-batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Fraction of the training set held out for validation, in [0, 1).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    validation: f64,
    /// Seed of the random generator (same seed, same run, bit for bit).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the final summary as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

impl TrainArgs {
    /// The checked configuration; errors name the flag.
    fn config(&self) -> Result<TrainConfig, Error> {
        let layers = match &self.layers {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let model = match self.model.as_str() {
            _ if layers.is_some() => Model::Described,
            "two-layer" | "twolayer" | "two_layer" => Model::TwoLayer,
            "mlp" => Model::Mlp,
            "simple-cnn" | "simpleconvnet" => Model::SimpleCnn,
            "deep-cnn" | "deepconvnet" => Model::DeepCnn,
            other => {
                return Err(Error::Config(format!(
                    "--model: {other:?} is not two-layer, mlp, simple-cnn or deep-cnn"
                )));
            }
        };
        let hidden = self
            .hidden
            .split(',')
            .map(|h| h.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                Error::Config(format!(
                    "--hidden: {:?} is not a list of unit counts like 256,256",
                    self.hidden
                ))
            })?;
        let sampling = match self.sampling.as_deref() {
            None if self.epochs.is_some() => Sampling::Shuffle,
            None | Some("random") => Sampling::Random,
            Some("shuffle") => Sampling::Shuffle,
            Some(other) => {
                return Err(Error::Config(format!(
                    "--sampling: {other:?} is not random or shuffle"
                )));
            }
        };
        let optimizer = self.optimizer.to_ascii_lowercase();
        let lr = self.lr.unwrap_or(match optimizer.as_str() {
            "sgd" => 0.1,
            "adam" | "adamw" => 0.001,
            _ => 0.01,
        });
        let length = match (self.iters, self.epochs) {
            (_, Some(e)) => Length::Epochs(e),
            (Some(i), None) => Length::Iterations(i),
            (None, None) => Length::Iterations(10_000),
        };
        let cfg = TrainConfig {
            model,
            layers,
            hidden,
            activation: Activation::parse(&self.activation)?,
            init: self.init.as_deref().map(Init::parse).transpose()?,
            batch_norm: self.batch_norm,
            dropout: self.dropout,
            weight_decay: self.weight_decay,
            optimizer,
            lr,
            schedule: Schedule::parse(&self.lr_schedule)?,
            clip_grad_norm: self.clip_grad_norm,
            length,
            batch_size: self.batch_size,
            sampling,
            validation: self.validation,
            seed: self.seed,
            ..TrainConfig::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

pub fn run(args: TrainArgs) -> Result<ExitCode, Error> {
    let cfg = args.config()?;
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
    match &args.layers {
        Some(path) => println!("model: the layers described in {}", path.display()),
        None => println!(
            "model: {}",
            describe(&cfg, data.train.input_size(), data.classes)
        ),
    }
    println!("training: {}", describe_training(&cfg));
    let trained = train::train(&cfg, &data, print_epoch)?;
    let s = &trained.summary;
    let val = s
        .validation_accuracy
        .map_or(String::new(), |v| format!(", validation accuracy {v:.4}"));
    println!(
        "done: {} iterations in {:.2} s, final loss {:.4}, train accuracy {:.4}{val}, test accuracy {:.4}",
        s.iterations, s.elapsed_s, s.final_loss, s.train_accuracy, s.test_accuracy
    );
    if args.json {
        let epoch_s: Vec<f64> = trained.epochs.iter().map(|e| e.epoch_s).collect();
        println!("{}", summary_json(s, &epoch_s));
    }
    Ok(ExitCode::SUCCESS)
}

/// `TwoLayerNet 784-50-10` or `MultiLayerNet 784-256-256-10, relu, He init, batch norm, ...`.
fn describe(cfg: &TrainConfig, input: usize, classes: usize) -> String {
    match cfg.model {
        Model::SimpleCnn => {
            return "SimpleConvNet: conv 30@5x5 -> relu -> max pool 2x2 -> affine 100 -> relu -> affine, init std 0.01".into();
        }
        Model::Described => return "the layers of the --layers file".into(),
        Model::DeepCnn => {
            return "DeepConvNet: 6 conv 3x3 (16, 16, 32, 32, 64, 64), relu, max pool after every second -> \
                    affine 50 -> relu -> dropout 0.5 -> affine -> dropout 0.5, He init"
                .into();
        }
        _ => {}
    }
    let mlp = cfg.mlp(input, classes);
    let sizes: Vec<String> = std::iter::once(input)
        .chain(mlp.hidden.iter().copied())
        .chain([classes])
        .map(|n| n.to_string())
        .collect();
    let name = if cfg.model == Model::TwoLayer {
        "TwoLayerNet"
    } else {
        "MultiLayerNet"
    };
    let mut parts = vec![
        format!("{name} {}", sizes.join("-")),
        format!("{:?}", mlp.activation).to_lowercase(),
    ];
    parts.push(match mlp.init {
        Init::Std(s) => format!("init std {s}"),
        other => format!("{other:?} init"),
    });
    if mlp.batch_norm {
        parts.push("batch norm".into());
    }
    if mlp.dropout > 0.0 {
        parts.push(format!("dropout {}", mlp.dropout));
    }
    if mlp.weight_decay > 0.0 {
        parts.push(format!("weight decay {}", mlp.weight_decay));
    }
    parts.join(", ")
}

/// `sgd lr 0.1, batch 100 drawn at random, 10000 iterations, seed 0`.
fn describe_training(cfg: &TrainConfig) -> String {
    let mut parts = vec![format!("{} lr {}", cfg.optimizer, cfg.lr)];
    match cfg.schedule {
        Schedule::Constant => {}
        Schedule::Cosine => parts.push("cosine schedule".into()),
        Schedule::Step { every, gamma } => parts.push(format!("lr x{gamma} every {every} epochs")),
    }
    if let Some(c) = cfg.clip_grad_norm {
        parts.push(format!("gradient norm clipped at {c}"));
    }
    let sampling = match cfg.sampling {
        Sampling::Random => "drawn at random",
        Sampling::Shuffle => "shuffled",
    };
    parts.push(format!("batch {} {sampling}", cfg.batch_size));
    parts.push(match cfg.length {
        Length::Iterations(i) => format!("{i} iterations"),
        Length::Epochs(e) => format!("{e} epochs"),
    });
    if cfg.validation > 0.0 {
        parts.push(format!("{} held out for validation", cfg.validation));
    }
    parts.push(format!("seed {}", cfg.seed));
    parts.join(", ")
}

fn print_epoch(r: &EpochReport) {
    let val = r
        .validation_accuracy
        .map_or(String::new(), |v| format!("  val acc {v:.4}"));
    println!(
        "epoch {:>3}  iter {:>6}  loss {:.4}  train acc {:.4}{val}  test acc {:.4}  lr {:.3e}  {:>6.2} s/epoch (updates {:.2} s)  {:>7.2} s",
        r.epoch,
        r.iteration,
        r.loss,
        r.train_accuracy,
        r.test_accuracy,
        r.lr,
        r.epoch_s,
        r.train_s,
        r.elapsed_s
    );
}

/// The summary as one line of JSON (flat numbers only, so no JSON library is needed).
fn summary_json(s: &Summary, epoch_s: &[f64]) -> String {
    let mean_epoch = if epoch_s.is_empty() {
        f64::NAN
    } else {
        epoch_s.iter().sum::<f64>() / epoch_s.len() as f64
    };
    format!(
        "{{\"elapsed_s\":{},\"iterations\":{},\"epochs\":{},\"mean_epoch_s\":{},\"train_accuracy\":{},\"validation_accuracy\":{},\"test_accuracy\":{},\"final_loss\":{}}}",
        json_number(s.elapsed_s),
        s.iterations,
        epoch_s.len(),
        json_number(mean_epoch),
        json_number(s.train_accuracy),
        s.validation_accuracy.map_or("null".into(), json_number),
        json_number(s.test_accuracy),
        json_number(s.final_loss)
    )
}
