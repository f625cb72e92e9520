//! `backprop train`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use backprop::budget::Budget;
use backprop::checkpoint::{self, ModelInfo, SavedFile, save_checkpoint, write_atomic};
use backprop::data::Mnist;
use backprop::data::folder::FolderOptions;
use backprop::evaluate::evaluate;
use backprop::train::{
    self, EpochReport, Length, Model, Observer, Progress, Sampling, Schedule, Summary, TrainConfig,
    TrainState,
};
use backprop::{Activation, Error, Init};
use serde::{Deserialize, Serialize};

use super::serve::Server;
use super::serve::live::{Live, State};
use super::{json_number, metrics, plot_run};

/// The settings of a run: flags, or keys of a `--config` TOML file (a key is its flag without
/// the dashes: `batch-size = 100`); a flag overrides the file.
#[derive(clap::Args, Clone, Debug, Default, Serialize, Deserialize)]
#[command(allow_negative_numbers = true)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrainArgs {
    /// The data: a directory of the four IDX files (gzip or raw), `fashion` for
    /// Fashion-MNIST, or a folder of class subfolders of images [default: data/mnist].
    #[arg(long)]
    data: Option<PathBuf>,
    /// An image folder's images resized to N x N (or HxW) [default: all one size].
    #[arg(long, value_name = "N|HxW")]
    image_size: Option<String>,
    /// An image folder's images as 1 (grey) or 3 (RGB) channels [default: 3 if any has
    /// colour].
    #[arg(long)]
    channels: Option<usize>,
    /// two-layer (the book's TwoLayerNet), mlp (MultiLayerNet: any depth, batch norm,
    /// dropout), simple-cnn (SimpleConvNet, ch. 7) or deep-cnn (DeepConvNet, ch. 8)
    /// [default: two-layer].
    #[arg(long)]
    model: Option<String>,
    /// A file describing the layers, one a line (conv, pool, affine, relu, ...; see the
    /// README), instead of --model.
    #[arg(long, conflicts_with = "model")]
    layers: Option<PathBuf>,
    /// The text of a layer description (what --layers reads; set in saved configurations).
    #[arg(skip)]
    layer_description: Option<String>,
    /// Hidden units, one number per hidden layer: 50, or 256,256 [default: 50].
    #[arg(long)]
    hidden: Option<String>,
    /// Activation of the hidden layers (mlp): relu, sigmoid or tanh [default: relu].
    #[arg(long)]
    activation: Option<String>,
    /// Initial weights: he/relu, xavier/sigmoid, or a standard deviation [default: 0.01 for
    /// two-layer, else he for relu and xavier for sigmoid and tanh].
    #[arg(long, alias = "init-std")]
    init: Option<String>,
    /// Batch normalization after each hidden affine layer (mlp).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    batch_norm: Option<bool>,
    /// Dropout ratio after each hidden activation, in [0, 1) (mlp) [default: 0].
    #[arg(long, allow_hyphen_values = true)]
    dropout: Option<f64>,
    /// L2 weight decay λ (the book's weight_decay_lambda) [default: 0].
    #[arg(long, allow_hyphen_values = true)]
    weight_decay: Option<f64>,
    /// sgd, momentum, nesterov (the book's), nesterov-torch (PyTorch's), adagrad, rmsprop,
    /// adam or adamw [default: sgd].
    #[arg(long)]
    optimizer: Option<String>,
    /// Learning rate [default: 0.1 for sgd (the book's ch05), else the book's rate for the
    /// optimizer: 0.01, and 0.001 for adam and adamw].
    #[arg(long, allow_hyphen_values = true)]
    lr: Option<f64>,
    /// constant, cosine, or step:EVERY:GAMMA (times GAMMA every EVERY epochs) [default:
    /// constant].
    #[arg(long)]
    lr_schedule: Option<String>,
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
    /// Samples per mini-batch [default: 100].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Fraction of the training set held out for validation, in [0, 1) [default: 0].
    #[arg(long, allow_hyphen_values = true)]
    validation: Option<f64>,
    /// Seed of the random generator (same seed, same run, bit for bit) [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Threads for the convolutions, large products and evaluation; results do not depend
    /// on it [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Run the book's code alone: every layer's plain algorithm (im2col, ndarray's products,
    /// the book's pooling windows), no fast kernel and no network rewrite. Slower; the same
    /// results to rounding.
    #[arg(long)]
    #[serde(default)]
    reference: bool,
    /// The memory the run may take (8G, 512M) [default: what the machine has available]:
    /// a run estimated to need more is refused before it starts.
    #[arg(long, value_name = "SIZE")]
    #[serde(skip)]
    max_memory: Option<String>,

    /// A TOML file of these settings (`model = "simple-cnn"`, `epochs = 20`, ...); flags
    /// given as well override it.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Write checkpoints into DIR at each epoch's end and at the end (last.safetensors, and
    /// best.safetensors by validation, else test, accuracy); DIR is then the run directory.
    #[arg(long, value_name = "DIR")]
    #[serde(skip)]
    save: Option<PathBuf>,
    /// Go on with the run a checkpoint saved (its settings; flags given override them, and a
    /// run resumed unchanged ends bit-identical to one never interrupted).
    #[arg(long, value_name = "CHECKPOINT")]
    #[serde(skip)]
    resume: Option<PathBuf>,
    /// The run directory: metrics.csv, config.toml, confusion.csv, plots [default: the
    /// --save directory, the resumed checkpoint's, or runs/<date>-<time>].
    #[arg(long, value_name = "DIR")]
    #[serde(skip)]
    out: Option<PathBuf>,
    /// Draw the learning curves and the confusion matrix (SVG and PNG) at the end.
    #[arg(long)]
    #[serde(skip)]
    plot: bool,
    /// No progress bar or epoch lines: only the summary.
    #[arg(long, short)]
    #[serde(skip)]
    quiet: bool,
    /// Print the final summary as one JSON object on the last line.
    #[arg(long)]
    #[serde(skip)]
    json: bool,
    /// Serve the page of `backprop serve` on this machine while training: the curves live
    /// in its Train tab (at http://127.0.0.1:PORT, 8080 when no PORT is given), and after the
    /// run its checkpoint in the Draw tab, until Ctrl-C.
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "8080")]
    #[serde(skip)]
    serve: Option<u16>,
}

impl TrainArgs {
    /// The settings of `file` (TOML), each overridden by the same one in `self` if given.
    fn over(self, file: TrainArgs) -> TrainArgs {
        // the layer file or model given as a flag replaces the file's
        let file = if self.layers.is_some() || self.model.is_some() {
            TrainArgs {
                layer_description: None,
                layers: None,
                model: None,
                ..file
            }
        } else {
            file
        };
        TrainArgs {
            data: self.data.or(file.data),
            image_size: self.image_size.or(file.image_size),
            channels: self.channels.or(file.channels),
            model: self.model.or(file.model),
            layers: self.layers.or(file.layers),
            layer_description: self.layer_description.or(file.layer_description),
            hidden: self.hidden.or(file.hidden),
            activation: self.activation.or(file.activation),
            init: self.init.or(file.init),
            batch_norm: self.batch_norm.or(file.batch_norm),
            dropout: self.dropout.or(file.dropout),
            weight_decay: self.weight_decay.or(file.weight_decay),
            optimizer: self.optimizer.or(file.optimizer),
            lr: self.lr.or(file.lr),
            lr_schedule: self.lr_schedule.or(file.lr_schedule),
            clip_grad_norm: self.clip_grad_norm.or(file.clip_grad_norm),
            iters: self.iters.or(file.iters),
            epochs: self.epochs.or(file.epochs),
            sampling: self.sampling.or(file.sampling),
            batch_size: self.batch_size.or(file.batch_size),
            validation: self.validation.or(file.validation),
            seed: self.seed.or(file.seed),
            threads: self.threads.or(file.threads),
            reference: self.reference || file.reference,
            ..self
        }
    }

    /// Reads a settings file (TOML); errors name the file and the key.
    fn from_toml(path: &Path, text: &str) -> Result<TrainArgs, Error> {
        toml::from_str(text).map_err(|e| {
            Error::file(
                path,
                format!(
                    "not a valid settings file: {}",
                    e.message().trim_end_matches('\n')
                ),
            )
        })
    }

    /// The model and, for a described stack, its layer description.
    fn model(&self) -> Result<(Model, Option<String>), Error> {
        let layers = match (&self.layer_description, &self.layers) {
            (Some(text), _) => Some(text.clone()),
            (None, Some(path)) => Some(backprop::limits::read_text(path)?),
            (None, None) => None,
        };
        let model = match self.model.as_deref().unwrap_or("two-layer") {
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
        Ok((model, layers))
    }

    /// --hidden as unit counts.
    fn hidden(&self) -> Result<Vec<usize>, Error> {
        let hidden_text = self.hidden.as_deref().unwrap_or("50");
        hidden_text
            .split(',')
            .map(|h| h.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                Error::Config(format!(
                    "--hidden: {hidden_text:?} is not a list of unit counts like 256,256"
                ))
            })
    }

    /// The checked configuration; errors name the flag.
    fn config(&self) -> Result<TrainConfig, Error> {
        let (model, layers) = self.model()?;
        let hidden = self.hidden()?;
        if self.iters.is_some() && self.epochs.is_some() {
            return Err(Error::Config(
                "--iters and --epochs: give one of them".into(),
            ));
        }
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
        let optimizer = self
            .optimizer
            .as_deref()
            .unwrap_or("sgd")
            .to_ascii_lowercase();
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
        let defaults = TrainConfig::default();
        let cfg = TrainConfig {
            model,
            layers,
            hidden,
            activation: Activation::parse(self.activation.as_deref().unwrap_or("relu"))?,
            init: self.init.as_deref().map(Init::parse).transpose()?,
            batch_norm: self.batch_norm.unwrap_or(false),
            dropout: self.dropout.unwrap_or(0.0),
            weight_decay: self.weight_decay.unwrap_or(0.0),
            optimizer,
            lr,
            schedule: Schedule::parse(self.lr_schedule.as_deref().unwrap_or("constant"))?,
            clip_grad_norm: self.clip_grad_norm,
            length,
            batch_size: self.batch_size.unwrap_or(100),
            sampling,
            validation: self.validation.unwrap_or(0.0),
            seed: self.seed.unwrap_or(0),
            threads: self.threads.unwrap_or(defaults.threads),
            reference: self.reference,
            max_memory: Budget::flag(self.max_memory.as_deref())?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// These settings with every default written out (what `config.toml` and checkpoints
    /// keep), from the configuration they gave.
    fn resolved(&self, cfg: &TrainConfig) -> TrainArgs {
        let (iters, epochs) = match cfg.length {
            Length::Iterations(i) => (Some(i), None),
            Length::Epochs(e) => (None, Some(e)),
        };
        TrainArgs {
            data: Some(self.data_dir()),
            image_size: self.image_size.clone(),
            channels: self.channels,
            model: Some(
                match cfg.model {
                    Model::TwoLayer => "two-layer",
                    Model::Mlp => "mlp",
                    Model::SimpleCnn => "simple-cnn",
                    Model::DeepCnn => "deep-cnn",
                    Model::Described => "described",
                }
                .into(),
            ),
            layers: None,
            layer_description: cfg.layers.clone(),
            hidden: Some(
                cfg.hidden
                    .iter()
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            activation: Some(format!("{:?}", cfg.activation).to_lowercase()),
            init: self.init.clone(),
            batch_norm: Some(cfg.batch_norm),
            dropout: Some(cfg.dropout),
            weight_decay: Some(cfg.weight_decay),
            optimizer: Some(cfg.optimizer.clone()),
            lr: Some(cfg.lr),
            lr_schedule: Some(match cfg.schedule {
                Schedule::Constant => "constant".into(),
                Schedule::Cosine => "cosine".into(),
                Schedule::Step { every, gamma } => format!("step:{every}:{gamma}"),
            }),
            clip_grad_norm: cfg.clip_grad_norm,
            iters,
            epochs,
            sampling: Some(
                match cfg.sampling {
                    Sampling::Random => "random",
                    Sampling::Shuffle => "shuffle",
                }
                .into(),
            ),
            batch_size: Some(cfg.batch_size),
            validation: Some(cfg.validation),
            seed: Some(cfg.seed),
            threads: None, // the machine's: results do not depend on it
            reference: cfg.reference,
            ..TrainArgs::default()
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(|| "data/mnist".into())
    }

    /// How an image folder's images are prepared (`--image-size`, `--channels`).
    fn folder_options(&self) -> Result<FolderOptions, Error> {
        let size = self
            .image_size
            .as_deref()
            .map(|s| super::data::parse_size(s, "--image-size"))
            .transpose()?;
        Ok(FolderOptions {
            size,
            channels: self.channels,
        })
    }
}

/// The settings: flags over the `--config` file over the resumed checkpoint's.
fn settings(args: &TrainArgs) -> Result<(TrainArgs, Option<SavedFile>), Error> {
    let mut merged = args.clone();
    if let Some(path) = &args.config {
        let text = backprop::limits::read_text(path)?;
        merged = merged.over(TrainArgs::from_toml(path, &text)?);
    }
    let resumed = match &args.resume {
        None => None,
        Some(path) => {
            let saved = SavedFile::read(path)?;
            let text = saved
                .config
                .clone()
                .filter(|_| saved.is_checkpoint())
                .ok_or_else(|| {
                    Error::file(
                        path,
                        "a model file, not a checkpoint: it cannot resume a run",
                    )
                })?;
            merged = merged.over(TrainArgs::from_toml(path, &text)?);
            Some(saved)
        }
    };
    Ok((merged, resumed))
}

pub fn run(args: TrainArgs) -> Result<ExitCode, Error> {
    let Some(port) = args.serve else {
        return run_with(args, None, stop_on_ctrl_c());
    };
    let live = Arc::new(Live::default());
    let data = args.data.clone().unwrap_or_else(|| "data/mnist".into());
    let server = Server::start("127.0.0.1", port, Default::default(), data, live.clone())?;
    println!("serving {} (the Train tab follows this run)", server.url);
    live.begin("command line").map_err(Error::Config)?;
    let stop = stop_on_ctrl_c();
    let code = run_with(args, Some(live), stop.clone())?;
    if !stop.load(Ordering::SeqCst) {
        println!("still serving {}: Ctrl-C to quit", server.url);
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    Ok(code)
}

/// Settings the page posts: the keys of a `--config` file, as JSON. The run trains on the
/// server's data, reads no file of the server's (no `layers` path: `layer-description`
/// gives the layers), and keeps its checkpoints in a new run directory.
pub fn page_settings(json: &[u8], data: &Path) -> Result<TrainArgs, Error> {
    let mut args: TrainArgs = serde_json::from_slice(json)
        .map_err(|e| Error::Config(format!("the run's settings: {e}")))?;
    if args.layers.is_some() || args.data.is_some() {
        return Err(Error::Config(
            "the run's settings: `layers` and `data` are the server's to choose (give the layers as `layer-description`)".into(),
        ));
    }
    args.data = Some(data.to_path_buf());
    args.config()?;
    args.save = Some(PathBuf::from("runs").join(timestamp()));
    args.quiet = true;
    Ok(args)
}

/// Trains as the page asked ([`page_settings`]), publishing to `live`, which the caller
/// has begun; the page's Stop ends it.
pub fn run_live(args: TrainArgs, live: Arc<Live>) -> Result<ExitCode, Error> {
    run_with(args, Some(live), Arc::new(AtomicBool::new(false)))
}

/// A run, told to `live` as it goes and how it ended; `stop` (Ctrl-C's flag) or the
/// page's Stop ends it after the update in hand.
fn run_with(
    args: TrainArgs,
    live: Option<Arc<Live>>,
    stop: Arc<AtomicBool>,
) -> Result<ExitCode, Error> {
    let result = train_and_report(args, live.clone(), stop);
    if let (Some(live), Err(e)) = (&live, &result) {
        let state = match e {
            Error::Diverged { .. } => State::Diverged,
            _ => State::Failed,
        };
        let kept = live.read(|r| r.status.checkpoint.clone());
        let kept = kept.map_or(String::new(), |c| {
            format!("; the last epoch's checkpoint is kept: {}", c.display())
        });
        live.end(state, format!("{e}{kept}"), None);
    }
    result
}

fn train_and_report(
    args: TrainArgs,
    live: Option<Arc<Live>>,
    stop: Arc<AtomicBool>,
) -> Result<ExitCode, Error> {
    let (settings, resumed) = settings(&args)?;
    let cfg = settings.config()?;
    let data_dir = settings.data_dir();
    let data = Mnist::load_with(&data_dir, &settings.folder_options()?)?;
    super::data::report_skipped(&data);
    let say = |line: String| {
        if !args.quiet {
            println!("{line}");
        }
    };
    announce(&cfg, &data, &data_dir, &say);
    let (save_dir, run_dir) = directories(&args)?;
    let resolved = settings.resolved(&cfg);
    let config_toml = toml::to_string(&resolved).expect("plain settings serialize");
    write_atomic(&run_dir.join("config.toml"), config_toml.as_bytes())?;
    let from = resumed.as_ref().map_or(0, |s| s.iteration());
    let metrics = metrics::Writer::start(&run_dir.join("metrics.csv"), from)?;
    if let Some(saved) = &resumed {
        say(format!(
            "resuming: {} at update {}",
            saved.path.display(),
            saved.iteration()
        ));
    }
    let (c, h, w) = data.train.shape();
    let input = [c, h, w];
    if let Some(live) = &live {
        let model = describe(&cfg, data.train.input_size(), data.classes);
        live.describe(
            format!("{model}; {}", describe_training(&cfg)),
            run_dir.clone(),
        );
    }
    let mut observer = CliObserver {
        quiet: args.quiet,
        bar: (!args.quiet && std::io::stderr().is_terminal()).then(Bar::new),
        stop,
        live: live.clone(),
        metrics,
        save_dir: save_dir.clone(),
        input,
        classes: data.classes,
        class_names: data.class_names.clone(),
        config: config_toml.clone(),
    };
    let restore = |state: &mut train::TrainState| match &resumed {
        Some(saved) => saved.restore(state),
        None => Ok(()),
    };
    let run = train::train_with(&cfg, &data, restore, &mut observer)?;
    let mut state = run.state;
    let info =
        ModelInfo::of(&state.network, input, data.classes).with_class_names(&data.class_names);
    let last = save_dir.as_ref().map(|dir| dir.join("last.safetensors"));
    if let Some(last) = &last {
        save_checkpoint(last, &mut state, &info, &config_toml)?;
    }
    let Some(s) = run.summary else {
        let how = match &last {
            Some(last) => format!(
                "saved {}; resume with: backprop train --resume {}",
                last.display(),
                last.display()
            ),
            None => "nothing saved (run with --save DIR to keep checkpoints)".into(),
        };
        eprintln!("stopped at update {} of the run: {how}", state.iteration);
        if let Some(live) = &live {
            let said = format!("stopped at update {}", state.iteration);
            live.end(State::Stopped, said, last.clone());
        }
        return Ok(ExitCode::from(130));
    };
    // the test set's confusion matrix, for `backprop eval` figures and the plot
    let eval = evaluate(&state.network, &data.test, data.classes, cfg.threads);
    let confusion = run_dir.join("confusion.csv");
    metrics::write_confusion(&confusion, &eval.confusion, &data.class_names)?;
    let val = s
        .validation_accuracy
        .map_or(String::new(), |v| format!(", validation accuracy {v:.4}"));
    println!(
        "done: {} iterations in {:.2} s, final loss {:.4}, train accuracy {:.4}{val}, test accuracy {:.4}",
        s.iterations, s.elapsed_s, s.final_loss, s.train_accuracy, s.test_accuracy
    );
    if let Some(live) = &live {
        let said = format!(
            "finished: {} updates in {:.1} s, test accuracy {:.4}",
            s.iterations, s.elapsed_s, s.test_accuracy
        );
        live.end(State::Finished, said, last.clone());
    }
    if args.plot {
        for file in plot_run(&run_dir)? {
            say(format!("plot: {}", file.display()));
        }
    }
    say(format!("run directory: {}", run_dir.display()));
    if args.json {
        println!("{}", summary_json(&s, &run.epochs));
    }
    Ok(ExitCode::SUCCESS)
}

/// `: T-shirt/top, Trouser, ...` for named classes; nothing for the digits.
fn named_classes(names: &[String]) -> String {
    if backprop::data::classes::are_digits(names) {
        String::new()
    } else {
        format!(": {}", names.join(", "))
    }
}

/// The run's first lines: the data, the model, the training.
fn announce(cfg: &TrainConfig, data: &Mnist, data_dir: &Path, say: &dyn Fn(String)) {
    say(format!(
        "data: {} training and {} test images of {}, {} classes{} ({})",
        data.train.len(),
        data.test.len(),
        super::data::shape_text(data.train.shape()),
        data.classes,
        named_classes(&data.class_names),
        data_dir.display()
    ));
    say(format!(
        "model: {}",
        describe(cfg, data.train.input_size(), data.classes)
    ));
    say(format!("training: {}", describe_training(cfg)));
}

/// Where checkpoints go (--save, or beside the resumed checkpoint) and the run directory
/// (--out, else that one, else a new one under runs/), both made.
fn directories(args: &TrainArgs) -> Result<(Option<PathBuf>, PathBuf), Error> {
    let save_dir = args.save.clone().or_else(|| {
        args.resume
            .as_ref()
            .map(|p| p.parent().map_or(PathBuf::from("."), Path::to_path_buf))
    });
    let run_dir = args
        .out
        .clone()
        .or_else(|| save_dir.clone())
        .unwrap_or_else(|| PathBuf::from("runs").join(timestamp()));
    for dir in std::iter::once(&run_dir).chain(save_dir.as_ref()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        checkpoint::remove_stale_temporaries(dir);
    }
    Ok((save_dir, run_dir))
}

/// A flag that Ctrl-C sets: the run stops after the update in hand and saves.
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // NOTE: a second Ctrl-C ends the process at once (nothing half-written: every file
    // is written atomically).
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without saving");
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: stopping after this update");
    });
    stop
}

/// What the command line does at each update and epoch.
struct CliObserver {
    quiet: bool,
    bar: Option<Bar>,
    stop: Arc<AtomicBool>,
    /// The page's view of the run, when served.
    live: Option<Arc<Live>>,
    metrics: metrics::Writer,
    save_dir: Option<PathBuf>,
    input: [usize; 3],
    classes: usize,
    class_names: Vec<String>,
    config: String,
}

impl Observer for CliObserver {
    fn iteration(&mut self, p: &Progress) {
        if let Some(bar) = &mut self.bar {
            bar.draw(p);
        }
        if let Some(live) = &self.live {
            live.progress(p);
        }
    }

    fn epoch(&mut self, r: &EpochReport, state: &mut TrainState) -> Result<(), Error> {
        if let Some(bar) = &mut self.bar {
            bar.clear();
        }
        if !self.quiet {
            print_epoch(r);
        }
        self.metrics.row(r)?;
        if let Some(dir) = &self.save_dir {
            let info = ModelInfo::of(&state.network, self.input, self.classes)
                .with_class_names(&self.class_names);
            let elapsed = std::mem::replace(&mut state.elapsed_s, r.elapsed_s);
            save_checkpoint(&dir.join("last.safetensors"), state, &info, &self.config)?;
            let watched = r.validation_accuracy.unwrap_or(r.test_accuracy);
            if watched > state.best_accuracy {
                save_checkpoint(&dir.join("best.safetensors"), state, &info, &self.config)?;
            }
            state.elapsed_s = elapsed;
        }
        if let Some(live) = &self.live {
            let saved = self.save_dir.as_ref().map(|d| d.join("last.safetensors"));
            live.epoch(r, saved);
        }
        Ok(())
    }

    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.live.as_ref().is_some_and(|l| l.stop_requested())
    }
}

/// A one-line progress bar on the terminal (standard error), redrawn at most 10 times a
/// second: `epoch 3/20 [=====>    ] 312/600  95.2 it/s  loss 0.1234  ETA 3s`.
struct Bar {
    last: Option<Instant>,
    epoch_start: (usize, Instant),
}

impl Bar {
    fn new() -> Bar {
        Bar {
            last: None,
            epoch_start: (0, Instant::now()),
        }
    }

    fn draw(&mut self, p: &Progress) {
        if self.epoch_start.0 != p.epoch {
            self.epoch_start = (p.epoch, Instant::now());
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t).as_millis() < 100)
            && p.within != p.per_epoch
        {
            return;
        }
        self.last = Some(now);
        // the epoch's clock starts at its first update: rates from the second one on
        let secs = now.duration_since(self.epoch_start.1).as_secs_f64();
        let speed = if p.within > 1 && secs > 0.0 {
            let rate = (p.within - 1) as f64 / secs;
            let eta = (p.per_epoch - p.within) as f64 / rate;
            format!("{rate:.1} it/s  ETA {eta:.0}s")
        } else {
            "-- it/s".into()
        };
        let epochs = p.total.div_ceil(p.per_epoch);
        let width = 30;
        let filled = width * p.within / p.per_epoch.max(1);
        let bar: String = (0..width)
            .map(|i| {
                if i < filled {
                    '='
                } else if i == filled {
                    '>'
                } else {
                    ' '
                }
            })
            .collect();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2Kepoch {}/{epochs} [{bar}] {}/{}  loss {:.4}  {speed}",
            p.epoch, p.within, p.per_epoch, p.loss
        );
        let _ = err.flush();
    }

    fn clear(&mut self) {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}

/// `YYYYmmdd-HHMMSS` in UTC, for run directories.
fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // days since 1970-01-01 to a civil date (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
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
    if cfg.reference {
        parts.push("the book's code alone (--reference)".into());
    }
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
fn summary_json(s: &Summary, epochs: &[EpochReport]) -> String {
    let mean = |f: fn(&EpochReport) -> f64| {
        if epochs.is_empty() {
            f64::NAN
        } else {
            epochs.iter().map(f).sum::<f64>() / epochs.len() as f64
        }
    };
    let (mean_epoch, mean_train) = (mean(|e| e.epoch_s), mean(|e| e.train_s));
    format!(
        "{{\"elapsed_s\":{},\"iterations\":{},\"epochs\":{},\"mean_epoch_s\":{},\"mean_epoch_train_s\":{},\"train_accuracy\":{},\"validation_accuracy\":{},\"test_accuracy\":{},\"final_loss\":{}}}",
        json_number(s.elapsed_s),
        s.iterations,
        epochs.len(),
        json_number(mean_epoch),
        json_number(mean_train),
        json_number(s.train_accuracy),
        s.validation_accuracy.map_or("null".into(), json_number),
        json_number(s.test_accuracy),
        json_number(s.final_loss)
    )
}
