//! A layer of your own: the leaky ReLU, `y = x` where x > 0, `y = α·x` elsewhere, written
//! outside the crate, gradient-checked, trained inside a network on MNIST, saved and loaded.
//!
//!     cargo run --release --example custom_layer
//!
//! A layer implements [`Layer`]: forward (keeping what backward needs), predict (keeping
//! nothing), backward, a one-line description, and its parameters if it has any. The
//! network then runs it as the book runs every layer; the built-in layers' fast paths and
//! the network's rewrites leave it alone.
//!
//! Saving and loading: the model file keeps the weights by name (`W1`, `b1`, ...) and the
//! layers' descriptions. The description language does not know `leaky_relu`, so a network
//! with this layer is built in code again and its weights loaded into it
//! ([`SavedFile::load_weights`]); `backprop eval` cannot rebuild it from the file alone.

use std::path::Path;

use backprop::checkpoint::{ModelInfo, SavedFile, save_model};
use backprop::data::Mnist;
use backprop::gradcheck::check_layer;
use backprop::layers::{Affine, Layer, Targets};
use backprop::models::gaussian;
use backprop::optim::by_name;
use backprop::{Float, Network, Rng};
use ndarray::{Array1, ArrayD, Zip};

/// Leaky ReLU.
///
/// # Shapes
/// `x: any -> same`.
///
/// # Gradient
/// ```text
/// y  = x      if x > 0, else α·x
/// dx = dy     if x > 0, else α·dy
/// ```
#[derive(Clone, Debug)]
pub struct LeakyRelu<T> {
    alpha: T,
    x: Option<ArrayD<T>>, // the input, kept for backward
}

impl<T: Float> LeakyRelu<T> {
    pub fn new(alpha: f64) -> Self {
        LeakyRelu {
            alpha: T::of(alpha),
            x: None,
        }
    }

    fn leaky(&self, v: T) -> T {
        if v > T::zero() { v } else { self.alpha * v }
    }
}

impl<T: Float> Layer<T> for LeakyRelu<T> {
    fn kind(&self) -> &'static str {
        "LeakyRelu"
    }

    fn forward(&mut self, x: ArrayD<T>) -> ArrayD<T> {
        let y = x.mapv(|v| self.leaky(v));
        self.x = Some(x);
        y
    }

    fn predict(&self, x: ArrayD<T>) -> ArrayD<T> {
        x.mapv(|v| self.leaky(v))
    }

    fn backward(&mut self, mut dout: ArrayD<T>) -> ArrayD<T> {
        let x = self
            .x
            .as_ref()
            .expect("LeakyRelu::backward without a forward");
        // dx = dy where x > 0, α·dy elsewhere
        Zip::from(&mut dout).and(x).for_each(|d, &x| {
            if x <= T::zero() {
                *d = self.alpha * *d
            }
        });
        dout
    }

    fn describe(&self) -> String {
        format!("leaky_relu {}", self.alpha.to_f64().unwrap_or(f64::NAN))
    }
}

/// 784-100-10 with the leaky ReLU between the affine layers, weights from `seed`.
fn network(seed: u64) -> Network<f32> {
    let mut rng = Rng::new(seed);
    let mut net = Network::new();
    net.push(Affine::new(
        gaussian(784, 100, 0.05, &mut rng),
        Array1::zeros(100),
    ))
    .push(LeakyRelu::new(0.1))
    .push(Affine::new(
        gaussian(100, 10, 0.1, &mut rng),
        Array1::zeros(10),
    ));
    net
}

pub fn main() -> Result<(), backprop::Error> {
    // 1. backward against the numerical gradient, in f64
    let mut rng = Rng::new(0);
    let x = ArrayD::from_shape_simple_fn(ndarray::IxDyn(&[4, 7]), || rng.normal());
    for row in check_layer(&mut LeakyRelu::<f64>::new(0.1), x, &mut rng) {
        println!("gradient check {row}");
        assert!(
            row.max_rel_err < 1e-7,
            "the leaky ReLU's backward is wrong: {row}"
        );
    }

    // 2. trained inside a network: 600 SGD steps of 100 images
    let data = Mnist::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"))?;
    let mut net = network(1);
    let mut sgd = by_name::<f32>("sgd", 0.1)?;
    for step in 0..600 {
        let idx: Vec<usize> = (0..100).map(|i| (step * 100 + i) % 60_000).collect();
        let (x, t) = data.train.batch::<f32>(&idx);
        net.backprop(x, Targets::Labels(&t));
        net.update(sgd.as_mut());
    }
    let (x, t) = data.test.batch_range::<f32>(0..10_000);
    let accuracy = net.accuracy(x.clone(), &t);
    println!("test accuracy after one epoch: {accuracy:.4}");
    assert!(
        accuracy > 0.9,
        "one epoch should reach 90%, reached {accuracy}"
    );

    // 3. saved, then loaded into the same network built in code
    let dir = std::env::temp_dir().join(format!("backprop-custom-layer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| backprop::Error::file(&dir, e.to_string()))?;
    let file = dir.join("leaky.safetensors");
    let info = ModelInfo::of(&net, [1, 28, 28], 10);
    save_model(&file, &mut net, &info)?;
    let mut loaded = network(2); // other weights, replaced by the file's
    SavedFile::read(&file)?.load_weights(&mut loaded)?;
    assert_eq!(
        loaded.predict(x.clone()),
        net.predict(x),
        "the loaded network predicts the same"
    );
    println!("saved and loaded: {}", file.display());
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
