//! Inverted dropout: drop units at random while training, scale the rest.

use ndarray::{ArrayD, Zip};

use super::Layer;
use crate::{Float, Rng};

/// Dropout (the book's `Dropout`, ch. 6.4.3, in its inverted form).
///
/// # Shapes
/// `x: any -> same`.
///
/// # Forward and gradient
/// ```text
/// training:  m = 1/(1 - p) with probability 1 - p, else 0      (drawn for every entry)
///            y = x · m,   dx = dy · m
/// inference: y = x                                              (the scaling already made
///                                                                the expectations equal)
/// ```
/// Out of training ([`Layer::set_training`]), forward is inference's `y = x` and backward
/// `dx = dy`.
///
/// The book scales at inference instead (`x * (1 - ratio)`); scaling at training time leaves
/// inference untouched, as PyTorch does.
#[derive(Clone, Debug)]
pub struct Dropout<T: Float = f32> {
    ratio: f64,
    rng: Rng,
    mask: Option<ArrayD<T>>, // (same as x): 0 or 1/(1 - p)
    hold: bool,
    training: bool,
}

impl<T: Float> Dropout<T> {
    /// Drops each entry with probability `ratio` (0 <= ratio < 1), drawing from its own
    /// generator seeded with `seed` (model builders take it from the run's generator).
    #[track_caller]
    pub fn new(ratio: f64, seed: u64) -> Self {
        assert!(
            (0.0..1.0).contains(&ratio),
            "Dropout: ratio {ratio} is not in [0, 1)"
        );
        Dropout {
            ratio,
            rng: Rng::new(seed),
            mask: None,
            hold: false,
            training: true,
        }
    }

    /// The drop probability.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// The generator's state, for checkpoints.
    pub fn rng(&self) -> &Rng {
        &self.rng
    }

    /// Restores the generator from a checkpoint.
    pub fn set_rng(&mut self, rng: Rng) {
        self.rng = rng;
    }
}

impl<T: Float> Layer<T> for Dropout<T> {
    fn kind(&self) -> &'static str {
        "Dropout"
    }

    fn describe(&self) -> String {
        format!("dropout {}", self.ratio)
    }

    fn rng_state(&self) -> Option<[u64; 4]> {
        Some(self.rng.state())
    }

    fn set_rng_state(&mut self, state: [u64; 4]) {
        self.rng = Rng::from_state(state);
    }

    fn forward(&mut self, mut x: ArrayD<T>) -> ArrayD<T> {
        if !self.training {
            return x;
        }
        let reuse = self.hold && self.mask.as_ref().is_some_and(|m| m.shape() == x.shape());
        if !reuse {
            let keep = T::of(1.0 / (1.0 - self.ratio));
            let (ratio, rng) = (self.ratio, &mut self.rng);
            // drawn in the mask's memory from the last batch when the shape has not changed
            let mask = match self.mask.take() {
                Some(m) if m.shape() == x.shape() => m,
                _ => ArrayD::zeros(x.raw_dim()),
            };
            self.mask = Some(mask.mapv_into(|_| {
                if rng.uniform() < ratio {
                    T::zero()
                } else {
                    keep
                }
            }));
        }
        let mask = self.mask.as_ref().expect("set just above");
        Zip::from(&mut x).and(mask).for_each(|x, &m| *x = *x * m);
        x
    }

    fn predict(&self, x: ArrayD<T>) -> ArrayD<T> {
        x
    }

    fn hold_mask(&mut self, hold: bool) {
        self.hold = hold;
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn backward(&mut self, mut dout: ArrayD<T>) -> ArrayD<T> {
        if !self.training {
            return dout; // y = x
        }
        let mask = self
            .mask
            .as_ref()
            .expect("Dropout::backward called without a forward before it");
        assert_eq!(mask.shape(), dout.shape(), "Dropout::backward: dout shape");
        // dx = dy · m, written over dy
        Zip::from(&mut dout).and(mask).for_each(|d, &m| *d = *d * m);
        dout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::check_layer;
    use ndarray::Array;

    /// Out of training: y = x and dx = dy, nothing drawn.
    #[test]
    fn out_of_training_passes_everything() {
        let mut d = Dropout::<f64>::new(0.5, 3);
        let state = d.rng().state();
        Layer::<f64>::set_training(&mut d, false);
        let x = Array::from_shape_fn((4, 5), |(i, j)| (i * 5 + j) as f64).into_dyn();
        assert_eq!(d.forward(x.clone()), x);
        assert_eq!(d.backward(x.clone()), x);
        assert_eq!(d.rng().state(), state);
    }

    #[test]
    fn drops_the_right_share_and_keeps_the_mean() {
        let mut d = Dropout::<f64>::new(0.3, 1);
        let y = d.forward(ArrayD::from_elem(ndarray::IxDyn(&[200, 100]), 1.0));
        let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
        assert!((dropped - 0.3).abs() < 0.02, "dropped {dropped}");
        assert!(
            (y.mean().unwrap() - 1.0).abs() < 0.03,
            "mean {}",
            y.mean().unwrap()
        );
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-15));
        // Inference is the identity; backward uses the same mask as forward.
        let x = ArrayD::from_elem(ndarray::IxDyn(&[2, 3]), 5.0);
        assert_eq!(d.predict(x.clone()), x);
        let y = d.forward(x.clone());
        assert_eq!(d.backward(x), y);
    }

    #[test]
    fn ratio_zero_is_the_identity_and_seeds_repeat() {
        let mut d = Dropout::<f64>::new(0.0, 2);
        let x = Array::from_shape_fn((4, 5), |(i, j)| (i * 5 + j) as f64).into_dyn();
        assert_eq!(d.forward(x.clone()), x);
        let (mut a, mut b) = (Dropout::<f64>::new(0.5, 7), Dropout::<f64>::new(0.5, 7));
        assert_eq!(a.forward(x.clone()), b.forward(x.clone()));
    }

    #[test]
    fn gradient_check_with_the_mask_held() {
        let mut rng = Rng::new(14);
        let mut d = Dropout::new(0.4, 3);
        let x = Array::from_shape_fn((5, 6), |_| rng.normal()).into_dyn();
        d.forward(x.clone());
        d.hold_mask(true);
        for row in check_layer(&mut d, x, &mut rng) {
            assert!(row.max_rel_err < 1e-7, "{row}");
        }
    }
}
