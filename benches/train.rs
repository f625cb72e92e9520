//! One training step of each workload of `backprop bench` (W1 the book's ch05 TwoLayerNet, W2
//! an MLP 784-256-256-10 with Adam at batch 128, W3 SimpleConvNet with Adam) and of DeepConvNet,
//! the CNNs' evaluation of 1000 images, and the whole default `backprop train` (W1).
//!
//!     cargo bench --bench train
//!
//! Run from the repository root (the data is read from data/mnist).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use backprop::data::Mnist;
use backprop::optim::{Adam, AdamConfig, Sgd};
use backprop::train::{self, TrainConfig};
use backprop::{DeepConvNet, Network, Rng, SimpleConvNet, TwoLayerNet};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench_train(c: &mut Criterion) {
    backprop::alloc::keep_freed_memory();
    let data = Mnist::load(Path::new("data/mnist")).expect("run from the repository root");

    let mut rng = Rng::new(0);
    let mut net = TwoLayerNet::new::<f32>(784, 50, 10, 0.01, &mut rng);
    let mut sgd = Sgd { lr: 0.1 };
    let mut indices = vec![0; 100];
    c.bench_function("W1 step: TwoLayerNet 784-50-10, batch 100, SGD", |b| {
        b.iter(|| {
            indices
                .iter_mut()
                .for_each(|i| *i = rng.below(data.train.len()));
            train::step(&mut net, &mut sgd, &data.train, black_box(&indices), None)
        })
    });

    // W2: MLP 784-256-256-10, He, ReLU, Adam, batch 128
    let mlp = backprop::MlpConfig {
        input_size: 784,
        hidden: vec![256, 256],
        output_size: 10,
        activation: backprop::Activation::Relu,
        init: backprop::Init::He,
        batch_norm: false,
        dropout: 0.0,
        weight_decay: 0.0,
    };
    let mut net = backprop::MultiLayerNet::new::<f32>(&mlp, &mut rng).unwrap();
    net.set_threads(2);
    let mut adam = Adam::new(AdamConfig::default());
    let mut batch128 = vec![0; 128];
    c.bench_function(
        "W2 step: MLP 784-256-256-10, batch 128, Adam, 2 threads",
        |b| {
            b.iter(|| {
                batch128
                    .iter_mut()
                    .for_each(|i| *i = rng.below(data.train.len()));
                train::step(&mut net, &mut adam, &data.train, black_box(&batch128), None)
            })
        },
    );

    for (name, build) in [
        (
            "W3 SimpleConvNet",
            SimpleConvNet::new as fn((usize, usize, usize), usize, &mut Rng) -> Network<f32>,
        ),
        ("DeepConvNet", DeepConvNet::new),
    ] {
        let mut rng = Rng::new(0);
        let mut net = build((1, 28, 28), 10, &mut rng);
        net.set_threads(2);
        let mut adam = Adam::new(AdamConfig::default());
        let mut group = c.benchmark_group(name);
        group.sample_size(20);
        group.bench_function("step: batch 100, Adam, 2 threads", |b| {
            b.iter(|| {
                indices
                    .iter_mut()
                    .for_each(|i| *i = rng.below(data.train.len()));
                train::step(&mut net, &mut adam, &data.train, black_box(&indices), None)
            })
        });
        let eval = data.test.slice(0..1000);
        group.bench_function("evaluation of 1000 images, 2 threads", |b| {
            b.iter(|| train::accuracy(&net, black_box(&eval), 2))
        });
        group.finish();
    }

    let cfg = TrainConfig::default();
    let mut group = c.benchmark_group("W1 run");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(40));
    group.bench_function(
        "backprop train (defaults: 10000 iterations, 16 evaluations)",
        |b| {
            b.iter(|| {
                train::train(&cfg, &data, |_| {})
                    .expect("trains")
                    .summary
                    .test_accuracy
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench_train);
criterion_main!(benches);
