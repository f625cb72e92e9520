//! The book's ch05/gradient_check.py: backprop against the numerical gradient on the first
//! three training images, in f64. (`backprop gradcheck` is the same, with a pass/fail exit.)
//!
//!     cargo run --release --example gradient_check

use std::path::Path;

use backprop::data::Mnist;
use backprop::layers::Targets;
use backprop::{Rng, TwoLayerNet};

fn main() -> Result<(), backprop::Error> {
    let data = Mnist::load(Path::new("data/mnist"))?;
    let mut network = TwoLayerNet::new::<f64>(784, 50, 10, 0.01, &mut Rng::new(0));
    let (x_batch, t_batch) = data.train.batch_range::<f64>(0..3);
    let x_batch = x_batch.into_dyn();

    let grad_numerical = network.numerical_gradient(&x_batch, Targets::Labels(&t_batch), 1e-5);
    let grad_backprop = network.gradient(x_batch, Targets::Labels(&t_batch));

    // The average absolute difference per parameter, as the book prints it.
    for ((key, backprop), (_, numerical)) in grad_backprop.iter().zip(&grad_numerical) {
        let diff = (backprop - numerical).mapv(f64::abs).mean().unwrap_or(0.0);
        println!("{key}: {diff:e}");
    }
    Ok(())
}
