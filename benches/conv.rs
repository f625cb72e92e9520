//! Convolution and pooling forward + backward at the shapes of SimpleConvNet and DeepConvNet,
//! batch 100.
//!
//!     cargo bench --bench conv

use std::time::Duration;

use backprop::Rng;
use backprop::layers::{Convolution, Layer, Pooling, Relu};
use backprop::plan::Accelerated;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ndarray::{Array1, Array4, ArrayD};

fn random(shape: (usize, usize, usize, usize), rng: &mut Rng) -> ArrayD<f32> {
    Array4::from_shape_simple_fn(shape, || rng.normal() as f32).into_dyn()
}

fn bench_conv(c: &mut Criterion) {
    let mut rng = Rng::new(0);
    // (name, filters, channels, size, pad, input H = W)
    let convs = [
        ("SimpleConvNet conv1 30@5x5 on 1x28x28", 30, 1, 5, 0, 28),
        ("DeepConvNet conv2 16@3x3 on 16x28x28", 16, 16, 3, 1, 28),
        (
            "DeepConvNet conv4 32@3x3 pad 2 on 32x14x14",
            32,
            32,
            3,
            2,
            14,
        ),
        ("DeepConvNet conv6 64@3x3 on 64x8x8", 64, 64, 3, 1, 8),
    ];
    for (name, f, ch, k, pad, hw) in convs {
        let w = Array4::from_shape_simple_fn((f, ch, k, k), || 0.1 * rng.normal() as f32);
        let mut conv = Convolution::new(w, Array1::zeros(f), 1, pad);
        let x = random((100, ch, hw, hw), &mut rng);
        let y = conv.forward(x.clone());
        let dy = ArrayD::from_elem(y.raw_dim(), 0.01f32);
        c.bench_function(&format!("{name}: forward + backward, batch 100"), |b| {
            b.iter_batched(
                || (x.clone(), dy.clone()),
                |(x, dy)| {
                    conv.forward(x);
                    conv.backward(dy)
                },
                BatchSize::LargeInput,
            )
        });
    }
    // the filter gradient's product alone: dWc += dy_i·col_iᵀ over 100 images
    let (dy, cols): (Vec<f32>, Vec<f32>) = (
        (0..100 * 30 * 576).map(|_| rng.normal() as f32).collect(),
        (0..100 * 25 * 576).map(|_| rng.normal() as f32).collect(),
    );
    let mut dwc = vec![0f32; 30 * 25];
    c.bench_function("gemm_nt_acc 30x25 over 576, 100 images (conv1 dW)", |b| {
        b.iter(|| {
            for (dy_i, col_i) in dy.chunks_exact(30 * 576).zip(cols.chunks_exact(25 * 576)) {
                backprop::kernels::gemm_nt_acc(dy_i, col_i, 576, &mut dwc);
            }
        })
    });
    // the first layer: no dx, the filter gradient only
    let w = Array4::from_shape_simple_fn((30, 1, 5, 5), || 0.1 * rng.normal() as f32);
    let mut conv = Convolution::new(w, Array1::zeros(30), 1, 0);
    let x = random((100, 1, 28, 28), &mut rng);
    let dense = ArrayD::from_elem(conv.forward(x.clone()).raw_dim(), 0.01f32);
    // W3's: dy comes back through the 2x2 max pooling, one non-zero a window at most, and dW
    // takes the non-zeros (window_sums)
    let mut pool = Pooling::max(2, 2, 2);
    let pooled = Layer::<f32>::forward(&mut pool, conv.forward(x.clone()));
    let s = pooled.shape();
    let pooled_dy = Layer::<f32>::backward(&mut pool, random((s[0], s[1], s[2], s[3]), &mut rng));
    for (name, dy) in [
        ("on 1x28x28: forward + backward_params, batch 100", dense),
        (
            "forward + backward_params, dy through a max pooling",
            pooled_dy,
        ),
    ] {
        c.bench_function(&format!("SimpleConvNet conv1 30@5x5 {name}"), |b| {
            b.iter_batched(
                || (x.clone(), dy.clone()),
                |(x, dy)| {
                    conv.forward(x);
                    conv.backward_params(dy)
                },
                BatchSize::LargeInput,
            )
        });
    }
    // the evaluation path: inference on a chunk of 25 images (evaluate.rs), conv then pool
    let x25 = random((25, 1, 28, 28), &mut rng);
    c.bench_function("SimpleConvNet conv1 predict, 25 images", |b| {
        b.iter_batched(|| x25.clone(), |x| conv.predict(x), BatchSize::LargeInput)
    });
    let y25 = conv.predict(x25.clone());
    let pool = Pooling::max(2, 2, 2);
    c.bench_function("SimpleConvNet pool 2x2 predict, 25 images", |b| {
        b.iter_batched(
            || y25.clone(),
            |y| Layer::<f32>::predict(&pool, y),
            BatchSize::LargeInput,
        )
    });
    // the last: W3's pooling with the ReLU before it taken in (Accelerated::fuse_relu), what the
    // network runs; the two layers one after the other below
    for (name, ch, hw, relu) in [
        ("SimpleConvNet pool 2x2 on 30x24x24", 30, 24, false),
        ("DeepConvNet pool1 2x2 on 16x28x28", 16, 28, false),
        ("SimpleConvNet pool 2x2 with the ReLU fused", 30, 24, true),
    ] {
        let mut pool = Pooling::max(2, 2, 2);
        if relu {
            assert!(Accelerated::<f32>::fuse_relu(&mut pool, true));
        }
        let x = random((100, ch, hw, hw), &mut rng);
        let y = Layer::<f32>::forward(&mut pool, x.clone());
        let dy = ArrayD::from_elem(y.raw_dim(), 0.01f32);
        c.bench_function(&format!("{name}: forward + backward, batch 100"), |b| {
            b.iter_batched(
                || (x.clone(), dy.clone()),
                |(x, dy)| {
                    Layer::<f32>::forward(&mut pool, x);
                    Layer::<f32>::backward(&mut pool, dy)
                },
                BatchSize::LargeInput,
            )
        });
    }
    let x = random((100, 30, 24, 24), &mut rng);
    let dy = random((100, 30, 12, 12), &mut rng);
    let (mut pool, mut relu) = (Pooling::max(2, 2, 2), Relu::new());
    c.bench_function(
        "SimpleConvNet pool 2x2 then ReLU, two layers: forward + backward, batch 100",
        |b| {
            b.iter_batched(
                || (x.clone(), dy.clone()),
                |(x, dy)| {
                    Layer::<f32>::forward(&mut relu, Layer::<f32>::forward(&mut pool, x));
                    Layer::<f32>::backward(&mut pool, Layer::<f32>::backward(&mut relu, dy))
                },
                BatchSize::LargeInput,
            )
        },
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(4));
    targets = bench_conv
}
criterion_main!(benches);
