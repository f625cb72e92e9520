//! Max pooling 2x2 stride 2 (the book's networks): each window's maximum and which of its
//! four pixels won (a byte), dx written once in order, a ReLU after it applied in the same
//! pass, and a dx that the convolution below may write out itself, one image at a time.
//!
//! Reference: the book's windows in [`crate::layers::Pooling`] (`pool_reference`,
//! `backward_reference`): the same bits, ties, zeros and the ReLU included
//! (`kernels::reference_tests`).

use ndarray::{Array4, ArrayD, Ix4};

use crate::Float;
use crate::kernels::with_avx2;
use crate::parallel::{self, PARTS};

/// What the 2x2 path keeps from forward to backward.
#[derive(Clone, Debug, Default)]
pub struct MaxPool2x2<T: Float> {
    threads: usize,
    relu: bool, // y = relu(max): the ReLU after this layer done here
    // NOTE: which of the four pixels won (0 top-left, 1 top-right, 2 bottom-left, 3
    // bottom-right) instead of a flat argmax: a quarter of the memory, and backward then
    // writes each dx row once, in order, where zeroing dx and scattering into it walked it
    // twice (the two took 0.8 ms of a 6.7 ms SimpleConvNet step)
    corner: Vec<u8>, // (N·C·OH·OW); 4: no pixel (a fused ReLU zeroed the window)
    x_dim: Option<(usize, usize, usize, usize)>, // (N, C, H, W) of the last training input
    x_spare: Option<ArrayD<T>>, // the last input's memory: backward writes dx into it
    y_spare: Option<ArrayD<T>>, // the last dout's memory: forward writes y into it
}

impl<T: Float> MaxPool2x2<T> {
    /// Threads a training batch may use; results do not depend on it.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// Applies the ReLU that follows the pooling in the same pass: y = relu(max), and dy
    /// reaches no pixel of a window the ReLU zeroed, as the ReLU's backward would zero it.
    pub fn fuse_relu(&mut self, on: bool) {
        self.relu = on;
    }

    /// Whether the ReLU after the pooling is applied here.
    pub fn relu(&self) -> bool {
        self.relu
    }

    /// Training forward: y, and which pixel of each window won.
    pub fn forward(&mut self, x: ArrayD<T>) -> ArrayD<T> {
        let mut corner = std::mem::take(&mut self.corner);
        let y = match self.y_spare.take().map(|y| y.into_raw_vec_and_offset()) {
            Some((y, Some(0))) => y,
            _ => Vec::new(),
        };
        let y = self.pool(&x, Some(&mut corner), y);
        self.corner = corner;
        let s = x.shape();
        self.x_dim = Some((s[0], s[1], s[2], s[3]));
        self.x_spare = Some(x);
        y.into_dyn()
    }

    /// Inference forward: the same values as [`MaxPool2x2::forward`], nothing kept.
    pub fn predict(&self, x: &ArrayD<T>) -> ArrayD<T> {
        self.pool(x, None, Vec::new()).into_dyn()
    }

    /// The pooled output into `y`'s memory, with each window's winner into `corner`.
    #[track_caller]
    fn pool(&self, x: &ArrayD<T>, corner: Option<&mut Vec<u8>>, mut y: Vec<T>) -> Array4<T> {
        let x = x
            .view()
            .into_dimensionality::<Ix4>()
            .expect("Pooling: input must be (N, C, H, W)");
        let x = x.as_standard_layout();
        let (n, c, h, w) = x.dim();
        let (oh, ow) = (h / 2, w / 2);
        assert!(
            oh > 0 && ow > 0,
            "window 2x2 (stride 2, pad 0) does not fit a {h}x{w} input"
        );
        let src = x.as_slice().expect("standard layout");
        let len = n * c * oh * ow;
        // every entry of y is written: a y of the right length is not zeroed first
        y.truncate(len);
        y.resize(len, T::zero());
        let corner = match corner {
            Some(corner) => {
                corner.truncate(len);
                corner.resize(len, 0);
                &mut corner[..]
            }
            None => &mut [],
        };
        let threads = parallel::threads_for(src.len(), self.threads);
        max_2x2(src, (h, w), (oh, ow), &mut y, corner, self.relu, threads);
        Array4::from_shape_vec((n, c, oh, ow), y).expect("one value per window")
    }

    /// Backward that leaves dx unwritten: dy and the winners, for the layer below to write
    /// out ([`Unpooled::write_image`], [`Unpooled::into_dense`]).
    #[track_caller]
    pub fn backward_unpooled(&mut self, dout: ArrayD<T>) -> Unpooled<'_, T> {
        let x_dim = self
            .x_dim
            .expect("Pooling::backward called without a forward before it");
        let (n, c, h, w) = x_dim;
        assert_eq!(
            dout.shape(),
            [n, c, h / 2, w / 2],
            "Pooling::backward: dout shape"
        );
        let dout = if dout.is_standard_layout() {
            dout
        } else {
            dout.as_standard_layout().into_owned()
        };
        // dout is kept: its memory takes the next forward's y
        let dy = self.y_spare.insert(dout);
        Unpooled {
            dy: dy.as_slice().expect("standard layout"),
            corner: &self.corner,
            x_dim,
            threads: self.threads,
            spare: self.x_spare.take(),
        }
    }

    /// Backward: dx written out into the input's memory, every entry once.
    pub fn backward(&mut self, dout: ArrayD<T>) -> ArrayD<T> {
        self.backward_unpooled(dout).into_dense()
    }
}

/// Max pooling, windows 2x2 stride 2 (the book's networks): two input rows give one output
/// row. Ties keep the first maximum in (row, column) order, as the general path. `corner`
/// (training) gets which pixel won: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right;
/// left empty (inference), the values alone. With `relu`, y = relu(max), and corner 4 where
/// that is 0 ([`relu_window`]). The output rows are cut into [`PARTS`] parts when `threads`
/// > 1.
fn max_2x2<T: Float>(
    src: &[T],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    y: &mut [T],
    corner: &mut [u8],
    relu: bool,
    threads: usize,
) {
    let rows = y.len() / ow; // planes·OH
    if threads == 1 {
        max_2x2_rows(src, (h, w), (oh, ow), 0, y, corner, relu);
        return;
    }
    let per = rows.div_ceil(PARTS).max(1) * ow;
    let corners: Vec<&mut [u8]> = if corner.is_empty() {
        (0..rows.div_ceil(per / ow)).map(|_| &mut [][..]).collect()
    } else {
        corner.chunks_mut(per).collect()
    };
    let parts: Vec<_> = y.chunks_mut(per).zip(corners).enumerate().collect();
    parallel::map(parts, threads, |(i, (y, corner))| {
        max_2x2_rows(src, (h, w), (oh, ow), i * per / ow, y, corner, relu)
    });
}

/// [`max_2x2`] of the output rows from `first` on (row r: plane r / OH, row r % OH), with
/// AVX2 where the CPU has it (the loops below are written for LLVM to vectorise).
fn max_2x2_rows<T: Float>(
    src: &[T],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    first: usize,
    y: &mut [T],
    corner: &mut [u8],
    relu: bool,
) {
    #[inline(always)]
    fn rows<T: Float, const RELU: bool>(
        src: &[T],
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        first: usize,
        y: &mut [T],
        corner: &mut [u8],
    ) {
        for (i, y) in y.chunks_exact_mut(ow).enumerate() {
            let (plane, oy) = ((first + i) / oh, (first + i) % oh);
            let top = plane * h * w + 2 * oy * w;
            let (a, b) = (&src[top..top + 2 * ow], &src[top + w..top + w + 2 * ow]);
            if corner.is_empty() {
                max_2x2_row_values::<T, RELU>(a, b, y);
            } else {
                max_2x2_row::<T, RELU>(a, b, y, &mut corner[i * ow..(i + 1) * ow]);
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn rows_avx2<T: Float, const RELU: bool>(
            src: &[T],
            hw: (usize, usize),
            out: (usize, usize),
            first: usize,
            y: &mut [T],
            corner: &mut [u8],
        ) {
            rows::<T, RELU>(src, hw, out, first, y, corner)
        }
        if crate::kernels::cpu::avx2() {
            // SAFETY: the CPU has the feature the function is compiled for
            unsafe {
                if relu {
                    rows_avx2::<T, true>(src, (h, w), (oh, ow), first, y, corner)
                } else {
                    rows_avx2::<T, false>(src, (h, w), (oh, ow), first, y, corner)
                }
            };
            return;
        }
    }
    if relu {
        rows::<T, true>(src, (h, w), (oh, ow), first, y, corner)
    } else {
        rows::<T, false>(src, (h, w), (oh, ow), first, y, corner)
    }
}

/// One output row: `a` and `b` the window's two input rows.
#[inline(always)]
fn max_2x2_row<T: Float, const RELU: bool>(a: &[T], b: &[T], y: &mut [T], corner: &mut [u8]) {
    let window = |a0, a1, b0, b1| {
        let (best, at) = max_2x2_window(a0, a1, b0, b1);
        if RELU {
            relu_window(best, at)
        } else {
            (best, at)
        }
    };
    // NOTE: four windows at a time, then the rest one by one: with the loop over the row
    // alone, LLVM vectorised it 8 windows wide and left SimpleConvNet's 12-window rows a third
    // scalar
    let four = y.len() / 4 * 4;
    let (y4, y1) = y.split_at_mut(four);
    let (k4, k1) = corner.split_at_mut(four);
    let quads = (a.chunks_exact(8).zip(b.chunks_exact(8)))
        .zip(y4.chunks_exact_mut(4).zip(k4.chunks_exact_mut(4)));
    for ((a, b), (y, k)) in quads {
        for t in 0..4 {
            (y[t], k[t]) = window(a[2 * t], a[2 * t + 1], b[2 * t], b[2 * t + 1]);
        }
    }
    let windows = a[2 * four..]
        .chunks_exact(2)
        .zip(b[2 * four..].chunks_exact(2));
    for ((y, k), (a, b)) in y1.iter_mut().zip(k1.iter_mut()).zip(windows) {
        (*y, *k) = window(a[0], a[1], b[0], b[1]);
    }
}

/// One window's maximum and which pixel it is: the first maximum in the order top-left,
/// top-right, bottom-left, bottom-right; a NaN wins (the last NaN), as in
/// [`crate::layers::Pooling`]'s windows and PyTorch.
#[inline(always)]
fn max_2x2_window<T: Float>(a0: T, a1: T, b0: T, b1: T) -> (T, u8) {
    // NOTE: selects, not branches: on real activations the winner is a coin toss,
    // and mispredicted branches made this the slowest loop of a SimpleConvNet step
    let (mut best, mut at) = (a0, 0u8);
    let take = a1 > best || a1.is_nan();
    (best, at) = (if take { a1 } else { best }, if take { 1 } else { at });
    let take = b0 > best || b0.is_nan();
    (best, at) = (if take { b0 } else { best }, if take { 2 } else { at });
    let take = b1 > best || b1.is_nan();
    (best, at) = (if take { b1 } else { best }, if take { 3 } else { at });
    (best, at)
}

/// A ReLU fused into the pooling ([`MaxPool2x2::fuse_relu`]) on a window's maximum and its corner:
/// relu(max), as [`crate::layers::Relu`] computes it (`max <= 0` gives 0, NaN passes), and
/// corner 4, no pixel, where the ReLU's mask would stop the gradient.
#[inline(always)]
fn relu_window<T: Float>(best: T, at: u8) -> (T, u8) {
    let dead = best <= T::zero();
    (
        if dead { T::zero() } else { best },
        if dead { 4 } else { at },
    )
}

/// [`max_2x2_row`]'s values without the corner (inference): the same [`max_2x2_window`] (and
/// [`relu_window`]), so the same value, the sign of a zero included, as training's forward.
#[inline(always)]
fn max_2x2_row_values<T: Float, const RELU: bool>(a: &[T], b: &[T], y: &mut [T]) {
    // the corner is computed and dropped: LLVM leaves it out
    let max = |a0, a1, b0, b1| {
        let (best, at) = max_2x2_window(a0, a1, b0, b1);
        if RELU { relu_window(best, at).0 } else { best }
    };
    // four windows at a time, as max_2x2_row
    let four = y.len() / 4 * 4;
    let (y4, y1) = y.split_at_mut(four);
    let quads = (a.chunks_exact(8).zip(b.chunks_exact(8))).zip(y4.chunks_exact_mut(4));
    for ((a, b), y) in quads {
        for t in 0..4 {
            y[t] = max(a[2 * t], a[2 * t + 1], b[2 * t], b[2 * t + 1]);
        }
    }
    let windows = a[2 * four..]
        .chunks_exact(2)
        .zip(b[2 * four..].chunks_exact(2));
    for (y, (a, b)) in y1.iter_mut().zip(windows) {
        *y = max(a[0], a[1], b[0], b[1]);
    }
}

/// dx of [`max_2x2`], whole planes: each window's gradient goes to the pixel that won, every
/// other entry (rows and columns no window covers included) is zero. dx is written in order,
/// each entry once; the planes are cut into [`PARTS`] parts when `threads` > 1.
fn unpool_2x2<T: Float>(
    dy: &[T],
    corner: &[u8],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    dx: &mut [T],
    threads: usize,
) {
    let planes = dx.len() / (h * w);
    if threads == 1 {
        unpool_2x2_planes(dy, corner, (h, w), (oh, ow), dx);
        return;
    }
    let per = planes.div_ceil(PARTS).max(1);
    let parts: Vec<_> = dx
        .chunks_mut(per * h * w)
        .zip(dy.chunks(per * oh * ow).zip(corner.chunks(per * oh * ow)))
        .collect();
    parallel::map(parts, threads, |(dx, (dy, corner))| {
        unpool_2x2_planes(dy, corner, (h, w), (oh, ow), dx)
    });
}

/// [`unpool_2x2`] on one thread, with AVX2 where the CPU has it ([`with_avx2`]).
fn unpool_2x2_planes<T: Float>(
    dy: &[T],
    corner: &[u8],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    dx: &mut [T],
) {
    with_avx2(
        #[inline(always)]
        || {
            let planes = dx
                .chunks_exact_mut(h * w)
                .zip(dy.chunks_exact(oh * ow).zip(corner.chunks_exact(oh * ow)));
            for (dx, (dy, corner)) in planes {
                let (pairs, rest) = dx.split_at_mut(2 * oh * w);
                let rows = dy.chunks_exact(ow).zip(corner.chunks_exact(ow));
                for (pair, (dy, corner)) in pairs.chunks_exact_mut(2 * w).zip(rows) {
                    let (top, bottom) = pair.split_at_mut(w);
                    unpool_2x2_row(dy, corner, top, bottom);
                    top[2 * ow..].fill(T::zero());
                    bottom[2 * ow..].fill(T::zero());
                }
                rest.fill(T::zero());
            }
        },
    )
}

/// ∂L/∂x of a 2x2 max pooling, not written out: dy and which pixel of each window won it
/// (every other entry of dx is zero). [`MaxPool2x2::backward_unpooled`] gives it to the layer
/// below, which writes out one image's dx at a time where it reads it
/// ([`Unpooled::write_image`]: 69 KB for SimpleConvNet, in L2), instead of the whole batch's
/// (6.9 MB) going out to memory and back between the two layers.
pub struct Unpooled<'a, T> {
    dy: &'a [T],      // (N, C, OH, OW)
    corner: &'a [u8], // the same shape: 0-3 the pixel that won, 4 none
    x_dim: (usize, usize, usize, usize),
    threads: usize,
    spare: Option<ArrayD<T>>, // the pooling's last input: its memory, to be reused
}

impl<T: Float> Unpooled<'_, T> {
    /// (N, C, H, W): the shape of dx, the pooling's input.
    pub fn dim(&self) -> (usize, usize, usize, usize) {
        self.x_dim
    }

    /// Image `i`'s dx, (C, H, W), into `dx`: every entry written, the bits of
    /// [`MaxPool2x2::backward`]'s dx.
    #[track_caller]
    pub fn write_image(&self, i: usize, dx: &mut [T]) {
        let (_, c, h, w) = self.x_dim;
        let (oh, ow) = (h / 2, w / 2);
        let per = c * oh * ow;
        assert_eq!(
            dx.len(),
            c * h * w,
            "Unpooled::write_image: dx of one image"
        );
        let (dy, corner) = (
            &self.dy[i * per..(i + 1) * per],
            &self.corner[i * per..(i + 1) * per],
        );
        unpool_2x2_planes(dy, corner, (h, w), (oh, ow), dx);
    }

    /// The memory of the pooling's last input, (N, C, H, W), once: the layer below may keep
    /// it for its next output (a layer that writes dx out itself gets it from
    /// [`Unpooled::into_dense`]).
    pub fn take_spare(&mut self) -> Option<ArrayD<T>> {
        self.spare.take()
    }

    /// The whole dx, (N, C, H, W), written out as [`MaxPool2x2::backward`] writes it (into the
    /// pooling's last input's memory).
    pub fn into_dense(mut self) -> ArrayD<T> {
        let (n, c, h, w) = self.x_dim;
        let mut dx = match self.spare.take().map(|x| x.into_dimensionality::<Ix4>()) {
            Some(Ok(x)) if x.dim() == self.x_dim && x.is_standard_layout() => x,
            _ => Array4::<T>::zeros((n, c, h, w)),
        };
        let flat = dx.as_slice_mut().expect("standard layout");
        let threads = parallel::threads_for(flat.len(), self.threads);
        unpool_2x2(self.dy, self.corner, (h, w), (h / 2, w / 2), flat, threads);
        dx.into_dyn()
    }
}

/// One row of windows: `top` and `bottom` the two dx rows under them.
#[inline(always)]
fn unpool_2x2_row<T: Float>(dy: &[T], corner: &[u8], top: &mut [T], bottom: &mut [T]) {
    let zero = T::zero();
    let windows = top.chunks_exact_mut(2).zip(bottom.chunks_exact_mut(2));
    // NOTE: corner 4 (a fused ReLU zeroed the window) matches none of 0-3: four zeros
    for ((&g, &k), (t, b)) in dy.iter().zip(corner).zip(windows) {
        // 0 + g, as adding into a zeroed dx gave: a gradient of -0 lands as +0
        let g = zero + g;
        t[0] = if k == 0 { g } else { zero };
        t[1] = if k == 1 { g } else { zero };
        b[0] = if k == 2 { g } else { zero };
        b[1] = if k == 3 { g } else { zero };
    }
}
