//! Mini-batch training as in the book's ch05 `train_neuralnet.py`: draw a random mini-batch,
//! backprop, update, and once per epoch measure train and test accuracy.

use std::time::Instant;

use crate::data::{Dataset, Mnist};
use crate::error::{Error, Result};
use crate::layers::Targets;
use crate::network::correct_predictions;
use crate::optim::{Optimizer, Sgd};
use crate::{Network, Rng, TwoLayerNet};

/// Settings of a training run; [`TrainConfig::default`] is the book's ch05 run.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Hidden units of the two-layer network (book: 50).
    pub hidden: usize,
    /// Mini-batch updates (book: 10000).
    pub iters: usize,
    /// Samples per mini-batch, drawn at random with replacement (book: 100).
    pub batch_size: usize,
    /// SGD learning rate (book: 0.1).
    pub lr: f64,
    /// Standard deviation of the initial weights (book: 0.01).
    pub weight_init_std: f64,
    /// Seed of the one generator behind initialisation and batch sampling.
    pub seed: u64,
    /// Threads for evaluating accuracy (the training step itself runs on one).
    pub threads: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            hidden: 50,
            iters: 10_000,
            batch_size: 100,
            lr: 0.1,
            weight_init_std: 0.01,
            seed: 0,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl TrainConfig {
    /// Rejects settings that cannot train, naming the flag.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::Config(msg.to_string()));
        if self.hidden == 0 {
            return bad("--hidden must be at least 1");
        }
        if self.iters == 0 {
            return bad("--iters must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("--batch-size must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("--lr must be a positive number");
        }
        if !(self.weight_init_std.is_finite() && self.weight_init_std >= 0.0) {
            return bad("--init-std must be a non-negative number");
        }
        if self.threads == 0 {
            return bad("--threads must be at least 1");
        }
        Ok(())
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
    pub test_accuracy: f64,
    /// Seconds since training started.
    pub elapsed_s: f64,
}

/// The end of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Seconds spent training and evaluating (loading the data not included).
    pub elapsed_s: f64,
    pub iterations: usize,
    pub train_accuracy: f64,
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

/// Trains the book's TwoLayerNet on `data`, calling `on_epoch` after every epoch of
/// `max(train size / batch size, 1)` updates. Input size and class count come from the data.
pub fn train(
    cfg: &TrainConfig,
    data: &Mnist,
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<Trained> {
    cfg.validate()?;
    if data.train.is_empty() {
        return Err(Error::Data("the training set is empty".into()));
    }
    let start = Instant::now();
    let mut rng = Rng::new(cfg.seed);
    let mut net = TwoLayerNet::new::<f32>(
        data.train.input_size(),
        cfg.hidden,
        data.classes,
        cfg.weight_init_std,
        &mut rng,
    );
    let mut optimizer = Sgd { lr: cfg.lr };
    let iters_per_epoch = (data.train.len() / cfg.batch_size).max(1);

    let mut indices = vec![0; cfg.batch_size];
    let mut epoch_loss = 0.0;
    let mut last_loss = f64::NAN;
    let mut epochs = Vec::new();
    for i in 0..cfg.iters {
        let loss = step(
            &mut net,
            &mut optimizer,
            &data.train,
            &mut indices,
            &mut rng,
        );
        if !loss.is_finite() {
            return Err(Error::Diverged {
                iteration: i + 1,
                loss,
            });
        }
        epoch_loss += loss;
        last_loss = loss;

        if (i + 1) % iters_per_epoch == 0 {
            let report = EpochReport {
                epoch: (i + 1) / iters_per_epoch,
                iteration: i + 1,
                loss: epoch_loss / iters_per_epoch as f64,
                train_accuracy: accuracy(&net, &data.train, cfg.threads),
                test_accuracy: accuracy(&net, &data.test, cfg.threads),
                elapsed_s: start.elapsed().as_secs_f64(),
            };
            epoch_loss = 0.0;
            on_epoch(&report);
            epochs.push(report);
        }
    }
    // The final figures after the last update (the last epoch report may be older).
    let (train_accuracy, test_accuracy) = match epochs.last() {
        Some(r) if r.iteration == cfg.iters => (r.train_accuracy, r.test_accuracy),
        _ => (
            accuracy(&net, &data.train, cfg.threads),
            accuracy(&net, &data.test, cfg.threads),
        ),
    };
    let summary = Summary {
        elapsed_s: start.elapsed().as_secs_f64(),
        iterations: cfg.iters,
        train_accuracy,
        test_accuracy,
        final_loss: last_loss,
    };
    Ok(Trained {
        network: net,
        epochs,
        summary,
    })
}

/// One update: draw `indices.len()` samples at random (with replacement, as the book's
/// `np.random.choice(train_size, batch_size)`), backprop, let the optimizer step.
/// Returns the mini-batch loss (NaN or infinite when training diverges; nothing is updated
/// then).
pub fn step(
    net: &mut Network<f32>,
    optimizer: &mut impl Optimizer<f32>,
    data: &Dataset,
    indices: &mut [usize],
    rng: &mut Rng,
) -> f64 {
    indices.iter_mut().for_each(|k| *k = rng.below(data.len()));
    let (x, t) = data.input_batch::<f32>(indices);
    let loss = net.backprop(x, Targets::Labels(&t)) as f64;
    if loss.is_finite() {
        optimizer.step(net.params());
    }
    loss
}

/// Samples per forward pass when evaluating: large enough for efficient products, small
/// enough (1.5 MB of f32 input) to stay in cache.
const EVAL_CHUNK: usize = 500;

/// Accuracy of `net` on the whole of `data`, the chunks split over `threads` threads.
/// The result does not depend on the thread count (it is a count of correct answers).
pub fn accuracy(net: &Network<f32>, data: &Dataset, threads: usize) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let chunks: Vec<(usize, usize)> = (0..data.len())
        .step_by(EVAL_CHUNK)
        .map(|s| (s, (s + EVAL_CHUNK).min(data.len())))
        .collect();
    let count = |part: &[(usize, usize)]| -> usize {
        part.iter()
            .map(|&(s, e)| {
                let (x, labels) = data.input_batch::<f32>(&(s..e).collect::<Vec<_>>());
                correct_predictions(&net.predict(x), &labels)
            })
            .sum()
    };
    let threads = threads.clamp(1, chunks.len());
    let per_thread = chunks.len().div_ceil(threads);
    let correct: usize = if threads == 1 {
        count(&chunks)
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .chunks(per_thread)
                .map(|part| s.spawn(move || count(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("evaluation thread panicked"))
                .sum()
        })
    };
    correct as f64 / data.len() as f64
}
