//! Max and average pooling over windows of any size and stride.

use ndarray::{Array4, ArrayD, Ix4};

use super::{Layer, Window};
use crate::Float;
use crate::linalg::with_avx2;
use crate::parallel::{self, PARTS};

/// What a pooling window reduces to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Average,
}

/// Pooling (the book's `Pooling`, ch. 7.4.4, plus average pooling): each channel of each image
/// is reduced window by window. Windows may overlap (stride < window) or leave the last rows
/// and columns out (the size does not divide); padding, if any, never wins a max and counts
/// as zero in an average (as PyTorch's defaults).
///
/// # Shapes
/// `x: (N, C, H, W) -> (N, C, OH, OW)`, `OH = (H + 2P - PH) / S + 1`, `OW` alike.
///
/// # Forward and gradient
/// ```text
/// max:     y = max over the window,   dx[argmax] += dy   (the first maximum on ties)
/// average: y = Σ window / (PH·PW),    dx[each]   += dy / (PH·PW)
/// ```
/// A 2x2 max pooling can take in the ReLU after it ([`Layer::fuse_relu`]):
/// `y = relu(max)`, and `dx[argmax] = dy` only where `max > 0` (or NaN), else nothing.
///
/// # Memory
/// The argmax buffer is kept from batch to batch, y is written into the last dout's memory
/// and dx into the last input's: no allocation in a steady-state training step.
///
/// # Threads
/// Max pooling 2x2 stride 2 (the book's networks) splits a training batch's windows over the
/// threads ([`Layer::set_threads`]); each output is computed as on one thread.
#[derive(Clone, Debug)]
pub struct Pooling<T: Float = f32> {
    pub kind: PoolKind,
    pub window: Window,
    threads: usize,
    x_dim: Option<(usize, usize, usize, usize)>, // (N, C, H, W) of the last training input
    argmax: Vec<u32>, // (N·C·OH·OW) flat index into x of each max, the buffer kept
    // NOTE: 2x2 stride 2 keeps which of the four pixels won (0 top-left, 1 top-right, 2
    // bottom-left, 3 bottom-right) instead: a quarter of the argmax's memory, and backward
    // then writes each dx row once, in order, where zeroing dx and scattering into it walked
    // it twice (the two took 0.8 ms of a 6.7 ms SimpleConvNet step)
    corner: Vec<u8>, // (N·C·OH·OW); 4: no pixel (a fused ReLU zeroed the window)
    relu: bool,      // y = relu(max): the ReLU after this layer done here ([`Layer::fuse_relu`])
    x_spare: Option<ArrayD<T>>, // the last input's memory: backward writes dx into it
    y_spare: Option<ArrayD<T>>, // the last dout's memory: forward writes y into it
}

impl<T: Float> Pooling<T> {
    /// A `kind` pooling of `ph x pw` windows moved by `stride`, with `pad` rows and columns of
    /// padding.
    #[track_caller]
    pub fn new(kind: PoolKind, ph: usize, pw: usize, stride: usize, pad: usize) -> Self {
        assert!(
            ph > 0 && pw > 0 && stride > 0,
            "Pooling: window {ph}x{pw} stride {stride}"
        );
        // NOTE: as PyTorch, padding at most half the window, so no window is all padding.
        assert!(
            2 * pad <= ph.min(pw),
            "Pooling: padding {pad} is more than half the {ph}x{pw} window"
        );
        Pooling {
            kind,
            window: Window {
                fh: ph,
                fw: pw,
                stride,
                pad,
            },
            threads: 1,
            x_dim: None,
            argmax: Vec::new(),
            corner: Vec::new(),
            relu: false,
            x_spare: None,
            y_spare: None,
        }
    }

    /// The book's `Pooling(pool_h, pool_w, stride)`: max pooling, no padding.
    pub fn max(ph: usize, pw: usize, stride: usize) -> Self {
        Self::new(PoolKind::Max, ph, pw, stride, 0)
    }

    /// The rows and columns of the image that window (oy, ox) covers (padding left out).
    fn span(
        &self,
        oy: usize,
        ox: usize,
        h: usize,
        w: usize,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let win = self.window;
        let clip = |start: usize, len: usize, size: usize| {
            let s = start.saturating_sub(win.pad);
            let e = (start + len).saturating_sub(win.pad).min(size);
            s..e.max(s)
        };
        (
            clip(oy * win.stride, win.fh, h),
            clip(ox * win.stride, win.fw, w),
        )
    }

    /// True for max pooling 2x2 stride 2 without padding, which has its own kernels.
    fn is_max_2x2(&self) -> bool {
        self.kind == PoolKind::Max && self.window == Self::max(2, 2, 2).window
    }

    /// A 2x2 max pooling on `threads` threads, with the ReLU after it taken in or not.
    #[cfg(test)]
    pub(crate) fn max_2x2_for_tests(relu: bool, threads: usize) -> Self {
        let mut pool = Self::max(2, 2, 2);
        if relu {
            assert!(Layer::<T>::fuse_relu(&mut pool));
        }
        Layer::<T>::set_threads(&mut pool, threads);
        pool
    }

    /// The pooled output into `y`'s memory. With `kept` (training), also what backward needs:
    /// the flat index into x of each window's maximum (`argmax`), or for 2x2 windows which of
    /// the four pixels won (`corner`); the other is left empty.
    #[track_caller]
    fn pool(
        &self,
        x: &ArrayD<T>,
        kept: Option<(&mut Vec<u32>, &mut Vec<u8>)>,
        mut y: Vec<T>,
        threads: usize,
    ) -> Array4<T> {
        let x = x
            .view()
            .into_dimensionality::<Ix4>()
            .expect("Pooling: input must be (N, C, H, W)");
        let x = x.as_standard_layout();
        let (n, c, h, w) = x.dim();
        let (oh, ow) = self.window.output(h, w);
        let src = x.as_slice().expect("standard layout");
        // NOTE: u32 indices: half the memory of usize for the largest buffer a max pooling
        // layer keeps (SimpleConvNet: 432 000 entries a batch)
        assert!(
            src.len() <= u32::MAX as usize,
            "Pooling: an input of {} values is more than a u32 index reaches",
            src.len()
        );
        let len = n * c * oh * ow;
        if self.is_max_2x2() {
            // every entry of y is written below: a y of the right length is not zeroed first
            y.truncate(len);
            y.resize(len, T::zero());
            let corner = match kept {
                Some((argmax, corner)) => {
                    argmax.clear();
                    corner.truncate(len);
                    corner.resize(len, 0);
                    &mut corner[..]
                }
                None => &mut [],
            };
            let threads = parallel::threads_for(src.len(), threads);
            max_2x2(src, (h, w), (oh, ow), &mut y, corner, self.relu, threads);
        } else {
            y.clear();
            y.reserve(len);
            let mut scratch = Vec::new();
            let argmax = match kept {
                Some((argmax, corner)) => {
                    corner.clear();
                    argmax
                }
                None => &mut scratch,
            };
            argmax.clear();
            match self.kind {
                PoolKind::Max if self.window.pad == 0 => {
                    max_inside(src, (h, w), (oh, ow), self.window, &mut y, argmax)
                }
                _ => self.pool_clipped(src, (h, w), (oh, ow), &mut y, argmax),
            }
        }
        Array4::from_shape_vec((n, c, oh, ow), y).expect("one value per window")
    }

    /// Any window, padding left out of each (its rows and columns clipped to the image).
    fn pool_clipped(
        &self,
        src: &[T],
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        y: &mut Vec<T>,
        argmax: &mut Vec<u32>,
    ) {
        let area = T::of((self.window.fh * self.window.fw) as f64);
        for (plane, img) in src.chunks_exact(h * w).enumerate() {
            let base = plane * h * w;
            for oy in 0..oh {
                for ox in 0..ow {
                    let (rows, cols) = self.span(oy, ox, h, w);
                    match self.kind {
                        PoolKind::Max => {
                            // the window's first pixel, then the first larger one
                            let first = rows.start * w + cols.start;
                            let mut best = (first, img[first]);
                            for yy in rows {
                                let line = yy * w + cols.start;
                                for (k, &v) in img[line..line + cols.len()].iter().enumerate() {
                                    if v > best.1 {
                                        best = (line + k, v);
                                    }
                                }
                            }
                            y.push(best.1);
                            argmax.push((base + best.0) as u32);
                        }
                        PoolKind::Average => {
                            let mut sum = T::zero();
                            for yy in rows {
                                let line = yy * w + cols.start;
                                sum = img[line..line + cols.len()].iter().fold(sum, |a, &v| a + v);
                            }
                            y.push(sum / area);
                        }
                    }
                }
            }
        }
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
        if std::arch::is_x86_feature_detected!("avx2") {
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
/// top-right, bottom-left, bottom-right.
#[inline(always)]
fn max_2x2_window<T: Float>(a0: T, a1: T, b0: T, b1: T) -> (T, u8) {
    // NOTE: selects, not branches: on real activations the winner is a coin toss,
    // and mispredicted branches made this the slowest loop of a SimpleConvNet step
    let (mut best, mut at) = (a0, 0u8);
    let take = a1 > best;
    (best, at) = (if take { a1 } else { best }, if take { 1 } else { at });
    let take = b0 > best;
    (best, at) = (if take { b0 } else { best }, if take { 2 } else { at });
    let take = b1 > best;
    (best, at) = (if take { b1 } else { best }, if take { 3 } else { at });
    (best, at)
}

/// A ReLU fused into the pooling ([`Layer::fuse_relu`]) on a window's maximum and its corner:
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
/// (every other entry of dx is zero). [`Layer::backward_unpooled`] gives it to the layer
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
    /// [`Layer::backward`]'s dx.
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

    /// The whole dx, (N, C, H, W), written out as [`Layer::backward`] writes it (into the
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

/// Max pooling without padding: every window lies inside the image.
fn max_inside<T: Float>(
    src: &[T],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    win: Window,
    y: &mut Vec<T>,
    argmax: &mut Vec<u32>,
) {
    for (plane, img) in src.chunks_exact(h * w).enumerate() {
        for oy in 0..oh {
            for ox in 0..ow {
                let corner = oy * win.stride * w + ox * win.stride;
                let mut best = (corner, img[corner]);
                for line in (corner..corner + win.fh * w).step_by(w) {
                    for (k, &v) in img[line..line + win.fw].iter().enumerate() {
                        if v > best.1 {
                            best = (line + k, v);
                        }
                    }
                }
                y.push(best.1);
                argmax.push((plane * h * w + best.0) as u32);
            }
        }
    }
}

impl<T: Float> Layer<T> for Pooling<T> {
    fn kind(&self) -> &'static str {
        "Pool"
    }

    fn describe(&self) -> String {
        let Window {
            fh,
            fw,
            stride,
            pad,
        } = self.window;
        let kind = match self.kind {
            PoolKind::Max => "max",
            PoolKind::Average => "avg",
        };
        let size = if fh == fw {
            fh.to_string()
        } else {
            format!("{fh}x{fw}")
        };
        format!("pool {kind} {size} stride={stride} pad={pad}")
    }

    fn forward(&mut self, x: ArrayD<T>) -> ArrayD<T> {
        let (mut argmax, mut corner) = (
            std::mem::take(&mut self.argmax),
            std::mem::take(&mut self.corner),
        );
        let y = match self.y_spare.take().map(|y| y.into_raw_vec_and_offset()) {
            Some((y, Some(0))) => y,
            _ => Vec::new(),
        };
        let y = self.pool(&x, Some((&mut argmax, &mut corner)), y, self.threads);
        (self.argmax, self.corner) = (argmax, corner);
        let s = x.shape();
        self.x_dim = Some((s[0], s[1], s[2], s[3]));
        self.x_spare = Some(x);
        y.into_dyn()
    }

    fn predict(&self, x: ArrayD<T>) -> ArrayD<T> {
        self.pool(&x, None, Vec::new(), self.threads).into_dyn()
    }

    fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    fn commutes_with_relu(&self) -> bool {
        // max over a window of relu(x) = relu(max over the window of x); where that is 0
        // the ReLU's gradient is 0 either way, elsewhere both orders pick the same pixel
        self.kind == PoolKind::Max
    }

    fn fuse_relu(&mut self) -> bool {
        // the 2x2 kernels apply it as they write y and the corner; dy then reaches no pixel
        // of a window the ReLU zeroed, as the ReLU's backward would have zeroed it
        self.relu = self.is_max_2x2();
        self.relu
    }

    fn backward_unpooled(&mut self, dout: ArrayD<T>) -> Result<Unpooled<'_, T>, ArrayD<T>> {
        if !self.is_max_2x2() {
            return Err(dout);
        }
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
        Ok(Unpooled {
            dy: dy.as_slice().expect("standard layout"),
            corner: &self.corner,
            x_dim,
            threads: self.threads,
            spare: self.x_spare.take(),
        })
    }

    fn backward(&mut self, dout: ArrayD<T>) -> ArrayD<T> {
        // 2x2 max: dx written out into the input's memory, every entry once
        let dout = match self.backward_unpooled(dout) {
            Ok(dx) => return dx.into_dense(),
            Err(dout) => dout,
        };
        let x_dim = self
            .x_dim
            .expect("Pooling::backward called without a forward before it");
        let (_, _, h, w) = x_dim;
        let dy = dout
            .view()
            .into_dimensionality::<Ix4>()
            .expect("Pooling::backward: dout must be 4-D");
        let (oh, ow) = self.window.output(h, w);
        assert_eq!(
            dy.dim(),
            (x_dim.0, x_dim.1, oh, ow),
            "Pooling::backward: dout shape"
        );
        // dx goes into the input's memory, zeroed (the gradients add into it)
        let mut dx = match self.x_spare.take().map(|x| x.into_dimensionality::<Ix4>()) {
            Some(Ok(mut x)) if x.dim() == x_dim && x.is_standard_layout() => {
                x.fill(T::zero());
                x
            }
            _ => Array4::<T>::zeros(x_dim),
        };
        match self.kind {
            PoolKind::Max => {
                // each window's gradient goes to its maximum (overlapping windows add up)
                let argmax = &self.argmax;
                let flat = dx.as_slice_mut().expect("new arrays are contiguous");
                for (&k, &g) in argmax.iter().zip(dy.iter()) {
                    flat[k as usize] = flat[k as usize] + g;
                }
            }
            PoolKind::Average => {
                // each window's gradient is shared equally by its pixels
                let area = T::of((self.window.fh * self.window.fw) as f64);
                for ((i, ch, oy, ox), &g) in dy.indexed_iter() {
                    let (rows, cols) = self.span(oy, ox, h, w);
                    for yy in rows {
                        for xx in cols.clone() {
                            dx[[i, ch, yy, xx]] = dx[[i, ch, yy, xx]] + g / area;
                        }
                    }
                }
            }
        }
        self.y_spare = Some(dout);
        dx.into_dyn()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use crate::gradcheck::check_layer;
    use crate::layers::Relu;
    use ndarray::{Array, Array2};

    fn image(rows: &[&[f64]]) -> ArrayD<f64> {
        let (h, w) = (rows.len(), rows[0].len());
        let a = Array2::from_shape_fn((h, w), |(y, x)| rows[y][x]);
        a.into_shape_with_order((1, 1, h, w)).unwrap().into_dyn()
    }

    #[test]
    fn max_and_average_by_hand_with_a_window_that_does_not_divide() {
        // 5x5, window 2x2, stride 2: outputs at rows/cols 0-1 and 2-3; the last row and
        // column are left out.
        let x = image(&[
            &[1., 2., 0., 0., 9.],
            &[3., 4., 0., 5., 9.],
            &[0., 0., 7., 6., 9.],
            &[0., 8., 1., 1., 9.],
            &[9., 9., 9., 9., 9.],
        ]);
        let mut max = Pooling::max(2, 2, 2);
        let y = Layer::<f64>::forward(&mut max, x.clone());
        assert_eq!(y, image(&[&[4., 5.], &[8., 7.]]));
        let dx = Layer::<f64>::backward(&mut max, image(&[&[1., 2.], &[3., 4.]]));
        assert_eq!(dx[[0, 0, 1, 1]], 1.0);
        assert_eq!(dx[[0, 0, 1, 3]], 2.0);
        assert_eq!(dx[[0, 0, 3, 1]], 3.0);
        assert_eq!(dx[[0, 0, 2, 2]], 4.0);
        assert_eq!(dx.sum(), 10.0, "the 9s outside every window get nothing");

        let mut avg = Pooling::new(PoolKind::Average, 2, 2, 2, 0);
        assert_eq!(
            Layer::<f64>::forward(&mut avg, x),
            image(&[&[2.5, 1.25], &[2.0, 3.75]])
        );
        let dx = Layer::<f64>::backward(&mut avg, image(&[&[4., 8.], &[0., 0.]]));
        assert_eq!(
            (dx[[0, 0, 0, 0]], dx[[0, 0, 1, 3]], dx[[0, 0, 4, 4]]),
            (1.0, 2.0, 0.0)
        );
    }

    #[test]
    fn fast_paths_pick_the_same_maximum_as_the_general_path_ties_included() {
        // Small integers: many ties, which must go to the first maximum in every path.
        let mut rng = Rng::new(40);
        for (h, w, win) in [(6, 8, (2, 2, 2)), (7, 5, (2, 2, 2)), (7, 9, (3, 2, 2))] {
            let x = Array::from_shape_fn((2, 3, h, w), |_| rng.below(3) as f64).into_dyn();
            let fast = Pooling::max(win.0, win.1, win.2);
            let (oh, ow) = fast.window.output(h, w);
            let src = x.as_slice().unwrap();
            for threads in [1, 2, 3] {
                let (mut arg_fast, mut corner) = (Vec::new(), Vec::new());
                let y_fast = fast
                    .pool(&x, Some((&mut arg_fast, &mut corner)), Vec::new(), threads)
                    .into_raw_vec_and_offset()
                    .0;
                if fast.is_max_2x2() {
                    // the corner as a flat index: window r·OW + ox of plane r / OH
                    assert!(arg_fast.is_empty());
                    arg_fast = (corner.iter().enumerate())
                        .map(|(i, &k)| {
                            let (r, ox) = (i / ow, i % ow);
                            let (plane, oy) = (r / oh, r % oh);
                            let (dy, dx) = (k as usize / 2, k as usize % 2);
                            (plane * h * w + (2 * oy + dy) * w + 2 * ox + dx) as u32
                        })
                        .collect();
                }
                let (mut y_gen, mut arg_gen) = (Vec::new(), Vec::new());
                fast.pool_clipped(src, (h, w), (oh, ow), &mut y_gen, &mut arg_gen);
                assert_eq!(arg_fast, arg_gen, "{h}x{w} window {win:?}");
                assert_eq!(y_fast, y_gen);
            }
        }
    }

    #[test]
    fn inference_gives_the_training_forwards_bits_zeros_and_ties_included() {
        // values from {-1, -0, +0, 1}: ties between zeros of either sign decide the sign
        let mut rng = Rng::new(41);
        let values = [-1.0f32, -0.0, 0.0, 1.0];
        for (h, w) in [(24, 24), (6, 8), (7, 5), (7, 9)] {
            let x = Array::from_shape_fn((3, 2, h, w), |_| values[rng.below(4)]).into_dyn();
            for mut pool in [Pooling::max(2, 2, 2), Pooling::max(3, 3, 2)] {
                let predicted = Layer::<f32>::predict(&pool, x.clone());
                let trained = Layer::<f32>::forward(&mut pool, x.clone());
                let bits = |a: &ArrayD<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&predicted), bits(&trained), "{h}x{w}");
            }
        }
    }

    #[test]
    fn max_2x2_backward_is_the_scatter_into_zeros_on_any_thread_count() {
        // odd sizes leave a row and a column out of every window; a batch of 1.2M values is
        // split over the threads (see parallel::threads_for), forward and backward
        let mut rng = Rng::new(42);
        let values = [-1.0f32, -0.0, 0.0, 1.0, 2.0];
        for (n, h, w) in [(2, 7, 5), (2, 6, 8), (64, 24, 26)] {
            let x = Array::from_shape_fn((n, 30, h, w), |_| values[rng.below(5)]).into_dyn();
            let dy_values = [-0.0f32, 0.5, -2.0];
            let (oh, ow) = (h / 2, w / 2);
            let dy = Array::from_shape_fn((n, 30, oh, ow), |_| dy_values[rng.below(3)]).into_dyn();
            // the general path's argmax, scattered into zeros
            let (mut y_gen, mut argmax) = (Vec::new(), Vec::new());
            let pool = Pooling::<f32>::max(2, 2, 2);
            let src = x.as_slice().unwrap();
            pool.pool_clipped(src, (h, w), (oh, ow), &mut y_gen, &mut argmax);
            let mut expected = vec![0.0f32; x.len()];
            for (&k, &g) in argmax.iter().zip(dy.iter()) {
                expected[k as usize] += g;
            }
            let bits = |a: &[f32]| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for threads in [1, 2, 3] {
                let mut pool = Pooling::<f32>::max(2, 2, 2);
                Layer::<f32>::set_threads(&mut pool, threads);
                let y = Layer::<f32>::forward(&mut pool, x.clone());
                assert_eq!(bits(y.as_slice().unwrap()), bits(&y_gen), "{h}x{w}");
                // backward writes over the forward's input: every entry must be written
                let dx = Layer::<f32>::backward(&mut pool, dy.clone());
                assert_eq!(
                    bits(dx.as_slice().unwrap()),
                    bits(&expected),
                    "{n}x30x{h}x{w}, {threads} threads"
                );
            }
        }
    }

    #[test]
    fn a_dx_left_unwritten_is_backwards_dx_image_by_image_and_whole() {
        // what Unpooled writes out (one image at a time, or all of it for a layer below that
        // reads no unwritten dx: the trait's default, here a ReLU's) against backward's dx;
        // odd sizes, the ReLU fused or not, 1 and 2 threads
        let mut rng = Rng::new(45);
        let bits = |a: &[f32]| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (n, h, w, relu) in [(3, 7, 5, false), (3, 6, 8, true), (40, 24, 24, true)] {
            let x = Array::from_shape_fn((n, 5, h, w), |_| rng.normal() as f32).into_dyn();
            let dy = Array::from_shape_fn((n, 5, h / 2, w / 2), |_| match rng.below(3) {
                0 => -0.0,
                _ => rng.normal() as f32,
            })
            .into_dyn();
            for threads in [1, 2] {
                let mut pool = Pooling::max_2x2_for_tests(relu, threads);
                let mut pool2 = pool.clone();
                Layer::<f32>::forward(&mut pool, x.clone());
                Layer::<f32>::forward(&mut pool2, x.clone());
                let dx = Layer::<f32>::backward(&mut pool, dy.clone());
                let dx = dx.as_slice().unwrap();
                let case = format!("{n}x5x{h}x{w}, relu {relu}, {threads} threads");
                {
                    let unwritten = pool2.backward_unpooled(dy.clone()).ok().unwrap();
                    assert_eq!(unwritten.dim(), (n, 5, h, w));
                    let mut image = vec![f32::NAN; 5 * h * w];
                    for i in 0..n {
                        unwritten.write_image(i, &mut image);
                        let want = &dx[i * image.len()..(i + 1) * image.len()];
                        assert_eq!(bits(&image), bits(want), "image {i}, {case}");
                    }
                }
                Layer::<f32>::forward(&mut pool2, x.clone());
                let unwritten = pool2.backward_unpooled(dy.clone()).ok().unwrap();
                let mut below = Relu::new();
                Layer::<f32>::forward(&mut below, x.clone()); // a mask of dx's shape
                let mut below2 = below.clone();
                let want = Layer::<f32>::backward(
                    &mut below,
                    ArrayD::from_shape_vec(x.shape(), dx.to_vec()).unwrap(),
                );
                let got = below2.backward_from_unpooled(unwritten);
                assert_eq!(
                    bits(got.as_slice().unwrap()),
                    bits(want.as_slice().unwrap()),
                    "{case}"
                );
            }
        }
        // other poolings give dout back, nothing done
        let mut avg = Pooling::<f32>::new(PoolKind::Average, 2, 2, 2, 0);
        let x = Array::from_shape_fn((1, 1, 4, 4), |_| rng.normal() as f32).into_dyn();
        Layer::<f32>::forward(&mut avg, x);
        let dy = Array::from_shape_fn((1, 1, 2, 2), |_| rng.normal() as f32).into_dyn();
        let back = avg.backward_unpooled(dy.clone()).err().unwrap();
        assert_eq!(back, dy);
    }

    #[test]
    fn a_fused_relu_gives_the_bits_of_the_relu_after_the_pooling() {
        // zeros of either sign, negatives, ties and NaN: what the ReLU's test `v <= 0` and
        // its mask `v > 0 or NaN` decide; odd sizes, a batch split over threads, f32 and f64
        let mut rng = Rng::new(43);
        let values = [-1.0f32, -0.0, 0.0, 1.0, 2.0, f32::NAN];
        for (n, h, w) in [(2, 7, 5), (3, 6, 8), (64, 24, 24)] {
            let x = Array::from_shape_fn((n, 30, h, w), |_| values[rng.below(6)]).into_dyn();
            let dy = Array::from_shape_fn((n, 30, h / 2, w / 2), |_| {
                [-0.0f32, 0.5, -2.0][rng.below(3)]
            })
            .into_dyn();
            let bits = |a: &ArrayD<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for threads in [1, 2, 3] {
                let (mut pool, mut relu) = (Pooling::<f32>::max(2, 2, 2), Relu::new());
                let mut fused = Pooling::<f32>::max(2, 2, 2);
                assert!(Layer::<f32>::fuse_relu(&mut fused));
                for p in [&mut pool, &mut fused] {
                    Layer::<f32>::set_threads(p, threads);
                }
                let y =
                    Layer::<f32>::forward(&mut relu, Layer::<f32>::forward(&mut pool, x.clone()));
                let y_fused = Layer::<f32>::forward(&mut fused, x.clone());
                assert_eq!(
                    bits(&y_fused),
                    bits(&y),
                    "{n}x30x{h}x{w}, {threads} threads"
                );
                assert_eq!(bits(&Layer::<f32>::predict(&fused, x.clone())), bits(&y));
                let dx = Layer::<f32>::backward(
                    &mut pool,
                    Layer::<f32>::backward(&mut relu, dy.clone()),
                );
                let dx_fused = Layer::<f32>::backward(&mut fused, dy.clone());
                assert_eq!(
                    bits(&dx_fused),
                    bits(&dx),
                    "{n}x30x{h}x{w}, {threads} threads"
                );
            }
        }
        // f64
        let x =
            Array::from_shape_fn((2, 3, 6, 6), |_| [-1.0, -0.0, 0.0, 3.0][rng.below(4)]).into_dyn();
        let mut fused = Pooling::<f64>::max(2, 2, 2);
        assert!(Layer::<f64>::fuse_relu(&mut fused));
        let mut relu = Relu::new();
        let expected = Layer::<f64>::forward(
            &mut relu,
            Layer::<f64>::predict(&Pooling::max(2, 2, 2), x.clone()),
        );
        let y = Layer::<f64>::forward(&mut fused, x.clone());
        assert_eq!(y.mapv(f64::to_bits), expected.mapv(f64::to_bits));
    }

    #[test]
    fn only_2x2_max_pooling_takes_a_relu_in() {
        assert!(!Layer::<f32>::fuse_relu(&mut Pooling::<f32>::max(3, 3, 2)));
        assert!(!Layer::<f32>::fuse_relu(&mut Pooling::<f32>::new(
            PoolKind::Average,
            2,
            2,
            2,
            0
        )));
        assert!(!Layer::<f32>::fuse_relu(&mut Pooling::<f32>::new(
            PoolKind::Max,
            2,
            2,
            2,
            1
        )));
    }

    #[test]
    fn overlapping_windows_add_their_gradients() {
        // 3x3 windows, stride 1, on a 3x4 image whose maximum 9 is in both windows.
        let x = image(&[&[0., 1., 2., 0.], &[3., 9., 4., 0.], &[0., 5., 6., 7.]]);
        let mut max = Pooling::max(3, 3, 1);
        assert_eq!(Layer::<f64>::forward(&mut max, x), image(&[&[9., 9.]]));
        let dx = Layer::<f64>::backward(&mut max, image(&[&[1., 10.]]));
        assert_eq!(dx[[0, 0, 1, 1]], 11.0);
        assert_eq!(dx.sum(), 11.0);
    }

    #[test]
    fn gradient_checks_overlapping_non_dividing_padded() {
        let mut rng = Rng::new(40);
        // (kind, PH, PW, stride, pad, H, W)
        for (kind, ph, pw, s, p, h, w) in [
            (PoolKind::Max, 2, 2, 2, 0, 6, 6),
            (PoolKind::Max, 3, 3, 2, 0, 7, 6),
            (PoolKind::Max, 2, 3, 1, 0, 5, 5),
            (PoolKind::Max, 3, 3, 3, 0, 8, 7),
            (PoolKind::Max, 3, 3, 2, 1, 5, 6),
            (PoolKind::Average, 2, 2, 2, 0, 5, 5),
            (PoolKind::Average, 3, 2, 1, 0, 4, 5),
            (PoolKind::Average, 3, 3, 2, 1, 6, 5),
        ] {
            let mut pool = Pooling::new(kind, ph, pw, s, p);
            let x = Array::from_shape_fn((2, 3, h, w), |_| rng.normal()).into_dyn();
            for row in check_layer(&mut pool, x, &mut rng) {
                assert!(
                    row.max_rel_err < 1e-7,
                    "{kind:?} {ph}x{pw} s{s} p{p} on {h}x{w}: {row}"
                );
            }
        }
    }

    #[test]
    fn gradient_check_with_a_fused_relu() {
        // about half the windows' maxima below zero: the fused ReLU zeroes them
        let mut rng = Rng::new(44);
        for (h, w) in [(6, 6), (7, 5)] {
            let mut pool = Pooling::max(2, 2, 2);
            assert!(Layer::<f64>::fuse_relu(&mut pool));
            let x = Array::from_shape_fn((2, 3, h, w), |_| rng.normal() - 1.0).into_dyn();
            for row in check_layer(&mut pool, x, &mut rng) {
                assert!(row.max_rel_err < 1e-7, "2x2 with ReLU on {h}x{w}: {row}");
            }
        }
    }
}
