//! Logistic sigmoid: `y = 1 / (1 + exp(-x))`.

use ndarray::{ArrayD, Zip};

use super::Layer;
use crate::Float;

/// Sigmoid.
///
/// # Shapes
/// `x: any -> same`.
///
/// # Gradient
/// ```text
/// y  = 1 / (1 + exp(-x))
/// dx = dy · y · (1 - y)
/// ```
#[derive(Clone, Debug, Default)]
pub struct Sigmoid<T: Float = f32> {
    out: Option<ArrayD<T>>, // y, same shape as x
}

impl<T: Float> Sigmoid<T> {
    pub fn new() -> Self {
        Sigmoid { out: None }
    }
}

/// NOTE: split by sign so that exp never overflows: for x < 0, 1/(1+e^-x) = e^x/(1+e^x).
fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

impl<T: Float> Layer<T> for Sigmoid<T> {
    fn kind(&self) -> &'static str {
        "Sigmoid"
    }

    fn describe(&self) -> String {
        "sigmoid".into()
    }

    fn forward(&mut self, x: ArrayD<T>) -> ArrayD<T> {
        let y = self.predict(x);
        // y is kept for backward, in the memory of the last one kept
        match &mut self.out {
            Some(out) if out.shape() == y.shape() => out.assign(&y),
            out => *out = Some(y.clone()),
        }
        y
    }

    fn predict(&self, mut x: ArrayD<T>) -> ArrayD<T> {
        x.mapv_inplace(sigmoid);
        x
    }

    fn backward(&mut self, mut dout: ArrayD<T>) -> ArrayD<T> {
        let y = self
            .out
            .as_ref()
            .expect("Sigmoid::backward called without a forward before it");
        assert_eq!(y.shape(), dout.shape(), "Sigmoid::backward: dout shape");
        // dx = dy · y · (1 - y), written over dy
        Zip::from(&mut dout)
            .and(y)
            .for_each(|d, &y| *d = *d * y * (T::one() - y));
        dout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use crate::gradcheck::check_layer;
    use ndarray::{Array, arr1};

    #[test]
    fn forward_by_hand() {
        // σ(0) = 1/2; σ(ln 3) = 1/(1 + 1/3) = 3/4; σ(-ln 3) = 1/4; σ(-1000) underflows to 0.
        let x = arr1(&[0.0, 3f64.ln(), -(3f64.ln()), -1000.0, 1000.0]).into_dyn();
        let y = Sigmoid::new().predict(x);
        let expected = [0.5, 0.75, 0.25, 0.0, 1.0];
        for (a, b) in y.iter().zip(expected) {
            assert!((a - b).abs() < 1e-15, "{a} vs {b}");
        }
    }

    #[test]
    fn backward_by_hand() {
        // At x = 0: y = 1/2, dy/dx = 1/4.
        let mut s = Sigmoid::<f64>::new();
        s.forward(arr1(&[0.0]).into_dyn());
        assert_eq!(s.backward(arr1(&[2.0]).into_dyn()), arr1(&[0.5]).into_dyn());
    }

    #[test]
    fn gradient_check() {
        let mut rng = Rng::new(12);
        let x = Array::from_shape_fn((3, 5), |_| 3.0 * rng.normal()).into_dyn();
        for row in check_layer(&mut Sigmoid::new(), x, &mut rng) {
            assert!(row.max_rel_err < 1e-7, "{row}");
        }
    }
}
