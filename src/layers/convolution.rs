//! 2-D convolution through im2col and matrix products, image by image.

use std::any::TypeId;

use ndarray::{Array1, Array2, Array4, ArrayD, ArrayView2, ArrayViewMut2, Ix4};

use super::{Layer, Param, Unpooled};
use crate::Float;
use crate::linalg::sparse::{self, SLACK};
use crate::linalg::{copy_short, gemm_nt_acc, gemm_serial, gemm_serial_bias, madd, row_sums_acc};
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
/// y_i    = Wc·col_i + b             (FN, Q) = (FN, OH, OW), the output's own layout; at
///                                   stride 1 summed from the image itself, no col
/// dWc    = Σ_i dy_i·col_iᵀ          or, dy_i mostly zeros (a max pooling after this layer),
///                                   dWc[f] = Σ_i Σ over dy_i[f]'s non-zeros (q, g): g·window_q
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
#[derive(Clone, Debug)]
struct Part<T> {
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
    fn gradients(&mut self, dout: Dout<'_, T>, want_dx: bool) -> Option<ArrayD<T>> {
        let (n, c, h, w) = self
            .x_dim
            .expect("Convolution::backward called without a forward before it");
        let win = self.window();
        let (oh, ow) = win.output(h, w);
        let (fn_, q) = (self.w.shape()[0], oh * ow);
        let (k, chw) = (self.w.len() / fn_, c * h * w);
        let dy = match dout {
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
        };
        assert_eq!(
            dy.dim(),
            (n, fn_, oh, ow),
            "Convolution::backward: dout does not match the forward"
        );
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
        let work = |(first, (part, x)): (usize, (&mut Part<T>, &mut [T]))| {
            let dy = match &dy {
                Dout::Dense(dy) => {
                    let dy = dy.as_slice().expect("standard layout");
                    let images = x.len() / chw;
                    PartDy::Dense(&dy[first * fn_ * q..(first + images) * fn_ * q])
                }
                Dout::Unpooled(dy) => PartDy::Unpooled(dy, first),
            };
            part_gradients(&wc, dims, dy, x, want_dx, part)
        };
        let items = (0..n)
            .step_by(per)
            .zip(self.parts.iter_mut().zip(x_all.chunks_mut(per * chw)));
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

/// Backward's dout: written out, (N, FN, OH, OW) in standard layout, or left unwritten by
/// the layer above ([`Layer::backward_unpooled`]).
enum Dout<'a, T> {
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
}

/// A part's dy: its images' (FN, Q) one after the other, or image `first` on of an
/// unwritten one.
enum PartDy<'a, T> {
    Dense(&'a [T]),
    Unpooled(&'a Unpooled<'a, T>, usize),
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

/// Values of a window row that one vector of [`window_sums`] holds (8 f32 lanes of AVX2).
const STRIP: usize = 8;
/// Strips that [`window_sums`] sums in one pass over a filter's non-zeros (accumulators in
/// registers: 5 is one 5-wide row of a 5x5 filter each).
const PASS: usize = 5;

/// A window cut into strips of at most [`STRIP`] values along its rows: strip (c, fy, fx0)
/// holds window entries (c, fy, fx0..fx0 + STRIP) of the padded image.
#[derive(Clone, Debug, Default)]
struct Strips {
    from: Vec<usize>, // where each strip starts, relative to the window's corner in the image
    to: Vec<usize>,   // where its first value goes in a row of dWc (C·FH·FW)
    len: Vec<usize>,  // its width, at most STRIP
    /// dy_i takes the sparse path with at most this fraction of non-zeros: the strips'
    /// lanes past a row's end are computed and dropped, so a narrow window needs more zeros
    /// to pay.
    /// NOTE: backward_params of 100 images, one thread, dy with a given fraction of random
    /// non-zeros, either path forced: 30 filters 1x5x5 on 28x28 (5 of 8 lanes used) broke even
    /// near 0.5 (0.25: 1.9 against 2.8 ms), 30 filters 16x3x3 on 14x14 (3 of 8) near 0.25
    /// (0.1: 2.2 against 3.1 ms; 0.3: 3.5 against 3.2). 0.6 of the lanes used stays below
    /// both.
    density: f64,
}

impl Strips {
    /// The strips of `d`'s window (into the vectors it has: no allocation once they held as
    /// many).
    fn set(&mut self, d: &PartDims) {
        self.from.clear();
        self.to.clear();
        self.len.clear();
        for c in 0..d.c {
            for fy in 0..d.win.fh {
                for fx in (0..d.win.fw).step_by(STRIP) {
                    self.from.push(window_offset(d, c, fy, fx));
                    self.to.push((c * d.win.fh + fy) * d.win.fw + fx);
                    self.len.push(STRIP.min(d.win.fw - fx));
                }
            }
        }
        let used = d.win.fw as f64 / d.win.fw.next_multiple_of(STRIP) as f64;
        self.density = 0.6 * used;
    }
}

/// Zeros past the end of a padded image: a strip of the last window, or the last row's
/// vectors in [`convolve_direct`], may read that far past its last value.
const IMAGE_SLACK: usize = 3 * STRIP;

/// x_i (C, H, W) into `image` (C, H + 2P, W + 2P) with zeros around, and [`IMAGE_SLACK`]
/// zeros past its end.
fn pad_image<T: Float>(x: &[T], d: &PartDims, image: &mut Vec<T>) {
    let p = d.win.pad;
    let (hp, wp) = (d.h + 2 * p, d.w + 2 * p);
    image.clear();
    image.resize(d.c * hp * wp + IMAGE_SLACK, T::zero());
    for (plane, padded) in x
        .chunks_exact(d.h * d.w)
        .zip(image.chunks_exact_mut(hp * wp))
    {
        for (row, dst) in plane
            .chunks_exact(d.w)
            .zip(padded[p * wp..].chunks_exact_mut(wp))
        {
            copy_short(row, &mut dst[p..p + d.w]);
        }
    }
}

/// For each output position q = (oy, ox), where its window starts in the padded image:
/// oy·S·(W + 2P) + ox·S.
fn window_positions(d: &PartDims, at: &mut Vec<u32>) {
    let (oh, ow) = d.win.output(d.h, d.w);
    let wp = d.w + 2 * d.win.pad;
    at.clear();
    at.extend(
        (0..oh).flat_map(|oy| {
            (0..ow).map(move |ox| (oy * d.win.stride * wp + ox * d.win.stride) as u32)
        }),
    );
}

/// dWc[f] += Σ over the non-zeros (q, g) of dy_i[f]:  g · window_q
/// db[f]  += Σ over the same:                         g
/// The terms of dy_i·col_iᵀ and Σ_q dy_i that are not zero, window_q read from the padded
/// image (no col): a pass holds [`PASS`] strips of the window in registers, runs over the
/// filter's non-zeros, and adds its sums to dWc.
fn window_sums<T: Float>(part: &mut Part<T>) {
    // the furthest read: the furthest window at its furthest strip (a max, which vectorises,
    // where a test of every window stopped at each one)
    let reach = part.strips.from.iter().max().copied().unwrap_or(0) + STRIP;
    let last = part.at.iter().max().map_or(0, |&a| a as usize);
    assert!(
        last + reach <= part.image.len(),
        "window_sums: a window reads past the image"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn sums_fma<T: Float>(part: &mut Part<T>) {
            sums::<T, true>(part)
        }
        // SAFETY: the CPU has the features the function is compiled for
        return unsafe { sums_fma(part) };
    }
    sums::<T, false>(part)
}

/// [`window_sums`]' loops (the reads checked by its assert).
#[inline(always)]
fn sums<T: Float, const FMA: bool>(part: &mut Part<T>) {
    let Part {
        dwc,
        db,
        starts,
        q: nz_q,
        g: nz_g,
        image,
        at,
        strips,
        ..
    } = part;
    let k = dwc.len() / db.len();
    let n = strips.from.len();
    for (f, (dw_f, db_f)) in dwc.chunks_exact_mut(k).zip(db.iter_mut()).enumerate() {
        let (cols, vals) = (
            &nz_q[starts[f]..starts[f + 1]],
            &nz_g[starts[f]..starts[f + 1]],
        );
        for s0 in (0..n).step_by(PASS) {
            // a last pass of fewer strips repeats its last one (summed, not stored, twice)
            let from: [usize; PASS] = std::array::from_fn(|r| strips.from[(s0 + r).min(n - 1)]);
            // the window of one non-zero (q, g), times g, onto `acc`; Σ g onto `sum`
            let term = |acc: &mut [[T; STRIP]; PASS], sum: &mut T, q: u32, g: T| {
                // SAFETY: q < Q = at.len() (compress_scattered's column in a row of Q);
                // every strip of the window at at[q] lies inside the image (the assert)
                let corner = unsafe { image.as_ptr().add(*at.get_unchecked(q as usize) as usize) };
                for r in 0..PASS {
                    let v: [T; STRIP] = unsafe { *corner.add(from[r]).cast() };
                    for t in 0..STRIP {
                        acc[r][t] = madd::<T, FMA>(acc[r][t], g, v[t]);
                    }
                }
                *sum = *sum + g;
            };
            // two sets of sums, even and odd non-zeros: one set waits on the latency of
            // each multiply-add (4 cycles), two keep both FMA units busy
            let (mut even, mut odd) = ([[T::zero(); STRIP]; PASS], [[T::zero(); STRIP]; PASS]);
            let (mut sum_even, mut sum_odd) = (T::zero(), T::zero());
            let mut pairs = cols.chunks_exact(2).zip(vals.chunks_exact(2));
            for (q, g) in &mut pairs {
                term(&mut even, &mut sum_even, q[0], g[0]);
                term(&mut odd, &mut sum_odd, q[1], g[1]);
            }
            if cols.len() % 2 == 1 {
                term(
                    &mut even,
                    &mut sum_even,
                    cols[cols.len() - 1],
                    vals[vals.len() - 1],
                );
            }
            if s0 == 0 {
                *db_f = *db_f + (sum_even + sum_odd);
            }
            let acc: [[T; STRIP]; PASS] =
                std::array::from_fn(|r| std::array::from_fn(|t| even[r][t] + odd[r][t]));
            for (r, acc) in acc.iter().enumerate().take(n - s0) {
                let (to, len) = (strips.to[s0 + r], strips.len[s0 + r]);
                for (d, &a) in dw_f[to..to + len].iter_mut().zip(acc) {
                    *d = *d + a;
                }
            }
        }
    }
}

/// Vectors of outputs along a row that [`convolve_direct`] keeps in registers ...
const XB: usize = 3;
/// ... for this many filters (9 accumulators).
/// NOTE: 3, not 4: 4 filters' 12 accumulators, the XB vectors of the image row and a weight
/// took all 16 vector registers, and LLVM kept one accumulator on the stack (a load, the FMA
/// and a store a term: half the samples of the loop in perf annotate). `conv.predict` of 30
/// images, one thread, alternating (µs, FB 4 -> 3): 30 filters 1x5x5 over 28x28 625-631 ->
/// 410-442, 30 of 2x5x5 over 24x24 1019-1098 -> 521-555, 30 of 1x7x7 1115-1213 -> 611-737,
/// 16 of 3x3x3 over 26x26 349-371 -> 256-342, 64 of 16x3x3 6942-7205 -> 3793-4277.
const FB: usize = 3;

/// True when [`convolve_direct`] computes this layer's forward: stride 1 (a row of outputs
/// reads a row of the image), at most the 144 products per output measured, and rows that
/// blocks of [`XB`] vectors cover with no more lanes to spare than blocks of 2 or 1 would.
/// NOTE: `conv.predict` of 30 images, one thread, alternating (ms), im2col with the packed
/// product -> direct: 30 filters 1x5x5 over 28x28 (rows of 24) 0.46-0.70 -> 0.42-0.59,
/// 30 of 2x5x5 over 24x24 0.77 -> 0.69, 30 of 1x7x7 0.78-0.95 -> 0.58-0.66, 16 of 3x3x3
/// 0.33-0.40 -> 0.22-0.28, 64 of 16x3x3 (K = 144) 5.3-5.7 -> 3.9-4.5; 30 of 1x3x3 (K = 9)
/// even. In blocks of 2 vectors x 6 filters it lost: 16 of 1x5x5 pad 2 over 28x28 (rows of
/// 28) 0.66 -> 0.87, 32 of 16x3x3 over 14x14 1.2 -> 2.0.
fn direct_applies(d: &PartDims) -> bool {
    let ow = d.win.output(d.h, d.w).1;
    let lanes = |vectors: usize| ow.next_multiple_of(vectors * STRIP);
    d.win.stride == 1 && d.k <= 144 && lanes(XB) <= lanes(2).min(lanes(1))
}

/// y_i = Wc·col_i + b for one image at stride 1, read from its padded image instead of a col:
/// ```text
/// y[f, oy, ox] = b[f] + Σ_(c, fy, fx) Wc[f, (c, fy, fx)] · image[c, oy + fy, ox + fx]
/// ```
/// A row of outputs is cut into [`XB`] vectors of STRIP along ox, times [`FB`] filters, kept
/// in registers over the C·FH·FW terms; each term loads XB vectors of an image row (shifted
/// by fx) and one weight per filter. The sum runs in the order of im2col's rows from zero and
/// the bias comes last, as in the packed product with its row bias: the same bits as
/// [`convolve_image`].
fn convolve_direct<T: Float>(
    wc: &[T],
    b: &[T],
    image: &[T],
    offsets: &[usize],
    d: &PartDims,
    y: &mut [T],
) {
    let (oh, ow) = d.win.output(d.h, d.w);
    let wp = d.w + 2 * d.win.pad;
    assert!(
        wc.len() == d.fn_ * d.k && b.len() == d.fn_ && offsets.len() == d.k,
        "convolve_direct: weights, bias and offsets do not fit"
    );
    assert_eq!(
        y.len(),
        d.fn_ * oh * ow,
        "convolve_direct: y is not (FN, OH, OW)"
    );
    // the furthest read: the last row's last block of vectors at the furthest offset
    let last = offsets.iter().max().copied().unwrap_or(0) + (oh - 1) * wp;
    assert!(
        last + ow.next_multiple_of(XB * STRIP) <= image.len(),
        "convolve_direct: the image has no slack for the last row's vectors"
    );
    let terms = (wc, b, image, offsets);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            // SAFETY: T is f32 (same TypeId), so the slices have f32's layout; the CPU has
            // AVX2 and FMA (and AVX-512F for the first); the reads are checked by the asserts
            // above.
            return unsafe {
                let f32s = |a: &[T]| &*(a as *const [T] as *const [f32]);
                let y = &mut *(y as *mut [T] as *mut [f32]);
                let terms = (f32s(wc), f32s(b), f32s(image), offsets);
                if std::arch::is_x86_feature_detected!("avx512f") {
                    direct_rows_f32_avx512(terms, (oh, ow, wp), y)
                } else {
                    direct_rows_f32(terms, (oh, ow, wp), y)
                }
            };
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn rows_fma<T: Float>(terms: Terms<'_, T>, sizes: RowSizes, y: &mut [T]) {
            direct_rows::<T, true>(terms, sizes, y)
        }
        // SAFETY: the CPU has the features the function is compiled for
        return unsafe { rows_fma(terms, (oh, ow, wp), y) };
    }
    direct_rows::<T, false>(terms, (oh, ow, wp), y)
}

/// What [`convolve_direct`] sums: Wc (FN, K), b (FN), the padded image and each term's offset.
type Terms<'a, T> = (&'a [T], &'a [T], &'a [T], &'a [usize]);
/// (OH, OW, W + 2P): output rows and their length, the padded image's row length.
type RowSizes = (usize, usize, usize);

/// [`convolve_direct`]'s loops (the reads checked by its asserts).
#[inline(always)]
fn direct_rows<T: Float, const FMA: bool>(
    (wc, b, image, offsets): Terms<'_, T>,
    (oh, ow, wp): RowSizes,
    y: &mut [T],
) {
    let (fn_, q) = (b.len(), oh * ow);
    for (oy, ox0, f0) in direct_blocks(oh, ow, fn_, FB) {
        // SAFETY: offsets[p] + oy·wp + ox0 + XB·STRIP <= the furthest read (asserted)
        let corner = unsafe { image.as_ptr().add(oy * wp + ox0) };
        let rows: [&[T]; FB] = block_weights(wc, fn_, f0);
        let mut acc = [[[T::zero(); STRIP]; XB]; FB];
        for (p, &off) in offsets.iter().enumerate() {
            let x: [[T; STRIP]; XB] =
                std::array::from_fn(|j| unsafe { *corner.add(off + j * STRIP).cast() });
            for r in 0..FB {
                let w = rows[r][p];
                for j in 0..XB {
                    for t in 0..STRIP {
                        acc[r][j][t] = madd::<T, FMA>(acc[r][j][t], w, x[j][t]);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(fn_ - f0) {
            let (f, bias) = (f0 + r, b[f0 + r]);
            let row = &mut y[f * q + oy * ow..][..ow];
            for (j, v) in acc.iter().enumerate() {
                let at = ox0 + j * STRIP;
                if at + STRIP <= ow {
                    let y: &mut [T; STRIP] =
                        (&mut row[at..at + STRIP]).try_into().expect("STRIP wide");
                    *y = std::array::from_fn(|t| bias + v[t]);
                } else if at < ow {
                    for (y, &v) in row[at..].iter_mut().zip(v) {
                        *y = bias + v;
                    }
                }
            }
        }
    }
}

/// The blocks [`convolve_direct`] sums, (row, first column, first filter): each row of OW
/// outputs in runs of XB·STRIP, each run for `fb` filters at a time ([`FB`], or
/// `FB_WIDE` with AVX-512).
fn direct_blocks(
    oh: usize,
    ow: usize,
    fn_: usize,
    fb: usize,
) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..oh).flat_map(move |oy| {
        (0..ow)
            .step_by(XB * STRIP)
            .flat_map(move |ox0| (0..fn_).step_by(fb).map(move |f0| (oy, ox0, f0)))
    })
}

/// The weight rows (the C·FH·FW terms of each) of filters f0..f0 + F; a last block of fewer
/// filters repeats its last one (computed, not stored).
fn block_weights<T: Float, const F: usize>(wc: &[T], fn_: usize, f0: usize) -> [&[T]; F] {
    let k = wc.len() / fn_;
    std::array::from_fn(|r| &wc[(f0 + r).min(fn_ - 1) * k..][..k])
}

/// [`direct_rows`] for f32, its nine sums in AVX registers by name.
/// NOTE: the generic loops keep their sums in an array, which LLVM built on the stack at each
/// block's start and read back in pieces, stalling on the store (a sixth of the loop's samples
/// in perf annotate); explicit registers start from zero in place. The same operations in the
/// same order: the same bits.
/// SAFETY: the CPU has AVX2 and FMA; every read is within `image` ([`convolve_direct`]'s
/// asserts).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn direct_rows_f32(
    (wc, b, image, offsets): Terms<'_, f32>,
    (oh, ow, wp): RowSizes,
    y: &mut [f32],
) {
    use std::arch::x86_64::*;
    const { assert!(XB == 3 && FB == 3 && STRIP == 8) };
    let (fn_, q) = (b.len(), oh * ow);
    for (oy, ox0, f0) in direct_blocks(oh, ow, fn_, FB) {
        // SAFETY: offsets[p] + oy·wp + ox0 + XB·STRIP <= the furthest read (asserted)
        let corner = unsafe { image.as_ptr().add(oy * wp + ox0) };
        let [w0, w1, w2] = block_weights(wc, fn_, f0);
        let z = _mm256_setzero_ps();
        let (mut s00, mut s01, mut s02) = (z, z, z);
        let (mut s10, mut s11, mut s12) = (z, z, z);
        let (mut s20, mut s21, mut s22) = (z, z, z);
        for (p, &off) in offsets.iter().enumerate() {
            // s[r][j] += w_r[p] · (the image row's vector j, shifted to this term)
            let (x0, x1, x2) = unsafe {
                let at = corner.add(off);
                (
                    _mm256_loadu_ps(at),
                    _mm256_loadu_ps(at.add(STRIP)),
                    _mm256_loadu_ps(at.add(2 * STRIP)),
                )
            };
            let w = _mm256_set1_ps(w0[p]);
            s00 = _mm256_fmadd_ps(w, x0, s00);
            s01 = _mm256_fmadd_ps(w, x1, s01);
            s02 = _mm256_fmadd_ps(w, x2, s02);
            let w = _mm256_set1_ps(w1[p]);
            s10 = _mm256_fmadd_ps(w, x0, s10);
            s11 = _mm256_fmadd_ps(w, x1, s11);
            s12 = _mm256_fmadd_ps(w, x2, s12);
            let w = _mm256_set1_ps(w2[p]);
            s20 = _mm256_fmadd_ps(w, x0, s20);
            s21 = _mm256_fmadd_ps(w, x1, s21);
            s22 = _mm256_fmadd_ps(w, x2, s22);
        }
        let sums = [[s00, s01, s02], [s10, s11, s12], [s20, s21, s22]];
        for (r, sums) in sums.iter().enumerate().take(fn_ - f0) {
            let (f, bias) = (f0 + r, _mm256_set1_ps(b[f0 + r]));
            let row = &mut y[f * q + oy * ow..][..ow];
            for (j, &v) in sums.iter().enumerate() {
                let at = ox0 + j * STRIP;
                let v = _mm256_add_ps(bias, v);
                if at + STRIP <= ow {
                    // SAFETY: at + STRIP <= ow = row.len()
                    unsafe { _mm256_storeu_ps(row.as_mut_ptr().add(at), v) };
                } else if at < ow {
                    let mut part = [0f32; STRIP];
                    // SAFETY: `part` holds STRIP f32
                    unsafe { _mm256_storeu_ps(part.as_mut_ptr(), v) };
                    row[at..].copy_from_slice(&part[..ow - at]);
                }
            }
        }
    }
}

/// [`direct_rows_f32`] with AVX-512, six filters a block ([`FB_WIDE`]): each run of XB·STRIP =
/// 24 outputs as one 16-lane vector and one 8-lane, twelve independent sums. The same
/// operations on each output in the same order: the same bits.
/// NOTE: with three filters a block, as the AVX2 kernel, the six sums' chains of dependent
/// multiply-adds bound a term to their latency (4 cycles) and the kernel was no faster (perf:
/// 24.3% of a SimpleConvNet epoch before, 23.4% after); twelve fill the two 512-bit FMA
/// units of a Xeon core.
/// SAFETY: the CPU has AVX-512F; every read is within `image` ([`convolve_direct`]'s asserts:
/// the same reads as [`direct_rows_f32`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn direct_rows_f32_avx512(
    (wc, b, image, offsets): Terms<'_, f32>,
    (oh, ow, wp): RowSizes,
    y: &mut [f32],
) {
    use std::arch::x86_64::*;
    const { assert!(XB == 3 && STRIP == 8) };
    let (fn_, q) = (b.len(), oh * ow);
    for (oy, ox0, f0) in direct_blocks(oh, ow, fn_, FB_WIDE) {
        // SAFETY: offsets[p] + oy·wp + ox0 + XB·STRIP <= the furthest read (asserted)
        let corner = unsafe { image.as_ptr().add(oy * wp + ox0) };
        let w: [&[f32]; FB_WIDE] = block_weights(wc, fn_, f0);
        let mut lo = [_mm512_setzero_ps(); FB_WIDE];
        let mut hi = [_mm256_setzero_ps(); FB_WIDE];
        for (p, &off) in offsets.iter().enumerate() {
            // s[r] += w_r[p] · (the image row's 24 values, shifted to this term)
            let (x0, x1) = unsafe {
                let at = corner.add(off);
                (_mm512_loadu_ps(at), _mm256_loadu_ps(at.add(2 * STRIP)))
            };
            for r in 0..FB_WIDE {
                let w = w[r][p];
                lo[r] = _mm512_fmadd_ps(_mm512_set1_ps(w), x0, lo[r]);
                hi[r] = _mm256_fmadd_ps(_mm256_set1_ps(w), x1, hi[r]);
            }
        }
        for r in 0..FB_WIDE.min(fn_ - f0) {
            let (f, bias) = (f0 + r, b[f0 + r]);
            let row = &mut y[f * q + oy * ow..][..ow];
            let mut run = [0f32; XB * STRIP];
            // SAFETY: `run` holds 24 f32: 16 then 8
            unsafe {
                _mm512_storeu_ps(run.as_mut_ptr(), _mm512_add_ps(_mm512_set1_ps(bias), lo[r]));
                let hi = _mm256_add_ps(_mm256_set1_ps(bias), hi[r]);
                _mm256_storeu_ps(run.as_mut_ptr().add(2 * STRIP), hi);
            }
            let n = (ow - ox0).min(XB * STRIP);
            copy_short(&run[..n], &mut row[ox0..ox0 + n]);
        }
    }
}

/// Filters a block of the AVX-512 direct convolution ([`direct_rows_f32_avx512`]).
#[cfg(target_arch = "x86_64")]
const FB_WIDE: usize = 6;

/// Where entry (c, fy, fx) of a window is in the padded image, from the window's corner:
/// c·(H + 2P)·(W + 2P) + fy·(W + 2P) + fx.
fn window_offset(d: &PartDims, c: usize, fy: usize, fx: usize) -> usize {
    let (hp, wp) = (d.h + 2 * d.win.pad, d.w + 2 * d.win.pad);
    c * hp * wp + fy * wp + fx
}

/// Each term's [`window_offset`], in im2col's row order (c, fy, fx).
fn term_offsets(d: &PartDims, offsets: &mut Vec<usize>) {
    offsets.clear();
    for c in 0..d.c {
        for fy in 0..d.win.fh {
            offsets.extend((0..d.win.fw).map(|fx| window_offset(d, c, fy, fx)));
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
        let d = PartDims {
            fn_,
            k,
            q,
            c,
            h,
            w,
            win,
        };
        let images = |(part, (x, y)): (&mut Part<T>, (&[T], &mut [T]))| {
            // the buffers are kept from the last batch: no allocation
            if direct_applies(&d) {
                term_offsets(&d, &mut part.offsets);
                let (wc, b) = (
                    self.w.as_slice().expect("standard layout"),
                    b.as_slice().expect("contiguous"),
                );
                for (x_i, y_i) in x.chunks_exact(chw).zip(y.chunks_exact_mut(fn_ * q)) {
                    pad_image(x_i, &d, &mut part.image);
                    convolve_direct(wc, b, &part.image, &part.offsets, &d, y_i);
                }
                return;
            }
            part.col.resize(k * q, T::zero());
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
        let k = self.w.len() / fn_;
        let d = PartDims {
            fn_,
            k,
            q,
            c,
            h,
            w,
            win,
        };
        let mut y = vec![T::zero(); n * fn_ * q];
        let images = x
            .as_slice()
            .expect("standard layout")
            .chunks_exact(c * h * w)
            .zip(y.chunks_exact_mut(fn_ * q));
        if direct_applies(&d) {
            let (mut image, mut offsets) = (Vec::new(), Vec::new()); // one image's, reused
            term_offsets(&d, &mut offsets);
            let (wc, b) = (
                self.w.as_slice().expect("standard layout"),
                self.b.as_slice().expect("contiguous"),
            );
            for (x_i, y_i) in images {
                pad_image(x_i, &d, &mut image);
                convolve_direct(wc, b, &image, &offsets, &d, y_i);
            }
        } else {
            let mut col = vec![T::zero(); k * q]; // one image's, reused
            let wc = w_rows(&self.w);
            for (x_i, y_i) in images {
                im2col_image(x_i, (c, h, w), win, &mut col);
                convolve_image(&wc, &self.b, &col, y_i);
            }
        }
        ArrayD::from_shape_vec(vec![n, fn_, oh, ow], y).expect("one value per output")
    }

    fn backward(&mut self, dout: ArrayD<T>) -> ArrayD<T> {
        self.gradients(Dout::Dense(dout), true)
            .expect("dx asked for")
    }

    fn backward_params(&mut self, dout: ArrayD<T>) {
        self.gradients(Dout::Dense(dout), false);
    }

    fn backward_from_unpooled(&mut self, dout: Unpooled<'_, T>) -> ArrayD<T> {
        self.gradients(Dout::Unpooled(dout), true)
            .expect("dx asked for")
    }

    fn backward_params_from_unpooled(&mut self, dout: Unpooled<'_, T>) {
        self.gradients(Dout::Unpooled(dout), false);
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
    fn every_f32_output_is_its_chain_of_fused_multiply_adds_then_the_bias() {
        // the forward's kernel on this CPU (AVX-512: six filters a block, AVX2: three) against
        // the sum written out in im2col's row order: filter counts that leave a partial block
        // of either, rows of 24 outputs and of fewer, padding, several channels
        if !std::arch::is_x86_feature_detected!("fma") {
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
