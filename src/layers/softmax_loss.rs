//! Softmax and cross-entropy, fused: the last layer of a classifier.

use ndarray::{Array2, ArrayD, ArrayView1, ArrayView2, Ix2};

use crate::Float;
use crate::kernels::exp_in_place;

/// What the network should have predicted.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a, T> {
    /// One class index per sample, each below the number of classes.
    Labels(&'a [usize]),
    /// One row of class weights per sample: (N, C), one-hot or any distribution.
    OneHot(ArrayView2<'a, T>),
}

impl<T> Targets<'_, T> {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Targets::Labels(t) => t.len(),
            Targets::OneHot(t) => t.nrows(),
        }
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Softmax followed by cross-entropy, averaged over the batch.
///
/// # Shapes
/// `x: (N, C) scores, t: N labels or (N, C) targets -> scalar loss`.
///
/// # Loss and gradient
/// ```text
/// lse(x)  = log Σⱼ exp(xⱼ)                    (computed as m + log Σⱼ exp(xⱼ - m), m = maxⱼ xⱼ)
/// L       = 1/N Σₙ (lse(xₙ) - xₙ[tₙ])          labels
/// L       = 1/N Σₙ Σⱼ tₙⱼ (lse(xₙ) - xₙⱼ)      targets
/// dx      = (softmax(x) · Σⱼ tⱼ - t) / N        = (y - onehot(t)) / N for labels and one-hot
/// ```
/// NOTE: no `+1e-7` inside a log (the book's cross_entropy_error adds it): the loss is then
/// exactly the function whose gradient backward returns, and a numerical gradient agrees.
///
/// # Memory
/// [`SoftmaxWithLoss::forward_owned`] writes ∂L/∂x over the scores it is given and keeps it
/// for backward, which hands it on; softmax(x) is written into the memory of the last batch's.
#[derive(Clone, Debug, Default)]
pub struct SoftmaxWithLoss<T: Float = f32> {
    y: Option<Array2<T>>,  // (N, C) softmax of the scores
    dx: Option<Array2<T>>, // (N, C) ∂L/∂x, computed in the same pass as the loss
    losses: Vec<T>,        // (N) each sample's loss, the buffer kept from batch to batch
}

impl<T: Float> SoftmaxWithLoss<T> {
    pub fn new() -> Self {
        SoftmaxWithLoss {
            y: None,
            dx: None,
            losses: Vec::new(),
        }
    }

    /// The loss; keeps softmax(x) and ∂L/∂x for `backward`.
    #[track_caller]
    pub fn forward(&mut self, x: &ArrayD<T>, t: Targets<'_, T>) -> T {
        self.forward_owned(x.to_owned(), t)
    }

    /// [`SoftmaxWithLoss::forward`] that takes the scores' memory for ∂L/∂x.
    #[track_caller]
    pub fn forward_owned(&mut self, x: ArrayD<T>, t: Targets<'_, T>) -> T {
        let mut x = x
            .into_dimensionality::<Ix2>()
            .expect("SoftmaxWithLoss: scores must be (N, C)");
        let (n, c) = x.dim();
        assert_eq!(
            t.len(),
            n,
            "SoftmaxWithLoss: {} targets for {n} samples",
            t.len()
        );
        if let Targets::OneHot(t) = &t {
            assert_eq!(t.dim(), (n, c), "SoftmaxWithLoss: targets shape");
        }
        let inv_n = T::one() / T::of(n as f64);
        let mut y = match self.y.take() {
            Some(y) if y.dim() == (n, c) => y,
            _ => Array2::zeros((n, c)),
        };
        // each sample's loss, summed pairwise at the end (kernels::sum): the mean of a large
        // batch keeps its digits
        let mut losses = std::mem::take(&mut self.losses);
        losses.clear();
        if !x.is_standard_layout() {
            x = x.as_standard_layout().into_owned();
        }
        // NOTE: row by row as slices: through ndarray's row views, its iterators' set-up for
        // ten scores cost as much as the arithmetic (W1's 100x10: 5.5 µs in criterion)
        let (xs, ys) = (
            x.as_slice_mut().expect("owned scores are standard layout"),
            y.as_slice_mut().expect("created standard layout"),
        );
        shifted_exponentials(xs, ys, c);
        for i in 0..n {
            let rows = i * c..(i + 1) * c;
            let (xr, yr) = (&mut xs[rows.clone()], &mut ys[rows]);
            let lse = normalize_row(xr, yr);
            // the loss from the scores, then ∂L/∂x over them
            match &t {
                Targets::Labels(labels) => {
                    let k = labels[i];
                    assert!(
                        k < c,
                        "SoftmaxWithLoss: label {k} at {i} is not below {c} classes"
                    );
                    losses.push(lse - xr[k]);
                    xr.copy_from_slice(yr);
                    xr[k] = xr[k] - T::one();
                }
                Targets::OneHot(t) => {
                    let tr = t.row(i);
                    let mass: T = tr.sum();
                    let mut loss = T::zero();
                    for j in 0..c {
                        loss = loss + tr[j] * (lse - xr[j]);
                    }
                    losses.push(loss);
                    for j in 0..c {
                        xr[j] = yr[j] * mass - tr[j];
                    }
                }
            }
            for v in xr.iter_mut() {
                *v = *v * inv_n;
            }
        }
        self.y = Some(y);
        self.dx = Some(x);
        let mut total = [T::zero()];
        if n > 0 {
            crate::kernels::sum::column_sums(&losses, 1, &mut total);
        }
        self.losses = losses;
        total[0] * inv_n
    }

    /// ∂(dout · L)/∂x, shape (N, C). One backward per forward: the gradient's memory is
    /// handed on.
    pub fn backward(&mut self, dout: T) -> ArrayD<T> {
        let mut dx = self
            .dx
            .take()
            .expect("SoftmaxWithLoss::backward called without a forward before it");
        if dout != T::one() {
            dx.mapv_inplace(|v| v * dout);
        }
        dx.into_dyn()
    }

    /// softmax(x) from the last forward.
    pub fn output(&self) -> Option<&Array2<T>> {
        self.y.as_ref()
    }
}

/// The first half of a row-wise softmax, rows of `c`: y = exp(x - the row's maximum), NaN for
/// a row whose maximum is not finite (+inf, or all -inf: no softmax). The exponentials of all
/// rows in one call: four at a time for f32 ([`exp_in_place`], the bits of `f32::exp`; one
/// by one, glibc's expf was 3 of the 5.3 µs of W1's 100x10 softmax and loss).
fn shifted_exponentials<T: Float>(x: &[T], y: &mut [T], c: usize) {
    if c == 0 {
        return;
    }
    for (xr, yr) in x.chunks_exact(c).zip(y.chunks_exact_mut(c)) {
        let m = row_max(xr);
        if m.is_finite() {
            yr.iter_mut().zip(xr).for_each(|(y, &x)| *y = x - m);
        } else {
            yr.fill(T::nan());
        }
    }
    exp_in_place(y);
}

/// The second half, one row: y ← y / Σy, given y from [`shifted_exponentials`]; returns
/// log Σⱼ exp(xⱼ) = max + ln Σy, from the same exponentials. (The sum is ndarray's, in its
/// order of additions.)
fn normalize_row<T: Float>(x: &[T], y: &mut [T]) -> T {
    let m = row_max(x);
    if !m.is_finite() {
        return m; // y is NaN
    }
    let s: T = ArrayView1::from(&*y).sum();
    for y in y.iter_mut() {
        *y = *y / s;
    }
    m + s.ln()
}

/// The largest entry (NaNs skipped; -inf for none).
fn row_max<T: Float>(x: &[T]) -> T {
    x.iter().copied().fold(T::neg_infinity(), T::max)
}

/// Row-wise softmax of (N, C) scores, each row shifted by its maximum.
pub fn softmax<T: Float>(x: &ArrayView2<'_, T>) -> Array2<T> {
    let mut y = Array2::zeros(x.raw_dim());
    let (x, c) = (x.as_standard_layout(), x.ncols());
    let (xs, ys) = (x.as_slice().unwrap(), y.as_slice_mut().unwrap());
    shifted_exponentials(xs, ys, c);
    for (xr, yr) in xs.chunks_exact(c.max(1)).zip(ys.chunks_exact_mut(c.max(1))) {
        normalize_row(xr, yr);
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use crate::gradcheck::numerical_gradient;
    use ndarray::{Array, arr2};

    /// The mean loss of 32768 samples in f32 against the same scores in f64: the pairwise
    /// sum keeps it within 1e-6 (in order, the f32 sum drifts by about N·ε).
    #[test]
    fn the_mean_of_a_large_batch_keeps_its_digits_in_f32() {
        let (n, c) = (32768, 3);
        let mut rng = Rng::new(9);
        let x32 = Array::from_shape_fn((n, c), |_| rng.normal() as f32).into_dyn();
        let labels: Vec<usize> = (0..n).map(|i| i % c).collect();
        let loss32 = SoftmaxWithLoss::<f32>::new().forward(&x32, Targets::Labels(&labels));
        let x64 = x32.mapv(|v| v as f64);
        let loss64 = SoftmaxWithLoss::<f64>::new().forward(&x64, Targets::Labels(&labels));
        let error = (loss32 as f64 - loss64).abs() / loss64;
        assert!(error < 1e-6, "relative error {error:e}");
    }

    #[test]
    fn loss_by_hand() {
        // Scores [0, 0, ln 2]: softmax = [1/4, 1/4, 1/2].
        // Label 2: L = -ln(1/2) = ln 2. Label 0: L = ln 4. Mean of the two: 1.5 ln 2.
        let x = arr2(&[[0.0, 0.0, 2f64.ln()], [0.0, 0.0, 2f64.ln()]]).into_dyn();
        let mut l = SoftmaxWithLoss::new();
        let loss = l.forward(&x, Targets::Labels(&[2, 0]));
        assert!((loss - 1.5 * 2f64.ln()).abs() < 1e-15);
        let y = l.output().unwrap();
        assert!((y[[0, 2]] - 0.5).abs() < 1e-15 && (y[[0, 0]] - 0.25).abs() < 1e-15);
        // dx = (y - onehot) / N
        let dx = l.backward(1.0);
        let expected = arr2(&[[0.125, 0.125, -0.25], [-0.375, 0.125, 0.25]]).into_dyn();
        assert!((&dx - &expected).iter().all(|d| d.abs() < 1e-15));
    }

    #[test]
    fn scores_in_any_layout_give_the_same_bits() {
        // rows read as slices: a transposed (column-major) array is laid out again first
        let mut rng = Rng::new(24);
        let x = Array::from_shape_fn((6, 4), |_| 3.0 * rng.normal() as f32);
        let xt = x.t().as_standard_layout().into_owned().reversed_axes(); // column-major
        assert!(!xt.is_standard_layout());
        let labels = [0, 3, 1, 1, 2, 0];
        let (mut a, mut b) = (SoftmaxWithLoss::new(), SoftmaxWithLoss::new());
        let la = a.forward(&x.clone().into_dyn(), Targets::Labels(&labels));
        let lb = b.forward_owned(xt.clone().into_dyn(), Targets::Labels(&labels));
        assert_eq!(la.to_bits(), lb.to_bits());
        let same = |p: &Array2<f32>, q: &Array2<f32>| {
            p.iter().zip(q).all(|(u, v)| u.to_bits() == v.to_bits())
        };
        assert!(same(a.output().unwrap(), b.output().unwrap()));
        assert!(same(&softmax(&x.view()), &softmax(&xt.view())));
        assert!(same(&softmax(&x.view()), a.output().unwrap()));
        let (da, db) = (a.backward(1.0), b.backward(1.0));
        assert!(da.iter().zip(&db).all(|(u, v)| u.to_bits() == v.to_bits()));
    }

    #[test]
    #[should_panic(expected = "label 0 at 0 is not below 0 classes")]
    fn no_classes_take_no_label() {
        let x = Array2::<f32>::zeros((2, 0)).into_dyn();
        SoftmaxWithLoss::new().forward(&x, Targets::Labels(&[0, 0]));
    }

    #[test]
    fn huge_scores_do_not_overflow() {
        let x = arr2(&[[1000.0f32, 0.0]]).into_dyn();
        let loss = SoftmaxWithLoss::new().forward(&x, Targets::Labels(&[1]));
        assert_eq!(loss, 1000.0);
    }

    #[test]
    fn one_hot_targets_give_the_same_loss_and_gradient_as_labels() {
        let mut rng = Rng::new(21);
        let x = Array::from_shape_fn((4, 5), |_| rng.normal()).into_dyn();
        let labels = [3, 0, 4, 4];
        let one_hot = Array::from_shape_fn((4, 5), |(i, j)| if labels[i] == j { 1.0 } else { 0.0 });
        let mut a = SoftmaxWithLoss::new();
        let mut b = SoftmaxWithLoss::new();
        let la = a.forward(&x, Targets::Labels(&labels));
        let lb = b.forward(&x, Targets::OneHot(one_hot.view()));
        assert!((la - lb).abs() < 1e-15);
        assert!(
            (&a.backward(1.0) - &b.backward(1.0))
                .iter()
                .all(|d| d.abs() < 1e-15)
        );
    }

    fn check(t: Targets<'_, f64>, x: ArrayD<f64>) {
        let mut layer = SoftmaxWithLoss::new();
        layer.forward(&x, t);
        let analytic = layer.backward(1.0);
        let mut x = x;
        let numeric = numerical_gradient(|x| SoftmaxWithLoss::new().forward(x, t), &mut x, 1e-5);
        let report = crate::gradcheck::compare("x", &analytic, &numeric);
        assert!(report.max_rel_err < 1e-8, "{report}");
    }

    #[test]
    fn gradient_check_with_labels() {
        let mut rng = Rng::new(22);
        let x = Array::from_shape_fn((5, 4), |_| 2.0 * rng.normal()).into_dyn();
        check(Targets::Labels(&[0, 3, 3, 1, 2]), x);
    }

    #[test]
    fn gradient_check_with_one_hot_and_soft_targets() {
        let mut rng = Rng::new(23);
        let x = Array::from_shape_fn((3, 4), |_| 2.0 * rng.normal()).into_dyn();
        let one_hot = arr2(&[[0., 1., 0., 0.], [1., 0., 0., 0.], [0., 0., 0., 1.]]);
        check(Targets::OneHot(one_hot.view()), x.clone());
        // Soft targets (label smoothing) and a row that does not sum to 1.
        let soft = arr2(&[
            [0.1, 0.7, 0.1, 0.1],
            [0.25, 0.25, 0.25, 0.25],
            [0.0, 0.5, 0.0, 1.0],
        ]);
        check(Targets::OneHot(soft.view()), x);
    }
}
