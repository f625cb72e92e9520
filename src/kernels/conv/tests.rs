//! The convolution's kernels against their references.

use super::direct::{convolve_direct, direct_applies, term_offsets};
use super::window_sums::{pad_image, window_positions, window_sums};
use super::*;
use crate::Rng;
use crate::layers::convolution::tests::{CASES, Case, direct_backward, random_conv};
use crate::layers::{Convolution, Layer};
use crate::plan::Accelerated;
use ndarray::Array;

/// Every (n, f, oy, ox) of an (N, F, OH, OW) output.
fn outputs(
    n: usize,
    f: usize,
    oh: usize,
    ow: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..n).flat_map(move |i| {
        (0..f).flat_map(move |k| (0..oh).flat_map(move |y| (0..ow).map(move |x| (i, k, y, x))))
    })
}

#[test]
fn every_f32_output_is_its_chain_of_fused_multiply_adds_then_the_bias() {
    // the forward's kernel on this CPU (AVX-512: six filters a block, AVX2: three) against
    // the sum written out in im2col's row order: filter counts that leave a partial block
    // of either, rows of 24 outputs and of fewer, padding, several channels
    if !crate::kernels::cpu::fma() {
        return; // without FMA the sums are rounded twice (documented)
    }
    let mut rng = Rng::new(31);
    for (f, c, fh, fw, p, h, w) in [
        (30, 1, 5, 5, 0, 28, 28),
        (7, 2, 3, 3, 1, 9, 20),
        (13, 3, 3, 3, 0, 26, 26),
        (5, 1, 7, 7, 0, 30, 30),
    ] {
        let wts = Array::from_shape_fn((f, c, fh, fw), |_| rng.normal() as f32);
        let b = Array::from_shape_fn(f, |_| rng.normal() as f32);
        let mut conv = Convolution::new(wts.clone(), b.clone(), 1, p);
        let x = Array::from_shape_fn((2, c, h, w), |_| rng.normal() as f32);
        let y = conv.forward(x.clone().into_dyn());
        let (oh, ow) = (h + 2 * p - fh + 1, w + 2 * p - fw + 1);
        let at = |n: usize, ch: usize, yy: usize, xx: usize| {
            let (yy, xx) = (yy as isize - p as isize, xx as isize - p as isize);
            let inside = (0..h as isize).contains(&yy) && (0..w as isize).contains(&xx);
            if inside {
                x[[n, ch, yy as usize, xx as usize]]
            } else {
                0.0
            }
        };
        for (n, k, oy, ox) in outputs(2, f, oh, ow) {
            let mut t = 0.0f32;
            for ch in 0..c {
                for fy in 0..fh {
                    for fx in 0..fw {
                        t = wts[[k, ch, fy, fx]].mul_add(at(n, ch, oy + fy, ox + fx), t);
                    }
                }
            }
            let expected = b[k] + t;
            assert_eq!(
                y[[n, k, oy, ox]].to_bits(),
                expected.to_bits(),
                "{f} filters {c}x{fh}x{fw} pad {p} over {h}x{w}: output ({n}, {k}, {oy}, {ox})"
            );
        }
    }
}

#[test]
fn window_sums_give_the_direct_gradients_of_a_mostly_zero_dy() {
    // the cases above, a window wider than a strip (two strips a row) and one of more
    // strips than a pass (3·3 = 9: a pass of 5, then 4 and a repeat)
    let wide: [Case; 2] = [(2, 1, 3, 10, 1, 1, 5, 13), (3, 3, 3, 3, 1, 0, 6, 5)];
    let mut rng = Rng::new(33);
    for (f, c, fh, fw, s, p, h, w) in CASES.into_iter().chain(wide) {
        let conv = random_conv(f, c, fh, fw, s, p, &mut rng);
        let win = conv.window();
        let (oh, ow) = win.output(h, w);
        let x = Array::from_shape_fn((1, c, h, w), |_| rng.normal());
        // one in five non-zero, and filter 0 all zeros
        let dy = Array::from_shape_fn((1, f, oh, ow), |(_, k, _, _)| {
            if k == 0 || rng.uniform() < 0.8 {
                0.0
            } else {
                rng.normal()
            }
        });
        let (_, edw, edb) = direct_backward(&x, &conv.w, &dy, s, p);

        let d = PartDims {
            fn_: f,
            k: c * fh * fw,
            q: oh * ow,
            c,
            h,
            w,
            win,
        };
        let mut part = Part::default();
        part.size(f, d.k, d.q, false);
        let dy = dy.as_slice().unwrap();
        let nnz = part.nonzeros(dy, d.q);
        assert_eq!(nnz, dy.iter().filter(|&&g| g != 0.0).count());
        pad_image(x.as_slice().unwrap(), &d, &mut part.image);
        window_positions(&d, &mut part.at);
        // sums are added to what dWc and db held
        part.dwc.fill(1.0);
        part.db.fill(1.0);
        part.strips.set(&d);
        window_sums(&mut part);
        let case = format!("case {f} {c} {fh}x{fw} s{s} p{p} {h}x{w}");
        for (got, want) in part.dwc.iter().zip(&edw) {
            assert!((got - 1.0 - want).abs() < 1e-12, "dW, {case}");
        }
        for (got, want) in part.db.iter().zip(&edb) {
            assert!((got - 1.0 - want).abs() < 1e-12, "db, {case}");
        }
    }
}

#[test]
fn a_dy_left_unwritten_by_a_max_pooling_gives_the_bits_of_the_dy_written_out() {
    use crate::layers::Pooling;
    // the convolution writes out each image's dy from the pooling's winners itself
    // (backward_from_unpooled): dW, db and dx are those of the pooling's dense dx. 3x3
    // filters over 10x10 (8x8 outputs, a quarter non-zeros: more than the window sums
    // take, the dense products) and 5x5 (window sums); odd outputs leave a row and a
    // column out of every window; the ReLU fused or not; 10 images in 5 parts, 1 and 2
    // threads; the first layer's params-only backward too
    let mut rng = Rng::new(44);
    let bits = |a: &ArrayD<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for (fh, h, relu) in [(3, 10, false), (5, 13, true), (5, 12, false), (3, 11, true)] {
        let conv64 = random_conv(4, 2, fh, fh, 1, 0, &mut rng);
        let conv = Convolution::new(
            conv64.w.mapv(|v| v as f32),
            conv64.b.mapv(|v| v as f32),
            1,
            0,
        );
        let x = Array::from_shape_fn((10, 2, h, h), |_| rng.normal() as f32).into_dyn();
        let oph = (h + 1 - fh) / 2; // the pooled output's size
        let dy = Array::from_shape_fn((10, 4, oph, oph), |_| match rng.below(4) {
            0 => 0.0,
            _ => rng.normal() as f32,
        })
        .into_dyn();
        for threads in [1, 2] {
            let mut pool = Pooling::<f32>::max_2x2_for_tests(relu, threads);
            let mut conv = conv.clone();
            conv.set_threads(threads);
            let (mut conv2, mut pool2) = (conv.clone(), pool.clone());
            for first_layer in [false, true] {
                pool.forward(conv.forward(x.clone()));
                pool2.forward(conv2.forward(x.clone()));
                let written = pool.backward(dy.clone());
                let unwritten = pool2.backward_unpooled(dy.clone()).ok().unwrap();
                let case = format!("{fh}x{fh} over {h}x{h}, relu {relu}, {threads} threads");
                if first_layer {
                    conv.backward_params(written);
                    conv2.backward_params_from_unpooled(unwritten);
                } else {
                    let dx = conv.backward(written);
                    let dx2 = conv2.backward_from_unpooled(unwritten);
                    assert_eq!(bits(&dx), bits(&dx2), "dx, {case}");
                }
                assert_eq!(
                    bits(&conv.dw.clone().into_dyn()),
                    bits(&conv2.dw.clone().into_dyn()),
                    "dW, {case}"
                );
                assert_eq!(
                    bits(&conv.db.clone().into_dyn()),
                    bits(&conv2.db.clone().into_dyn()),
                    "db, {case}"
                );
            }
        }
    }
}

#[test]
fn the_direct_forward_is_the_packed_products_bits() {
    // (filters, channels, FH, FW, pad, H, W): output rows of 24, 72 (three blocks of 3
    // vectors), 22 and 45 (a partial vector), filters not a multiple of a block
    let cases = [
        (30, 1, 5, 5, 0, 28, 28),
        (7, 3, 3, 3, 0, 26, 26),
        (5, 2, 3, 3, 1, 22, 22),
        (13, 1, 2, 4, 0, 4, 48),
        (3, 2, 1, 1, 0, 3, 72),
    ];
    let mut rng = Rng::new(35);
    for (f, c, fh, fw, p, h, w) in cases {
        let conv = Convolution::new(
            Array::from_shape_fn((f, c, fh, fw), |_| rng.normal() as f32),
            Array::from_shape_fn(f, |_| rng.normal() as f32),
            1,
            p,
        );
        let win = conv.window();
        let (oh, ow) = win.output(h, w);
        let d = PartDims {
            fn_: f,
            k: c * fh * fw,
            q: oh * ow,
            c,
            h,
            w,
            win,
        };
        assert!(direct_applies(&d));
        let x: Vec<f32> = (0..c * h * w).map(|_| rng.normal() as f32).collect();
        let mut col = vec![0.0; d.k * d.q];
        im2col_image(&x, (c, h, w), win, &mut col);
        let mut packed = vec![f32::NAN; f * d.q];
        convolve_image(&w_rows(&conv.w), &conv.b, &col, &mut packed);
        let (mut image, mut offsets) = (Vec::new(), Vec::new());
        pad_image(&x, &d, &mut image);
        term_offsets(&d, &mut offsets);
        let mut direct = vec![f32::NAN; f * d.q];
        let (wc, b) = (conv.w.as_slice().unwrap(), conv.b.as_slice().unwrap());
        convolve_direct(wc, b, &image, &offsets, &d, &mut direct);
        assert!(
            packed
                .iter()
                .zip(&direct)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "case {f} {c} {fh}x{fw} p{p} {h}x{w}"
        );
    }
}
