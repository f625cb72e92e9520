//! The training loop: the book's draw a batch, backprop, update, with each epoch's end
//! evaluated (here or in the background) and reported.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::background::{Waiting, report_epoch, report_waiting};
use super::loader::Loader;
use super::schedule::{draw_batch, schedule_lengths};
use super::{EpochReport, Observer, Progress, Run, Sampling, Summary, TrainConfig, TrainState};
use super::{accuracy, step_batch};
use crate::data::{Dataset, Mnist};
use crate::error::{Error, Result};
use crate::evaluate::AccuracyJob;
use crate::parallel;

/// What the loop holds besides the state it trains.
pub(super) struct RunLoop<'a, 'o> {
    pub cfg: &'a TrainConfig,
    pub data: &'a Mnist,
    pub train_set: &'a Dataset,
    pub validation: Option<&'a Dataset>,
    pub observer: &'o mut dyn Observer,
    pub loader: &'o mut Loader<'a>,
    pub start: Instant,
    /// The epoch reports of this call, in order.
    pub epochs: Vec<EpochReport>,
    /// Epochs whose evaluation the loader is counting.
    pub waiting: VecDeque<Waiting<'a>>,
    /// Held while the loader has evaluation chunks to count: small products stay on this
    /// thread rather than take its core.
    pub other_work: Option<parallel::OtherWork>,
}

/// Where an update falls: its epoch, its place in the epoch, the updates an epoch and a run
/// have.
#[derive(Clone, Copy)]
struct At {
    epoch: usize,
    within: usize,
    per_epoch: usize,
    total: usize,
}

impl<'a> RunLoop<'a, '_> {
    /// The loop, from `state` on, to the run's last update or the observer's stop.
    pub fn run(mut self, mut state: TrainState) -> Result<Run> {
        let (per_epoch, total) = schedule_lengths(self.cfg, self.train_set.len());
        let mut indices = Vec::with_capacity(self.cfg.batch_size);
        let mut epoch_start = Instant::now();
        while state.iteration < total {
            if self.observer.should_stop() {
                return self.stopped(state);
            }
            let i = state.iteration;
            let at = At {
                epoch: i / per_epoch,
                within: i % per_epoch,
                per_epoch,
                total,
            };
            let lr = match self.update(&mut state, &mut indices, at) {
                Ok(lr) => lr,
                Err(diverged) => {
                    // the epochs counted in the background are reported first: their
                    // checkpoints are the last good ones
                    self.report_waiting(&mut state, true)?;
                    return Err(diverged);
                }
            };
            let epoch_end = at.within + 1 == per_epoch;
            if epoch_end {
                self.end_epoch(&mut state, at, lr, epoch_start)?;
            }
            // the reports whose evaluation is counted, in order (and the oldest, counted
            // here, while too many wait)
            self.report_waiting(&mut state, false)?;
            if epoch_end {
                epoch_start = Instant::now();
            }
            if self.waiting.is_empty() {
                self.other_work = None;
            }
        }
        self.finish(state, total)
    }

    /// One update: the batch drawn (and the next one asked of the loader), backprop, the
    /// optimizer's step at this update's learning rate, the progress reported. Returns the
    /// learning rate.
    fn update(&mut self, state: &mut TrainState, indices: &mut Vec<usize>, at: At) -> Result<f64> {
        let (cfg, i) = (self.cfg, state.iteration);
        // the batch: random draws (np.random.choice) or the next slice of this epoch's shuffle
        draw_batch(cfg, at.within, &mut state.order, &mut state.rng, indices);
        let (x, t) = self.loader.batch(indices);
        if i + 1 < at.total {
            self.prefetch_next(state, (i + 1) % at.per_epoch);
        }
        let lr = cfg.schedule.lr(cfg.lr, i, at.total, at.epoch);
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
        self.observer.iteration(&Progress {
            iteration: state.iteration,
            total: at.total,
            epoch: at.epoch + 1,
            within: at.within + 1,
            per_epoch: at.per_epoch,
            loss: state.epoch_loss / state.epoch_iters as f64,
            batch_loss: loss,
            since_start_s: self.start.elapsed().as_secs_f64(),
        });
        Ok(lr)
    }

    /// Asks the loader for the next batch (update `within` of its epoch), built on its
    /// thread while this one trains; the run's own order and generator are not moved.
    fn prefetch_next(&mut self, state: &mut TrainState, within: usize) {
        let (mut rng, mut next) = (state.rng.clone(), Vec::with_capacity(self.cfg.batch_size));
        if within == 0 && self.cfg.sampling == Sampling::Shuffle {
            // a new epoch shuffles: on a copy, the run's own order and generator wait
            draw_batch(self.cfg, 0, &mut state.order.clone(), &mut rng, &mut next);
        } else {
            draw_batch(self.cfg, within, &mut state.order, &mut rng, &mut next); // reads only
        }
        self.loader.prefetch(next);
    }

    /// An epoch's end: its report, evaluated on the training, validation and test sets,
    /// here or (with a loader thread) in the background on a copy of the network.
    fn end_epoch(
        &mut self,
        state: &mut TrainState,
        at: At,
        lr: f64,
        epoch_start: Instant,
    ) -> Result<()> {
        let report = EpochReport {
            epoch: at.epoch + 1,
            iteration: state.iteration,
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
        let mut sets = vec![self.train_set];
        sets.extend(self.validation);
        sets.push(&self.data.test);
        let report = EpochReport {
            epoch_s: epoch_start.elapsed().as_secs_f64(),
            ..report
        };
        if self.loader.has_thread() {
            // NOTE: the evaluation of a copy, counted by the loader between batches while
            // the next epoch trains (W1, `backprop bench`, 8 alternating rounds, medians:
            // 1.21 -> 1.10 s, with the small products kept on one thread meanwhile)
            let job = Arc::new(AccuracyJob::new(state.network.clone(), sets));
            self.loader.evaluate(&job);
            let at_end = state.clone();
            self.waiting.push_back(Waiting {
                report,
                job,
                at_end,
            });
            self.other_work
                .get_or_insert_with(parallel::OtherWork::begin);
            return Ok(());
        }
        let threads = self.cfg.threads;
        let accuracies = sets
            .iter()
            .map(|d| accuracy(&state.network, d, threads))
            .collect();
        let best = state.best_accuracy;
        state.best_accuracy = report_epoch(
            report,
            accuracies,
            self.start,
            state,
            best,
            self.observer,
            &mut self.epochs,
        )?;
        Ok(())
    }

    /// [`report_waiting`] on this loop's epochs.
    fn report_waiting(&mut self, state: &mut TrainState, all: bool) -> Result<()> {
        let (start, observer) = (self.start, &mut *self.observer);
        report_waiting(
            &mut self.waiting,
            state,
            &mut self.epochs,
            observer,
            start,
            all,
        )
    }

    /// The run stopped by the observer: the waiting reports, then the state to resume from.
    fn stopped(mut self, mut state: TrainState) -> Result<Run> {
        self.report_waiting(&mut state, true)?;
        state.elapsed_s += self.start.elapsed().as_secs_f64();
        Ok(Run {
            state,
            epochs: self.epochs,
            summary: None,
        })
    }

    /// The run's end: the waiting reports, and the final figures after the last update (the
    /// last epoch report may be older).
    fn finish(mut self, mut state: TrainState, total: usize) -> Result<Run> {
        self.report_waiting(&mut state, true)?;
        drop(self.other_work.take()); // before the final evaluation, which splits over the threads
        let threads = self.cfg.threads;
        let (train_accuracy, validation_accuracy, test_accuracy) = match self.epochs.last() {
            Some(r) if r.iteration == total => {
                (r.train_accuracy, r.validation_accuracy, r.test_accuracy)
            }
            _ => {
                let net = &state.network;
                (
                    accuracy(net, self.train_set, threads),
                    self.validation.map(|v| accuracy(net, v, threads)),
                    accuracy(net, &self.data.test, threads),
                )
            }
        };
        state.elapsed_s += self.start.elapsed().as_secs_f64();
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
            epochs: self.epochs,
            summary: Some(summary),
        })
    }
}
