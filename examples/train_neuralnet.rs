//! The book's ch05/train_neuralnet.py, line for line, on the library's API (the `backprop
//! train` command runs the same loop, from `backprop::train`).
//!
//!     cargo run --release --example train_neuralnet

use std::path::Path;

use backprop::data::Mnist;
use backprop::layers::Targets;
use backprop::optim::{Optimizer, Sgd};
use backprop::{Rng, TwoLayerNet};

fn main() -> Result<(), backprop::Error> {
    let data = Mnist::load(Path::new("data/mnist"))?;
    let mut rng = Rng::new(0);
    let mut network = TwoLayerNet::new::<f32>(784, 50, 10, 0.01, &mut rng);

    let iters_num = 10_000;
    let train_size = data.train.len();
    let batch_size = 100;
    let mut optimizer = Sgd { lr: 0.1 };
    let iter_per_epoch = (train_size / batch_size).max(1);
    let (x_train, t_train) = data.train.batch_range::<f32>(0..train_size);
    let (x_test, t_test) = data.test.batch_range::<f32>(0..data.test.len());

    for i in 0..iters_num {
        let batch_mask: Vec<usize> = (0..batch_size).map(|_| rng.below(train_size)).collect();
        let (x_batch, t_batch) = data.train.batch::<f32>(&batch_mask);

        // grad = network.gradient(x_batch, t_batch), kept inside the layers
        let loss = network.backprop(x_batch, Targets::Labels(&t_batch));
        // params[key] -= learning_rate * grad[key]
        optimizer.step(network.params());

        if i % iter_per_epoch == 0 {
            let train_acc = network.accuracy(x_train.clone(), &t_train);
            let test_acc = network.accuracy(x_test.clone(), &t_test);
            println!(
                "iter {i:>5}  loss {loss:.4}  train acc {train_acc:.4}  test acc {test_acc:.4}"
            );
        }
    }
    Ok(())
}
