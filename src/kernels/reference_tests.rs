//! Every kernel against the readable reference it replaces, over the shapes the book's
//! models use and odd ones: the layers' fast paths against their `*_reference` methods (1e-12
//! in f64; bit for bit in f32 where the kernel promises the same bits), the vector exp against
//! `f32::exp`, the pixel conversion against its table. The products' own kernels are checked
//! entry by entry in their files (`packed.rs`, `sparse.rs`, `mod.rs`), the direct convolution
//! and window sums in `conv/tests.rs`.

use ndarray::{Array, Array1, Array2, ArrayD, IxDyn};

use crate::Rng;
use crate::layers::{Affine, Convolution, Input, Layer, PoolKind, Pooling, Relu};
use crate::plan::Accelerated;

/// The largest difference between `a` and `b` relative to the largest magnitude in `b`.
fn rel_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let scale = b.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn bits(a: &ArrayD<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

/// Random values, a `zeros` fraction of them zero (as MNIST's background or a ReLU's output).
fn random(shape: &[usize], zeros: f64, rng: &mut Rng) -> ArrayD<f64> {
    Array::from_shape_simple_fn(IxDyn(shape), || {
        if rng.uniform() < zeros {
            0.0
        } else {
            rng.normal()
        }
    })
}

/// (filters, channels, F, stride, pad, H, W): SimpleConvNet's conv1, DeepConvNet's six, and
/// odd ones (stride 2, a window wider than a vector, a 1x1).
const CONVS: [(usize, usize, usize, usize, usize, usize, usize); 10] = [
    (30, 1, 5, 1, 0, 28, 28),
    (16, 1, 3, 1, 1, 28, 28),
    (16, 16, 3, 1, 1, 28, 28),
    (32, 16, 3, 1, 1, 14, 14),
    (32, 32, 3, 1, 2, 14, 14),
    (64, 32, 3, 1, 1, 8, 8),
    (64, 64, 3, 1, 1, 8, 8),
    (5, 3, 3, 2, 1, 9, 7),
    (4, 2, 7, 1, 3, 10, 13),
    (3, 2, 1, 1, 0, 5, 6),
];

#[test]
fn the_convolutions_kernels_give_the_books_per_image_im2col() {
    let mut rng = Rng::new(50);
    for (f, c, k, s, p, h, w) in CONVS {
        let wts = random(&[f, c, k, k], 0.0, &mut rng)
            .into_dimensionality()
            .unwrap();
        let b = Array1::from_shape_simple_fn(f, || rng.normal());
        let mut book = Convolution::new(wts, b, s, p);
        Accelerated::<f64>::set_reference(&mut book, true);
        let x = random(&[3, c, h, w], 0.3, &mut rng);
        let y = book.forward(x.clone());
        // a dense dy, and one of one in four non-zeros (as after a max pooling: window sums)
        for zeros in [0.0, 0.75] {
            let dy = random(y.shape(), zeros, &mut rng);
            let mut book = book.clone();
            book.forward(x.clone());
            let dx = book.backward(dy.clone());
            for threads in [1, 2] {
                let mut fast = book.clone();
                Accelerated::<f64>::set_reference(&mut fast, false);
                Accelerated::<f64>::set_threads(&mut fast, threads);
                let case = format!("{f}x{c}x{k}x{k} s{s} p{p} on {h}x{w}, {threads} threads");
                assert!(
                    rel_diff(&fast.predict(x.clone()), &y) < 1e-12,
                    "predict, {case}"
                );
                assert!(
                    rel_diff(&fast.forward(x.clone()), &y) < 1e-12,
                    "forward, {case}"
                );
                let fdx = fast.backward(dy.clone());
                assert!(rel_diff(&fdx, &dx) < 1e-12, "dx, {case}");
                let (dw, bdw) = (fast.dw.clone().into_dyn(), book.dw.clone().into_dyn());
                assert!(rel_diff(&dw, &bdw) < 1e-12, "dW, {case}");
                let (db, bdb) = (fast.db.clone().into_dyn(), book.db.clone().into_dyn());
                assert!(rel_diff(&db, &bdb) < 1e-12, "db, {case}");
            }
        }
    }
}

#[test]
fn the_affine_kernels_give_the_books_products_dense_and_sparse() {
    // (N, D_in, D_out): W1's first and second layer, W2's three, odd ones
    let mut rng = Rng::new(51);
    for (n, d_in, d_out) in [
        (100, 784, 50),
        (100, 50, 10),
        (128, 784, 256),
        (128, 256, 256),
        (7, 13, 3),
        (1, 5, 70),
    ] {
        let wts: Array2<f64> = random(&[d_in, d_out], 0.0, &mut rng)
            .into_dimensionality()
            .unwrap();
        let b = Array1::from_shape_simple_fn(d_out, || rng.normal());
        let mut book = Affine::new(wts, b);
        Accelerated::<f64>::set_reference(&mut book, true);
        // 80% zeros, as an MNIST batch: the sparse path
        let x = random(&[n, d_in], 0.8, &mut rng);
        let y = book.forward(x.clone());
        let dy = random(y.shape(), 0.0, &mut rng);
        let dx = book.backward(dy.clone());
        for threads in [1, 2] {
            let mut fast = book.clone();
            Accelerated::<f64>::set_reference(&mut fast, false);
            Accelerated::<f64>::set_threads(&mut fast, threads);
            let case = format!("{n}x{d_in}x{d_out}, {threads} threads");
            let rows = crate::kernels::sparse::SparseRows::index(x.as_slice().unwrap(), d_in, 0.0)
                .unwrap();
            assert!(
                rel_diff(&fast.predict_input(Input::Sparse(rows.clone())), &y) < 1e-12,
                "{case}"
            );
            assert!(
                rel_diff(&fast.forward(x.clone()), &y) < 1e-12,
                "forward, {case}"
            );
            assert!(
                rel_diff(&fast.backward(dy.clone()), &dx) < 1e-12,
                "dx, {case}"
            );
            let (dw, bdw) = (fast.dw.clone().into_dyn(), book.dw.clone().into_dyn());
            assert!(rel_diff(&dw, &bdw) < 1e-12, "dW, {case}");
            // the network's first layer: sparse rows in, no dx
            fast.forward_input(Input::Sparse(rows));
            fast.backward_params(dy.clone());
            assert!(
                rel_diff(&fast.dw.clone().into_dyn(), &bdw) < 1e-12,
                "sparse dW, {case}"
            );
        }
    }
}

#[test]
fn the_2x2_max_pooling_kernel_gives_the_books_windows_bits_with_or_without_the_relu() {
    // values from a few integers and signed zeros: ties, and zeros whose sign a max decides
    let mut rng = Rng::new(52);
    let values = [-1.0f32, -0.0, 0.0, 1.0, 2.0];
    for (n, c, h, w) in [(2, 30, 24, 24), (3, 16, 28, 28), (2, 3, 7, 5), (1, 2, 6, 9)] {
        let x = Array::from_shape_simple_fn(IxDyn(&[n, c, h, w]), || values[rng.below(5)]);
        let dy = Array::from_shape_simple_fn(IxDyn(&[n, c, h / 2, w / 2]), || values[rng.below(5)]);
        for relu in [false, true] {
            // the book's pooling then, for `relu`, the book's ReLU
            let (mut book, mut book_relu) = (Pooling::<f32>::max(2, 2, 2), Relu::new());
            Accelerated::<f32>::set_reference(&mut book, true);
            let mut y = Layer::<f32>::forward(&mut book, x.clone());
            let mut dyr = dy.clone();
            if relu {
                y = Layer::<f32>::forward(&mut book_relu, y);
                dyr = Layer::<f32>::backward(&mut book_relu, dy.clone());
            }
            let dx = Layer::<f32>::backward(&mut book, dyr);
            for threads in [1, 2] {
                let mut fast = Pooling::<f32>::max_2x2_for_tests(relu, threads);
                let case = format!("{n}x{c}x{h}x{w}, relu {relu}, {threads} threads");
                assert_eq!(
                    bits(&Layer::<f32>::predict(&fast, x.clone())),
                    bits(&y),
                    "{case}"
                );
                assert_eq!(
                    bits(&Layer::<f32>::forward(&mut fast, x.clone())),
                    bits(&y),
                    "{case}"
                );
                assert_eq!(
                    bits(&Layer::<f32>::backward(&mut fast, dy.clone())),
                    bits(&dx),
                    "dx, {case}"
                );
            }
        }
    }
    // only 2x2 stride 2 without padding has a kernel
    for pool in [
        Pooling::<f32>::max(3, 3, 2),
        Pooling::new(PoolKind::Average, 2, 2, 2, 0),
    ] {
        assert!(!Accelerated::<f32>::fuse_relu(&mut pool.clone(), true));
    }
}

#[test]
fn the_vector_exp_gives_f32_exp_bits() {
    // a sweep over the range a softmax sees, the ends of exp's range and odd lengths
    let mut v: Vec<f32> = (0..200_003).map(|i| -104.0 + i as f32 * 0.000_95).collect();
    v.extend([
        0.0,
        -0.0,
        88.72,
        88.73,
        -87.3,
        -103.9,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ]);
    let mut fast = v.clone();
    crate::kernels::exp_in_place(&mut fast);
    for (x, e) in v.iter().zip(&fast) {
        assert_eq!(e.to_bits(), x.exp().to_bits(), "exp({x})");
    }
}

#[test]
fn the_pixel_conversion_gives_the_tables_values() {
    let table = crate::data::pixel_table::<f32>();
    let value: Vec<u8> = (0..=255).chain(0..=255).collect();
    let pixel: Vec<u16> = (0..value.len() as u16).collect();
    let (mut col, mut val) = (Vec::new(), Vec::new());
    crate::kernels::pixels::extend_entries(&mut col, &mut val, &pixel, &value, &table);
    for (i, (&p, v)) in value.iter().zip(&val).enumerate() {
        assert_eq!(v.to_bits(), table[p as usize].to_bits(), "byte {p}");
        assert_eq!(col[i], i as u32);
    }
    // and a dense row, written in place
    let mut dense = vec![f32::NAN; value.len()];
    crate::kernels::pixels::scale_into(&mut dense, &value, &table);
    for (&p, v) in value.iter().zip(&dense) {
        assert_eq!(v.to_bits(), table[p as usize].to_bits(), "byte {p}");
    }
}
