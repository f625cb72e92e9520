//! Each piece of a W1 training step (TwoLayerNet 784-50-10, batch 100) on real MNIST data, W2's
//! sparse first layer, and the dense layers of W2 and W3 at their shapes.
//!
//!     cargo bench --bench layers
//!
//! Run from the repository root (the data is read from data/mnist).

use std::hint::black_box;
use std::path::Path;

use backprop::Rng;
use backprop::data::Mnist;
use backprop::kernels::{Lhs, sparse::SparseRows};
use backprop::layers::{Affine, Layer, Relu, SoftmaxWithLoss, Targets};
use backprop::models::gaussian;
use backprop::plan::Accelerated;
use criterion::BatchSize;
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
        b.iter(|| SparseRows::index(black_box(x.as_slice().unwrap()), 784, 0.6))
    });

    let w1 = gaussian::<f32>(784, 50, 0.01, &mut rng);
    let csr = SparseRows::index(x.as_slice().unwrap(), 784, 0.6).unwrap();
    let lhs = Lhs::Sparse(&csr);
    let mut y = Array2::<f32>::zeros((100, 50));
    c.bench_function("sparse product X·W1 (100x784 · 784x50), indexed", |b| {
        b.iter(|| lhs.matmul_acc(&w1.view(), &mut y.view_mut(), 1))
    });
    c.bench_function("sparse index transpose (CSR of X -> CSR of Xᵀ)", |b| {
        b.iter(|| csr.transpose())
    });
    let csc = csr.transpose();
    let dy_2d = Array2::from_shape_fn((100, 50), |_| rng.normal() as f32);
    let mut dw = Array2::<f32>::zeros((784, 50));
    c.bench_function(
        "sparse product Xᵀ·dY (784x100 · 100x50), indexed",
        |b| {
            let mut scratch = SparseRows::new(0);
            b.iter(|| lhs.matmul_tn(&dy_2d.view(), &mut dw.view_mut(), &mut scratch, 1))
        },
    );
    c.bench_function("sparse product Xᵀ·dY, transposed index given", |b| {
        b.iter(|| csc.matmul_acc(dy_2d.as_slice().unwrap(), dw.as_slice_mut().unwrap(), 1))
    });

    // W2's first layer (batch 128, 256 outputs): B's rows are 1 KiB apart; dY has 128 of them
    let indices128: Vec<usize> = (0..128).map(|_| rng.below(data.train.len())).collect();
    let (x128, _) = data.train.batch::<f32>(&indices128);
    let csr128 = SparseRows::index(x128.as_slice().unwrap(), 784, 0.6).unwrap();
    let csc128 = csr128.transpose();
    let w256 = gaussian::<f32>(784, 256, 0.05, &mut rng);
    let dy256 = Array2::from_shape_fn((128, 256), |_| rng.normal() as f32);
    let (mut y256, mut dw256) = (vec![0f32; 128 * 256], vec![0f32; 784 * 256]);
    c.bench_function(
        "W2 sparse product X·W1 (128x784 · 784x256), one thread",
        |b| b.iter(|| csr128.matmul(w256.as_slice().unwrap(), &mut y256, 1)),
    );
    c.bench_function(
        "W2 sparse product Xᵀ·dY (784x128 · 128x256), transposed index given, one thread",
        |b| b.iter(|| csc128.matmul(dy256.as_slice().unwrap(), &mut dw256, 1)),
    );

    let mut affine1 = Affine::new(w1, Array1::zeros(50));
    c.bench_function("Affine1 forward (100x784 -> 50), sparse input", |b| {
        b.iter(|| affine1.forward(black_box(x.clone().into_dyn())))
    });
    let dy = Array2::from_shape_fn((100, 50), |_| rng.normal() as f32).into_dyn();
    affine1.forward(x.clone().into_dyn());
    c.bench_function("Affine1 backward_params (dW1 = x^T dy)", |b| {
        b.iter_batched(
            || dy.clone(),
            |dy| affine1.backward_params(dy),
            BatchSize::LargeInput,
        )
    });

    let h = Array2::from_shape_fn((100, 50), |_| rng.normal() as f32).into_dyn();
    let mut relu = Relu::new();
    c.bench_function("Relu1 forward + backward (100x50)", |b| {
        b.iter_batched(
            || h.clone(),
            |h| {
                let y = Layer::<f32>::forward(&mut relu, h);
                Layer::<f32>::backward(&mut relu, y)
            },
            BatchSize::LargeInput,
        )
    });

    let w2 = gaussian::<f32>(50, 10, 0.01, &mut rng);
    let mut affine2 = Affine::new(w2, Array1::zeros(10));
    let dout = Array2::from_shape_fn((100, 10), |_| rng.normal() as f32).into_dyn();
    c.bench_function("Affine2 forward + backward (100x50 -> 10)", |b| {
        b.iter_batched(
            || (h.clone(), dout.clone()),
            |(h, dout)| {
                affine2.forward(h);
                affine2.backward(dout)
            },
            BatchSize::LargeInput,
        )
    });

    let scores = Array2::from_shape_fn((100, 10), |_| rng.normal() as f32).into_dyn();
    let mut loss = SoftmaxWithLoss::new();
    c.bench_function("SoftmaxWithLoss forward + backward (100x10)", |b| {
        b.iter_batched(
            || scores.clone(),
            |scores| {
                loss.forward_owned(scores, Targets::Labels(&labels));
                loss.backward(1.0)
            },
            BatchSize::LargeInput,
        )
    });
}

/// The dense layers of W2 (MLP 784-256-256-10, batch 128) and W3 (SimpleConvNet's ReLU on the
/// convolution's output and its affine layers, batch 100) on two threads; the convolution and
/// pooling are in `benches/conv.rs`.
fn bench_workload_layers(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    let mut random = |shape: &[usize]| {
        ndarray::ArrayD::from_shape_simple_fn(shape.to_vec(), || rng.normal() as f32)
    };
    // (name, batch, D_in, D_out)
    for (name, n, d_in, d_out) in [
        ("W2 Affine2 (128x256 -> 256)", 128, 256, 256),
        ("W2 Affine3 (128x256 -> 10)", 128, 256, 10),
        ("W3 Affine1 (100x4320 -> 100)", 100, 4320, 100),
        ("W3 Affine2 (100x100 -> 10)", 100, 100, 10),
    ] {
        let w = random(&[d_in, d_out]).into_dimensionality().expect("2-D");
        let mut affine = Affine::new(w, Array1::zeros(d_out));
        Accelerated::<f32>::set_threads(&mut affine, 2);
        let x = random(&[n, d_in]);
        let dy = random(&[n, d_out]);
        c.bench_function(&format!("{name}: forward + backward, 2 threads"), |b| {
            b.iter_batched(
                || (x.clone(), dy.clone()),
                |(x, dy)| {
                    affine.forward(x);
                    affine.backward(dy)
                },
                BatchSize::LargeInput,
            )
        });
    }
    for (name, shape) in [
        ("W2 Relu (128x256)", vec![128, 256]),
        ("W3 Relu1 (100x30x24x24)", vec![100, 30, 24, 24]),
    ] {
        let x = random(&shape);
        let mut relu = Relu::new();
        c.bench_function(&format!("{name}: forward + backward"), |b| {
            b.iter_batched(
                || x.clone(),
                |x| {
                    let y = Layer::<f32>::forward(&mut relu, x);
                    Layer::<f32>::backward(&mut relu, y)
                },
                BatchSize::LargeInput,
            )
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = bench_layers, bench_workload_layers
}
criterion_main!(benches);
