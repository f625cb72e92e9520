//! End to end: training on a slice of the real MNIST, and the properties a run must have.

mod common;

use backprop::Init;
use backprop::data::Mnist;
use backprop::layers::{Input, Targets};
use backprop::train::{Length, TrainConfig, train};
use backprop::{Error, Rng, TwoLayerNet};

/// 5000 training and 1000 test images of the repository's MNIST.
fn slice() -> Mnist {
    let data = common::mnist();
    Mnist {
        train: data.train.slice(0..5000),
        test: data.test.slice(0..1000),
        classes: data.classes,
    }
}

fn config(iters: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        length: Length::Iterations(iters),
        seed,
        ..TrainConfig::default()
    }
}

#[test]
fn trains_well_above_chance_on_a_slice_of_mnist() {
    let data = slice();
    let mut reports = Vec::new();
    let trained = train(&config(500, 1), &data, |r| reports.push(r.clone())).unwrap();
    let s = &trained.summary;
    // Chance is 0.1; the book's settings reach about 0.88 after 500 updates on 5000 images.
    assert!(s.test_accuracy > 0.8, "test accuracy {}", s.test_accuracy);
    assert!(
        s.train_accuracy > 0.8,
        "train accuracy {}",
        s.train_accuracy
    );
    assert!(
        s.final_loss < 1.0 && s.final_loss > 0.0,
        "final loss {}",
        s.final_loss
    );
    // 5000 / 100 = 50 updates per epoch: 10 epochs, reported in order, loss going down.
    assert_eq!(reports.len(), 10);
    assert_eq!(
        reports.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert!(
        reports[9].loss < reports[0].loss / 2.0,
        "{} -> {}",
        reports[0].loss,
        reports[9].loss
    );
    assert_eq!(trained.epochs, reports);
}

#[test]
fn same_seed_same_run_bit_for_bit() {
    let data = slice();
    let weights = |seed| {
        let mut t = train(&config(120, seed), &data, |_| {}).unwrap();
        let w: Vec<Vec<u32>> = t
            .network
            .params()
            .into_iter()
            .map(|(_, p)| p.value.iter().map(|v| v.to_bits()).collect())
            .collect();
        (w, t.summary.final_loss.to_bits(), t.summary.test_accuracy)
    };
    let a = weights(7);
    assert_eq!(a, weights(7));
    assert_ne!(a.0, weights(8).0);
}

#[test]
fn a_diverging_run_stops_with_an_error() {
    let data = slice();
    let cfg = TrainConfig {
        lr: 1e30,
        init: Some(Init::Std(1.0)),
        ..config(200, 0)
    };
    match train(&cfg, &data, |_| {}) {
        Err(e @ Error::Diverged { .. }) => assert!(e.to_string().contains("--lr"), "{e}"),
        Err(e) => panic!("expected divergence, got {e}"),
        Ok(t) => panic!("expected divergence, got loss {}", t.summary.final_loss),
    }
}

#[test]
fn invalid_settings_are_refused_naming_the_flag() {
    let data = slice();
    for (cfg, flag) in [
        (
            TrainConfig {
                batch_size: 0,
                ..config(1, 0)
            },
            "--batch-size",
        ),
        (
            TrainConfig {
                hidden: vec![0],
                ..config(1, 0)
            },
            "--hidden",
        ),
        (
            TrainConfig {
                lr: -0.1,
                ..config(1, 0)
            },
            "--lr",
        ),
        (
            TrainConfig {
                lr: f64::NAN,
                ..config(1, 0)
            },
            "--lr",
        ),
        (config(0, 0), "--iters"),
    ] {
        let e = train(&cfg, &data, |_| {}).err().expect("refused");
        assert!(
            matches!(e, Error::Config(_)) && e.to_string().contains(flag),
            "{e}"
        );
    }
}

#[test]
fn sparse_batches_give_the_dense_answers() {
    // The training path feeds the first layer non-zero pixels only; the result must be the
    // dense computation's, to rounding.
    let data = slice();
    let indices: Vec<usize> = (0..64).map(|i| i * 37 % 5000).collect();
    let (dense, labels) = data.train.batch::<f64>(&indices);
    let (sparse, labels2) = data.train.input_batch::<f64>(&indices);
    assert!(matches!(sparse, Input::Sparse(_)));
    assert_eq!(labels, labels2);
    let mut net = TwoLayerNet::new::<f64>(784, 30, 10, 0.1, &mut Rng::new(3));
    let g_dense = net.gradient(dense.clone(), Targets::Labels(&labels));
    let g_sparse = net.gradient(sparse.clone(), Targets::Labels(&labels));
    for ((name, a), (_, b)) in g_dense.iter().zip(&g_sparse) {
        let diff = (a - b).iter().fold(0f64, |m, d| m.max(d.abs()));
        assert!(diff < 1e-12, "{name}: {diff}");
    }
    let (p_dense, p_sparse) = (net.predict(dense), net.predict(sparse));
    assert!((&p_dense - &p_sparse).iter().all(|d| d.abs() < 1e-12));
}
