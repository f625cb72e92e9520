//! Max and average pooling over windows of any size and stride (the book's ch. 7.4.4).

use ndarray::{Array4, ArrayD, Ix4};

use super::{Layer, Window};
use crate::Float;
use crate::kernels::pool::{MaxPool2x2, Unpooled};
use crate::plan::{Accelerated, Role};

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
/// max:     y = max over the window,   dx[argmax] += dy   (the first maximum on ties;
///                                                      a NaN wins, as in PyTorch)
/// average: y = Σ window / (PH·PW),    dx[each]   += dy / (PH·PW)
/// ```
///
/// # Fast path
/// Max pooling 2x2 stride 2 (the book's networks) runs [`crate::kernels::pool`] unless the
/// layer is in reference mode: the same windows, split over threads, which the plan may
/// also let apply the ReLU after it and leave dx for the layer below to write out. It must
/// equal `pool_reference` / `backward_reference` below to the bit (`kernels::reference_tests`).
///
/// # Memory
/// The argmax buffer is kept from batch to batch, y is written into the last dout's memory
/// and dx into the last input's: no allocation in a steady-state training step.
#[derive(Clone, Debug)]
pub struct Pooling<T: Float = f32> {
    pub kind: PoolKind,
    pub window: Window,
    x_dim: Option<(usize, usize, usize, usize)>, // (N, C, H, W) of the last training input
    argmax: Vec<u32>, // (N·C·OH·OW) flat index into x of each max, the buffer kept
    x_spare: Option<ArrayD<T>>, // the last input's memory: backward writes dx into it
    y_spare: Option<ArrayD<T>>, // the last dout's memory: forward writes y into it
    fast: Option<MaxPool2x2<T>>, // 2x2 max pooling's kernels; None in reference mode
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
        let mut pool = Pooling {
            kind,
            window: Window {
                fh: ph,
                fw: pw,
                stride,
                pad,
            },
            x_dim: None,
            argmax: Vec::new(),
            x_spare: None,
            y_spare: None,
            fast: None,
        };
        Accelerated::<T>::set_reference(&mut pool, false);
        pool
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
        let two = Window {
            fh: 2,
            fw: 2,
            stride: 2,
            pad: 0,
        };
        self.kind == PoolKind::Max && self.window == two
    }

    /// A 2x2 max pooling on `threads` threads, with the ReLU after it taken in or not.
    #[cfg(test)]
    pub(crate) fn max_2x2_for_tests(relu: bool, threads: usize) -> Self {
        let mut pool = Self::max(2, 2, 2);
        if relu {
            assert!(Accelerated::<T>::fuse_relu(&mut pool, true));
        }
        Accelerated::<T>::set_threads(&mut pool, threads);
        pool
    }

    /// The book's pooling into `y`'s memory: each window's maximum (the first on ties) or
    /// mean, and with `argmax` (training) the flat index into x of each maximum.
    #[track_caller]
    fn pool_reference(
        &self,
        x: &ArrayD<T>,
        argmax: Option<&mut Vec<u32>>,
        mut y: Vec<T>,
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
        y.clear();
        y.reserve(n * c * oh * ow);
        let mut scratch = Vec::new();
        let argmax = argmax.unwrap_or(&mut scratch);
        argmax.clear();
        self.pool_windows(src, (h, w), (oh, ow), &mut y, argmax);
        Array4::from_shape_vec((n, c, oh, ow), y).expect("one value per window")
    }

    /// Any window, padding left out of each (its rows and columns clipped to the image).
    fn pool_windows(
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
                            // the window's first pixel, then the first larger one; a
                            // NaN wins (the last NaN), as in PyTorch: it is not hidden
                            let first = rows.start * w + cols.start;
                            let mut best = (first, img[first]);
                            for yy in rows {
                                let line = yy * w + cols.start;
                                for (k, &v) in img[line..line + cols.len()].iter().enumerate() {
                                    if v > best.1 || v.is_nan() {
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

    /// The book's backward: each window's gradient to its maximum, or shared by its pixels.
    #[track_caller]
    pub fn backward_reference(&mut self, dout: ArrayD<T>) -> ArrayD<T> {
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
        if let Some(fast) = &mut self.fast {
            return fast.forward(x); // kernels::pool::MaxPool2x2: pool_reference's bits
        }
        let mut argmax = std::mem::take(&mut self.argmax);
        let y = match self.y_spare.take().map(|y| y.into_raw_vec_and_offset()) {
            Some((y, Some(0))) => y,
            _ => Vec::new(),
        };
        let y = self.pool_reference(&x, Some(&mut argmax), y);
        self.argmax = argmax;
        let s = x.shape();
        self.x_dim = Some((s[0], s[1], s[2], s[3]));
        self.x_spare = Some(x);
        y.into_dyn()
    }

    fn predict(&self, x: ArrayD<T>) -> ArrayD<T> {
        match &self.fast {
            Some(fast) => fast.predict(&x), // kernels::pool::MaxPool2x2: pool_reference's bits
            None => self.pool_reference(&x, None, Vec::new()).into_dyn(),
        }
    }

    fn backward(&mut self, dout: ArrayD<T>) -> ArrayD<T> {
        match &mut self.fast {
            Some(fast) => fast.backward(dout), // kernels::pool: backward_reference's bits
            None => self.backward_reference(dout),
        }
    }

    fn accelerated(&mut self) -> Option<&mut dyn Accelerated<T>> {
        Some(self)
    }

    fn accelerated_ref(&self) -> Option<&dyn Accelerated<T>> {
        Some(self)
    }
}

/// The fast paths the plan may take ([`crate::plan`]).
impl<T: Float> Accelerated<T> for Pooling<T> {
    fn role(&self) -> Role {
        // max over a window of relu(x) = relu(max over the window of x); where that is 0
        // the ReLU's gradient is 0 either way, elsewhere both orders pick the same pixel
        match self.kind {
            PoolKind::Max => Role::MaxPool,
            PoolKind::Average => Role::Other,
        }
    }

    fn fuse_relu(&mut self, on: bool) -> bool {
        match &mut self.fast {
            Some(fast) => {
                fast.fuse_relu(on);
                on
            }
            None => false,
        }
    }

    fn backward_unpooled(&mut self, dout: ArrayD<T>) -> Result<Unpooled<'_, T>, ArrayD<T>> {
        match &mut self.fast {
            Some(fast) => Ok(fast.backward_unpooled(dout)),
            None => Err(dout),
        }
    }

    fn set_threads(&mut self, threads: usize) {
        if let Some(fast) = &mut self.fast {
            fast.set_threads(threads);
        }
    }

    fn set_reference(&mut self, on: bool) {
        if on || !self.is_max_2x2() {
            self.fast = None;
        } else if self.fast.is_none() {
            self.fast = Some(MaxPool2x2::default());
        }
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
    fn fast_paths_pick_the_same_maximum_as_the_books_windows_ties_included() {
        // Small integers: many ties, which must go to the first maximum in every path; the
        // gradient then lands on the same pixel
        let mut rng = Rng::new(40);
        for (h, w, win) in [(6, 8, (2, 2, 2)), (7, 5, (2, 2, 2)), (7, 9, (3, 2, 2))] {
            let x = Array::from_shape_fn((2, 3, h, w), |_| rng.below(3) as f64).into_dyn();
            let mut book = Pooling::max(win.0, win.1, win.2);
            Accelerated::<f64>::set_reference(&mut book, true);
            let y_book = Layer::<f64>::forward(&mut book, x.clone());
            let dy = Array::from_shape_fn(y_book.raw_dim(), |_| 1.0 + rng.below(7) as f64);
            let dx_book = Layer::<f64>::backward(&mut book, dy.clone());
            for threads in [1, 2, 3] {
                let mut fast = Pooling::max(win.0, win.1, win.2);
                Accelerated::<f64>::set_threads(&mut fast, threads);
                assert_eq!(
                    Layer::<f64>::forward(&mut fast, x.clone()),
                    y_book,
                    "{h}x{w}"
                );
                let dx = Layer::<f64>::backward(&mut fast, dy.clone());
                assert_eq!(dx, dx_book, "{h}x{w} window {win:?}, {threads} threads");
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

    /// A NaN in a window is its maximum and takes its gradient (PyTorch: `val > maxval ||
    /// isnan(val)`), wherever it stands in the window, on the book's windows and the kernel;
    /// a window without one is untouched.
    #[test]
    fn max_pooling_propagates_nan_as_pytorch() {
        let nan = f32::NAN;
        for window in [
            [nan, 1.0, 0.0, 3.0],
            [0.0, 1.0, nan, 3.0],
            [0.0, 1.0, 3.0, nan],
        ] {
            let at = window.iter().position(|v| v.is_nan()).unwrap();
            // two windows side by side: the NaN's and a plain one, [5, 6, 7, 4]
            let (a, b) = (
                [window[0], window[1], 5.0, 6.0],
                [window[2], window[3], 7.0, 4.0],
            );
            let x = Array::from_shape_vec((1, 1, 2, 4), [a, b].concat())
                .unwrap()
                .into_dyn();
            let dy = Array::from_shape_vec((1, 1, 1, 2), vec![1.0f32, 2.0])
                .unwrap()
                .into_dyn();
            for reference in [true, false] {
                let mut pool = Pooling::<f32>::max(2, 2, 2);
                Accelerated::<f32>::set_reference(&mut pool, reference);
                let y = Layer::<f32>::forward(&mut pool, x.clone());
                assert!(y[[0, 0, 0, 0]].is_nan(), "{window:?} reference {reference}");
                assert_eq!(y[[0, 0, 0, 1]], 7.0);
                let dx = Layer::<f32>::backward(&mut pool, dy.clone());
                let mut expected = vec![0.0f32; 8];
                expected[(at / 2) * 4 + at % 2] = 1.0;
                expected[4 + 2] = 2.0;
                assert_eq!(
                    dx.iter().copied().collect::<Vec<_>>(),
                    expected,
                    "{window:?}"
                );
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
            // the book's windows: the argmax, scattered into zeros
            let mut book = Pooling::<f32>::max(2, 2, 2);
            Accelerated::<f32>::set_reference(&mut book, true);
            let y_gen = Layer::<f32>::forward(&mut book, x.clone())
                .into_raw_vec_and_offset()
                .0;
            let expected = Layer::<f32>::backward(&mut book, dy.clone())
                .into_raw_vec_and_offset()
                .0;
            let bits = |a: &[f32]| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for threads in [1, 2, 3] {
                let mut pool = Pooling::<f32>::max(2, 2, 2);
                Accelerated::<f32>::set_threads(&mut pool, threads);
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
                assert!(Accelerated::<f32>::fuse_relu(&mut fused, true));
                for p in [&mut pool, &mut fused] {
                    Accelerated::<f32>::set_threads(p, threads);
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
        assert!(Accelerated::<f64>::fuse_relu(&mut fused, true));
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
        assert!(!Accelerated::<f32>::fuse_relu(
            &mut Pooling::<f32>::max(3, 3, 2),
            true
        ));
        assert!(!Accelerated::<f32>::fuse_relu(
            &mut Pooling::<f32>::new(PoolKind::Average, 2, 2, 2, 0),
            true
        ));
        assert!(!Accelerated::<f32>::fuse_relu(
            &mut Pooling::<f32>::new(PoolKind::Max, 2, 2, 2, 1),
            true
        ));
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
            assert!(Accelerated::<f64>::fuse_relu(&mut pool, true));
            let x = Array::from_shape_fn((2, 3, h, w), |_| rng.normal() - 1.0).into_dyn();
            for row in check_layer(&mut pool, x, &mut rng) {
                assert!(row.max_rel_err < 1e-7, "2x2 with ReLU on {h}x{w}: {row}");
            }
        }
    }
}
