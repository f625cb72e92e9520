//! A trained network on a whole data set: accuracy, loss, per-class accuracy, confusion.

use ndarray::{ArrayD, Ix2};

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
/// 1.11 -> 1.03 s, W2 0.159 -> 0.145 s, W1 the same).
const CHUNK: usize = 30;

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
    let chunks: Vec<(usize, usize)> = (0..data.len())
        .step_by(CHUNK)
        .map(|s| (s, (s + CHUNK).min(data.len())))
        .collect();
    parallel::map(chunks, threads, |(s, e)| {
        let (x, labels) = data.input_batch::<f32>(&(s..e).collect::<Vec<_>>());
        tally(net.predict(x), &labels)
    })
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

/// Runs `net` (inference mode) over all of `data` on `threads` threads.
pub fn evaluate(net: &Network<f32>, data: &Dataset, classes: usize, threads: usize) -> Evaluation {
    let parts = over_chunks(net, data, threads, |scores, labels| {
        let scores = scores
            .into_dimensionality::<Ix2>()
            .expect("the network gives (N, classes)");
        assert_eq!(
            scores.ncols(),
            classes,
            "evaluate: scores for another class count"
        );
        let p = softmax(&scores.view());
        let mut confusion = vec![vec![0usize; classes]; classes];
        let mut loss = 0.0f64;
        for (row, &t) in p.rows().into_iter().zip(labels) {
            confusion[t][argmax(row.iter().copied())] += 1;
            loss -= (row[t] as f64).max(1e-300).ln();
        }
        (confusion, loss)
    });
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut loss = 0.0;
    for (c, l) in parts {
        for (row, part) in confusion.iter_mut().zip(c) {
            row.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        loss += l;
    }
    let correct: usize = (0..classes).map(|k| confusion[k][k]).sum();
    let n = data.len().max(1) as f64;
    Evaluation {
        samples: data.len(),
        accuracy: correct as f64 / n,
        loss: loss / n,
        confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
