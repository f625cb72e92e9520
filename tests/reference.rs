//! The book's code alone (`Network::set_reference`) against the fast paths: the same networks
//! trained a few dozen steps both ways in f64 give the same losses and weights to 1e-9.

mod common;

use backprop::data::Dataset;
use backprop::layers::Targets;
use backprop::optim::by_name;
use backprop::{
    Activation, DeepConvNet, Init, MlpConfig, MultiLayerNet, Network, Rng, SimpleConvNet,
};
use ndarray::{ArrayD, IxDyn};

/// `steps` steps of `optimizer` on batches of 32 MNIST training images, in order; the
/// losses.
fn train(
    net: &mut Network<f64>,
    data: &Dataset,
    optimizer: &str,
    steps: usize,
    image: bool,
) -> Vec<f64> {
    let mut adam =
        by_name::<f64>(optimizer, if optimizer == "adam" { 0.001 } else { 0.01 }).unwrap();
    (0..steps)
        .map(|s| {
            let idx: Vec<usize> = (s * 32..(s + 1) * 32).collect();
            let (x, t) = data.batch::<f64>(&idx);
            let x: ArrayD<f64> = if image {
                x.into_shape_with_order(IxDyn(&[32, 1, 28, 28])).unwrap()
            } else {
                x.into_dyn()
            };
            let loss = net.backprop(x, Targets::Labels(&t));
            net.update(adam.as_mut());
            loss
        })
        .collect()
}

/// The largest relative difference between `a` and `b`, entry by entry (against the larger
/// of the two magnitudes, at least 1e-3 so that values near zero compare absolutely).
fn max_rel(a: impl Iterator<Item = f64>, b: impl Iterator<Item = f64>) -> f64 {
    a.zip(b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1e-3))
        .fold(0.0, f64::max)
}

/// Trains `make()` both ways and compares every loss and every weight.
fn agree(name: &str, make: impl Fn() -> Network<f64>, optimizer: &str, steps: usize, image: bool) {
    let data = common::mnist().train.slice(0..32 * steps);
    let mut fast = make();
    fast.set_threads(2);
    let mut book = make();
    book.set_reference(true);
    assert!(book.is_reference() && !fast.is_reference());
    let (lf, lb) = (
        train(&mut fast, &data, optimizer, steps, image),
        train(&mut book, &data, optimizer, steps, image),
    );
    assert!(
        lf.last() < lf.first(),
        "{name}: the loss went down ({lf:?})"
    );
    let losses = max_rel(lf.iter().copied(), lb.iter().copied());
    assert!(losses < 1e-9, "{name}: losses differ by {losses:e}");
    for ((n, pf), (_, pb)) in fast.params().into_iter().zip(book.params()) {
        let d = max_rel(pf.value.iter().copied(), pb.value.iter().copied());
        assert!(d < 1e-9, "{name}: {n} differs by {d:e}");
    }
}

#[test]
fn simple_conv_net_trains_the_same_on_the_books_code() {
    agree(
        "SimpleConvNet",
        || SimpleConvNet::new::<f64>((1, 28, 28), 10, &mut Rng::new(1)),
        "adam",
        30,
        true,
    );
}

#[test]
fn an_mlp_with_batch_norm_and_dropout_trains_the_same_on_the_books_code() {
    let config = MlpConfig {
        input_size: 784,
        hidden: vec![100, 100],
        output_size: 10,
        activation: Activation::Relu,
        init: Init::He,
        batch_norm: true,
        dropout: 0.2,
        weight_decay: 1e-4,
    };
    // NOTE: momentum, not Adam: the bias before a batch norm has a gradient of exactly zero
    // in exact arithmetic, and Adam divides its rounding noise by its own size, which turns
    // a difference of 1e-17 into steps of the learning rate in either direction
    agree(
        "MLP",
        || MultiLayerNet::new::<f64>(&config, &mut Rng::new(2)).unwrap(),
        "momentum",
        40,
        false,
    );
}

#[test]
fn deep_conv_nets_first_layers_train_the_same_on_the_books_code() {
    // DeepConvNet's first block (conv 3x3 pad 1, relu, conv 3x3 pad 1, relu, max pool 2x2)
    // with a classifier on top
    let deep = DeepConvNet::new::<f64>((1, 28, 28), 10, &mut Rng::new(3));
    let head: Vec<String> = deep
        .description()
        .lines()
        .take(5)
        .map(String::from)
        .collect();
    let text = format!("{}\naffine classes", head.join("\n"));
    let make = || {
        backprop::describe::from_description::<f64>(&text, (1, 28, 28), 10, &mut Rng::new(3))
            .unwrap()
    };
    agree("DeepConvNet's first block", make, "adam", 12, true);
}
