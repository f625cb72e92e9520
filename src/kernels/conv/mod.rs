//! The convolution's fast paths: the batch cut into parts shared by the threads, each
//! image's col built where it is used, the forward at stride 1 summed straight from the
//! image (`direct`) and dW from dy's non-zeros (`window_sums`).
//!
//! Reference: the book's per-image im2col and products in
//! [`crate::layers::Convolution`] (`forward_reference`, `backward_reference`); `kernels::reference_tests`
//! checks both against each other and the direct path against the packed product to the bit.
//!
//! ```text
//! y_i    = Wc·col_i + b            packed product, or convolve_direct at stride 1
//! dWc    = Σ_i dy_i·col_iᵀ         gemm_nt_acc, or window_sums when dy_i is mostly zeros
//! db     = Σ_i Σ_q dy_i
//! dx_i   = col2im(Wcᵀ·dy_i)
//! ```
//! The batch is cut into [`PARTS`] parts; dW and db are summed part by part in order, so
//! the thread count changes no bit.

mod direct;
mod window_sums;

use ndarray::{Array1, Array4, ArrayD, ArrayView2, ArrayViewMut2, Ix4};

use crate::Float;
use crate::kernels::pool::Unpooled;
use crate::kernels::sparse::{self, SLACK};
use crate::kernels::{gemm_nt_acc, gemm_serial, gemm_serial_bias, row_sums_acc};
use crate::layers::{Window, col2im_image, im2col_image};
use crate::parallel::{self, PARTS};
use direct::{convolve_direct, direct_applies, term_offsets};
use window_sums::{Strips, pad_image, window_positions, window_sums};

/// What the fast training path keeps from forward to backward, and its threads.
#[derive(Clone, Debug, Default)]
pub struct ConvKernels<T: Float> {
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

/// Backward's dout: written out, (N, FN, OH, OW), or left unwritten by the max pooling
/// above ([`Unpooled`]).
pub enum Dout<'a, T> {
    Dense(ArrayD<T>),
    Unpooled(Unpooled<'a, T>),
}

impl<T: Float> Dout<'_, T> {
    /// (N, FN, OH, OW) (a dense dout: once it is 4-D).
    fn dim(&self) -> (usize, usize, usize, usize) {
        match self {
            Dout::Dense(dy) => {
                let s = dy.shape();
                (s[0], s[1], s[2], s[3])
            }
            Dout::Unpooled(dy) => dy.dim(),
        }
    }

    /// A dense dout as (N, FN, OH, OW) in standard layout.
    #[track_caller]
    fn standard(self) -> Self {
        match self {
            Dout::Dense(dout) => {
                let dy = dout
                    .into_dimensionality::<Ix4>()
                    .expect("Convolution::backward: dout must be 4-D");
                Dout::Dense(if dy.is_standard_layout() {
                    dy.into_dyn()
                } else {
                    dy.as_standard_layout().into_owned().into_dyn()
                })
            }
            unpooled => unpooled,
        }
    }
}

/// A part's dy: its images' (FN, Q) one after the other, or image `first` on of an
/// unwritten one.
enum PartDy<'a, T> {
    Dense(&'a [T]),
    Unpooled(&'a Unpooled<'a, T>, usize),
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

impl PartDims {
    fn new<T: Float>(w: &Array4<T>, x: (usize, usize, usize, usize), win: Window) -> Self {
        let (_, c, h, wd) = x;
        let (oh, ow) = win.output(h, wd);
        let fn_ = w.shape()[0];
        PartDims {
            fn_,
            k: w.len() / fn_.max(1),
            q: oh * ow,
            c,
            h,
            w: wd,
            win,
        }
    }
}

/// One part of the batch: its sums of dWc and db (added up in part order), and one image's
/// col and dcol at a time.
///
/// NOTE: a col is built image by image, used at once and built again in backward rather than
/// kept for the whole batch: SimpleConvNet's batch of cols is 5.8 MB, which went out to
/// memory and came back; one image's (58 KB) stays in L2.
#[derive(Clone, Debug)]
pub(crate) struct Part<T> {
    dwc: Vec<T>,  // (FN, C·FH·FW)
    db: Vec<T>,   // (FN)
    col: Vec<T>,  // (C·FH·FW, Q)
    dcol: Vec<T>, // (C·FH·FW, Q), backward with dx only
    dy: Vec<T>,   // (FN, Q): one image's dy, when the layer above left it unwritten
    /// Backward's other way to dWc, when dy_i is mostly zeros ([`window_sums`]): dy_i's
    /// non-zeros, filter f's at starts[f]..starts[f + 1] of `q` (their output positions) and
    /// `g` (their values); room for all of dy_i and SLACK
    starts: Vec<usize>, // (FN + 1)
    q: Vec<u32>,
    g: Vec<T>,
    image: Vec<T>, // x_i with its zero padding, (C, H + 2P, W + 2P), then IMAGE_SLACK
    at: Vec<u32>,  // (Q) where output position q's window starts in `image`
    strips: Strips,
    offsets: Vec<usize>, // (C·FH·FW) forward without a col ([`convolve_direct`])
}

impl<T: Float> Default for Part<T> {
    fn default() -> Self {
        Part {
            dwc: Vec::new(),
            db: Vec::new(),
            col: Vec::new(),
            dcol: Vec::new(),
            dy: Vec::new(),
            starts: Vec::new(),
            q: Vec::new(),
            g: Vec::new(),
            image: Vec::new(),
            at: Vec::new(),
            strips: Strips::default(),
            offsets: Vec::new(),
        }
    }
}

impl<T: Float> Part<T> {
    /// Each buffer at its size for these shapes (allocating only when a size changes).
    fn size(&mut self, fn_: usize, k: usize, q: usize, want_dx: bool) {
        self.dwc.resize(fn_ * k, T::zero());
        self.db.resize(fn_, T::zero());
        self.col.resize(k * q, T::zero());
        self.dcol.resize(if want_dx { k * q } else { 0 }, T::zero());
        self.q.resize(fn_ * q + SLACK, 0);
        self.g.resize(fn_ * q + SLACK, T::zero());
    }

    /// dy_i's non-zeros, filter by filter, into `starts`, `q` and `g`; returns their number.
    fn nonzeros(&mut self, dy_i: &[T], q: usize) -> usize {
        self.starts.clear();
        let mut n = 0;
        for row in dy_i.chunks_exact(q) {
            self.starts.push(n);
            n = sparse::compress_scattered(row, &mut self.q, &mut self.g, n);
        }
        self.starts.push(n);
        n
    }
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

impl<T: Float> ConvKernels<T> {
    /// Threads a training batch may use; results do not depend on it.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// Training forward: y = conv(x) (the same values as the layer's `forward_reference`),
    /// keeping x for backward; y is written into the last dout's memory.
    pub fn forward(
        &mut self,
        w: &Array4<T>,
        b: &Array1<T>,
        win: Window,
        x: Array4<T>,
    ) -> ArrayD<T> {
        let (n, c, h, wd) = x.dim();
        let d = PartDims::new(w, x.dim(), win);
        let (oh, ow) = win.output(h, wd);
        let (fn_, q, chw) = (d.fn_, d.q, c * h * wd);
        let per = n.div_ceil(PARTS).max(1);
        let threads = parallel::threads_for(n * w.len() * q, self.threads);
        self.parts.resize_with(n.div_ceil(per), Part::default);
        // every entry of y is written
        let mut y = match self.y_spare.take() {
            Some(y) if y.shape() == [n, fn_, oh, ow] => y,
            _ => ArrayD::zeros(ndarray::IxDyn(&[n, fn_, oh, ow])),
        };
        let images = |(part, (x, y)): (&mut Part<T>, (&[T], &mut [T]))| {
            part.convolve(w, b, &d, x, y);
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
        self.x_dim = Some(x.dim());
        self.x_spare = Some(x); // its memory takes dx in backward
        y
    }

    /// Inference forward: the same values as [`ConvKernels::forward`], nothing kept.
    pub fn predict(w: &Array4<T>, b: &Array1<T>, win: Window, x: &Array4<T>) -> ArrayD<T> {
        let (n, _, h, wd) = x.dim();
        let (oh, ow) = win.output(h, wd);
        let d = PartDims::new(w, x.dim(), win);
        let mut y = vec![T::zero(); n * d.fn_ * d.q];
        let mut part = Part::default(); // one image's buffers, reused
        part.convolve(w, b, &d, x.as_slice().expect("standard layout"), &mut y);
        ArrayD::from_shape_vec(vec![n, d.fn_, oh, ow], y).expect("one value per output")
    }

    /// The parameter gradients from `dout` into `dw` and `db`, and dx when `want_dx` (the
    /// same values as the layer's `backward_reference`).
    #[track_caller]
    pub fn backward(
        &mut self,
        w: &Array4<T>,
        win: Window,
        (dw, db): (&mut Array4<T>, &mut Array1<T>),
        dout: Dout<'_, T>,
        want_dx: bool,
    ) -> Option<ArrayD<T>> {
        let x_dim = self
            .x_dim
            .expect("Convolution::backward called without a forward before it");
        let (n, c, h, wd) = x_dim;
        let d = PartDims::new(w, x_dim, win);
        let (oh, ow) = win.output(h, wd);
        let (fn_, q, chw) = (d.fn_, d.q, c * h * wd);
        let dy = dout.standard();
        assert_eq!(
            dy.dim(),
            (n, fn_, oh, ow),
            "Convolution::backward: dout does not match the forward"
        );
        // each image's col is built again from the input; dx then goes into its memory
        let mut x = match self.x_spare.take() {
            Some(x) if x.dim() == x_dim => x,
            _ => panic!("Convolution::backward: the forward's input is gone"),
        };
        let per = n.div_ceil(PARTS).max(1);
        self.parts.resize_with(n.div_ceil(per), Part::default);
        for part in &mut self.parts {
            part.size(fn_, d.k, q, want_dx);
        }
        let threads = parallel::threads_for(n * w.len() * q, self.threads);
        let wc = w_rows(w);
        let work = |(first, (part, x)): (usize, (&mut Part<T>, &mut [T]))| {
            let dy = match &dy {
                Dout::Dense(dy) => {
                    let dy = dy.as_slice().expect("standard layout");
                    let images = x.len() / chw;
                    PartDy::Dense(&dy[first * fn_ * q..(first + images) * fn_ * q])
                }
                Dout::Unpooled(dy) => PartDy::Unpooled(dy, first),
            };
            part_gradients(&wc, d, dy, x, want_dx, part)
        };
        let x_all = x.as_slice_mut().expect("standard layout");
        let items = (0..n)
            .step_by(per)
            .zip(self.parts.iter_mut().zip(x_all.chunks_mut(per * chw)));
        if threads == 1 {
            // the same parts as on several threads, one after the other
            items.for_each(work);
        } else {
            parallel::map(items.collect(), threads, work);
        }
        self.add_parts(dw, db);
        // dout's memory takes the next forward's y: the dense dout's own, or the memory of
        // the input of the layer above, which left it unwritten (the same shape)
        self.y_spare = match dy {
            Dout::Dense(dy) => Some(dy),
            Dout::Unpooled(mut dy) => dy.take_spare(),
        };
        if want_dx {
            Some(x.into_dyn())
        } else {
            self.x_spare = Some(x); // the input, unchanged
            None
        }
    }

    /// dW and db: the parts' sums in part order, whatever thread computed them.
    fn add_parts(&self, dw: &mut Array4<T>, db: &mut Array1<T>) {
        let dw = dw.as_slice_mut().expect("standard layout");
        dw.fill(T::zero());
        db.fill(T::zero());
        for part in &self.parts {
            dw.iter_mut().zip(&part.dwc).for_each(|(a, &v)| *a = *a + v);
            db.iter_mut().zip(&part.db).for_each(|(a, &v)| *a = *a + v);
        }
    }
}

impl<T: Float> Part<T> {
    /// y_i = Wc·col_i + b for the images of `x` into `y`: summed from the padded image at
    /// stride 1 where [`direct_applies`], else through im2col and the packed product.
    fn convolve(&mut self, w: &Array4<T>, b: &Array1<T>, d: &PartDims, x: &[T], y: &mut [T]) {
        let chw = d.c * d.h * d.w;
        let images = x.chunks_exact(chw).zip(y.chunks_exact_mut(d.fn_ * d.q));
        // the buffers are kept from the last batch: no allocation
        if direct_applies(d) {
            term_offsets(d, &mut self.offsets);
            let (wc, b) = (
                w.as_slice().expect("standard layout"),
                b.as_slice().expect("contiguous"),
            );
            for (x_i, y_i) in images {
                pad_image(x_i, d, &mut self.image);
                convolve_direct(wc, b, &self.image, &self.offsets, d, y_i);
            }
            return;
        }
        self.col.resize(d.k * d.q, T::zero());
        let wc = w_rows(w);
        for (x_i, y_i) in images {
            im2col_image(x_i, (d.c, d.h, d.w), d.win, &mut self.col);
            convolve_image(&wc, b, &self.col, y_i);
        }
    }
}

/// One part of the batch: its sums of dWc and db (overwritten), and, when `want_dx`, its
/// images' dx written over their input `x`.
fn part_gradients<T: Float>(
    wc: &ArrayView2<T>,
    d: PartDims,
    dy: PartDy<'_, T>,
    x: &mut [T],
    want_dx: bool,
    part: &mut Part<T>,
) {
    let (fn_, k, q) = (d.fn_, d.k, d.q);
    let chw = d.c * d.h * d.w;
    part.dwc.fill(T::zero());
    part.db.fill(T::zero());
    part.strips.set(&d);
    window_positions(&d, &mut part.at);
    // an unwritten dy is written out here, one image at a time, into a buffer that stays
    // in L2 (taken out of `part` while its other buffers are in use)
    let mut dy_buf = std::mem::take(&mut part.dy);
    for (i, x_i) in x.chunks_exact_mut(chw).enumerate() {
        let dy_i: &[T] = match dy {
            PartDy::Dense(dy) => &dy[i * fn_ * q..(i + 1) * fn_ * q],
            PartDy::Unpooled(dy, first) => {
                dy_buf.resize(fn_ * q, T::zero());
                dy.write_image(first + i, &mut dy_buf);
                &dy_buf
            }
        };
        // dWc += dy_i·col_iᵀ,  db += Σ_q dy_i  (both run along the Q output positions)
        if part.nonzeros(dy_i, q) as f64 <= part.strips.density * dy_i.len() as f64 {
            // mostly zeros (a max pooling after this layer routes each gradient to one pixel
            // of its window): the non-zero terms only, the windows read from the image
            pad_image(x_i, &d, &mut part.image);
            window_sums(part);
        } else {
            im2col_image(x_i, (d.c, d.h, d.w), d.win, &mut part.col);
            gemm_nt_acc(dy_i, &part.col, q, &mut part.dwc);
            row_sums_acc(dy_i, q, &mut part.db);
        }
        // dcol_i = Wcᵀ·dy_i, then back onto the image (over x_i, which is no longer needed)
        if want_dx {
            let dy_i = ArrayView2::from_shape((fn_, q), dy_i).expect("FN x Q");
            let mut dcol = ArrayViewMut2::from_shape((k, q), &mut part.dcol).expect("K x Q");
            gemm_serial(&wc.t(), &dy_i, T::zero(), &mut dcol);
            x_i.fill(T::zero());
            col2im_image(&part.dcol, (d.c, d.h, d.w), d.win, x_i);
        }
    }
    part.dy = dy_buf;
}

#[cfg(test)]
mod tests;
