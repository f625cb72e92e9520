//! Mini-batch training: the book's ch05 `train_neuralnet.py` (random draws, SGD) by default,
//! and what chapter 6 and today's frameworks add: any optimizer, shuffled epochs, a validation
//! split, learning-rate schedules and gradient clipping. Train, validation and test accuracy
//! are measured at the end of every epoch: on the training thread, or, where batches are
//! built on a thread of their own, by that thread between batches on a copy of the network
//! while the next epoch trains (the same numbers, reported a little later).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::Instant;

use crate::data::{Dataset, Mnist};
use crate::error::{Error, Result};
use crate::evaluate::AccuracyJob;
pub use crate::evaluate::accuracy;
use crate::layers::{Input, Targets};
use crate::optim::{self, Optimizer};
use crate::{
    Activation, DeepConvNet, Init, MlpConfig, MultiLayerNet, Network, Rng, SimpleConvNet, parallel,
};

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

/// How mini-batches are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// Uniformly at random with replacement, as the book's `np.random.choice`; an epoch is
    /// `max(n / batch, 1)` draws.
    Random,
    /// A new permutation each epoch, cut into batches: every sample once per epoch (the last
    /// batch may be smaller).
    Shuffle,
}

/// How long to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    Iterations(usize),
    Epochs(usize),
}

/// Learning rate over the run, from the base rate `lr`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    /// `lr · gamma^(epoch / every)`: multiplied by `gamma` every `every` epochs.
    Step {
        every: usize,
        gamma: f64,
    },
    /// `lr · ½(1 + cos(π t / T))` over the T updates of the run.
    Cosine,
}

impl Schedule {
    /// `constant`, `cosine` or `step:EVERY:GAMMA` (e.g. `step:5:0.1`).
    pub fn parse(s: &str) -> Result<Schedule> {
        let bad = || {
            Error::Config(format!(
                "--lr-schedule: {s:?} is not constant, cosine or step:EVERY:GAMMA"
            ))
        };
        match s.to_ascii_lowercase().as_str() {
            "constant" | "none" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            other => {
                let parts: Vec<&str> = other.split(':').collect();
                match parts.as_slice() {
                    ["step", every, gamma] => {
                        let every: usize = every.parse().map_err(|_| bad())?;
                        let gamma: f64 = gamma.parse().map_err(|_| bad())?;
                        if every == 0 || !(gamma.is_finite() && gamma > 0.0) {
                            return Err(bad());
                        }
                        Ok(Schedule::Step { every, gamma })
                    }
                    _ => Err(bad()),
                }
            }
        }
    }

    /// The rate for update `t` (0-based) of `total`, in epoch `epoch` (0-based).
    pub fn lr(&self, lr: f64, t: usize, total: usize, epoch: usize) -> f64 {
        match *self {
            Schedule::Constant => lr,
            Schedule::Step { every, gamma } => lr * gamma.powi((epoch / every) as i32),
            Schedule::Cosine => {
                lr * 0.5 * (1.0 + (std::f64::consts::PI * t as f64 / total.max(1) as f64).cos())
            }
        }
    }
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
    /// Seconds spent in earlier sessions of this run (before a resume).
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
    /// Seconds since this session started.
    pub session_s: f64,
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
    /// This session's epoch reports.
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

/// The number of updates an epoch has, and the run has, for `n` training samples.
fn schedule_lengths(cfg: &TrainConfig, n: usize) -> (usize, usize) {
    let per_epoch = match cfg.sampling {
        Sampling::Random => (n / cfg.batch_size).max(1),
        Sampling::Shuffle => n.div_ceil(cfg.batch_size),
    };
    let total = match cfg.length {
        Length::Iterations(k) => k,
        Length::Epochs(e) => e * per_epoch,
    };
    (per_epoch, total)
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
        run_loop(
            cfg,
            data,
            &train_set,
            validation.as_ref(),
            state,
            observer,
            &mut loader,
            start,
        )
    })
}

/// An epoch whose evaluation the batch loader is counting between batches.
struct Waiting<'a> {
    report: EpochReport, // the accuracies and times not filled in yet
    job: Arc<AccuracyJob<'a>>,
    at_end: TrainState, // the state at the epoch's end, for the observer
}

/// At most this many epochs wait for their evaluation: at one more, the training thread
/// counts the oldest one's chunks itself. (Bounds the copies kept and how late reports
/// come, where evaluating takes longer than an epoch's updates.)
const MAX_WAITING: usize = 2;

/// The training loop of [`train_with`], from `state` on.
#[allow(clippy::too_many_arguments)]
fn run_loop<'a>(
    cfg: &TrainConfig,
    data: &'a Mnist,
    train_set: &'a Dataset,
    validation: Option<&'a Dataset>,
    mut state: TrainState,
    observer: &mut dyn Observer,
    loader: &mut Loader<'a>,
    start: Instant,
) -> Result<Run> {
    let n = train_set.len();
    let (per_epoch, total) = schedule_lengths(cfg, n);
    let mut indices = Vec::with_capacity(cfg.batch_size);
    let mut epoch_start = Instant::now();
    let mut epochs = Vec::new();
    let mut waiting: VecDeque<Waiting<'a>> = VecDeque::new();
    // held while the loader has evaluation chunks to count: small products stay on this
    // thread rather than take its core
    let mut other_work: Option<parallel::OtherWork> = None;
    while state.iteration < total {
        if observer.should_stop() {
            report_waiting(&mut waiting, &mut state, &mut epochs, observer, start, true)?;
            state.elapsed_s += start.elapsed().as_secs_f64();
            return Ok(Run {
                state,
                epochs,
                summary: None,
            });
        }
        let i = state.iteration;
        let (epoch, within) = (i / per_epoch, i % per_epoch);
        // the batch: random draws (np.random.choice) or the next slice of this epoch's shuffle
        draw_batch(cfg, within, &mut state.order, &mut state.rng, &mut indices);
        let (x, t) = loader.batch(&indices);
        // the next batch is assembled on another thread while this one trains
        if i + 1 < total {
            let (mut rng, mut next) = (state.rng.clone(), Vec::with_capacity(cfg.batch_size));
            let next_within = (i + 1) % per_epoch;
            if next_within == 0 && cfg.sampling == Sampling::Shuffle {
                // a new epoch shuffles: on a copy, the run's own order and generator wait
                draw_batch(cfg, 0, &mut state.order.clone(), &mut rng, &mut next);
            } else {
                draw_batch(cfg, next_within, &mut state.order, &mut rng, &mut next); // reads only
            }
            loader.prefetch(next);
        }
        let lr = cfg.schedule.lr(cfg.lr, i, total, epoch);
        state.optimizer.set_learning_rate(lr);
        let loss = step_batch(
            &mut state.network,
            state.optimizer.as_mut(),
            x,
            &t,
            cfg.clip_grad_norm,
        );
        if !loss.is_finite() {
            return Err(Error::Diverged {
                iteration: i + 1,
                loss,
            });
        }
        state.iteration += 1;
        state.epoch_loss += loss;
        state.epoch_iters += 1;
        state.last_loss = loss;
        observer.iteration(&Progress {
            iteration: state.iteration,
            total,
            epoch: epoch + 1,
            within: within + 1,
            per_epoch,
            loss: state.epoch_loss / state.epoch_iters as f64,
            session_s: start.elapsed().as_secs_f64(),
        });

        let epoch_end = within + 1 == per_epoch;
        if epoch_end {
            let report = EpochReport {
                epoch: epoch + 1,
                iteration: i + 1,
                loss: state.epoch_loss / state.epoch_iters as f64,
                train_accuracy: f64::NAN,
                validation_accuracy: None,
                test_accuracy: f64::NAN,
                lr,
                elapsed_s: f64::NAN,
                epoch_s: f64::NAN,
                train_s: epoch_start.elapsed().as_secs_f64(),
            };
            (state.epoch_loss, state.epoch_iters) = (0.0, 0);
            let mut sets = vec![train_set];
            sets.extend(validation);
            sets.push(&data.test);
            if loader.has_thread() {
                // NOTE: the evaluation of a copy, counted by the loader between batches while
                // the next epoch trains (W1, `backprop bench`, 8 alternating rounds, medians:
                // 1.21 -> 1.10 s, with the small products kept on one thread meanwhile)
                let job = Arc::new(AccuracyJob::new(state.network.clone(), sets));
                loader.evaluate(&job);
                waiting.push_back(Waiting {
                    report: EpochReport {
                        epoch_s: epoch_start.elapsed().as_secs_f64(),
                        ..report
                    },
                    job,
                    at_end: state.clone(),
                });
                other_work.get_or_insert_with(parallel::OtherWork::begin);
            } else {
                let accuracies = sets
                    .iter()
                    .map(|d| accuracy(&state.network, d, cfg.threads))
                    .collect();
                let report = EpochReport {
                    epoch_s: epoch_start.elapsed().as_secs_f64(),
                    ..report
                };
                let best = state.best_accuracy;
                state.best_accuracy = report_epoch(
                    report,
                    accuracies,
                    start,
                    &mut state,
                    best,
                    observer,
                    &mut epochs,
                )?;
            }
        }
        // the reports whose evaluation is counted, in order (and the oldest, counted here,
        // while too many wait)
        report_waiting(
            &mut waiting,
            &mut state,
            &mut epochs,
            observer,
            start,
            false,
        )?;
        if epoch_end {
            epoch_start = Instant::now();
        }
        if waiting.is_empty() {
            other_work = None;
        }
    }
    report_waiting(&mut waiting, &mut state, &mut epochs, observer, start, true)?;
    drop(other_work); // before the final evaluation, which splits over the threads
    // The final figures after the last update (the last epoch report may be older).
    let (train_accuracy, validation_accuracy, test_accuracy) = match epochs.last() {
        Some(r) if r.iteration == total => {
            (r.train_accuracy, r.validation_accuracy, r.test_accuracy)
        }
        _ => {
            let net = &state.network;
            (
                accuracy(net, train_set, cfg.threads),
                validation.as_ref().map(|v| accuracy(net, v, cfg.threads)),
                accuracy(net, &data.test, cfg.threads),
            )
        }
    };
    state.elapsed_s += start.elapsed().as_secs_f64();
    let summary = Summary {
        elapsed_s: state.elapsed_s,
        iterations: total,
        train_accuracy,
        validation_accuracy,
        test_accuracy,
        final_loss: state.last_loss,
    };
    Ok(Run {
        state,
        epochs,
        summary: Some(summary),
    })
}

/// Reports the waiting epochs, in order: those whose evaluation is counted and, while more
/// than [`MAX_WAITING`] wait, the oldest (its chunks counted here); with `all`, every one.
fn report_waiting(
    waiting: &mut VecDeque<Waiting<'_>>,
    state: &mut TrainState,
    epochs: &mut Vec<EpochReport>,
    observer: &mut dyn Observer,
    start: Instant,
    all: bool,
) -> Result<()> {
    while let Some(w) = waiting.front() {
        if !all && !w.job.is_done() && waiting.len() <= MAX_WAITING {
            break;
        }
        let Waiting {
            report,
            job,
            mut at_end,
        } = waiting.pop_front().expect("the front one");
        let accuracies = job.finish();
        let best = state.best_accuracy;
        state.best_accuracy = report_epoch(
            report,
            accuracies,
            start,
            &mut at_end,
            best,
            observer,
            epochs,
        )?;
    }
    Ok(())
}

/// Fills in an epoch's accuracies (on the training set, the validation set if any, the test
/// set, in that order) and times, hands the report to the observer with `at_end`, the state
/// at the epoch's end (`best` being the best accuracy of the epochs before), and keeps it.
/// Returns the best accuracy with this epoch's.
#[allow(clippy::too_many_arguments)]
fn report_epoch(
    mut report: EpochReport,
    accuracies: Vec<f64>,
    start: Instant,
    at_end: &mut TrainState,
    best: f64,
    observer: &mut dyn Observer,
    epochs: &mut Vec<EpochReport>,
) -> Result<f64> {
    let mut accuracies = accuracies.into_iter();
    report.train_accuracy = accuracies.next().expect("the training set's");
    report.test_accuracy = accuracies.next_back().expect("the test set's");
    report.validation_accuracy = accuracies.next();
    report.elapsed_s = at_end.elapsed_s + start.elapsed().as_secs_f64();
    at_end.best_accuracy = best;
    observer.epoch(&report, at_end)?;
    let watched = report.validation_accuracy.unwrap_or(report.test_accuracy);
    epochs.push(report);
    Ok(best.max(watched))
}

/// The indices of a batch: `batch_size` random draws (np.random.choice), or the slice
/// `within` of the epoch's permutation `order`, shuffled first when `within` is 0.
fn draw_batch(
    cfg: &TrainConfig,
    within: usize,
    order: &mut [usize],
    rng: &mut Rng,
    indices: &mut Vec<usize>,
) {
    indices.clear();
    let n = order.len();
    match cfg.sampling {
        Sampling::Random => indices.extend((0..cfg.batch_size).map(|_| rng.below(n))),
        Sampling::Shuffle => {
            if within == 0 {
                shuffle(order, rng);
            }
            let s = within * cfg.batch_size;
            indices.extend_from_slice(&order[s..(s + cfg.batch_size).min(n)]);
        }
    }
}

/// A batch's images and labels.
type Batch = (Input<f32>, Vec<usize>);

/// What the loader thread is asked for.
enum Ask<'a> {
    /// The batch of these samples.
    Batch(Vec<usize>),
    /// Chunks of this evaluation, between batches.
    Evaluation(Arc<AccuracyJob<'a>>),
}

/// Assembles training batches, on a thread of its own when asked: the next batch (with its
/// transposed index) is built while the current one trains. The batches are what
/// [`Dataset::input_batch`] gives, whoever builds them: the thread changes no result.
/// Between batches the thread counts the chunks of the evaluations it is given
/// ([`AccuracyJob`]), oldest first: a batch asked for waits at most for the chunk in hand.
struct Loader<'a> {
    data: &'a Dataset,
    worker: Option<(Sender<Ask<'a>>, Receiver<Batch>)>,
    pending: Option<Vec<usize>>, // the indices asked of the worker, not yet collected
}

impl<'a> Loader<'a> {
    fn new<'scope>(
        data: &'a Dataset,
        threaded: bool,
        scope: &'scope std::thread::Scope<'scope, '_>,
    ) -> Self
    where
        'a: 'scope,
    {
        let worker = threaded.then(|| {
            let (want, wanted) = mpsc::channel::<Ask<'a>>();
            let (done, ready) = mpsc::sync_channel(1);
            scope.spawn(move || {
                let mut jobs: VecDeque<Arc<AccuracyJob<'a>>> = VecDeque::new();
                loop {
                    // a batch first; a chunk of evaluation only while no batch is asked for
                    let ask = match jobs.front() {
                        None => wanted.recv().ok(),
                        Some(job) => match wanted.try_recv() {
                            Ok(ask) => Some(ask),
                            Err(TryRecvError::Empty) => {
                                if !job.work_one() {
                                    jobs.pop_front(); // all its chunks claimed
                                }
                                continue;
                            }
                            Err(TryRecvError::Disconnected) => None,
                        },
                    };
                    let indices = match ask {
                        None => break, // the run is over
                        Some(Ask::Evaluation(job)) => {
                            jobs.push_back(job);
                            continue;
                        }
                        Some(Ask::Batch(indices)) => indices,
                    };
                    // the first layer's dW = xᵀ·dy wants xᵀ's index: built here too
                    let (x, t) = match data.input_batch::<f32>(&indices) {
                        (Input::Sparse(x), t) => (Input::Sparse(x.with_transpose()), t),
                        dense => dense,
                    };
                    if done.send((x, t)).is_err() {
                        break;
                    }
                }
            });
            (want, ready)
        });
        Loader {
            data,
            worker,
            pending: None,
        }
    }

    /// Starts building the batch of `indices` (when there is a worker).
    fn prefetch(&mut self, indices: Vec<usize>) {
        if let Some((want, _)) = &self.worker
            && want.send(Ask::Batch(indices.clone())).is_ok()
        {
            self.pending = Some(indices);
        }
    }

    /// Whether batches are built on a thread of their own.
    fn has_thread(&self) -> bool {
        self.worker.is_some()
    }

    /// Hands `job` to the thread, which counts its chunks between batches. (Chunks no thread
    /// counts are counted by whoever finishes the job.)
    fn evaluate(&mut self, job: &Arc<AccuracyJob<'a>>) {
        if let Some((want, _)) = &self.worker {
            let _ = want.send(Ask::Evaluation(job.clone()));
        }
    }

    /// The batch of `indices`: the prefetched one when it is that one.
    fn batch(&mut self, indices: &[usize]) -> Batch {
        if let (Some(asked), Some((_, ready))) = (self.pending.take(), &self.worker)
            && let Ok(batch) = ready.recv()
            && asked == indices
        {
            return batch;
        }
        self.data.input_batch::<f32>(indices)
    }
}

/// The network `cfg` describes, for `data`'s image size and classes.
pub fn build(cfg: &TrainConfig, data: &Mnist, rng: &mut Rng) -> Result<Network<f32>> {
    let image = (1, data.train.rows(), data.train.cols());
    let mut net = match cfg.model {
        Model::TwoLayer | Model::Mlp => {
            MultiLayerNet::new(&cfg.mlp(data.train.input_size(), data.classes), rng)?
        }
        Model::SimpleCnn => SimpleConvNet::new(image, data.classes, rng),
        Model::DeepCnn => DeepConvNet::new(image, data.classes, rng),
        Model::Described => {
            let text = cfg
                .layers
                .as_deref()
                .ok_or_else(|| Error::Config("--layers: no description given".into()))?;
            crate::describe::from_description(text, image, data.classes, rng)?
        }
    };
    if !matches!(cfg.model, Model::TwoLayer | Model::Mlp) {
        net.set_weight_decay(cfg.weight_decay);
    }
    Ok(net)
}

/// The three benchmark workloads' settings (`backprop bench`, issue 6): W1 the book's ch. 5
/// run (TwoLayerNet 784-50-10, SGD 0.1, batch 100, 10000 iterations), W2 an MLP
/// 784-256-256-10 (He, ReLU, Adam 0.001, batch 128, one shuffled epoch), W3 SimpleConvNet
/// (Adam 0.001, batch 100, one shuffled epoch).
pub fn workloads(threads: usize) -> Vec<(&'static str, TrainConfig)> {
    let base = TrainConfig {
        threads,
        ..TrainConfig::default()
    };
    vec![
        ("W1", base.clone()),
        (
            "W2",
            TrainConfig {
                model: Model::Mlp,
                hidden: vec![256, 256],
                activation: Activation::Relu,
                init: Some(Init::He),
                optimizer: "adam".into(),
                lr: 0.001,
                length: Length::Epochs(1),
                batch_size: 128,
                sampling: Sampling::Shuffle,
                ..base.clone()
            },
        ),
        (
            "W3",
            TrainConfig {
                model: Model::SimpleCnn,
                optimizer: "adam".into(),
                lr: 0.001,
                length: Length::Epochs(1),
                batch_size: 100,
                sampling: Sampling::Shuffle,
                ..base
            },
        ),
    ]
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
