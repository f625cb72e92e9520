//! End to end: training on a slice of the real MNIST, and the properties a run must have.

mod common;

use backprop::Init;
use backprop::data::Mnist;
use backprop::layers::{Input, Targets};
use backprop::train::{Length, Model, Sampling, Schedule, TrainConfig, clip_grad_norm, train};
use backprop::{Error, Rng, TwoLayerNet};

/// 5000 training and 1000 test images of the repository's MNIST.
fn slice() -> Mnist {
    let data = common::mnist();
    Mnist {
        train: data.train.slice(0..5000),
        test: data.test.slice(0..1000),
        ..data
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
fn the_thread_count_changes_no_bit() {
    // SimpleConvNet at batch 100: the convolution and the 4320x100 products are split over
    // the threads (their parts are fixed, their sums taken in order)
    let data = slice();
    let weights = |threads| {
        let cfg = TrainConfig {
            model: Model::SimpleCnn,
            optimizer: "adam".into(),
            lr: 0.001,
            length: Length::Iterations(4),
            threads,
            ..TrainConfig::default()
        };
        weight_bits(&cfg, &data)
    };
    let one = weights(1);
    assert_eq!(one, weights(2));
    assert_eq!(one, weights(3));
}

/// Every weight's bits after training `cfg` on `data`, parameter by parameter.
fn weight_bits(cfg: &TrainConfig, data: &Mnist) -> Vec<Vec<u32>> {
    let mut t = train(cfg, data, |_| {}).unwrap();
    t.network
        .params()
        .into_iter()
        .map(|(_, p)| p.value.iter().map(|v| v.to_bits()).collect())
        .collect()
}

#[test]
fn batches_built_ahead_on_a_second_thread_change_no_bit() {
    // With more than one thread, a two-layer network's next batch is assembled (with its
    // transposed index) while the current one trains, across the epochs' reshuffles too.
    let data = Mnist {
        train: common::mnist().train.slice(0..1000),
        ..slice()
    };
    for sampling in [Sampling::Shuffle, Sampling::Random] {
        let weights = |threads| {
            let cfg = TrainConfig {
                length: Length::Iterations(25), // 10 batches an epoch: two reshuffles
                sampling,
                threads,
                ..TrainConfig::default()
            };
            weight_bits(&cfg, &data)
        };
        assert_eq!(weights(1), weights(2), "{sampling:?}");
    }
}

#[test]
fn evaluations_counted_in_the_background_report_what_one_thread_reports() {
    // With more than one thread, a two-layer network's epochs are evaluated by the batch
    // loader between batches while training goes on, and reported later with a copy of the
    // state at the epoch's end: the reports, and the state the observer sees, must be those
    // of a run on one thread (which evaluates at each epoch's end, in place). Epochs of 9
    // updates are much shorter than an evaluation of 1400 images: reports wait, and the
    // training thread counts the oldest ones itself.
    use backprop::train::{EpochReport, Observer, TrainState, train_with};
    /// Per epoch: the report (number, update, loss, accuracies) and the observer's state
    /// (updates, updates of the epoch, best accuracy, W1), all as bits.
    type Epoch = (usize, usize, u64, [u64; 3], usize, usize, u64, Vec<u32>);
    struct Seen(Vec<Epoch>);
    impl Observer for Seen {
        fn epoch(&mut self, r: &EpochReport, s: &mut TrainState) -> backprop::Result<()> {
            let w1: Vec<u32> = (s.network.params().swap_remove(0).1.value.iter())
                .map(|v| v.to_bits())
                .collect();
            self.0.push((
                r.epoch,
                r.iteration,
                r.loss.to_bits(),
                [
                    r.train_accuracy.to_bits(),
                    r.validation_accuracy.expect("a validation set").to_bits(),
                    r.test_accuracy.to_bits(),
                ],
                s.iteration,
                s.epoch_iters,
                s.best_accuracy.to_bits(),
                w1,
            ));
            Ok(())
        }
    }
    let data = Mnist {
        train: common::mnist().train.slice(0..1000),
        test: common::mnist().test.slice(0..500),
        ..slice()
    };
    let run = |threads| {
        let cfg = TrainConfig {
            length: Length::Iterations(60), // 900 training images: 9 updates an epoch
            validation: 0.1,
            threads,
            ..TrainConfig::default()
        };
        let mut seen = Seen(Vec::new());
        let run = train_with(&cfg, &data, |_| Ok(()), &mut seen).unwrap();
        let summary = run.summary.unwrap();
        (
            seen.0,
            summary.test_accuracy.to_bits(),
            summary.final_loss.to_bits(),
        )
    };
    let one = run(1);
    assert_eq!(one.0.len(), 6);
    for (k, e) in one.0.iter().enumerate() {
        assert_eq!((e.0, e.1, e.4, e.5), (k + 1, 9 * (k + 1), 9 * (k + 1), 0));
    }
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));

    // a run stopped (Ctrl-C) while evaluations wait reports them all before it returns
    struct StopAt(usize, usize, Vec<(usize, u64)>);
    impl Observer for StopAt {
        fn iteration(&mut self, p: &backprop::train::Progress) {
            self.1 = p.iteration;
        }
        fn epoch(&mut self, r: &EpochReport, _: &mut TrainState) -> backprop::Result<()> {
            self.2.push((r.epoch, r.test_accuracy.to_bits()));
            Ok(())
        }
        fn should_stop(&self) -> bool {
            self.1 >= self.0
        }
    }
    let stopped = |threads| {
        let cfg = TrainConfig {
            length: Length::Iterations(60),
            threads,
            ..TrainConfig::default()
        };
        let mut stop = StopAt(31, 0, Vec::new()); // 3 epochs of 10 updates, and one more
        let run = train_with(&cfg, &data, |_| Ok(()), &mut stop).unwrap();
        assert!(run.stopped());
        assert_eq!(run.state.iteration, 31);
        assert_eq!(run.epochs.len(), 3);
        stop.2
    };
    assert_eq!(stopped(1), stopped(2));
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

#[test]
fn shuffled_epochs_see_every_sample_once() {
    use backprop::train::shuffle;
    let mut rng = Rng::new(4);
    let mut order: Vec<usize> = (0..1000).collect();
    shuffle(&mut order, &mut rng);
    assert_ne!(order, (0..1000).collect::<Vec<_>>());
    order.sort_unstable();
    assert_eq!(order, (0..1000).collect::<Vec<_>>());

    // 5000 images, batch 128: 40 updates an epoch, the last one of 8 images.
    let data = slice();
    let cfg = TrainConfig {
        length: Length::Epochs(2),
        sampling: Sampling::Shuffle,
        batch_size: 128,
        ..config(1, 3)
    };
    let mut reports = Vec::new();
    let trained = train(&cfg, &data, |r| reports.push(r.clone())).unwrap();
    assert_eq!(trained.summary.iterations, 80);
    assert_eq!(
        reports.iter().map(|r| r.iteration).collect::<Vec<_>>(),
        [40, 80]
    );
}

#[test]
fn mlp_with_everything_trains_and_validates() {
    let data = slice();
    let cfg = TrainConfig {
        model: Model::Mlp,
        hidden: vec![64, 32],
        batch_norm: true,
        dropout: 0.1,
        weight_decay: 1e-4,
        optimizer: "adam".into(),
        lr: 0.003,
        schedule: Schedule::Cosine,
        clip_grad_norm: Some(5.0),
        length: Length::Epochs(3),
        sampling: Sampling::Shuffle,
        batch_size: 64,
        validation: 0.2,
        ..config(1, 5)
    };
    let mut reports = Vec::new();
    let trained = train(&cfg, &data, |r| reports.push(r.clone())).unwrap();
    let s = &trained.summary;
    assert!(
        s.test_accuracy > 0.85 && s.validation_accuracy.unwrap() > 0.85,
        "{s:?}"
    );
    // 4000 training images after the split: 63 updates an epoch; the cosine rate falls.
    assert_eq!(s.iterations, 3 * 63);
    assert!(reports[0].lr > reports[1].lr && reports[1].lr > reports[2].lr);
}

#[test]
fn schedules_and_clipping() {
    assert_eq!(
        Schedule::parse("step:2:0.5").unwrap(),
        Schedule::Step {
            every: 2,
            gamma: 0.5
        }
    );
    let step = Schedule::Step {
        every: 2,
        gamma: 0.5,
    };
    assert_eq!(
        [0, 1, 2, 5].map(|e| step.lr(0.8, 0, 10, e)),
        [0.8, 0.8, 0.4, 0.2]
    );
    let cos = Schedule::Cosine;
    assert_eq!(cos.lr(0.8, 0, 100, 0), 0.8);
    assert!((cos.lr(0.8, 50, 100, 0) - 0.4).abs() < 1e-12);
    for bad in ["step:0:0.5", "step:2", "linear", "step:2:-1"] {
        assert!(
            Schedule::parse(bad)
                .unwrap_err()
                .to_string()
                .contains("--lr-schedule"),
            "{bad}"
        );
    }

    // Clipping rescales all gradients together to the given global norm.
    let mut net = TwoLayerNet::new::<f32>(784, 20, 10, 0.5, &mut Rng::new(1));
    let data = slice();
    let (x, t) = data.train.batch::<f32>(&(0..50).collect::<Vec<_>>());
    net.backprop(x, Targets::Labels(&t));
    let before = clip_grad_norm(&mut net, 1e-3);
    assert!(before > 1e-3);
    let after: f64 = net
        .params()
        .iter()
        .map(|(_, p)| p.grad.iter().map(|&g| (g as f64).powi(2)).sum::<f64>())
        .sum();
    assert!((after.sqrt() - 1e-3).abs() < 1e-7, "{}", after.sqrt());
    assert_eq!(clip_grad_norm(&mut net, 1.0), after.sqrt());
}

#[test]
fn comparisons_run_on_a_slice() {
    use backprop::compare::{CompareConfig, compare_init, compare_optimizers};
    let data = slice();
    let cfg = CompareConfig {
        iters: 30,
        every: 10,
        hidden: vec![20, 20],
        ..CompareConfig::default()
    };
    let mut printed = Vec::new();
    let out = compare_optimizers(&data, &cfg, |i, losses| printed.push((i, losses.len()))).unwrap();
    assert_eq!(printed, [(0, 7), (10, 7), (20, 7), (29, 7)]);
    let names: Vec<&str> = out.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "AdamW"
        ]
    );
    assert!(
        out.iter()
            .all(|o| o.losses.len() == 30 && o.final_loss(10).is_finite())
    );
    let out = compare_init(&data, &cfg, |_, _| {}).unwrap();
    assert_eq!(
        out.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        ["std=0.01", "Xavier", "He"]
    );
}
