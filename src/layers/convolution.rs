//! 2-D convolution (the book's ch. 7.4): im2col and a matrix product, image by image.

use ndarray::{Array1, Array2, Array4, ArrayD, ArrayView2, Axis, Ix4};

use super::{Layer, Param};
use crate::Float;
use crate::kernels::conv::{ConvKernels, Dout};
use crate::kernels::pool::Unpooled;
use crate::plan::Accelerated;

/// Convolution (the book's `Convolution`, ch. 7.4): `FN` filters of `C x FH x FW` slid over
/// the input with a stride and zero padding.
///
/// # Shapes
/// `x: (N, C, H, W) -> (N, FN, OH, OW)`, `OH = (H + 2P - FH) / S + 1`, `OW` alike (rounded
/// down: a window that would pass the padded edge is not taken).
///
/// # Forward and gradient, image by image (`Q = OH·OW` output positions)
/// ```text
/// col_i  = im2col(x_i)              (C·FH·FW, Q)  one column per output position
/// Wc     = W as (FN, C·FH·FW)
/// y_i    = Wc·col_i + b             (FN, Q) = (FN, OH, OW), the output's own layout
/// dWc    = Σ_i dy_i·col_iᵀ          (FN, C·FH·FW)
/// db     = Σ_i Σ_q dy_i             (FN)
/// dcol_i = Wcᵀ·dy_i,  dx_i = col2im(dcol_i)   (overlapping windows add up)
/// ```
/// The book stacks the transposes of the `col_i` into one `(N·OH·OW, C·FH·FW)` matrix
/// ([`im2col`]); per image, the products read and write the `(N, C, H, W)` arrays as they
/// are, with no transposes.
///
/// # Fast path
/// Training and inference run [`crate::kernels::conv`] unless the layer is in reference
/// mode: the same formulas, the batch split over threads, the forward at stride 1 summed
/// straight from the image and dW from dy's non-zeros. It must equal
/// `forward_reference` / `backward_reference` below (`kernels::reference_tests`).
#[derive(Clone, Debug)]
pub struct Convolution<T: Float = f32> {
    pub w: Array4<T>,  // (FN, C, FH, FW)
    pub b: Array1<T>,  // (FN)
    pub dw: Array4<T>, // (FN, C, FH, FW)
    pub db: Array1<T>, // (FN)
    pub stride: usize,
    pub pad: usize,
    x: Option<Array4<T>>, // (N, C, H, W) the reference forward's input, for backward
    fast: Option<ConvKernels<T>>, // the fast paths; None in reference mode
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

    /// The outputs `o` in `lo..hi` (of `out`) whose input index `o·S + f − P` lies in
    /// `0..size`, for window offset `f`; the others read padding.
    pub(crate) fn inside(&self, out: usize, f: usize, size: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.pad);
        let lo = if p > f { (p - f).div_ceil(s) } else { 0 }.min(out);
        let hi = if size + p > f {
            (size + p - f).div_ceil(s)
        } else {
            0
        };
        (lo, hi.min(out).max(lo))
    }
}

/// im2col of one image: `x (C, H, W) -> col (C·FH·FW, OH·OW)`, row (c, fy, fx) holding the
/// pixel each output position's window has at that offset; padding reads as zero.
pub(crate) fn im2col_image<T: Float>(
    x: &[T],
    (c, h, w): (usize, usize, usize),
    win: Window,
    col: &mut [T],
) {
    let (oh, ow) = win.output(h, w);
    let mut rows = col.chunks_exact_mut(oh * ow);
    for plane in x.chunks_exact(h * w).take(c) {
        for fy in 0..win.fh {
            for fx in 0..win.fw {
                let row = rows.next().expect("C·FH·FW rows");
                let (lo, hi) = win.inside(ow, fx, w);
                for (oy, line) in row.chunks_exact_mut(ow).enumerate() {
                    let iy = oy * win.stride + fy;
                    if iy < win.pad || iy - win.pad >= h {
                        line.fill(T::zero());
                        continue;
                    }
                    let src = &plane[(iy - win.pad) * w..][..w];
                    line[..lo].fill(T::zero());
                    line[hi..].fill(T::zero());
                    for (ox, v) in line[lo..hi].iter_mut().enumerate() {
                        *v = src[(lo + ox) * win.stride + fx - win.pad];
                    }
                }
            }
        }
    }
}

/// col2im of one image, the adjoint of [`im2col_image`]: every entry of `col` is added to
/// the pixel it was read from (pixels in several windows collect several terms; padding
/// drops out).
pub(crate) fn col2im_image<T: Float>(
    col: &[T],
    (c, h, w): (usize, usize, usize),
    win: Window,
    x: &mut [T],
) {
    let (oh, ow) = win.output(h, w);
    let mut rows = col.chunks_exact(oh * ow);
    for plane in x.chunks_exact_mut(h * w).take(c) {
        for fy in 0..win.fh {
            for fx in 0..win.fw {
                let row = rows.next().expect("C·FH·FW rows");
                let (lo, hi) = win.inside(ow, fx, w);
                for (oy, line) in row.chunks_exact(ow).enumerate() {
                    let iy = oy * win.stride + fy;
                    if iy < win.pad || iy - win.pad >= h {
                        continue;
                    }
                    let dst = &mut plane[(iy - win.pad) * w..][..w];
                    for (ox, &v) in line[lo..hi].iter().enumerate() {
                        let ix = (lo + ox) * win.stride + fx - win.pad;
                        dst[ix] = dst[ix] + v;
                    }
                }
            }
        }
    }
}

/// The book's im2col: row (n, oy, ox) of the result holds the window of output position
/// (oy, ox) of image n, in (c, fy, fx) order: `(N, C, H, W) -> (N·OH·OW, C·FH·FW)`.
pub fn im2col<T: Float>(x: &ndarray::ArrayView4<'_, T>, win: Window) -> Array2<T> {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = win.output(h, w);
    let (k, q) = (c * win.fh * win.fw, oh * ow);
    let x = x.as_standard_layout();
    let mut col_t = vec![T::zero(); k * q];
    let mut out = Array2::zeros((n * q, k));
    for (img, mut rows) in x
        .as_slice()
        .expect("standard layout")
        .chunks_exact(c * h * w)
        .zip(out.axis_chunks_iter_mut(ndarray::Axis(0), q))
    {
        im2col_image(img, (c, h, w), win, &mut col_t);
        rows.assign(&ArrayView2::from_shape((k, q), &col_t).expect("K x Q").t());
    }
    out
}

/// The book's col2im, the adjoint of [`im2col`]: `(N·OH·OW, C·FH·FW) -> (N, C, H, W)`.
pub fn col2im<T: Float>(
    col: &Array2<T>,
    x_dim: (usize, usize, usize, usize),
    win: Window,
) -> Array4<T> {
    let (n, c, h, w) = x_dim;
    let (oh, ow) = win.output(h, w);
    let q = oh * ow;
    let mut x = Array4::zeros(x_dim);
    let flat = x.as_slice_mut().expect("new arrays are contiguous");
    for (img, rows) in flat
        .chunks_exact_mut(c * h * w)
        .zip(col.axis_chunks_iter(ndarray::Axis(0), q))
        .take(n)
    {
        let col_t = rows.t().as_standard_layout().into_owned();
        col2im_image(
            col_t.as_slice().expect("standard layout"),
            (c, h, w),
            win,
            img,
        );
    }
    x
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
        let w = w.as_standard_layout().into_owned();
        let (dw, db) = (Array4::zeros(w.raw_dim()), Array1::zeros(b.len()));
        Convolution {
            w,
            b,
            dw,
            db,
            stride,
            pad,
            x: None,
            fast: Some(ConvKernels::default()),
        }
    }

    /// The geometry of the filters' pass over the input.
    pub fn window(&self) -> Window {
        Window {
            fh: self.w.shape()[2],
            fw: self.w.shape()[3],
            stride: self.stride,
            pad: self.pad,
        }
    }

    /// x as (N, C, H, W) in standard layout, checked against the filters' channels.
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
        if x.is_standard_layout() {
            x
        } else {
            x.as_standard_layout().into_owned()
        }
    }

    /// W (FN, C, FH, FW) as Wc (FN, C·FH·FW).
    fn wc(&self) -> ArrayView2<'_, T> {
        let fn_ = self.w.shape()[0];
        self.w
            .view()
            .into_shape_with_order((fn_, self.w.len() / fn_))
            .expect("standard layout")
    }

    /// One image's col: `x_i (C, H, W) -> col (C·FH·FW, OH·OW)`.
    fn im2col_into(&self, x_i: &ndarray::ArrayView3<'_, T>, col: &mut Array2<T>) {
        let x_i = x_i.as_standard_layout();
        let image = x_i.as_slice().expect("standard layout");
        let col = col.as_slice_mut().expect("new arrays are contiguous");
        im2col_image(image, x_i.dim(), self.window(), col);
    }

    /// The book's forward, image by image: `y_i = Wc·col_i + b`.
    fn convolve(&self, x: &Array4<T>) -> Array4<T> {
        let (n, _, h, w) = x.dim();
        let win = self.window();
        let (oh, ow) = win.output(h, w);
        let (fn_, k) = (self.w.shape()[0], self.w.len() / self.w.shape()[0]);
        let mut y = Array4::zeros((n, fn_, oh, ow));
        let mut col = Array2::zeros((k, oh * ow));
        for (x_i, mut y_i) in x.outer_iter().zip(y.outer_iter_mut()) {
            self.im2col_into(&x_i, &mut col); // col_i = im2col(x_i)
            let y2 = self.wc().dot(&col) + self.b.view().insert_axis(Axis(1)); // (FN, Q)
            y_i.assign(
                &y2.into_shape_with_order((fn_, oh, ow))
                    .expect("FN x OH x OW"),
            );
        }
        y
    }

    /// The book's training forward: y, and x kept for backward.
    pub fn forward_reference(&mut self, x: ArrayD<T>) -> ArrayD<T> {
        let x = self.input(x);
        let y = self.convolve(&x);
        self.x = Some(x);
        y.into_dyn()
    }

    /// The book's backward, image by image: `dWc = Σ dy_i·col_iᵀ`, `db = Σ dy_i`,
    /// `dx_i = col2im(Wcᵀ·dy_i)`.
    #[track_caller]
    pub fn backward_reference(&mut self, dout: ArrayD<T>) -> ArrayD<T> {
        let x = self
            .x
            .take()
            .expect("Convolution::backward called without a forward before it");
        let (n, c, h, w) = x.dim();
        let win = self.window();
        let (oh, ow) = win.output(h, w);
        let (fn_, k) = (self.w.shape()[0], self.w.len() / self.w.shape()[0]);
        let dy = dout
            .into_dimensionality::<Ix4>()
            .expect("Convolution::backward: dout must be 4-D");
        assert_eq!(
            dy.dim(),
            (n, fn_, oh, ow),
            "Convolution::backward: dout shape"
        );
        let mut dwc = Array2::<T>::zeros((fn_, k));
        let mut dx = Array4::<T>::zeros((n, c, h, w));
        let mut col = Array2::zeros((k, oh * ow));
        for ((x_i, dy_i), mut dx_i) in x.outer_iter().zip(dy.outer_iter()).zip(dx.outer_iter_mut())
        {
            self.im2col_into(&x_i, &mut col); // col_i = im2col(x_i)
            let dy_i = dy_i.to_shape((fn_, oh * ow)).expect("FN x Q");
            dwc = dwc + dy_i.dot(&col.t()); // dWc += dy_i·col_iᵀ
            let dcol = self.wc().t().dot(&dy_i); // dcol_i = Wcᵀ·dy_i
            let dcol = dcol.as_standard_layout();
            let dx_i = dx_i.as_slice_mut().expect("new arrays are contiguous");
            col2im_image(
                dcol.as_slice().expect("standard layout"),
                (c, h, w),
                win,
                dx_i,
            );
        }
        self.dw.assign(
            &dwc.into_shape_with_order(self.w.raw_dim())
                .expect("FN x C x FH x FW"),
        );
        self.db
            .assign(&dy.sum_axis(Axis(3)).sum_axis(Axis(2)).sum_axis(Axis(0)));
        dx.into_dyn()
    }
}

impl<T: Float> Layer<T> for Convolution<T> {
    fn kind(&self) -> &'static str {
        "Conv"
    }

    fn describe(&self) -> String {
        let (f, fh, fw) = (self.w.shape()[0], self.w.shape()[2], self.w.shape()[3]);
        let size = if fh == fw {
            fh.to_string()
        } else {
            format!("{fh}x{fw}")
        };
        format!("conv {f} {size} stride={} pad={}", self.stride, self.pad)
    }

    fn forward(&mut self, x: ArrayD<T>) -> ArrayD<T> {
        let (x, win) = (self.input(x), self.window());
        match &mut self.fast {
            // kernels::conv::ConvKernels::forward must equal forward_reference
            Some(fast) => fast.forward(&self.w, &self.b, win, x),
            None => self.forward_reference(x.into_dyn()),
        }
    }

    fn predict(&self, x: ArrayD<T>) -> ArrayD<T> {
        let x = self.input(x);
        match &self.fast {
            // kernels::conv::ConvKernels::predict must equal convolve
            Some(_) => ConvKernels::predict(&self.w, &self.b, self.window(), &x),
            None => self.convolve(&x).into_dyn(),
        }
    }

    fn backward(&mut self, dout: ArrayD<T>) -> ArrayD<T> {
        match self.fast.is_some() {
            true => self
                .fast_backward(Dout::Dense(dout), true)
                .expect("dx asked for"),
            false => self.backward_reference(dout),
        }
    }

    fn visit_params<'a>(&'a mut self, f: &mut dyn FnMut(Param<'a, T>)) {
        f(Param {
            name: "W",
            value: self.w.view_mut().into_dyn(),
            grad: self.dw.view_mut().into_dyn(),
        });
        f(Param {
            name: "b",
            value: self.b.view_mut().into_dyn(),
            grad: self.db.view_mut().into_dyn(),
        });
    }

    fn accelerated(&mut self) -> Option<&mut dyn Accelerated<T>> {
        Some(self)
    }

    fn accelerated_ref(&self) -> Option<&dyn Accelerated<T>> {
        Some(self)
    }
}

impl<T: Float> Convolution<T> {
    /// The fast backward ([`ConvKernels::backward`], which must equal backward_reference),
    /// in reference mode the book's.
    fn fast_backward(&mut self, dout: Dout<'_, T>, want_dx: bool) -> Option<ArrayD<T>> {
        let win = self.window();
        match &mut self.fast {
            Some(fast) => fast.backward(&self.w, win, (&mut self.dw, &mut self.db), dout, want_dx),
            None => {
                let dout = match dout {
                    Dout::Dense(d) => d,
                    Dout::Unpooled(d) => d.into_dense(),
                };
                Some(self.backward_reference(dout))
            }
        }
    }
}

/// The fast paths the plan may take ([`crate::plan`]).
impl<T: Float> Accelerated<T> for Convolution<T> {
    fn backward_params(&mut self, dout: ArrayD<T>) {
        self.fast_backward(Dout::Dense(dout), false);
    }

    fn backward_from_unpooled(&mut self, dout: Unpooled<'_, T>) -> ArrayD<T> {
        self.fast_backward(Dout::Unpooled(dout), true)
            .expect("dx asked for")
    }

    fn backward_params_from_unpooled(&mut self, dout: Unpooled<'_, T>) {
        self.fast_backward(Dout::Unpooled(dout), false);
    }

    fn set_threads(&mut self, threads: usize) {
        if let Some(fast) = &mut self.fast {
            fast.set_threads(threads);
        }
    }

    fn set_reference(&mut self, on: bool) {
        match (on, self.fast.is_some()) {
            (true, true) => self.fast = None,
            (false, false) => self.fast = Some(ConvKernels::default()),
            _ => {}
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
    pub(crate) fn direct_backward(
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

    pub(crate) fn random_conv(
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
    pub(crate) type Case = (usize, usize, usize, usize, usize, usize, usize, usize);
    pub(crate) const CASES: [Case; 6] = [
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
            let dx = conv.backward(dy.clone());
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
    fn a_convolution_under_max_pooling_checks_by_its_window_sums() {
        // dy through a 2x2 max pooling: at most one non-zero in four, so the convolution's dW
        // takes window_sums; against the numerical gradient, with dx asked for (Conv2) and not
        // (Conv1, the first layer)
        use crate::gradcheck::DEFAULT_H;
        use crate::layers::{Pooling, Relu, Targets};
        use crate::{Network, models::gaussian};
        let mut rng = Rng::new(34);
        let mut net = Network::<f64>::new();
        net.push(random_conv(3, 1, 5, 5, 1, 0, &mut rng))
            .push(Pooling::max(2, 2, 2))
            .push(Relu::new())
            .push(random_conv(2, 3, 3, 3, 1, 1, &mut rng))
            .push(Pooling::max(2, 2, 2))
            .push(crate::layers::Affine::new(
                gaussian(2 * 2 * 2, 3, 0.5, &mut rng),
                Array1::zeros(3),
            ));
        let x = Array::from_shape_fn((2, 1, 12, 12), |_| rng.normal()).into_dyn();
        for row in net.gradient_check(&x, Targets::Labels(&[2, 0]), DEFAULT_H) {
            assert!(row.max_rel_err < 1e-6, "{row}");
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
    fn the_books_im2col_is_the_per_image_col_transposed_and_col2im_its_adjoint() {
        let mut rng = Rng::new(32);
        for (_, c, fh, fw, s, p, h, w) in CASES {
            let win = Window {
                fh,
                fw,
                stride: s,
                pad: p,
            };
            let x = Array::from_shape_fn((2, c, h, w), |_| rng.normal());
            let col = im2col(&x.view(), win);
            let (oh, ow) = win.output(h, w);
            let (k, q) = (c * fh * fw, oh * ow);
            assert_eq!(col.dim(), (2 * q, k));
            for (i, img) in x.as_slice().unwrap().chunks_exact(c * h * w).enumerate() {
                let mut per_image = vec![0.0; k * q];
                im2col_image(img, (c, h, w), win, &mut per_image);
                for (r, row) in col.rows().into_iter().skip(i * q).take(q).enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        assert_eq!(v, per_image[j * q + r]);
                    }
                }
            }
            // <im2col(x), g> = <x, col2im(g)>
            let g = Array::from_shape_fn(col.raw_dim(), |_| rng.normal());
            let back = col2im(&g, x.dim(), win);
            let lhs: f64 = (&col * &g).sum();
            let rhs: f64 = (&x * &back).sum();
            assert!(
                (lhs - rhs).abs() < 1e-10 * lhs.abs().max(1.0),
                "{lhs} vs {rhs}"
            );
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
