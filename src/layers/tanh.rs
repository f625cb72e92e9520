//! Hyperbolic tangent: `y = tanh(x)`.

use ndarray::{ArrayD, Zip};

use super::Layer;
use crate::Float;

/// Tanh.
///
/// # Shapes
/// `x: any -> same`.
///
/// # Gradient
/// ```text
/// y  = tanh(x)
/// dx = dy · (1 - y²)
/// ```
#[derive(Clone, Debug, Default)]
pub struct Tanh<T: Float = f32> {
    out: Option<ArrayD<T>>, // y, same shape as x
}

impl<T: Float> Tanh<T> {
    pub fn new() -> Self {
        Tanh { out: None }
    }
}

impl<T: Float> Layer<T> for Tanh<T> {
    fn kind(&self) -> &'static str {
        "Tanh"
    }

    fn describe(&self) -> String {
        "tanh".into()
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
        x.mapv_inplace(T::tanh);
        x
    }

    fn backward(&mut self, mut dout: ArrayD<T>) -> ArrayD<T> {
        let y = self
            .out
            .as_ref()
            .expect("Tanh::backward called without a forward before it");
        assert_eq!(y.shape(), dout.shape(), "Tanh::backward: dout shape");
        // dx = dy · (1 - y²), written over dy
        Zip::from(&mut dout)
            .and(y)
            .for_each(|d, &y| *d = *d * (T::one() - y * y));
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
    fn forward_and_backward_by_hand() {
        // tanh(0) = 0 with slope 1; tanh(ln 2) = (2 - 1/2)/(2 + 1/2) = 3/5, slope 1 - 9/25 = 16/25.
        let mut t = Tanh::<f64>::new();
        let y = t.forward(arr1(&[0.0, 2f64.ln()]).into_dyn());
        assert!((y[0] - 0.0).abs() < 1e-15 && (y[1] - 0.6).abs() < 1e-15);
        let dx = t.backward(arr1(&[1.0, 1.0]).into_dyn());
        assert!((dx[0] - 1.0).abs() < 1e-15 && (dx[1] - 0.64).abs() < 1e-15);
    }

    #[test]
    fn gradient_check() {
        let mut rng = Rng::new(13);
        let x = Array::from_shape_fn((3, 2, 4), |_| 1.5 * rng.normal()).into_dyn();
        for row in check_layer(&mut Tanh::new(), x, &mut rng) {
            assert!(row.max_rel_err < 1e-7, "{row}");
        }
    }
}
