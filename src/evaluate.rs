//! A trained network on a whole data set: accuracy, loss, per-class accuracy, confusion.

use ndarray::{Array2, Ix2};

use crate::data::Dataset;
use crate::layers::softmax;
use crate::{Network, parallel};

/// Samples per forward pass (see `train::accuracy` on why it is small).
const CHUNK: usize = 25;

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

/// Runs `net` (inference mode) over all of `data` on `threads` threads.
pub fn evaluate(net: &Network<f32>, data: &Dataset, classes: usize, threads: usize) -> Evaluation {
    let chunks: Vec<(usize, usize)> = (0..data.len())
        .step_by(CHUNK)
        .map(|s| (s, (s + CHUNK).min(data.len())))
        .collect();
    let per_thread = chunks.len().div_ceil(threads.max(1)).max(1);
    let groups: Vec<&[(usize, usize)]> = chunks.chunks(per_thread).collect();
    let parts = parallel::map(groups, threads, |group| {
        let mut confusion = vec![vec![0usize; classes]; classes];
        let mut loss = 0.0f64;
        for &(s, e) in group {
            let (x, labels) = data.input_batch::<f32>(&(s..e).collect::<Vec<_>>());
            let scores = net
                .predict(x)
                .into_dimensionality::<Ix2>()
                .expect("the network gives (N, classes)");
            let p: Array2<f32> = softmax(&scores.view());
            for (row, &t) in p.rows().into_iter().zip(&labels) {
                let mut best = (0, f32::NEG_INFINITY);
                for (i, &v) in row.iter().enumerate() {
                    if v > best.1 {
                        best = (i, v);
                    }
                }
                if t < classes && best.0 < classes {
                    confusion[t][best.0] += 1;
                }
                loss -= (row[t.min(row.len() - 1)] as f64).max(1e-300).ln();
            }
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
