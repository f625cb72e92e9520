//! The training run the page watches: one at a time, started from the page or by
//! `backprop train --serve`, published to every event stream as it goes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use backprop::train::{EpochReport, Progress};
use serde::Serialize;

/// Loss points a run keeps for its curve at most: each is the mean over `stride` updates.
const MAX_POINTS: usize = 2000;

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// No run yet.
    Idle,
    /// Loading the data or training.
    Running,
    /// Every update done.
    Finished,
    /// Stopped before its end (the page's Stop, or Ctrl-C).
    Stopped,
    /// The loss became NaN or infinite.
    Diverged,
    /// Any other error (a file that could not be written, ...).
    Failed,
}

/// One epoch's figures, for the accuracy curve.
#[derive(Clone, Debug, Serialize)]
pub struct EpochPoint {
    pub epoch: usize,
    pub iteration: usize,
    pub loss: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub validation_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
}

/// A run as the page sees it.
#[derive(Clone, Debug, Serialize)]
pub struct RunStatus {
    /// 1 for the first run of this process, 0 before any.
    pub run: u64,
    pub state: State,
    /// "page" or "command line".
    pub started_by: String,
    /// The model and training, in the words `backprop train` prints.
    pub settings: String,
    pub iteration: usize,
    pub total: usize,
    pub epoch: usize,
    pub per_epoch: usize,
    /// Updates a second since the run began, and seconds left at that rate.
    pub updates_per_s: Option<f64>,
    pub eta_s: Option<f64>,
    /// What ended the run, or what it is doing ("loading the data").
    pub message: String,
    /// The newest checkpoint the run saved (the last good one after a divergence).
    pub checkpoint: Option<PathBuf>,
    /// The run directory (metrics.csv, config.toml).
    pub run_dir: Option<PathBuf>,
    /// Updates per loss point.
    pub stride: usize,
}

/// Status, curve points and epochs: what an event stream sends from.
#[derive(Debug)]
pub struct Record {
    pub status: RunStatus,
    /// (update, mean loss over the stride before it).
    pub points: Vec<(usize, f64)>,
    pub epochs: Vec<EpochPoint>,
    /// Sum and count of the losses of the point being gathered.
    pending: (f64, usize),
    /// Bumped at every change, so that a stream knows when it has something to send.
    pub version: u64,
}

/// The shared run: its record, a signal for the streams, and the Stop button's flag.
pub struct Live {
    record: Mutex<Record>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            record: Mutex::new(Record {
                status: RunStatus {
                    run: 0,
                    state: State::Idle,
                    started_by: String::new(),
                    settings: String::new(),
                    iteration: 0,
                    total: 0,
                    epoch: 0,
                    per_epoch: 0,
                    updates_per_s: None,
                    eta_s: None,
                    message: String::new(),
                    checkpoint: None,
                    run_dir: None,
                    stride: 1,
                },
                points: Vec::new(),
                epochs: Vec::new(),
                pending: (0.0, 0),
                version: 0,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        }
    }
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, Record> {
        // a panic elsewhere leaves the record readable: it holds only plain values
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self, mut record: MutexGuard<'_, Record>) {
        record.version += 1;
        drop(record);
        self.changed.notify_all();
    }

    /// A new run, unless one is running: then the error names it.
    pub fn begin(&self, started_by: &str) -> Result<u64, String> {
        let mut r = self.lock();
        if r.status.state == State::Running {
            return Err(format!(
                "a training run is already going (run {}, started by the {}): stop it first",
                r.status.run, r.status.started_by
            ));
        }
        self.stop.store(false, Ordering::SeqCst);
        let run = r.status.run + 1;
        r.status = RunStatus {
            run,
            state: State::Running,
            started_by: started_by.into(),
            message: "loading the data".into(),
            ..Live::default().lock().status.clone()
        };
        r.points.clear();
        r.epochs.clear();
        r.pending = (0.0, 0);
        self.changed(r);
        Ok(run)
    }

    /// The settings and directories, once known.
    pub fn describe(&self, settings: String, run_dir: PathBuf) {
        let mut r = self.lock();
        r.status.settings = settings;
        r.status.run_dir = Some(run_dir);
        r.status.message = "training".into();
        self.changed(r);
    }

    /// After each update.
    pub fn progress(&self, p: &Progress) {
        let mut r = self.lock();
        if r.status.total != p.total {
            r.status.stride = p.total.div_ceil(MAX_POINTS).max(1);
        }
        let s = &mut r.status;
        s.iteration = p.iteration;
        s.total = p.total;
        s.epoch = p.epoch;
        s.per_epoch = p.per_epoch;
        if p.since_start_s > 0.0 {
            let rate = p.iteration as f64 / p.since_start_s;
            s.updates_per_s = Some(rate);
            s.eta_s = Some((p.total - p.iteration) as f64 / rate);
        }
        r.pending.0 += p.batch_loss;
        r.pending.1 += 1;
        let last = p.iteration == p.total;
        if r.pending.1 >= r.status.stride || last {
            let (sum, n) = std::mem::take(&mut r.pending);
            r.points.push((p.iteration, sum / n as f64));
            self.changed(r);
        }
    }

    /// After each epoch's evaluation, with the checkpoint it saved, if any.
    pub fn epoch(&self, e: &EpochReport, checkpoint: Option<PathBuf>) {
        let finite = |v: f64| v.is_finite().then_some(v);
        let mut r = self.lock();
        r.epochs.push(EpochPoint {
            epoch: e.epoch,
            iteration: e.iteration,
            loss: finite(e.loss),
            train_accuracy: finite(e.train_accuracy),
            validation_accuracy: e.validation_accuracy.and_then(finite),
            test_accuracy: finite(e.test_accuracy),
        });
        if checkpoint.is_some() {
            r.status.checkpoint = checkpoint;
        }
        self.changed(r);
    }

    /// The end of the run: how it ended, in a sentence, and its last checkpoint.
    pub fn end(&self, state: State, message: String, checkpoint: Option<PathBuf>) {
        let mut r = self.lock();
        r.status.state = state;
        r.status.message = message;
        r.status.eta_s = None;
        if checkpoint.is_some() {
            r.status.checkpoint = checkpoint;
        }
        self.changed(r);
    }

    /// Asks the running run to stop after the update in hand; false when none runs.
    pub fn request_stop(&self) -> bool {
        let running = self.lock().status.state == State::Running;
        if running {
            self.stop.store(true, Ordering::SeqCst);
        }
        running
    }

    /// Whether Stop was asked for.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Calls `f` with the record.
    pub fn read<R>(&self, f: impl FnOnce(&Record) -> R) -> R {
        f(&self.lock())
    }

    /// Waits until the record's version passes `seen`, or `timeout`; the version now.
    pub fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        let r = self.lock();
        let (r, _) = self
            .changed
            .wait_timeout_while(r, timeout, |r| r.version <= seen)
            .unwrap_or_else(|e| e.into_inner());
        r.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(iteration: usize, total: usize, batch_loss: f64) -> Progress {
        Progress {
            iteration,
            total,
            epoch: 1,
            within: iteration,
            per_epoch: total,
            loss: batch_loss,
            batch_loss,
            since_start_s: iteration as f64 * 0.01,
        }
    }

    /// Points are means over the stride, the last update always gives one; a second run
    /// is refused while one runs, and starts afresh after it.
    #[test]
    fn points_average_their_stride_and_runs_go_one_at_a_time() {
        let live = Live::default();
        assert_eq!(live.begin("page"), Ok(1));
        assert!(live.begin("page").unwrap_err().contains("already going"));
        for i in 1..=4001 {
            live.progress(&progress(i, 4001, (i % 3) as f64));
        }
        live.read(|r| {
            assert_eq!(r.status.stride, 3);
            assert_eq!(r.points.len(), 1334);
            assert_eq!(r.points[0], (3, 1.0)); // losses 1, 2, 0
            assert_eq!(*r.points.last().unwrap(), (4001, 1.5)); // losses 1, 2: a short last stride
            assert!((r.status.updates_per_s.unwrap() - 100.0).abs() < 1e-9);
            assert_eq!(r.status.eta_s, Some(0.0));
        });
        assert!(live.request_stop() && live.stop_requested());
        live.end(State::Stopped, "stopped".into(), None);
        assert!(!live.request_stop());
        assert_eq!(live.begin("command line"), Ok(2));
        assert!(!live.stop_requested());
        live.read(|r| assert!(r.points.is_empty() && r.status.iteration == 0));
    }
}
