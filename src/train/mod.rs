//! Mini-batch training: the book's ch05 `train_neuralnet.py` (random draws, SGD) by default,
//! and what chapter 6 and today's frameworks add: any optimizer, shuffled epochs, a validation
//! split, learning-rate schedules and gradient clipping. Train, validation and test accuracy
//! are measured at the end of every epoch: on the training thread, or, where batches are
//! built on a thread of their own, by that thread between batches on a copy of the network
//! while the next epoch trains (the same numbers, reported a little later).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::Instant;

mod background;
mod loader;
mod run_loop;
mod schedule;
mod workloads;

pub use schedule::{Length, Sampling, Schedule};
pub use workloads::workloads;

use loader::Loader;
use run_loop::RunLoop;
use schedule::{check_length, schedule_lengths};

use crate::budget::{Budget, Need};
use crate::data::{Dataset, Mnist};
use crate::describe::Spec;
use crate::error::{Error, Result};
pub use crate::evaluate::accuracy;
use crate::layers::{Input, Targets};
use crate::optim::{self, Optimizer};
use crate::{Activation, DeepConvNet, Init, MlpConfig, MultiLayerNet, Network, Rng, SimpleConvNet};

/// Which network to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// The book's TwoLayerNet: one hidden ReLU layer.
    TwoLayer,
    /// The book's MultiLayerNet(Extend): any hidden layers, activation, batch norm, dropout.
    Mlp,
    /// The book's SimpleConvNet (ch. 7).
    SimpleCnn,
    /// The book's DeepConvNet (ch. 8).
    DeepCnn,
    /// Layers from a text description ([`crate::describe`]), in [`TrainConfig::layers`].
    Described,
}

/// Settings of a training run; [`TrainConfig::default`] is the book's ch05 run.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub model: Model,
    /// The layer description of [`Model::Described`].
    pub layers: Option<String>,
    /// Units of each hidden layer (book: `[50]`).
    pub hidden: Vec<usize>,
    pub activation: Activation,
    /// Weight initialisation; None: the book's std 0.01 for the two-layer net, else He for
    /// ReLU and Xavier for sigmoid and tanh.
    pub init: Option<Init>,
    pub batch_norm: bool,
    /// Dropout ratio after each hidden activation (0: none).
    pub dropout: f64,
    /// L2 weight decay λ (0: none).
    pub weight_decay: f64,
    /// `sgd`, `momentum`, `nesterov`, `adagrad`, `rmsprop`, `adam`, `adamw` (book: sgd).
    pub optimizer: String,
    /// Base learning rate (book: 0.1).
    pub lr: f64,
    pub schedule: Schedule,
    /// Rescale the gradients when their global L2 norm exceeds this.
    pub clip_grad_norm: Option<f64>,
    /// Book: 10000 iterations.
    pub length: Length,
    /// Samples per mini-batch (book: 100).
    pub batch_size: usize,
    pub sampling: Sampling,
    /// Fraction of the training set held out for validation (0: none).
    pub validation: f64,
    /// Seed of the one generator behind initialisation, the split, batches and dropout.
    pub seed: u64,
    /// Threads for the layers with enough work (convolutions, large products) and for
    /// evaluation. Results do not depend on it.
    pub threads: usize,
    /// The book's code alone ([`Network::set_reference`]): no kernel, no rewrite.
    pub reference: bool,
    /// The memory the run may take, in bytes; None: what the machine has available.
    pub max_memory: Option<u64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: Model::TwoLayer,
            layers: None,
            hidden: vec![50],
            activation: Activation::Relu,
            init: None,
            batch_norm: false,
            dropout: 0.0,
            weight_decay: 0.0,
            optimizer: "sgd".into(),
            lr: 0.1,
            schedule: Schedule::Constant,
            clip_grad_norm: None,
            length: Length::Iterations(10_000),
            batch_size: 100,
            sampling: Sampling::Random,
            validation: 0.0,
            seed: 0,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            reference: false,
            max_memory: None,
        }
    }
}

impl TrainConfig {
    /// Rejects settings that cannot train, naming the flag.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.hidden.contains(&0) {
            return bad("--hidden must be at least 1".into());
        }
        let mlp_options =
            self.hidden != [50] || self.batch_norm || self.dropout > 0.0 || self.init.is_some();
        if matches!(
            self.model,
            Model::SimpleCnn | Model::DeepCnn | Model::Described
        ) && mlp_options
        {
            return bad(
                "--hidden, --init, --batch-norm and --dropout are for --model two-layer and mlp: the convnets are the book's"
                    .into(),
            );
        }
        if self.model == Model::TwoLayer
            && (self.hidden.len() != 1 || self.batch_norm || self.dropout > 0.0)
        {
            return bad("--model two-layer has one hidden layer and no batch norm or dropout: use --model mlp".into());
        }
        if matches!(self.length, Length::Iterations(0)) {
            return bad("--iters must be at least 1".into());
        }
        if matches!(self.length, Length::Epochs(0)) {
            return bad("--epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("--batch-size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("--lr must be a positive number".into());
        }
        if self
            .clip_grad_norm
            .is_some_and(|c| !(c.is_finite() && c > 0.0))
        {
            return bad("--clip-grad-norm must be a positive number".into());
        }
        if !(0.0..1.0).contains(&self.validation) {
            return bad("--validation must be in [0, 1)".into());
        }
        if self.threads == 0 {
            return bad("--threads must be at least 1".into());
        }
        optim::by_name::<f32>(&self.optimizer, self.lr)?;
        self.mlp(1, 1).validate()
    }

    /// The network in the description language, checked layer by layer against samples of
    /// `input` and `classes` outputs: a layer that does not fit is an error naming the model
    /// and the layer, before anything is allocated.
    pub fn spec(&self, input: (usize, usize, usize), classes: usize) -> Result<Spec> {
        let (name, text) = match self.model {
            Model::TwoLayer | Model::Mlp => {
                let flat = input.0.saturating_mul(input.1).saturating_mul(input.2);
                let name = if self.model == Model::Mlp {
                    "mlp"
                } else {
                    "two-layer"
                };
                (name, self.mlp(flat, classes).description())
            }
            Model::SimpleCnn => ("simple-cnn", SimpleConvNet::DESCRIPTION.to_string()),
            Model::DeepCnn => ("deep-cnn", DeepConvNet::DESCRIPTION.to_string()),
            Model::Described => {
                let text = self
                    .layers
                    .as_deref()
                    .ok_or_else(|| Error::Config("--layers: no description given".into()))?;
                return Spec::parse(text, input, classes);
            }
        };
        let (c, h, w) = input;
        Spec::parse(&text, input, classes)
            .map_err(|e| Error::Config(format!("--model {name} on {c}x{h}x{w} images: {e}")))
    }

    /// The memory budget: `max_memory`, else what the machine has available.
    pub fn budget(&self) -> Budget {
        Budget::or_machine(self.max_memory)
    }

    /// The network's description for `input` inputs and `classes` outputs.
    pub fn mlp(&self, input: usize, classes: usize) -> MlpConfig {
        let init = self.init.unwrap_or(match self.model {
            Model::TwoLayer => Init::Std(0.01),
            Model::Mlp | Model::SimpleCnn | Model::DeepCnn | Model::Described => {
                self.activation.default_init()
            }
        });
        MlpConfig {
            input_size: input,
            hidden: self.hidden.clone(),
            output_size: classes,
            activation: self.activation,
            init,
            batch_norm: self.batch_norm,
            dropout: self.dropout,
            weight_decay: self.weight_decay,
        }
    }
}

/// Measured at the end of each epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Updates done so far.
    pub iteration: usize,
    /// Mean mini-batch loss over this epoch's updates.
    pub loss: f64,
    pub train_accuracy: f64,
    /// On the held-out part of the training set, when there is one.
    pub validation_accuracy: Option<f64>,
    pub test_accuracy: f64,
    /// Learning rate of the epoch's last update.
    pub lr: f64,
    /// Seconds since training started, when the report was complete.
    pub elapsed_s: f64,
    /// Seconds from this epoch's start to the next one's: its updates, and its evaluation
    /// when it ran on the training thread (not when the batch loader counted it in the
    /// background, as it does with more than one thread for networks that take non-zero
    /// entries).
    pub epoch_s: f64,
    /// Seconds of this epoch's updates alone (what the peers' scripts time). With the
    /// evaluations in the background, an observer's handling of an earlier epoch's report
    /// (printing it, saving a checkpoint) falls within it.
    pub train_s: f64,
}

/// The end of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Seconds spent training and evaluating (loading the data not included).
    pub elapsed_s: f64,
    pub iterations: usize,
    pub train_accuracy: f64,
    pub validation_accuracy: Option<f64>,
    pub test_accuracy: f64,
    /// Loss of the last mini-batch.
    pub final_loss: f64,
}

/// What [`train`] returns.
pub struct Trained {
    pub network: Network<f32>,
    pub epochs: Vec<EpochReport>,
    pub summary: Summary,
}

/// Trains on `data` as `cfg` says, calling `on_epoch` with every epoch's report, in order
/// (some updates after the epoch's end when its evaluation runs in the background: see
/// [`Observer::epoch`]). Input size and class count come from the data.
pub fn train(
    cfg: &TrainConfig,
    data: &Mnist,
    on_epoch: impl FnMut(&EpochReport),
) -> Result<Trained> {
    struct OnEpoch<F>(F);
    impl<F: FnMut(&EpochReport)> Observer for OnEpoch<F> {
        fn epoch(&mut self, report: &EpochReport, _: &mut TrainState) -> Result<()> {
            (self.0)(report);
            Ok(())
        }
    }
    let run = train_with(cfg, data, |_| Ok(()), &mut OnEpoch(on_epoch))?;
    Ok(Trained {
        network: run.state.network,
        epochs: run.epochs,
        summary: run.summary.expect("nothing asks to stop"),
    })
}

/// Everything a run needs to go on from where it is, bit for bit: what a checkpoint holds
/// (with the configuration).
#[derive(Clone)]
pub struct TrainState {
    pub network: Network<f32>,
    pub optimizer: Box<dyn Optimizer<f32>>,
    /// The run's generator: next batches and shuffles.
    pub rng: Rng,
    /// The current epoch's permutation of the training samples (shuffled sampling).
    pub order: Vec<usize>,
    /// Updates done.
    pub iteration: usize,
    /// Sum and count of the mini-batch losses of the current epoch so far.
    pub epoch_loss: f64,
    pub epoch_iters: usize,
    /// Loss of the last mini-batch (NaN before the first).
    pub last_loss: f64,
    /// Seconds spent on this run before its last resume.
    pub elapsed_s: f64,
    /// The best epoch accuracy so far (validation when held out, else test), -1 before any.
    pub best_accuracy: f64,
}

/// Where a run is, after each update.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Updates done, of `total`.
    pub iteration: usize,
    pub total: usize,
    /// 1-based epoch, and updates done within it, of `per_epoch`.
    pub epoch: usize,
    pub within: usize,
    pub per_epoch: usize,
    /// Mean mini-batch loss of the epoch so far.
    pub loss: f64,
    /// The loss of this update's mini-batch.
    pub batch_loss: f64,
    /// Seconds since this call began (after a resume: since the resume).
    pub since_start_s: f64,
}

/// What a caller sees of a run: each update, each epoch (with the state, to save it), and
/// whether to stop early.
pub trait Observer {
    fn iteration(&mut self, _progress: &Progress) {}
    /// After each epoch's evaluation, with the state as it was at the end of the epoch; an
    /// error ends the run with it. When the evaluation ran in the background (a batch loader
    /// thread), this comes some updates later, with a copy of that state: changes made to it
    /// are not kept.
    fn epoch(&mut self, _report: &EpochReport, _state: &mut TrainState) -> Result<()> {
        Ok(())
    }
    /// Asked after every update: true stops the run there (Ctrl-C).
    fn should_stop(&self) -> bool {
        false
    }
}

/// What [`train_with`] returns.
pub struct Run {
    pub state: TrainState,
    /// The epoch reports of this call (after a resume: since the resume).
    pub epochs: Vec<EpochReport>,
    /// None when the observer stopped the run before its end.
    pub summary: Option<Summary>,
}

impl Run {
    /// True when the run stopped before its last update.
    pub fn stopped(&self) -> bool {
        self.summary.is_none()
    }
}

/// Trains as [`train`] does, from a fresh state that `restore` may overwrite (with a
/// checkpoint's: the run then goes on exactly as if never interrupted), reporting to
/// `observer`.
pub fn train_with(
    cfg: &TrainConfig,
    data: &Mnist,
    restore: impl FnOnce(&mut TrainState) -> Result<()>,
    observer: &mut dyn Observer,
) -> Result<Run> {
    cfg.validate()?;
    if data.train.is_empty() {
        return Err(Error::Data("the training set is empty".into()));
    }
    let start = Instant::now();
    // the fresh run: initialisation, then the split, from the seed (a restored state replays
    // them, so that the split is the same)
    let mut rng = Rng::new(cfg.seed);
    let mut network = build(cfg, data, &mut rng)?;
    network
        .set_reference(cfg.reference)
        .set_threads(cfg.threads);
    let mut optimizer = optim::by_name::<f32>(&cfg.optimizer, cfg.lr)?;
    optimizer.set_threads(cfg.threads);
    let (train_set, validation) = split(&data.train, cfg.validation, &mut rng)?;
    let n = train_set.len();
    let mut state = TrainState {
        network,
        optimizer,
        rng,
        order: (0..n).collect(),
        iteration: 0,
        epoch_loss: 0.0,
        epoch_iters: 0,
        last_loss: f64::NAN,
        elapsed_s: 0.0,
        best_accuracy: -1.0,
    };
    restore(&mut state)?;
    check_length(cfg, n)?;
    let total = schedule_lengths(cfg, n).1;
    if state.order.len() != n || state.iteration > total {
        return Err(Error::Config(format!(
            "the saved state ({} samples, {} updates) does not fit this run ({n} samples, {total} updates)",
            state.order.len(),
            state.iteration
        )));
    }

    std::thread::scope(|scope| {
        // NOTE: only for a network that takes non-zero entries (W1, W2: gathering a batch is a
        // fifth of a W1 step); a convolution's batch is 1% of its step, and a third thread
        // beside the convolution's two measured no faster (backprop bench, W3)
        let threaded = cfg.threads > 1 && state.network.takes_sparse_input();
        let mut loader = Loader::new(&train_set, threaded, scope);
        let run_loop = RunLoop {
            cfg,
            data,
            train_set: &train_set,
            validation: validation.as_ref(),
            observer,
            loader: &mut loader,
            start,
            epochs: Vec::new(),
            waiting: VecDeque::new(),
            other_work: None,
        };
        run_loop.run(state)
    })
}

/// The network `cfg` describes, for `data`'s image size and classes.
pub fn build(cfg: &TrainConfig, data: &Mnist, rng: &mut Rng) -> Result<Network<f32>> {
    let image = data.train.shape();
    let spec = cfg.spec(image, data.classes)?;
    let buffers = optim::buffers_per_parameter(&cfg.optimizer);
    let need = Need::training(
        &spec,
        cfg.batch_size,
        buffers,
        crate::evaluate::CHUNK,
        cfg.threads,
    );
    let lower = "--batch-size, or the model's size (--hidden, the layers)";
    cfg.budget().check(&need, "this run", lower)?;
    let mut net = match cfg.model {
        Model::TwoLayer | Model::Mlp => {
            MultiLayerNet::new(&cfg.mlp(data.train.input_size(), data.classes), rng)?
        }
        Model::SimpleCnn => SimpleConvNet::new(image, data.classes, rng),
        Model::DeepCnn => DeepConvNet::new(image, data.classes, rng),
        // parsed and checked above
        Model::Described => spec.build(rng),
    };
    if !matches!(cfg.model, Model::TwoLayer | Model::Mlp) {
        net.set_weight_decay(cfg.weight_decay);
    }
    Ok(net)
}

/// One update on the samples at `indices`: backprop, clip the gradients' global norm to
/// `clip` if given, let the optimizer step. Returns the mini-batch loss (NaN or infinite when
/// training diverges; nothing is updated then).
pub fn step(
    net: &mut Network<f32>,
    optimizer: &mut dyn Optimizer<f32>,
    data: &Dataset,
    indices: &[usize],
    clip: Option<f64>,
) -> f64 {
    let (x, t) = data.input_batch::<f32>(indices);
    step_batch(net, optimizer, x, &t, clip)
}

/// [`step`] on a batch already assembled: images `x`, labels `t`.
pub fn step_batch(
    net: &mut Network<f32>,
    optimizer: &mut dyn Optimizer<f32>,
    x: Input<f32>,
    t: &[usize],
    clip: Option<f64>,
) -> f64 {
    let loss = net.backprop(x, Targets::Labels(t)) as f64;
    if !loss.is_finite() {
        return loss;
    }
    if let Some(max_norm) = clip {
        clip_grad_norm(net, max_norm);
    }
    net.update(optimizer);
    loss
}

/// Scales every gradient by `max_norm / ‖g‖` when the global norm `‖g‖ = √(Σ g²)` over all
/// parameters exceeds `max_norm` (PyTorch's `clip_grad_norm_`). Returns the norm before.
pub fn clip_grad_norm(net: &mut Network<f32>, max_norm: f64) -> f64 {
    let mut sum = 0.0;
    net.visit_params(&mut |_, p| {
        sum += p.grad.iter().map(|&g| (g as f64) * (g as f64)).sum::<f64>();
    });
    let norm = sum.sqrt();
    if norm > max_norm {
        let scale = (max_norm / norm) as f32;
        net.visit_params(&mut |_, mut p| p.grad.mapv_inplace(|g| g * scale));
    }
    norm
}

/// Fisher–Yates shuffle driven by `rng`.
pub fn shuffle(items: &mut [usize], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}

/// Holds out `fraction` of `data`, chosen at random, for validation. With 0 the data is used
/// whole and the generator is not touched.
fn split<'a>(
    data: &'a Dataset,
    fraction: f64,
    rng: &mut Rng,
) -> Result<(Cow<'a, Dataset>, Option<Dataset>)> {
    if fraction == 0.0 {
        return Ok((Cow::Borrowed(data), None));
    }
    let held = ((data.len() as f64) * fraction).round() as usize;
    if held == 0 || held >= data.len() {
        return Err(Error::Config(format!(
            "--validation {fraction} leaves {held} of {} samples for validation",
            data.len()
        )));
    }
    let mut order: Vec<usize> = (0..data.len()).collect();
    shuffle(&mut order, rng);
    let (train, val) = order.split_at(data.len() - held);
    Ok((Cow::Owned(data.subset(train)), Some(data.subset(val))))
}
