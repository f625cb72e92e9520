//! W1, the book's ch05 run: one training step, and the whole default `backprop train`.
//!
//!     cargo bench --bench train
//!
//! Run from the repository root (the data is read from data/mnist).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use backprop::data::Mnist;
use backprop::optim::Sgd;
use backprop::train::{self, TrainConfig};
use backprop::{Rng, TwoLayerNet};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench_train(c: &mut Criterion) {
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
