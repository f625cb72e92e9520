//! A trained network on a whole data set: accuracy, loss, per-class accuracy, confusion.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ndarray::{Array2, ArrayD, Axis, Ix2};

use crate::data::Dataset;
use crate::layers::softmax;
use crate::network::{argmax, correct_predictions};
use crate::{Network, parallel};

/// Samples per forward pass when evaluating.
/// NOTE: small on purpose: at 100 MNIST images a convolution's im2col and output temporaries
/// are 6-7 MB each, and the allocator returned them to the system and faulted them back in at
/// every chunk (6 of SimpleConvNet's 8 s of evaluation were page faults); at 25 they stay
/// below its thresholds (3.7 s). The two-layer and MLP runs take the same time either way.
/// 30 rather than 25: five full 6-row panels of the packed product, where 25 computed 30 rows
/// and kept 25 (`backprop bench`, 4 alternating rounds, medians of the evaluation time: W3
/// 1.11 -> 1.03 s, W2 0.159 -> 0.145 s, W1 the same). 24 rather than 30: also six full
/// groups of four rows of the MLP's sparse first layer (`sparse::union`), where 30 summed a
/// last group of two at the cost of four (AMD EPYC, 6 alternating rounds, the evaluation's
/// time in W2 0.138 -> 0.130 s; in W3, 4 rounds, 0.891 -> 0.895 s, the same).
pub const CHUNK: usize = 24;

/// What [`evaluate`] measures.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub samples: usize,
    pub accuracy: f64,
    /// Mean cross-entropy, `-ln softmax(score)[label]`.
    pub loss: f64,
    /// `confusion[t][p]`: samples of class `t` predicted as `p`.
    pub confusion: Vec<Vec<usize>>,
}

impl Evaluation {
    /// Accuracy within each true class (NaN for a class with no samples).
    pub fn per_class(&self) -> Vec<f64> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(t, row)| row[t] as f64 / row.iter().sum::<usize>() as f64)
            .collect()
    }
}

/// `net`'s scores (inference mode) for all of `data`, chunk by chunk, the chunks dealt to
/// `threads` threads; `tally` turns each chunk's scores `(N, classes)` and labels into a
/// part, and the parts come back in chunk order.
fn over_chunks<R: Send>(
    net: &Network<f32>,
    data: &Dataset,
    threads: usize,
    tally: impl Fn(ArrayD<f32>, &[usize]) -> R + Sync,
) -> Vec<R> {
    parallel::map(chunks(data).collect(), threads, |samples| {
        let (scores, labels) = chunk_scores(net, data, samples);
        tally(scores, &labels)
    })
}

/// `data`'s samples in chunks of [`CHUNK`].
fn chunks(data: &Dataset) -> impl Iterator<Item = Range<usize>> + '_ {
    (0..data.len())
        .step_by(CHUNK)
        .map(|s| s..(s + CHUNK).min(data.len()))
}

/// `net`'s scores (inference mode) for the `samples` of `data`, and their labels.
fn chunk_scores(
    net: &Network<f32>,
    data: &Dataset,
    samples: Range<usize>,
) -> (ArrayD<f32>, Vec<usize>) {
    let (x, labels) = data.input_batch::<f32>(&samples.collect::<Vec<_>>());
    (net.predict(x), labels)
}

/// Accuracy of `net` on the whole of `data`, the chunks split over `threads` threads.
/// The result does not depend on the thread count (it is a count of correct answers).
pub fn accuracy(net: &Network<f32>, data: &Dataset, threads: usize) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let correct: usize = over_chunks(net, data, threads, |scores, labels| {
        correct_predictions(&scores, labels)
    })
    .into_iter()
    .sum();
    correct as f64 / data.len() as f64
}

/// The accuracy of a network on some data sets, counted chunk by chunk by whichever threads
/// work on it: each call of [`AccuracyJob::work_one`] claims the next chunk (`CHUNK`
/// samples) until none is left, so threads can join and leave at any time. Training hands
/// one, with a copy of the network, to its batch loader at the end of an epoch: the loader
/// counts chunks between batches while the next epoch trains.
/// The result does not depend on who counted which chunk (a count of correct answers).
pub struct AccuracyJob<'a> {
    net: Network<f32>,
    sets: Vec<&'a Dataset>,
    chunks: Vec<(usize, Range<usize>)>, // (set, samples)
    next: AtomicUsize,                  // the next chunk to claim
    counted: AtomicUsize,               // chunks counted, or given up by a panic
    correct: Vec<AtomicUsize>,          // per set
    failed: AtomicBool,                 // a chunk panicked
}

impl<'a> AccuracyJob<'a> {
    /// The job of counting `net`'s correct answers on each of `sets`.
    pub fn new(net: Network<f32>, sets: Vec<&'a Dataset>) -> Self {
        let chunks = sets
            .iter()
            .enumerate()
            .flat_map(|(k, d)| chunks(d).map(move |samples| (k, samples)))
            .collect();
        AccuracyJob {
            net,
            correct: sets.iter().map(|_| AtomicUsize::new(0)).collect(),
            sets,
            chunks,
            next: AtomicUsize::new(0),
            counted: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        }
    }

    /// Counts the next chunk on this thread; false when none was left to claim.
    pub fn work_one(&self) -> bool {
        let Some((set, samples)) = self.chunks.get(self.next.fetch_add(1, Ordering::Relaxed))
        else {
            return false;
        };
        // NOTE: a chunk that panics still counts as done (and marks the job failed), so
        // that a thread waiting for the job does not wait forever
        struct Counted<'j>(&'j AccuracyJob<'j>);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.failed.store(true, Ordering::Relaxed);
                }
                self.0.counted.fetch_add(1, Ordering::Release);
            }
        }
        let _counted = Counted(self);
        let (scores, labels) = chunk_scores(&self.net, self.sets[*set], samples.clone());
        let correct = correct_predictions(&scores, &labels);
        self.correct[*set].fetch_add(correct, Ordering::Relaxed);
        true
    }

    /// True when every chunk has been counted.
    pub fn is_done(&self) -> bool {
        self.counted.load(Ordering::Acquire) == self.chunks.len()
    }

    /// Counts what is left on this thread and waits for chunks other threads are counting;
    /// then the accuracy on each set, in the order given. Panics if a chunk panicked.
    pub fn finish(&self) -> Vec<f64> {
        while self.work_one() {}
        while !self.is_done() {
            std::thread::yield_now(); // another thread's last chunk: microseconds
        }
        assert!(
            !self.failed.load(Ordering::Relaxed),
            "evaluation: a chunk failed on another thread"
        );
        self.sets
            .iter()
            .zip(&self.correct)
            .map(|(d, c)| match d.len() {
                0 => 0.0,
                n => c.load(Ordering::Relaxed) as f64 / n as f64,
            })
            .collect()
    }
}

/// Runs `net` (inference mode) over all of `data` on `threads` threads.
pub fn evaluate(net: &Network<f32>, data: &Dataset, classes: usize, threads: usize) -> Evaluation {
    let parts = over_chunks(net, data, threads, |scores, labels| {
        tally(&chunk_probabilities(scores, classes), labels, classes)
    });
    finish(parts, data.len(), classes)
}

/// [`evaluate`], with the probabilities it counted from: the softmax of `net`'s scores for
/// every sample of `data`, in order, `(N, classes)`.
pub fn evaluate_with_probabilities(
    net: &Network<f32>,
    data: &Dataset,
    classes: usize,
    threads: usize,
) -> (Evaluation, Array2<f32>) {
    let parts = over_chunks(net, data, threads, |scores, labels| {
        let p = chunk_probabilities(scores, classes);
        let counted = tally(&p, labels, classes);
        (p, counted)
    });
    let views: Vec<_> = parts.iter().map(|(p, _)| p.view()).collect();
    let p = ndarray::concatenate(Axis(0), &views).unwrap_or_else(|_| Array2::zeros((0, classes)));
    let tallies = parts.into_iter().map(|(_, t)| t).collect();
    (finish(tallies, data.len(), classes), p)
}

/// A chunk's scores `(N, classes)` as probabilities.
#[track_caller]
fn chunk_probabilities(scores: ArrayD<f32>, classes: usize) -> Array2<f32> {
    let scores = scores
        .into_dimensionality::<Ix2>()
        .expect("the network gives (N, classes)");
    assert_eq!(
        scores.ncols(),
        classes,
        "evaluate: scores for another class count"
    );
    softmax(&scores.view())
}

/// A chunk's confusion counts and summed cross-entropy.
fn tally(p: &Array2<f32>, labels: &[usize], classes: usize) -> (Vec<Vec<usize>>, f64) {
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut loss = 0.0f64;
    for (row, &t) in p.rows().into_iter().zip(labels) {
        confusion[t][argmax(row.iter().copied())] += 1;
        loss -= (row[t] as f64).max(1e-300).ln();
    }
    (confusion, loss)
}

/// The chunks' tallies summed into the evaluation of `samples` samples.
fn finish(parts: Vec<(Vec<Vec<usize>>, f64)>, samples: usize, classes: usize) -> Evaluation {
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut loss = 0.0;
    for (c, l) in parts {
        for (row, part) in confusion.iter_mut().zip(c) {
            row.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        loss += l;
    }
    let correct: usize = (0..classes).map(|k| confusion[k][k]).sum();
    let n = samples.max(1) as f64;
    Evaluation {
        samples,
        accuracy: correct as f64 / n,
        loss: loss / n,
        confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accuracy_job_counted_by_two_threads_gives_the_accuracy() {
        // 8x8 images, a fifth of their pixels inked, labels from the ink's position: a
        // trained-looking answer is not needed, only the same count however it is split
        let mut rng = crate::Rng::new(3);
        let mut set = |n: usize| {
            let images: Vec<u8> = (0..n * 64)
                .map(|_| {
                    if rng.uniform() < 0.2 {
                        1 + rng.below(255) as u8
                    } else {
                        0
                    }
                })
                .collect();
            let labels = (0..n).map(|_| rng.below(10) as u8).collect();
            Dataset::new(images, labels, 8, 8).unwrap()
        };
        let (train, test, empty) = (set(1000), set(77), set(0));
        let net = crate::TwoLayerNet::new::<f32>(64, 20, 10, 0.5, &mut crate::Rng::new(4));
        let job = AccuracyJob::new(net.clone(), vec![&train, &empty, &test]);
        std::thread::scope(|s| {
            s.spawn(|| while job.work_one() {});
            while job.work_one() {}
        });
        assert!(job.is_done());
        let expected = vec![accuracy(&net, &train, 1), 0.0, accuracy(&net, &test, 1)];
        assert_eq!(job.finish(), expected);
        assert!(expected[0] > 0.0 && expected[2] > 0.0, "{expected:?}");
    }

    #[test]
    fn the_probabilities_kept_are_those_the_evaluation_counted() {
        let mut rng = crate::Rng::new(5);
        let images: Vec<u8> = (0..100 * 16).map(|_| rng.below(256) as u8).collect();
        let labels: Vec<u8> = (0..100).map(|_| rng.below(3) as u8).collect();
        let data = Dataset::new(images, labels, 4, 4).unwrap();
        let net = crate::TwoLayerNet::new::<f32>(16, 8, 3, 0.5, &mut crate::Rng::new(6));
        let (e, p) = evaluate_with_probabilities(&net, &data, 3, 2);
        assert_eq!(e, evaluate(&net, &data, 3, 1));
        assert_eq!(p.dim(), (100, 3));
        let (x, _) = data.batch::<f32>(&(0..100).collect::<Vec<_>>());
        let scores = net.predict(x).into_dimensionality::<Ix2>().unwrap();
        let expected = softmax(&scores.view());
        assert!(p.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn per_class_accuracy_reads_the_diagonal() {
        let e = Evaluation {
            samples: 5,
            accuracy: 0.6,
            loss: 0.0,
            confusion: vec![vec![2, 1], vec![1, 1]],
        };
        assert_eq!(e.per_class(), vec![2.0 / 3.0, 0.5]);
    }
}
