//! Each piece of a W1 training step (TwoLayerNet 784-50-10, batch 100) on real MNIST data.
//!
//!     cargo bench --bench layers
//!
//! Run from the repository root (the data is read from data/mnist).

use std::hint::black_box;
use std::path::Path;

use backprop::Rng;
use backprop::data::Mnist;
use backprop::layers::{Affine, Layer, Relu, SoftmaxWithLoss, Targets};
use backprop::linalg::{Lhs, sparse::SparseRows};
use backprop::models::gaussian;
use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::{Array1, Array2};

fn bench_layers(c: &mut Criterion) {
    let data = Mnist::load(Path::new("data/mnist")).expect("run from the repository root");
    let mut rng = Rng::new(0);
    let indices: Vec<usize> = (0..100).map(|_| rng.below(data.train.len())).collect();
    let (x, labels) = data.train.batch::<f32>(&indices);

    c.bench_function("batch: 100 MNIST images, u8 -> f32", |b| {
        b.iter(|| data.train.batch::<f32>(black_box(&indices)))
    });
    c.bench_function("input_batch: 100 MNIST images as sparse rows", |b| {
        b.iter(|| data.train.input_batch::<f32>(black_box(&indices)))
    });
    c.bench_function("lhs index: non-zeros of a (100, 784) batch", |b| {
        b.iter(|| Lhs::new(black_box(x.clone())))
    });

    let w1 = gaussian::<f32>(784, 50, 0.01, &mut rng);
    let lhs = Lhs::new(x.clone());
    let mut y = Array2::<f32>::zeros((100, 50));
    c.bench_function("sparse product X·W1 (100x784 · 784x50), indexed", |b| {
        b.iter(|| lhs.matmul_acc(&w1.view(), &mut y.view_mut(), 1))
    });
    let csr = SparseRows::index(x.as_slice().unwrap(), 784, 0.6).unwrap();
    c.bench_function("sparse index transpose (CSR of X -> CSR of Xᵀ)", |b| {
        b.iter(|| csr.transpose())
    });
    let csc = csr.transpose();
    let dy_2d = Array2::from_shape_fn((100, 50), |_| rng.normal() as f32);
    let mut dw = Array2::<f32>::zeros((784, 50));
    c.bench_function(
        "sparse product Xᵀ·dY (784x100 · 100x50), indexed",
        |b| b.iter(|| lhs.matmul_tn_acc(&dy_2d.view(), &mut dw.view_mut(), 1)),
    );
    c.bench_function("sparse product Xᵀ·dY, transposed index given", |b| {
        b.iter(|| csc.matmul_acc(dy_2d.as_slice().unwrap(), dw.as_slice_mut().unwrap()))
    });

    let mut affine1 = Affine::new(w1, Array1::zeros(50));
    c.bench_function("Affine1 forward (100x784 -> 50), sparse input", |b| {
        b.iter(|| affine1.forward(black_box(x.clone().into_dyn())))
    });
    let dy = Array2::from_shape_fn((100, 50), |_| rng.normal() as f32).into_dyn();
    affine1.forward(x.clone().into_dyn());
    c.bench_function("Affine1 backward_params (dW1 = x^T dy)", |b| {
        b.iter(|| affine1.backward_params(black_box(&dy)))
    });

    let h = Array2::from_shape_fn((100, 50), |_| rng.normal() as f32).into_dyn();
    let mut relu = Relu::new();
    c.bench_function("Relu1 forward + backward (100x50)", |b| {
        b.iter(|| {
            let y = Layer::<f32>::forward(&mut relu, black_box(h.clone()));
            Layer::<f32>::backward(&mut relu, &y)
        })
    });

    let w2 = gaussian::<f32>(50, 10, 0.01, &mut rng);
    let mut affine2 = Affine::new(w2, Array1::zeros(10));
    let dout = Array2::from_shape_fn((100, 10), |_| rng.normal() as f32).into_dyn();
    c.bench_function("Affine2 forward + backward (100x50 -> 10)", |b| {
        b.iter(|| {
            affine2.forward(black_box(h.clone()));
            affine2.backward(&dout)
        })
    });

    let scores = Array2::from_shape_fn((100, 10), |_| rng.normal() as f32).into_dyn();
    let mut loss = SoftmaxWithLoss::new();
    c.bench_function("SoftmaxWithLoss forward + backward (100x10)", |b| {
        b.iter(|| {
            loss.forward(black_box(&scores), Targets::Labels(&labels));
            loss.backward(1.0)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = bench_layers
}
criterion_main!(benches);
