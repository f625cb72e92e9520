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
//! max_rel_err = maxᵢ |aᵢ - nᵢ| / max(maxᵢ |aᵢ|, maxᵢ |nᵢ|)
//! ```
//! the worst difference relative to the parameter's largest gradient entry (zero when both
//! gradients are exactly zero).
//! NOTE: an entry-by-entry ratio |aᵢ - nᵢ| / max(|aᵢ|, |nᵢ|) would be ruled by entries whose
//! gradient is itself round-off sized (a weight that sees one faint pixel): there the central
//! difference's O(ε·|f|/h) floor, about 1e-11, is the whole value. Scaling by the parameter's
//! largest entry keeps the measure meaningful and still catches any wrong entry.

use std::fmt;

use ndarray::{ArrayD, Zip};

use crate::layers::Layer;
use crate::{Float, Rng};

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
    Zip::from(analytic).and(numeric).for_each(|&a, &n| {
        let (a, n) = (to64(a), to64(n));
        sum_abs_diff += (a - n).abs();
        // NaN-aware: a NaN anywhere makes the report NaN, which fails any tolerance.
        max_abs_diff = if (a - n).is_nan() {
            f64::NAN
        } else {
            max_abs_diff.max((a - n).abs())
        };
        scale = scale.max(a.abs()).max(n.abs());
    });
    let max_rel_err = if max_abs_diff == 0.0 {
        0.0
    } else {
        max_abs_diff / scale
    };
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
    let dx = layer.backward(&r);
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
