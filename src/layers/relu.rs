//! Rectified linear unit: `y = max(0, x)`.

use ndarray::{ArrayD, Zip};

use super::Layer;
use crate::Float;
use crate::plan::{Accelerated, Role};

/// ReLU.
///
/// # Shapes
/// `x: any -> same`.
///
/// # Gradient
/// ```text
/// y  = x if x > 0, else 0
/// dx = dy if x > 0, else 0
/// ```
#[derive(Clone, Debug, Default)]
pub struct Relu {
    mask: Option<ArrayD<bool>>, // same shape as x: true where x > 0 (the gradient passes)
}

impl Relu {
    pub fn new() -> Self {
        Relu { mask: None }
    }
}

/// NOTE: written as "zero unless positive-or-NaN" (the book's `x <= 0` mask) so that a NaN
/// flows on to the loss, where training notices it, instead of silently becoming 0.
fn relu<T: Float>(v: T) -> T {
    if v <= T::zero() { T::zero() } else { v }
}

impl<T: Float> Layer<T> for Relu {
    fn kind(&self) -> &'static str {
        "Relu"
    }

    fn describe(&self) -> String {
        "relu".into()
    }

    fn forward(&mut self, mut x: ArrayD<T>) -> ArrayD<T> {
        // one pass for the mask and y; the mask's buffer is kept from batch to batch
        let mut mask = match self.mask.take() {
            Some(m) if m.shape() == x.shape() => m,
            _ => ArrayD::from_elem(x.raw_dim(), false),
        };
        Zip::from(&mut mask).and(&mut x).for_each(|pass, v| {
            *pass = *v > T::zero() || v.is_nan();
            *v = relu(*v);
        });
        self.mask = Some(mask);
        x
    }

    fn predict(&self, mut x: ArrayD<T>) -> ArrayD<T> {
        x.mapv_inplace(relu);
        x
    }

    fn backward(&mut self, mut dout: ArrayD<T>) -> ArrayD<T> {
        let mask = self
            .mask
            .as_ref()
            .expect("Relu::backward called without a forward before it");
        assert_eq!(mask.shape(), dout.shape(), "Relu::backward: dout shape");
        // dx = dy where x > 0, written over dy
        // NOTE: an unconditional write, so that the loop vectorises (a select, not a branch)
        Zip::from(&mut dout)
            .and(mask)
            .for_each(|d, &pass| *d = if pass { *d } else { T::zero() });
        dout
    }

    fn accelerated(&mut self) -> Option<&mut dyn Accelerated<T>> {
        Some(self)
    }

    fn accelerated_ref(&self) -> Option<&dyn Accelerated<T>> {
        Some(self)
    }
}

/// A ReLU says what it is, so that the plan may move a max pooling before it.
impl<T: Float> Accelerated<T> for Relu {
    fn role(&self) -> Role {
        Role::Relu
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use crate::gradcheck::check_layer;
    use ndarray::{Array, arr2};

    #[test]
    fn forward_and_backward_by_hand() {
        let mut relu = Relu::new();
        let y = relu.forward(arr2(&[[-1.0, 0.0, 2.0]]).into_dyn());
        assert_eq!(y, arr2(&[[0.0, 0.0, 2.0]]).into_dyn());
        let dout = arr2(&[[5.0, 6.0, 7.0]]).into_dyn();
        let dx = Layer::<f64>::backward(&mut relu, dout);
        assert_eq!(dx, arr2(&[[0.0, 0.0, 7.0]]).into_dyn());
    }

    #[test]
    fn nan_is_not_hidden() {
        let y = Layer::<f64>::predict(&Relu::new(), arr2(&[[f64::NAN]]).into_dyn());
        assert!(y[[0, 0]].is_nan());
    }

    #[test]
    fn gradient_check() {
        let mut rng = Rng::new(11);
        let x = Array::from_shape_fn((4, 7), |_| rng.normal()).into_dyn();
        for row in check_layer(&mut Relu::new(), x, &mut rng) {
            assert!(row.max_rel_err < 1e-7, "{row}");
        }
    }
}
