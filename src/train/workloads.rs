//! The fixed workloads `backprop bench` times.

use super::{Length, Model, Sampling, TrainConfig};
use crate::{Activation, Init};

/// The three benchmark workloads' settings (`backprop bench`): W1 the book's ch. 5
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
