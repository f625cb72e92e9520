//! The batch loader: the next batch assembled on a thread of its own while the current one
//! trains, and evaluation chunks counted there between batches.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};

use crate::data::Dataset;
use crate::evaluate::AccuracyJob;
use crate::layers::Input;

/// A batch's images and labels.
pub(super) type Batch = (Input<f32>, Vec<usize>);

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
pub(super) struct Loader<'a> {
    data: &'a Dataset,
    worker: Option<(Sender<Ask<'a>>, Receiver<Batch>)>,
    pending: Option<Vec<usize>>, // the indices asked of the worker, not yet collected
}

impl<'a> Loader<'a> {
    pub(super) fn new<'scope>(
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
    pub(super) fn prefetch(&mut self, indices: Vec<usize>) {
        if let Some((want, _)) = &self.worker
            && want.send(Ask::Batch(indices.clone())).is_ok()
        {
            self.pending = Some(indices);
        }
    }

    /// Whether batches are built on a thread of their own.
    pub(super) fn has_thread(&self) -> bool {
        self.worker.is_some()
    }

    /// Hands `job` to the thread, which counts its chunks between batches. (Chunks no thread
    /// counts are counted by whoever finishes the job.)
    pub(super) fn evaluate(&mut self, job: &Arc<AccuracyJob<'a>>) {
        if let Some((want, _)) = &self.worker {
            let _ = want.send(Ask::Evaluation(job.clone()));
        }
    }

    /// The batch of `indices`: the prefetched one when it is that one.
    pub(super) fn batch(&mut self, indices: &[usize]) -> Batch {
        if let (Some(asked), Some((_, ready))) = (self.pending.take(), &self.worker)
            && let Ok(batch) = ready.recv()
            && asked == indices
        {
            return batch;
        }
        self.data.input_batch::<f32>(indices)
    }
}
