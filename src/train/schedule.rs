//! How a run is cut into batches and how its learning rate moves: the sampling, the length,
//! the schedule, and the indices of each batch.

use super::{TrainConfig, shuffle};
use crate::Rng;
use crate::error::{Error, Result};

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

/// The number of updates an epoch has, and the run has, for `n` training samples.
pub(super) fn schedule_lengths(cfg: &TrainConfig, n: usize) -> (usize, usize) {
    let per_epoch = match cfg.sampling {
        Sampling::Random => (n / cfg.batch_size).max(1),
        Sampling::Shuffle => n.div_ceil(cfg.batch_size),
    };
    let total = match cfg.length {
        Length::Iterations(k) => k,
        // saturates: train_with refuses a length past usize before the run starts
        Length::Epochs(e) => e.saturating_mul(per_epoch),
    };
    (per_epoch, total)
}

/// Refuses `--epochs` whose updates overflow a count, before the run starts.
pub(super) fn check_length(cfg: &TrainConfig, n: usize) -> crate::error::Result<()> {
    let (per_epoch, _) = schedule_lengths(cfg, n);
    match cfg.length {
        Length::Epochs(e) if e.checked_mul(per_epoch).is_none() => {
            Err(crate::error::Error::Config(format!(
                "--epochs {e}: {e} epochs of {per_epoch} updates are more updates than can be counted"
            )))
        }
        _ => Ok(()),
    }
}

/// The indices of a batch: `batch_size` random draws (np.random.choice), or the slice
/// `within` of the epoch's permutation `order`, shuffled first when `within` is 0.
pub(super) fn draw_batch(
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
