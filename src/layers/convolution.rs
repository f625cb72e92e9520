//! 2-D convolution through im2col and matrix products, image by image.

use ndarray::{Array1, Array2, Array4, ArrayD, ArrayView2, ArrayViewMut2, Ix4};

use super::{Layer, Param};
use crate::Float;
use crate::linalg::{copy_short, gemm_nt_acc, gemm_serial, gemm_serial_bias, row_sums_acc};
use crate::parallel::{self, PARTS};

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
/// dWc    = Σ_i dy_i·col_iᵀ
/// db     = Σ_i Σ_q dy_i
/// dcol_i = Wcᵀ·dy_i,  dx_i = col2im(dcol_i)   (overlapping windows add up)
/// ```
/// The book stacks the transposes of the `col_i` into one `(N·OH·OW, C·FH·FW)` matrix
/// ([`im2col`]); per image, the products read and write the `(N, C, H, W)` arrays as they
/// are, with no transposes. The batch is cut into [`PARTS`] parts shared by the threads
/// ([`Layer::set_threads`]); `dW` and `db` are summed part by part in order, so the thread
/// count does not change a bit.
#[derive(Clone, Debug)]
pub struct Convolution<T: Float = f32> {
    pub w: Array4<T>,  // (FN, C, FH, FW)
    pub b: Array1<T>,  // (FN)
    pub dw: Array4<T>, // (FN, C, FH, FW)
    pub db: Array1<T>, // (FN)
    pub stride: usize,
    pub pad: usize,
    threads: usize,
    /// (N, C, H, W) of the last training input.
    x_dim: Option<(usize, usize, usize, usize)>,
    /// The last training input, (N, C, H, W): backward builds each image's col from it again
    /// and, when dx is asked for, writes dx into its memory.
    x_spare: Option<Array4<T>>,
    /// The last dout's memory, (N, FN, OH, OW): the next forward writes y into it.
    y_spare: Option<ArrayD<T>>,
    /// Each part of the batch's working memory, kept from batch to batch.
    parts: Vec<Part<T>>,
}

/// One part of the batch: its sums of dWc and db (added up in part order), and one image's
/// col and dcol at a time.
///
/// NOTE: a col is built image by image, used at once and built again in backward rather than
/// kept for the whole batch: SimpleConvNet's batch of cols is 5.8 MB, which went out to
/// memory and came back; one image's (58 KB) stays in L2.
#[derive(Clone, Debug, Default)]
struct Part<T> {
    dwc: Vec<T>,  // (FN, C·FH·FW)
    db: Vec<T>,   // (FN)
    col: Vec<T>,  // (C·FH·FW, Q)
    dcol: Vec<T>, // (C·FH·FW, Q), backward with dx only
}

impl<T: Float> Part<T> {
    /// Each buffer at its size for these shapes (allocating only when a size changes).
    fn size(&mut self, fn_: usize, k: usize, q: usize, want_dx: bool) {
        self.dwc.resize(fn_ * k, T::zero());
        self.db.resize(fn_, T::zero());
        self.col.resize(k * q, T::zero());
        self.dcol.resize(if want_dx { k * q } else { 0 }, T::zero());
    }
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
    fn inside(&self, out: usize, f: usize, size: usize) -> (usize, usize) {
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
fn im2col_image<T: Float>(x: &[T], (c, h, w): (usize, usize, usize), win: Window, col: &mut [T]) {
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
                    if win.stride == 1 {
                        let start = lo + fx - win.pad;
                        copy_short(&src[start..start + hi - lo], &mut line[lo..hi]);
                    } else {
                        for (ox, v) in line[lo..hi].iter_mut().enumerate() {
                            *v = src[(lo + ox) * win.stride + fx - win.pad];
                        }
                    }
                }
            }
        }
    }
}

/// col2im of one image, the adjoint of [`im2col_image`]: every entry of `col` is added to
/// the pixel it was read from (pixels in several windows collect several terms; padding
/// drops out).
fn col2im_image<T: Float>(col: &[T], (c, h, w): (usize, usize, usize), win: Window, x: &mut [T]) {
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

/// W (FN, C, FH, FW) as Wc (FN, C·FH·FW).
fn w_rows<T: Float>(w: &Array4<T>) -> ArrayView2<'_, T> {
    let fn_ = w.shape()[0];
    w.view()
        .into_shape_with_order((fn_, w.len() / fn_))
        .expect("standard layout")
}

/// y_i = Wc·col_i + b for one image, col_i already in `col`; y_i is only written.
fn convolve_image<T: Float>(wc: &ArrayView2<T>, b: &Array1<T>, col: &[T], y: &mut [T]) {
    let q = col.len() / wc.ncols();
    let col = ArrayView2::from_shape((wc.ncols(), q), col).expect("K x Q");
    let mut y = ArrayViewMut2::from_shape((wc.nrows(), q), y).expect("FN x Q");
    let b = b.as_slice().expect("a bias vector is contiguous");
    gemm_serial_bias(wc, &col, b, &mut y);
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
            threads: 1,
            x_dim: None,
            x_spare: None,
            y_spare: None,
            parts: Vec::new(),
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

    /// Multiply-adds of one product pass over a batch of `n`: FN·C·FH·FW·OH·OW per image.
    fn work(&self, n: usize, q: usize) -> usize {
        n * self.w.len() * q
    }

    /// The parameter gradients from `dout`, and dx when `want_dx`.
    #[track_caller]
    fn gradients(&mut self, dout: ArrayD<T>, want_dx: bool) -> Option<ArrayD<T>> {
        let (n, c, h, w) = self
            .x_dim
            .expect("Convolution::backward called without a forward before it");
        let win = self.window();
        let (oh, ow) = win.output(h, w);
        let (fn_, q) = (self.w.shape()[0], oh * ow);
        let (k, chw) = (self.w.len() / fn_, c * h * w);
        let dy = dout
            .into_dimensionality::<Ix4>()
            .expect("Convolution::backward: dout must be 4-D");
        assert_eq!(
            dy.dim(),
            (n, fn_, oh, ow),
            "Convolution::backward: dout does not match the forward"
        );
        let dy = if dy.is_standard_layout() {
            dy
        } else {
            dy.as_standard_layout().into_owned()
        };
        // each image's col is built again from the input; dx then goes into its memory
        let mut x = match self.x_spare.take() {
            Some(x) if x.dim() == (n, c, h, w) => x,
            _ => panic!("Convolution::backward: the forward's input is gone"),
        };
        let per = n.div_ceil(PARTS).max(1);
        let parts = n.div_ceil(per);
        self.parts.resize_with(parts, Part::default);
        for part in &mut self.parts {
            part.size(fn_, k, q, want_dx);
        }
        let threads = parallel::threads_for(self.work(n, q), self.threads);
        let wc = w_rows(&self.w);
        let dy_all = dy.as_slice().expect("standard layout");
        let x_all = x.as_slice_mut().expect("standard layout");
        let dims = PartDims {
            fn_,
            k,
            q,
            c,
            h,
            w,
            win,
        };
        let work = |(part, (x, dy)): (&mut Part<T>, (&mut [T], &[T]))| {
            part_gradients(&wc, dims, dy, x, want_dx, part)
        };
        let items = self.parts.iter_mut().zip(
            x_all
                .chunks_mut(per * chw)
                .zip(dy_all.chunks(per * fn_ * q)),
        );
        if threads == 1 {
            // the same parts as on several threads, one after the other
            items.for_each(work);
        } else {
            parallel::map(items.collect(), threads, work);
        }
        // the parts' sums in part order, whatever thread computed them
        let dw = self.dw.as_slice_mut().expect("standard layout");
        dw.fill(T::zero());
        self.db.fill(T::zero());
        for part in &self.parts {
            dw.iter_mut().zip(&part.dwc).for_each(|(a, &v)| *a = *a + v);
            self.db
                .iter_mut()
                .zip(&part.db)
                .for_each(|(a, &v)| *a = *a + v);
        }
        self.y_spare = Some(dy.into_dyn());
        if want_dx {
            Some(x.into_dyn())
        } else {
            self.x_spare = Some(x); // the input, unchanged
            None
        }
    }
}

/// The sizes one part of the batch needs: filters, col rows K = C·FH·FW, output positions
/// Q, the image's (C, H, W) and the window.
#[derive(Clone, Copy)]
struct PartDims {
    fn_: usize,
    k: usize,
    q: usize,
    c: usize,
    h: usize,
    w: usize,
    win: Window,
}

/// One part of the batch: its sums of dWc and db (overwritten), and, when `want_dx`, its
/// images' dx written over their input `x`.
fn part_gradients<T: Float>(
    wc: &ArrayView2<T>,
    d: PartDims,
    dy: &[T],
    x: &mut [T],
    want_dx: bool,
    part: &mut Part<T>,
) {
    let (fn_, k, q) = (d.fn_, d.k, d.q);
    let chw = d.c * d.h * d.w;
    part.dwc.fill(T::zero());
    part.db.fill(T::zero());
    for (dy_i, x_i) in dy.chunks_exact(fn_ * q).zip(x.chunks_exact_mut(chw)) {
        im2col_image(x_i, (d.c, d.h, d.w), d.win, &mut part.col);
        // dWc += dy_i·col_iᵀ,  db += Σ_q dy_i  (both run along the Q output positions)
        gemm_nt_acc(dy_i, &part.col, q, &mut part.dwc);
        row_sums_acc(dy_i, q, &mut part.db);
        // dcol_i = Wcᵀ·dy_i, then back onto the image (over x_i, which is no longer needed)
        if want_dx {
            let dy_i = ArrayView2::from_shape((fn_, q), dy_i).expect("FN x Q");
            let mut dcol = ArrayViewMut2::from_shape((k, q), &mut part.dcol).expect("K x Q");
            gemm_serial(&wc.t(), &dy_i, T::zero(), &mut dcol);
            x_i.fill(T::zero());
            col2im_image(&part.dcol, (d.c, d.h, d.w), d.win, x_i);
        }
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
        let x = self.input(x);
        let (n, c, h, w) = x.dim();
        let win = self.window();
        let (oh, ow) = win.output(h, w);
        let (fn_, q) = (self.w.shape()[0], oh * ow);
        let (k, chw) = (self.w.len() / fn_, c * h * w);
        let per = n.div_ceil(PARTS).max(1);
        let threads = parallel::threads_for(self.work(n, q), self.threads);
        self.parts.resize_with(n.div_ceil(per), Part::default);
        // y goes into the last dout's memory (every entry is written)
        let mut y = match self.y_spare.take() {
            Some(y) if y.shape() == [n, fn_, oh, ow] => y,
            _ => ArrayD::zeros(ndarray::IxDyn(&[n, fn_, oh, ow])),
        };
        let (wc, b) = (w_rows(&self.w), &self.b);
        let images = |(part, (x, y)): (&mut Part<T>, (&[T], &mut [T]))| {
            part.col.resize(k * q, T::zero()); // kept from the last batch: no allocation
            for (x_i, y_i) in x.chunks_exact(chw).zip(y.chunks_exact_mut(fn_ * q)) {
                im2col_image(x_i, (c, h, w), win, &mut part.col);
                convolve_image(&wc, b, &part.col, y_i);
            }
        };
        let items = self.parts.iter_mut().zip(
            x.as_slice()
                .expect("standard layout")
                .chunks(per * chw)
                .zip(
                    y.as_slice_mut()
                        .expect("standard layout")
                        .chunks_mut(per * fn_ * q),
                ),
        );
        if threads == 1 {
            items.for_each(images);
        } else {
            parallel::map(items.collect(), threads, images);
        }
        self.x_dim = Some((n, c, h, w));
        self.x_spare = Some(x); // its memory takes dx in backward
        y
    }

    fn predict(&self, x: ArrayD<T>) -> ArrayD<T> {
        let x = self.input(x);
        let (n, c, h, w) = x.dim();
        let win = self.window();
        let (oh, ow) = win.output(h, w);
        let (fn_, q) = (self.w.shape()[0], oh * ow);
        let mut col = vec![T::zero(); self.w.len() / fn_ * q]; // one image's, reused
        let mut y = vec![T::zero(); n * fn_ * q];
        let wc = w_rows(&self.w);
        for (x_i, y_i) in x
            .as_slice()
            .expect("standard layout")
            .chunks_exact(c * h * w)
            .zip(y.chunks_exact_mut(fn_ * q))
        {
            im2col_image(x_i, (c, h, w), win, &mut col);
            convolve_image(&wc, &self.b, &col, y_i);
        }
        ArrayD::from_shape_vec(vec![n, fn_, oh, ow], y).expect("one value per output")
    }

    fn backward(&mut self, dout: ArrayD<T>) -> ArrayD<T> {
        self.gradients(dout, true).expect("dx asked for")
    }

    fn backward_params(&mut self, dout: ArrayD<T>) {
        self.gradients(dout, false);
    }

    fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
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
