//! Epochs evaluated in the background: at an epoch's end the training thread hands a copy
//! of the network to the batch loader, which counts its accuracies chunk by chunk between
//! batches while the next epoch trains; the report comes a few updates later with the same
//! numbers and the state as it was at the epoch's end.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::{EpochReport, Observer, TrainState};
use crate::error::Result;
use crate::evaluate::AccuracyJob;

/// An epoch whose evaluation the batch loader is counting between batches.
pub(super) struct Waiting<'a> {
    pub report: EpochReport, // the accuracies and times not filled in yet
    pub job: Arc<AccuracyJob<'a>>,
    pub at_end: TrainState, // the state at the epoch's end, for the observer
}

/// At most this many epochs wait for their evaluation: at one more, the training thread
/// counts the oldest one's chunks itself. (Bounds the copies kept and how late reports
/// come, where evaluating takes longer than an epoch's updates.)
pub(super) const MAX_WAITING: usize = 2;

/// Reports the waiting epochs, in order: those whose evaluation is counted and, while more
/// than [`MAX_WAITING`] wait, the oldest (its chunks counted here); with `all`, every one.
pub(super) fn report_waiting(
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
pub(super) fn report_epoch(
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
