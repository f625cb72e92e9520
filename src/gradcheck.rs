//! The numerical gradient by central differences, and the comparison with backprop.
//!
//! ```text
//! ∂f/∂xᵢ ≈ (f(x + h·eᵢ) - f(x - h·eᵢ)) / 2h          error O(h²) + O(ε·|f|/h)
//! ```
//! In f64 with h = 1e-5 both error terms are about 1e-11 on a loss near 2.3.
//!
//! # Relative error
//! For each parameter the report gives `max_abs_diff = maxᵢ |aᵢ - nᵢ|` and
//! ```text
//! max_rel_err = maxᵢ |aᵢ - nᵢ| / max(maxᵢ |aᵢ|, maxᵢ |nᵢ|, 1e-4)
//! ```
//! the worst difference relative to the parameter's largest gradient entry. The floor 1e-4
//! ([`ZERO_GRADIENT`]) is for gradients at the numerical gradient's own noise level, such as
//! a bias just before batch normalization, whose gradient is zero by construction: backprop
//! then gives round-off (1e-17) and central differences their noise (1e-11), and the ratio of
//! two noises means nothing. Against 1e-4, a difference still fails a 1e-6 tolerance from
//! 1e-10 on: ten times the noise, and far below what any wrong backward produces.
//! NOTE: an entry-by-entry ratio |aᵢ - nᵢ| / max(|aᵢ|, |nᵢ|) would be ruled by entries whose
//! gradient is itself round-off sized (a weight that sees one faint pixel): there the central
//! difference's O(ε·|f|/h) floor, about 1e-11, is the whole value. Scaling by the parameter's
//! largest entry keeps the measure meaningful and still catches any wrong entry.

use std::fmt;

use ndarray::{ArrayD, Zip};

use crate::layers::Layer;
use crate::{Float, Rng};

/// The smallest gradient scale differences are measured against (see the module docs).
pub const ZERO_GRADIENT: f64 = 1e-4;

/// Default step of the central difference in f64.
pub const DEFAULT_H: f64 = 1e-5;

/// The numerical gradient of `f` at `x` by central differences (the book's
/// `numerical_gradient`). `x` is perturbed one entry at a time and restored exactly.
pub fn numerical_gradient<T: Float, F>(mut f: F, x: &mut ArrayD<T>, h: T) -> ArrayD<T>
where
    F: FnMut(&ArrayD<T>) -> T,
{
    let mut grad = ArrayD::zeros(x.raw_dim());
    let two_h = h + h;
    for i in 0..x.len() {
        let original = x.as_slice_memory_order().expect("contiguous")[i];
        x.as_slice_memory_order_mut().expect("contiguous")[i] = original + h;
        let f_plus = f(x);
        x.as_slice_memory_order_mut().expect("contiguous")[i] = original - h;
        let f_minus = f(x);
        x.as_slice_memory_order_mut().expect("contiguous")[i] = original;
        grad.as_slice_memory_order_mut().expect("contiguous")[i] = (f_plus - f_minus) / two_h;
    }
    grad
}

/// One row of a gradient-check report.
#[derive(Clone, Debug, PartialEq)]
pub struct GradCheckRow {
    /// The parameter (`W1`) or `x` for a layer's input.
    pub name: String,
    pub shape: Vec<usize>,
    /// meanᵢ |analyticᵢ - numericᵢ| (what the book's gradient_check.py prints).
    pub mean_abs_diff: f64,
    /// maxᵢ |analyticᵢ - numericᵢ|.
    pub max_abs_diff: f64,
    /// max_abs_diff / the largest |gradient| entry (see the module docs).
    pub max_rel_err: f64,
}

impl fmt::Display for GradCheckRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<10} {:>12} {:>14.3e} {:>14.3e} {:>14.3e}",
            self.name,
            format!("{:?}", self.shape),
            self.mean_abs_diff,
            self.max_abs_diff,
            self.max_rel_err
        )
    }
}

/// Compares an analytic gradient with a numerical one.
#[track_caller]
pub fn compare<T: Float>(name: &str, analytic: &ArrayD<T>, numeric: &ArrayD<T>) -> GradCheckRow {
    assert_eq!(
        analytic.shape(),
        numeric.shape(),
        "compare {name}: shapes differ"
    );
    let to64 = |v: T| v.to_f64().unwrap_or(f64::NAN);
    let mut max_abs_diff = 0f64;
    let mut sum_abs_diff = 0f64;
    let mut scale = 0f64;
    let mut nan = false;
    Zip::from(analytic).and(numeric).for_each(|&a, &n| {
        let (a, n) = (to64(a), to64(n));
        let d = (a - n).abs();
        // NOTE: f64::max drops NaN, so a NaN anywhere is remembered apart: it must fail.
        nan |= d.is_nan();
        sum_abs_diff += d;
        max_abs_diff = max_abs_diff.max(d);
        scale = scale.max(a.abs()).max(n.abs());
    });
    if nan {
        max_abs_diff = f64::NAN;
    }
    let max_rel_err = max_abs_diff / scale.max(ZERO_GRADIENT);
    GradCheckRow {
        name: name.to_string(),
        shape: analytic.shape().to_vec(),
        mean_abs_diff: sum_abs_diff / analytic.len().max(1) as f64,
        max_abs_diff,
        max_rel_err,
    }
}

/// Checks one layer's backward in f64: with a fixed random `r` of the output's shape and the
/// loss `L(x, θ) = Σ forward(x) ⊙ r`, backprop gives `∂L/∂x = backward(r)` and the parameter
/// gradients; each is compared with the numerical gradient. Returns a row for `x` and one per
/// parameter.
pub fn check_layer(layer: &mut dyn Layer<f64>, x: ArrayD<f64>, rng: &mut Rng) -> Vec<GradCheckRow> {
    let h = DEFAULT_H;
    let y = layer.forward(x.clone());
    let r = ArrayD::from_shape_fn(y.raw_dim(), |_| rng.normal());
    let dx = layer.backward(r.clone());
    let grads: Vec<(&str, ArrayD<f64>)> = layer
        .params()
        .into_iter()
        .map(|p| (p.name, p.grad.to_owned()))
        .collect();

    let mut rows = Vec::new();
    let mut x_num = x.clone();
    let numeric = numerical_gradient(|x| (layer.forward(x.clone()) * &r).sum(), &mut x_num, h);
    rows.push(compare("x", &dx, &numeric));

    for (p, (name, analytic)) in grads.iter().enumerate() {
        let mut numeric = ArrayD::zeros(analytic.raw_dim());
        for i in 0..analytic.len() {
            let original = entry(layer, p, i);
            let mut loss_at = |delta: f64| {
                *entry_mut(layer, p, i) = original + delta;
                let l = (layer.forward(x.clone()) * &r).sum();
                *entry_mut(layer, p, i) = original; // restored exactly, not by subtracting
                l
            };
            let (plus, minus) = (loss_at(h), loss_at(-h));
            numeric.as_slice_memory_order_mut().unwrap()[i] = (plus - minus) / (2.0 * h);
        }
        rows.push(compare(name, analytic, &numeric));
    }
    rows
}

/// Entry `i` (memory order) of parameter `p` of a layer.
fn entry(layer: &mut dyn Layer<f64>, p: usize, i: usize) -> f64 {
    *entry_mut(layer, p, i)
}

fn entry_mut(layer: &mut dyn Layer<f64>, p: usize, i: usize) -> &mut f64 {
    let param = layer.params().swap_remove(p);
    let slice = param
        .value
        .into_slice_memory_order()
        .expect("contiguous parameter");
    &mut slice[i]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{Affine, Relu, Sigmoid, Targets};
    use crate::{Network, TwoLayerNet, models::gaussian};
    use ndarray::{Array, Array1, arr1};

    #[test]
    fn numerical_gradient_of_a_known_function() {
        // f(x) = Σ xᵢ² + 3 x₀ x₁: ∂f/∂x₀ = 2x₀ + 3x₁, ∂f/∂x₁ = 2x₁ + 3x₀, ∂f/∂x₂ = 2x₂.
        let mut x = arr1(&[1.0f64, -2.0, 0.5]).into_dyn();
        let g = numerical_gradient(
            |x| x.mapv(|v| v * v).sum() + 3.0 * x[0] * x[1],
            &mut x,
            1e-5,
        );
        let expected = arr1(&[-4.0, -1.0, 1.0]).into_dyn();
        assert!((&g - &expected).iter().all(|d| d.abs() < 1e-9), "{g}");
        assert_eq!(
            x,
            arr1(&[1.0, -2.0, 0.5]).into_dyn(),
            "x is restored exactly"
        );
    }

    #[test]
    fn compare_reports_the_worst_entry_relative_to_the_largest() {
        let a = arr1(&[1.0, 0.001, 0.0]).into_dyn();
        let n = arr1(&[1.0, 0.002, 0.0]).into_dyn();
        let row = compare("W", &a, &n);
        assert_eq!(row.max_abs_diff, 0.001);
        assert!((row.mean_abs_diff - 0.001 / 3.0).abs() < 1e-15);
        assert!((row.max_rel_err - 0.001).abs() < 1e-15);
        let nan = arr1(&[f64::NAN, 0.0, 0.0]).into_dyn();
        assert!(
            compare("W", &nan, &n).max_rel_err.is_nan(),
            "NaN must fail any tolerance"
        );
        assert_eq!(compare("W", &n, &n).max_rel_err, 0.0);
    }

    #[test]
    fn a_deeper_network_with_sigmoid_checks_too() {
        // Affine -> Sigmoid -> Affine -> Relu -> Affine -> loss, with one-hot targets.
        let mut rng = Rng::new(4);
        let mut net = Network::<f64>::new();
        net.push(Affine::new(gaussian(7, 6, 0.8, &mut rng), Array1::zeros(6)))
            .push(Sigmoid::new())
            .push(Affine::new(
                gaussian(6, 5, 0.8, &mut rng),
                Array1::from_elem(5, 0.1),
            ))
            .push(Relu::new())
            .push(Affine::new(gaussian(5, 3, 0.8, &mut rng), Array1::zeros(3)));
        assert_eq!(
            net.layer_names(),
            ["Affine1", "Sigmoid1", "Affine2", "Relu1", "Affine3"]
        );
        let x = Array::from_shape_fn((4, 7), |_| rng.normal()).into_dyn();
        let t = Array::from_shape_fn((4, 3), |(i, j)| if (i + j) % 3 == 0 { 1.0 } else { 0.0 });
        let rows = net.gradient_check(&x, Targets::OneHot(t.view()), DEFAULT_H);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["W1", "b1", "W2", "b2", "W3", "b3"]);
        for row in rows {
            assert!(row.max_rel_err < 1e-7, "{row}");
        }
    }

    #[test]
    fn f32_backprop_agrees_with_f64() {
        // The same weights in both types: the f32 gradient is the f64 one to f32 precision.
        let mut net64 = TwoLayerNet::new::<f64>(30, 10, 4, 0.3, &mut Rng::new(8));
        let mut net32 = TwoLayerNet::new::<f32>(30, 10, 4, 0.3, &mut Rng::new(8));
        let mut rng = Rng::new(9);
        let x = Array::from_shape_fn((8, 30), |_| rng.uniform());
        let labels = [0, 1, 2, 3, 3, 2, 1, 0];
        let g64 = net64.gradient(x.clone(), Targets::Labels(&labels));
        let g32 = net32.gradient(x.mapv(|v| v as f32), Targets::Labels(&labels));
        for ((name, a), (_, b)) in g64.iter().zip(&g32) {
            let b = b.mapv(|v| v as f64);
            let row = compare(name, a, &b);
            assert!(row.max_rel_err < 1e-5, "{row}");
        }
    }

    #[test]
    fn a_small_convnet_checks() {
        // Conv 3x3 pad 1 -> Relu -> max pool 2x2 (overlapping: stride 1) -> Conv 2x2 stride 2
        // -> Relu -> Affine (fed the 4-D output directly) -> loss.
        use crate::layers::{Convolution, Pooling};
        let mut rng = Rng::new(6);
        let conv = |f, c, k, s, p, rng: &mut Rng| {
            let w = Array::from_shape_fn((f, c, k, k), |_| 0.5 * rng.normal());
            Convolution::new(w, Array1::from_shape_fn(f, |_| 0.1 * rng.normal()), s, p)
        };
        let mut net = Network::<f64>::new();
        net.push(conv(3, 2, 3, 1, 1, &mut rng))
            .push(Relu::new())
            .push(Pooling::max(2, 2, 1))
            .push(conv(2, 3, 2, 2, 0, &mut rng))
            .push(Relu::new())
            .push(Affine::new(
                gaussian(2 * 3 * 3, 4, 0.5, &mut rng),
                Array1::zeros(4),
            ));
        assert_eq!(
            net.layer_names(),
            ["Conv1", "Relu1", "Pool1", "Conv2", "Relu2", "Affine1"]
        );
        let x = Array::from_shape_fn((3, 2, 7, 7), |_| rng.normal()).into_dyn();
        let rows = net.gradient_check(&x, Targets::Labels(&[0, 3, 1]), DEFAULT_H);
        assert_eq!(
            rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["W1", "b1", "W2", "b2", "W3", "b3"]
        );
        for row in rows {
            assert!(row.max_rel_err < 1e-6, "{row}");
        }
    }
}
