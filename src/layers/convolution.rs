//! 2-D convolution through im2col and a matrix product.

use ndarray::{Array1, Array2, Array4, ArrayD, Axis, Ix4};

use super::{Layer, Param};
use crate::Float;
use crate::linalg::{Lhs, matmul_nt};

/// Convolution (the book's `Convolution`, ch. 7.4): `FN` filters of `C x FH x FW` slid over
/// the input with a stride and zero padding.
///
/// # Shapes
/// `x: (N, C, H, W) -> (N, FN, OH, OW)`, `OH = (H + 2P - FH) / S + 1`, `OW` alike (rounded
/// down: a window that would pass the padded edge is not taken).
///
/// # Forward and gradient
/// ```text
/// col  = im2col(x)                 (N·OH·OW, C·FH·FW)  one row per output position
/// Wc   = W as (FN, C·FH·FW)
/// y    = col·Wcᵀ + b               (N·OH·OW, FN), then as (N, FN, OH, OW)
/// dWc  = dyᵀ·col                   dy as (N·OH·OW, FN)
/// db   = Σ dy
/// dcol = dy·Wc,  dx = col2im(dcol) (overlapping windows add up)
/// ```
#[derive(Clone, Debug)]
pub struct Convolution<T: Float = f32> {
    pub w: Array4<T>,  // (FN, C, FH, FW)
    pub b: Array1<T>,  // (FN)
    pub dw: Array4<T>, // (FN, C, FH, FW)
    pub db: Array1<T>, // (FN)
    pub stride: usize,
    pub pad: usize,
    cache: Option<Cache<T>>,
}

/// What training forward keeps for backward.
#[derive(Clone, Debug)]
struct Cache<T: Float> {
    x_dim: (usize, usize, usize, usize), // (N, C, H, W)
    col: Lhs<T>,                         // (N·OH·OW, C·FH·FW), indexed when mostly zeros
}

/// Geometry of one convolution or pooling window pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub fh: usize,
    pub fw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Window {
    /// (OH, OW) for an (H, W) input; panics (a bug in the network's shapes) when the window
    /// does not fit even once.
    #[track_caller]
    pub fn output(&self, h: usize, w: usize) -> (usize, usize) {
        let (ph, pw) = (h + 2 * self.pad, w + 2 * self.pad);
        assert!(
            self.stride > 0 && ph >= self.fh && pw >= self.fw,
            "window {}x{} (stride {}, pad {}) does not fit a {h}x{w} input",
            self.fh,
            self.fw,
            self.stride,
            self.pad
        );
        (
            (ph - self.fh) / self.stride + 1,
            (pw - self.fw) / self.stride + 1,
        )
    }
}

/// im2col: row (n, oy, ox) of the result holds the window of output position (oy, ox) of
/// image n, in (c, fy, fx) order; padding reads as zero.
pub fn im2col<T: Float>(x: &ndarray::ArrayView4<'_, T>, win: Window) -> Array2<T> {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = win.output(h, w);
    let mut col = Array2::zeros((n * oh * ow, c * win.fh * win.fw));
    for ((i, oy, ox), mut row) in iproduct3(n, oh, ow).zip(col.rows_mut()) {
        let mut k = 0;
        for ch in 0..c {
            for fy in 0..win.fh {
                let y = (oy * win.stride + fy) as isize - win.pad as isize;
                for fx in 0..win.fw {
                    let xx = (ox * win.stride + fx) as isize - win.pad as isize;
                    if y >= 0 && (y as usize) < h && xx >= 0 && (xx as usize) < w {
                        row[k] = x[[i, ch, y as usize, xx as usize]];
                    }
                    k += 1;
                }
            }
        }
    }
    col
}

/// col2im, the adjoint of [`im2col`]: every entry of `col` is added back to the input pixel
/// it was read from (pixels in several windows collect several terms; padding drops out).
pub fn col2im<T: Float>(
    col: &Array2<T>,
    x_dim: (usize, usize, usize, usize),
    win: Window,
) -> Array4<T> {
    let (n, c, h, w) = x_dim;
    let (oh, ow) = win.output(h, w);
    let mut x = Array4::zeros(x_dim);
    for ((i, oy, ox), row) in iproduct3(n, oh, ow).zip(col.rows()) {
        let mut k = 0;
        for ch in 0..c {
            for fy in 0..win.fh {
                let y = (oy * win.stride + fy) as isize - win.pad as isize;
                for fx in 0..win.fw {
                    let xx = (ox * win.stride + fx) as isize - win.pad as isize;
                    if y >= 0 && (y as usize) < h && xx >= 0 && (xx as usize) < w {
                        x[[i, ch, y as usize, xx as usize]] =
                            x[[i, ch, y as usize, xx as usize]] + row[k];
                    }
                    k += 1;
                }
            }
        }
    }
    x
}

/// Transposes each consecutive (rows, cols) block of `src`, row-major, into (cols, rows).
fn transpose_blocks<T: Float>(src: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = vec![T::zero(); src.len()];
    for (to, from) in out
        .chunks_exact_mut(rows * cols)
        .zip(src.chunks_exact(rows * cols))
    {
        for (r, line) in from.chunks_exact(cols).enumerate() {
            for (c, &v) in line.iter().enumerate() {
                to[c * rows + r] = v;
            }
        }
    }
    out
}

/// (i, j, k) for i < a, j < b, k < c, in row-major order.
fn iproduct3(a: usize, b: usize, c: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..a).flat_map(move |i| (0..b).flat_map(move |j| (0..c).map(move |k| (i, j, k))))
}

impl<T: Float> Convolution<T> {
    /// Filters `w (FN, C, FH, FW)`, bias `b (FN)`.
    #[track_caller]
    pub fn new(w: Array4<T>, b: Array1<T>, stride: usize, pad: usize) -> Self {
        assert_eq!(
            w.shape()[0],
            b.len(),
            "Convolution: {} filters, {} biases",
            w.shape()[0],
            b.len()
        );
        assert!(stride > 0, "Convolution: stride 0");
        let (dw, db) = (Array4::zeros(w.raw_dim()), Array1::zeros(b.len()));
        Convolution {
            w,
            b,
            dw,
            db,
            stride,
            pad,
            cache: None,
        }
    }

    fn window(&self) -> Window {
        Window {
            fh: self.w.shape()[2],
            fw: self.w.shape()[3],
            stride: self.stride,
            pad: self.pad,
        }
    }

    /// W as (FN, C·FH·FW).
    fn w_rows(&self) -> ndarray::ArrayView2<'_, T> {
        let fn_ = self.w.shape()[0];
        self.w
            .view()
            .into_shape_with_order((fn_, self.w.len() / fn_))
            .expect("standard layout")
    }

    /// x as (N, C, H, W), checked against the filters' channels.
    #[track_caller]
    fn input(&self, x: ArrayD<T>) -> Array4<T> {
        let x = x
            .into_dimensionality::<Ix4>()
            .expect("Convolution: input must be (N, C, H, W)");
        assert_eq!(
            x.shape()[1],
            self.w.shape()[1],
            "Convolution: input {:?} for filters {:?}",
            x.shape(),
            self.w.shape()
        );
        x
    }

    /// y = col·Wcᵀ + b as (N, FN, OH, OW).
    fn convolve(&self, col: &Lhs<T>, n: usize, oh: usize, ow: usize) -> ArrayD<T> {
        let fn_ = self.w.shape()[0];
        let mut y = Array2::zeros((n * oh * ow, fn_)); // (N·OH·OW, FN)
        y.rows_mut().into_iter().for_each(|mut r| r.assign(&self.b));
        let wt = self.w_rows().t().as_standard_layout().into_owned(); // (C·FH·FW, FN)
        col.matmul_acc(&wt.view(), &mut y.view_mut());
        // (N·OH·OW, FN) -> (N, FN, OH, OW): each image's block transposed
        let out = transpose_blocks(
            y.as_slice().expect("new arrays are contiguous"),
            oh * ow,
            fn_,
        );
        ArrayD::from_shape_vec(vec![n, fn_, oh, ow], out).expect("one value per output")
    }

    /// dy (N, FN, OH, OW) as (N·OH·OW, FN).
    #[track_caller]
    fn dy_rows(&self, dout: &ArrayD<T>) -> Array2<T> {
        let dy = dout
            .view()
            .into_dimensionality::<Ix4>()
            .expect("Convolution::backward: dout must be 4-D");
        let (n, fn_, oh, ow) = dy.dim();
        assert_eq!(
            fn_,
            self.w.shape()[0],
            "Convolution::backward: dout {:?}",
            dy.shape()
        );
        let dy = dy.as_standard_layout();
        // (N, FN, OH, OW) -> (N·OH·OW, FN): each image's block transposed
        let rows = transpose_blocks(dy.as_slice().expect("standard layout"), fn_, oh * ow);
        Array2::from_shape_vec((n * oh * ow, fn_), rows).expect("one value per output")
    }

    /// dW = dyᵀ·col (as (FN, C, FH, FW)), db = Σ dy; returns dy as rows.
    fn param_grads(&mut self, dout: &ArrayD<T>) -> Array2<T> {
        let dy = self.dy_rows(dout);
        let cache = self
            .cache
            .as_ref()
            .expect("Convolution::backward called without a forward before it");
        assert_eq!(
            dy.nrows(),
            cache.col.dim().0,
            "Convolution::backward: dout does not match the forward"
        );
        let mut dwt = Array2::zeros((cache.col.dim().1, dy.ncols())); // (C·FH·FW, FN) = colᵀ·dy
        cache.col.matmul_tn_acc(&dy.view(), &mut dwt.view_mut());
        self.dw = dwt
            .t()
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(self.w.raw_dim())
            .expect("same count");
        self.db = dy.sum_axis(Axis(0));
        dy
    }
}

impl<T: Float> Layer<T> for Convolution<T> {
    fn kind(&self) -> &'static str {
        "Conv"
    }

    fn forward(&mut self, x: ArrayD<T>) -> ArrayD<T> {
        let x = self.input(x);
        let (n, _, h, w) = x.dim();
        let (oh, ow) = self.window().output(h, w);
        let col = Lhs::Dense(im2col(&x.view(), self.window()));
        let y = self.convolve(&col, n, oh, ow);
        self.cache = Some(Cache {
            x_dim: x.dim(),
            col,
        });
        y
    }

    fn predict(&self, x: ArrayD<T>) -> ArrayD<T> {
        let x = self.input(x);
        let (n, _, h, w) = x.dim();
        let (oh, ow) = self.window().output(h, w);
        self.convolve(&Lhs::Dense(im2col(&x.view(), self.window())), n, oh, ow)
    }

    fn backward(&mut self, dout: &ArrayD<T>) -> ArrayD<T> {
        let dy = self.param_grads(dout);
        // dcol = dy·Wc, then back to the image
        let x_dim = self.cache.as_ref().expect("checked by param_grads").x_dim;
        let wc = self.w_rows().to_owned(); // (FN, C·FH·FW)
        let mut dcol = Array2::zeros((dy.nrows(), wc.ncols()));
        matmul_nt(
            &dy.view(),
            &wc.t().as_standard_layout().view(),
            &mut dcol.view_mut(),
        );
        col2im(&dcol, x_dim, self.window()).into_dyn()
    }

    fn backward_params(&mut self, dout: &ArrayD<T>) {
        self.param_grads(dout);
    }

    fn params(&mut self) -> Vec<Param<'_, T>> {
        vec![
            Param {
                name: "W",
                value: self.w.view_mut().into_dyn(),
                grad: self.dw.view_mut().into_dyn(),
            },
            Param {
                name: "b",
                value: self.b.view_mut().into_dyn(),
                grad: self.db.view_mut().into_dyn(),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use crate::gradcheck::check_layer;
    use ndarray::Array;

    /// The obviously-correct convolution: nested loops straight from the definition
    /// y[n, f, oy, ox] = b[f] + Σ_c Σ_fy Σ_fx W[f, c, fy, fx] · xpad[n, c, oy·S + fy, ox·S + fx].
    fn direct(
        x: &Array4<f64>,
        w: &Array4<f64>,
        b: &Array1<f64>,
        s: usize,
        p: usize,
    ) -> Array4<f64> {
        let (n, c, h, wd) = x.dim();
        let (f, _, fh, fw) = w.dim();
        let (oh, ow) = ((h + 2 * p - fh) / s + 1, (wd + 2 * p - fw) / s + 1);
        let at = |i: usize, ch: usize, y: isize, xx: isize| {
            if y < 0 || xx < 0 || y as usize >= h || xx as usize >= wd {
                0.0
            } else {
                x[[i, ch, y as usize, xx as usize]]
            }
        };
        Array4::from_shape_fn((n, f, oh, ow), |(i, k, oy, ox)| {
            let mut sum = b[k];
            for ch in 0..c {
                for fy in 0..fh {
                    for fx in 0..fw {
                        let y = (oy * s + fy) as isize - p as isize;
                        let xx = (ox * s + fx) as isize - p as isize;
                        sum += w[[k, ch, fy, fx]] * at(i, ch, y, xx);
                    }
                }
            }
            sum
        })
    }

    /// The direct convolution's gradients, by the same loops: each product term sends dy back
    /// to its weight and to its input pixel.
    fn direct_backward(
        x: &Array4<f64>,
        w: &Array4<f64>,
        dy: &Array4<f64>,
        s: usize,
        p: usize,
    ) -> (Array4<f64>, Array4<f64>, Array1<f64>) {
        let (n, c, h, wd) = x.dim();
        let (f, _, fh, fw) = w.dim();
        let (_, _, oh, ow) = dy.dim();
        let (mut dx, mut dw, mut db) = (
            Array4::zeros(x.raw_dim()),
            Array4::zeros(w.raw_dim()),
            Array1::zeros(f),
        );
        for i in 0..n {
            for k in 0..f {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let g = dy[[i, k, oy, ox]];
                        db[k] += g;
                        for ch in 0..c {
                            for fy in 0..fh {
                                for fx in 0..fw {
                                    let y = (oy * s + fy) as isize - p as isize;
                                    let xx = (ox * s + fx) as isize - p as isize;
                                    if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < wd {
                                        dw[[k, ch, fy, fx]] +=
                                            g * x[[i, ch, y as usize, xx as usize]];
                                        dx[[i, ch, y as usize, xx as usize]] +=
                                            g * w[[k, ch, fy, fx]];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (dx, dw, db)
    }

    fn random_conv(
        f: usize,
        c: usize,
        fh: usize,
        fw: usize,
        s: usize,
        p: usize,
        rng: &mut Rng,
    ) -> Convolution<f64> {
        let w = Array::from_shape_fn((f, c, fh, fw), |_| rng.normal());
        let b = Array::from_shape_fn(f, |_| rng.normal());
        Convolution::new(w, b, s, p)
    }

    /// (filters, channels, FH, FW, stride, pad, H, W), non-square and odd cases included.
    type Case = (usize, usize, usize, usize, usize, usize, usize, usize);
    const CASES: [Case; 6] = [
        (2, 1, 3, 3, 1, 0, 5, 5),
        (3, 2, 3, 3, 1, 1, 4, 6),
        (2, 3, 2, 3, 2, 0, 7, 6),
        (1, 2, 3, 2, 2, 2, 5, 4),
        (4, 1, 5, 5, 1, 2, 6, 7),
        (2, 2, 1, 1, 3, 0, 7, 5),
    ];

    #[test]
    fn im2col_path_matches_the_direct_convolution_forward_and_backward() {
        let mut rng = Rng::new(30);
        for (f, c, fh, fw, s, p, h, w) in CASES {
            let mut conv = random_conv(f, c, fh, fw, s, p, &mut rng);
            // Half the pixels zero, so that the zero-skipping product is exercised too.
            let x = Array::from_shape_fn((2, c, h, w), |_| {
                if rng.uniform() < 0.5 {
                    0.0
                } else {
                    rng.normal()
                }
            });
            let y = conv.forward(x.clone().into_dyn());
            let expected = direct(&x, &conv.w, &conv.b, s, p);
            assert_eq!(y.shape(), expected.shape());
            assert!(
                (&y - &expected.into_dyn()).iter().all(|d| d.abs() < 1e-12),
                "forward, case {f} {c} {fh}x{fw} s{s} p{p}"
            );

            let dy = Array::from_shape_fn(y.raw_dim(), |_| rng.normal());
            let dx = conv.backward(&dy);
            let (edx, edw, edb) =
                direct_backward(&x, &conv.w, &dy.into_dimensionality().unwrap(), s, p);
            assert!(
                (&dx - &edx.into_dyn()).iter().all(|d| d.abs() < 1e-12),
                "dx"
            );
            assert!((&conv.dw - &edw).iter().all(|d| d.abs() < 1e-12), "dW");
            assert!((&conv.db - &edb).iter().all(|d| d.abs() < 1e-12), "db");
        }
    }

    #[test]
    fn gradient_check_over_strides_paddings_and_shapes() {
        let mut rng = Rng::new(31);
        for (f, c, fh, fw, s, p, h, w) in CASES {
            let mut conv = random_conv(f, c, fh, fw, s, p, &mut rng);
            let x = Array::from_shape_fn((2, c, h, w), |_| rng.normal()).into_dyn();
            for row in check_layer(&mut conv, x, &mut rng) {
                assert!(
                    row.max_rel_err < 1e-7,
                    "case {f} {c} {fh}x{fw} s{s} p{p}: {row}"
                );
            }
        }
    }

    #[test]
    fn output_size_and_a_window_that_does_not_fit() {
        let win = Window {
            fh: 5,
            fw: 5,
            stride: 1,
            pad: 0,
        };
        assert_eq!(win.output(28, 28), (24, 24));
        let win = Window {
            fh: 3,
            fw: 3,
            stride: 2,
            pad: 1,
        };
        assert_eq!(win.output(7, 8), (4, 4));
        let result = std::panic::catch_unwind(|| {
            Window {
                fh: 5,
                fw: 5,
                stride: 1,
                pad: 0,
            }
            .output(3, 9)
        });
        assert!(result.is_err());
    }
}
