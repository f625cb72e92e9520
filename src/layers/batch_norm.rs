//! Batch normalization: normalize each feature (or channel) over the mini-batch.

use ndarray::{Array1, ArrayD, ArrayViewD, ArrayViewMutD, Axis, IxDyn};

use super::{Layer, Param};
use crate::Float;

/// Batch normalization (Ioffe and Szegedy, 2015; the book's `BatchNormalization`, ch. 6.3).
///
/// # Shapes
/// `x: (N, D) -> (N, D)`, statistics per feature; `x: (N, C, H, W) -> same`, statistics per
/// channel over N, H and W, as PyTorch's BatchNorm2d. (The book flattens a 4-D input to
/// (N, C·H·W) and keeps one statistic per pixel; per channel is what convolutions want.)
/// Below, x is seen as (N, C, S) with S = H·W (S = 1 for 2-D input) and M = N·S.
///
/// # Forward and gradient
/// ```text
/// training:  μ = mean(x),  xc = x - μ,  σ = √(mean(xc²) + eps),  xn = xc / σ
///            y = γ·xn + β
///            running_mean ← m·running_mean + (1 - m)·μ      (m = momentum, book: 0.9)
///            running_var  ← m·running_var  + (1 - m)·mean(xc²)
/// inference: y = γ·(x - running_mean) / √(running_var + eps) + β
///
/// dβ = Σ dy,  dγ = Σ xn·dy,  dxn = γ·dy
/// dxc = dxn/σ - xc · (2/M) · ½ Σ(dxn·xc)/σ³
/// dx  = dxc - Σ dxc / M
/// ```
/// (sums and means over N and S, per channel).
///
/// Out of training ([`Layer::set_training`]), forward normalizes as inference does and
/// backward differentiates that: μ and σ are constants then, so `dx = γ·dy / σ`.
#[derive(Clone, Debug)]
pub struct BatchNormalization<T: Float = f32> {
    pub gamma: Array1<T>,        // (C)
    pub beta: Array1<T>,         // (C)
    pub dgamma: Array1<T>,       // (C)
    pub dbeta: Array1<T>,        // (C)
    pub running_mean: Array1<T>, // (C)
    pub running_var: Array1<T>,  // (C)
    pub momentum: f64,
    pub eps: f64,
    /// Batch statistics in forward (true, the default) or the running ones.
    training: bool,
    cache: Option<Cache<T>>,
}

/// What training forward keeps for backward.
#[derive(Clone, Debug)]
struct Cache<T> {
    shape: IxDyn,   // the input's shape
    xc: ArrayD<T>,  // (N, C, S) or (N, C): x - μ
    xn: ArrayD<T>,  // (N, C, S) or (N, C): normalized
    std: Array1<T>, // (C) σ
    /// σ came from the batch (training) or from the running variance (a constant).
    batch_stats: bool,
}

impl<T: Float> BatchNormalization<T> {
    /// The eps a batch normalization has unless its description says `eps=`, and so what
    /// model files saved without one assume. NOTE: the book's code writes
    /// `np.sqrt(self.running_var + 10e-7)`, which is 1e-6; this is 1e-7 because every model
    /// file saved before `eps=` existed was trained with it (`batchnorm eps=1e-6` gives the
    /// book's; PyTorch's default is 1e-5).
    pub const EPS: f64 = 1e-7;
    /// The running statistics' momentum: the book's 0.9 (PyTorch's `momentum` is 1 - this).
    pub const MOMENTUM: f64 = 0.9;

    /// γ = 1, β = 0, running mean 0 and variance 1, for `channels` features or channels; the
    /// book's momentum 0.9 and eps 1e-7.
    pub fn new(channels: usize) -> Self {
        BatchNormalization {
            gamma: Array1::ones(channels),
            beta: Array1::zeros(channels),
            dgamma: Array1::zeros(channels),
            dbeta: Array1::zeros(channels),
            running_mean: Array1::zeros(channels),
            running_var: Array1::ones(channels),
            momentum: Self::MOMENTUM,
            eps: Self::EPS,
            training: true,
            cache: None,
        }
    }

    /// x (N, C, ...) as (N, C, S), or as (N, C) when S = 1.
    /// NOTE: (N, C, 1) would make ndarray walk an innermost axis of length 1, element by
    /// element: three times slower for the MLP's batch norm.
    #[track_caller]
    fn as_ncs(&self, x: ArrayD<T>) -> ArrayD<T> {
        let c = self.gamma.len();
        assert!(
            x.ndim() >= 2 && x.shape()[1] == c,
            "BatchNormalization: input {:?} has no {c} channels in axis 1",
            x.shape()
        );
        let (n, s): (usize, usize) = (x.shape()[0], x.shape()[2..].iter().product());
        let x = if x.is_standard_layout() {
            x
        } else {
            x.as_standard_layout().into_owned()
        };
        let shape = if s == 1 { vec![n, c] } else { vec![n, c, s] };
        x.into_shape_with_order(shape)
            .expect("standard layout reshapes")
    }

    /// (C) as (1, C) or (1, C, 1), to broadcast against x as [`Self::as_ncs`] shapes it.
    fn per_channel(v: &Array1<T>, ndim: usize) -> ArrayViewD<'_, T> {
        let v = v.view().insert_axis(Axis(0));
        if ndim == 2 {
            v.into_dyn()
        } else {
            v.insert_axis(Axis(2)).into_dyn()
        }
    }
}

impl<T: Float> BatchNormalization<T> {
    /// Forward on the running statistics, as [`Layer::predict`], keeping xn and σ for
    /// backward; the running statistics stay as they are.
    fn forward_running(&mut self, x: ArrayD<T>) -> ArrayD<T> {
        let shape = x.raw_dim();
        let x = self.as_ncs(x);
        let d = x.ndim();
        let std = self.running_var.mapv(|v| (v + T::of(self.eps)).sqrt());
        let xc = x - Self::per_channel(&self.running_mean, d);
        let xn = &xc / &Self::per_channel(&std, d);
        let y = &xn * &Self::per_channel(&self.gamma, d) + Self::per_channel(&self.beta, d);
        self.cache = Some(Cache {
            shape: shape.clone(),
            xc,
            xn,
            std,
            batch_stats: false,
        });
        y.into_shape_with_order(shape).expect("same element count")
    }
}

/// Sum over N (and S): (N, C) or (N, C, S) -> (C); over N pairwise
/// ([`crate::kernels::sum::column_sums`]), so that the statistics of a large batch keep their
/// digits (a batch of up to 128 sums in order).
fn sum_ns<T: Float>(a: &ArrayD<T>) -> Array1<T> {
    let summed; // over S first, for (N, C, S)
    let by_sample = match a.ndim() {
        3 => {
            summed = a.sum_axis(Axis(2));
            summed.view()
        }
        _ => a.view(),
    };
    let c = by_sample.shape()[1];
    let rows = by_sample.as_standard_layout(); // no copy when it is already
    let mut sums = Array1::zeros(c);
    let (rows, out) = (
        rows.as_slice().expect("standard layout"),
        sums.as_slice_mut(),
    );
    if c > 0 {
        crate::kernels::sum::column_sums(rows, c, out.expect("a new array"));
    }
    sums
}

/// Entries per channel: N·S.
fn count<T>(a: &ArrayD<T>) -> usize {
    a.len() / a.shape()[1]
}

impl<T: Float> Layer<T> for BatchNormalization<T> {
    fn kind(&self) -> &'static str {
        "BatchNorm"
    }

    fn describe(&self) -> String {
        let mut line = String::from("batchnorm");
        if self.eps != Self::EPS {
            line += &format!(" eps={:e}", self.eps);
        }
        if self.momentum != Self::MOMENTUM {
            line += &format!(" momentum={}", self.momentum);
        }
        line
    }

    fn forward(&mut self, x: ArrayD<T>) -> ArrayD<T> {
        if !self.training {
            return self.forward_running(x);
        }
        let shape = x.raw_dim();
        let x = self.as_ncs(x);
        let (m, d) = (T::of(count(&x) as f64), x.ndim());
        let mu = sum_ns(&x) / m;
        let xc = x - Self::per_channel(&mu, d);
        let var = sum_ns(&xc.mapv(|v| v * v)) / m;
        let std = var.mapv(|v| (v + T::of(self.eps)).sqrt());
        let xn = &xc / &Self::per_channel(&std, d);
        let y = &xn * &Self::per_channel(&self.gamma, d) + Self::per_channel(&self.beta, d);
        // running statistics for inference
        let mom = T::of(self.momentum);
        self.running_mean = &self.running_mean * mom + &(mu * (T::one() - mom));
        self.running_var = &self.running_var * mom + &(var * (T::one() - mom));
        self.cache = Some(Cache {
            shape: shape.clone(),
            xc,
            xn,
            std,
            batch_stats: true,
        });
        y.into_shape_with_order(shape).expect("same element count")
    }

    fn predict(&self, x: ArrayD<T>) -> ArrayD<T> {
        let shape = x.raw_dim();
        let x = self.as_ncs(x);
        let d = x.ndim();
        let std = self.running_var.mapv(|v| (v + T::of(self.eps)).sqrt());
        let xn = (x - Self::per_channel(&self.running_mean, d)) / Self::per_channel(&std, d);
        let y = &xn * &Self::per_channel(&self.gamma, d) + Self::per_channel(&self.beta, d);
        y.into_shape_with_order(shape).expect("same element count")
    }

    fn backward(&mut self, dout: ArrayD<T>) -> ArrayD<T> {
        let cache = self
            .cache
            .as_ref()
            .expect("BatchNormalization::backward called without a forward before it");
        assert_eq!(
            dout.raw_dim(),
            cache.shape,
            "BatchNormalization::backward: dout shape"
        );
        let dy = self.as_ncs(dout);
        let (m, d) = (T::of(count(&dy) as f64), dy.ndim());
        let std = Self::per_channel(&cache.std, d);
        self.dbeta = sum_ns(&dy);
        self.dgamma = sum_ns(&(&cache.xn * &dy));
        let dxn = &dy * &Self::per_channel(&self.gamma, d);
        if !cache.batch_stats {
            // σ and μ are constants: dx = γ·dy / σ
            return (dxn / &std)
                .into_shape_with_order(cache.shape.clone())
                .expect("same element count");
        }
        // through xn = xc / σ, then σ = √(var + eps), var = mean(xc²)
        let mut dxc = &dxn / &std;
        let dstd = -sum_ns(&(&dxn * &cache.xc)) / cache.std.mapv(|s| s * s);
        let dvar = dstd.mapv(|v| v * T::of(0.5)) / &cache.std;
        dxc = dxc + &(&cache.xc * &Self::per_channel(&(dvar * (T::of(2.0) / m)), d));
        // through xc = x - μ
        let dmu = sum_ns(&dxc);
        let dx = dxc - Self::per_channel(&(dmu / m), d);
        dx.into_shape_with_order(cache.shape.clone())
            .expect("same element count")
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn buffers(&mut self) -> Vec<(&'static str, ArrayViewMutD<'_, T>)> {
        vec![
            ("running_mean", self.running_mean.view_mut().into_dyn()),
            ("running_var", self.running_var.view_mut().into_dyn()),
        ]
    }

    fn visit_params<'a>(&'a mut self, f: &mut dyn FnMut(Param<'a, T>)) {
        f(Param {
            name: "gamma",
            value: self.gamma.view_mut().into_dyn(),
            grad: self.dgamma.view_mut().into_dyn(),
        });
        f(Param {
            name: "beta",
            value: self.beta.view_mut().into_dyn(),
            grad: self.dbeta.view_mut().into_dyn(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use crate::gradcheck::check_layer;
    use ndarray::{Array, arr2};

    /// The batch mean of 32768 samples in f32 (read back from the running mean after one
    /// step) against f64: the pairwise sum keeps it within 1e-6 of the spread.
    #[test]
    fn statistics_of_a_large_batch_keep_their_digits_in_f32() {
        let n = 32768;
        let mut rng = Rng::new(4);
        let x32 = Array::from_shape_fn((n, 2), |_| 3.0 + rng.normal() as f32).into_dyn();
        let mut bn32 = BatchNormalization::<f32>::new(2);
        Layer::forward(&mut bn32, x32.clone());
        let mut bn64 = BatchNormalization::<f64>::new(2);
        Layer::forward(&mut bn64, x32.mapv(|v| v as f64));
        for k in 0..2 {
            let (m32, m64) = (bn32.running_mean[k] as f64, bn64.running_mean[k]);
            assert!(
                (m32 - m64).abs() < 1e-6 * 0.1,
                "mean {k}: {m32} against {m64}"
            );
        }
    }

    #[test]
    fn forward_by_hand() {
        // One feature with values 1, 3: μ = 2, var = 1, xn = -1, 1 (eps aside).
        let mut bn = BatchNormalization::<f64>::new(1);
        bn.eps = 0.0;
        bn.gamma[0] = 2.0;
        bn.beta[0] = 0.5;
        let y = bn.forward(arr2(&[[1.0], [3.0]]).into_dyn());
        assert_eq!(y, arr2(&[[-1.5], [2.5]]).into_dyn());
        // running stats moved a tenth of the way: mean 0 -> 0.2, var 1 -> 1.
        assert!(
            (bn.running_mean[0] - 0.2).abs() < 1e-15 && (bn.running_var[0] - 1.0).abs() < 1e-15
        );
        // inference uses the running statistics: (3 - 0.2)/1 · 2 + 0.5
        assert!((bn.predict(arr2(&[[3.0]]).into_dyn())[[0, 0]] - 6.1).abs() < 1e-12);
    }

    #[test]
    fn normalizes_each_channel_of_a_4d_input() {
        let mut rng = Rng::new(15);
        let mut bn = BatchNormalization::<f64>::new(3);
        let x = Array::from_shape_fn((4, 3, 2, 5), |(_, c, _, _)| 10.0 * c as f64 + rng.normal())
            .into_dyn();
        let y = bn.forward(x);
        for c in 0..3 {
            let v = y.index_axis(Axis(1), c);
            let mean = v.mean().unwrap();
            let var = v.mapv(|a| (a - mean) * (a - mean)).mean().unwrap();
            assert!(
                mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-5,
                "channel {c}: {mean} {var}"
            );
        }
    }

    #[test]
    fn gradient_check_2d() {
        let mut rng = Rng::new(16);
        let mut bn = BatchNormalization::<f64>::new(4);
        bn.gamma = Array::from_shape_fn(4, |_| 1.0 + rng.normal() * 0.3);
        bn.beta = Array::from_shape_fn(4, |_| rng.normal());
        let x = Array::from_shape_fn((6, 4), |_| 2.0 * rng.normal()).into_dyn();
        for row in check_layer(&mut bn, x, &mut rng) {
            assert!(row.max_rel_err < 1e-7, "{row}");
        }
    }

    /// Out of training: forward gives predict's bits and leaves the running statistics;
    /// backward is the numerical gradient of that function, 2-D and 4-D.
    #[test]
    fn gradient_check_on_the_running_statistics() {
        let mut rng = Rng::new(18);
        for shape in [vec![5, 3], vec![2, 3, 2, 3]] {
            let mut bn = BatchNormalization::<f64>::new(3);
            bn.gamma = Array::from_shape_fn(3, |_| 1.0 + rng.normal() * 0.3);
            bn.running_mean = Array::from_shape_fn(3, |_| rng.normal());
            bn.running_var = Array::from_shape_fn(3, |_| 0.5 + rng.uniform());
            Layer::<f64>::set_training(&mut bn, false);
            let x = Array::from_shape_fn(shape, |_| rng.normal()).into_dyn();
            let (mean, var) = (bn.running_mean.clone(), bn.running_var.clone());
            assert_eq!(bn.forward(x.clone()), bn.predict(x.clone()));
            assert_eq!((&bn.running_mean, &bn.running_var), (&mean, &var));
            for row in check_layer(&mut bn, x, &mut rng) {
                assert!(row.max_rel_err < 1e-7, "{row}");
            }
        }
    }

    #[test]
    fn gradient_check_4d() {
        let mut rng = Rng::new(17);
        let mut bn = BatchNormalization::<f64>::new(2);
        bn.gamma = Array::from_shape_fn(2, |_| 1.0 + rng.normal() * 0.3);
        let x = Array::from_shape_fn((3, 2, 3, 2), |_| rng.normal()).into_dyn();
        for row in check_layer(&mut bn, x, &mut rng) {
            assert!(row.max_rel_err < 1e-7, "{row}");
        }
    }
}
