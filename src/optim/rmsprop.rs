//! RMSprop: AdaGrad with an exponentially decaying average instead of a sum.

use ndarray::Zip;

use super::{Optimizer, OptimizerState, Slots};
use crate::Float;
use crate::error::Result;
use crate::layers::Param;

/// Hyperparameters of [`RmsProp`].
#[derive(Clone, Debug, PartialEq)]
pub struct RmsPropConfig {
    pub lr: f64,
    /// Decay of the squared-gradient average (the book's `decay_rate`, PyTorch's `alpha`).
    pub decay: f64,
    pub eps: f64,
}

impl Default for RmsPropConfig {
    /// The book's: lr 0.01, decay 0.99, eps 1e-7.
    fn default() -> Self {
        RmsPropConfig {
            lr: 0.01,
            decay: 0.99,
            eps: 1e-7,
        }
    }
}

/// RMSprop (the book's `RMSprop`; PyTorch's `RMSprop` without momentum or centering):
/// ```text
/// h ← ρ·h + (1 - ρ)·g²            (running mean of squared gradients, zero at the start)
/// W ← W - lr·g / (√h + eps)
/// ```
#[derive(Clone, Debug)]
pub struct RmsProp<T: Float = f32> {
    pub config: RmsPropConfig,
    h: Slots<T>,
    steps: u64,
}

impl<T: Float> RmsProp<T> {
    pub fn new(config: RmsPropConfig) -> Self {
        RmsProp {
            config,
            h: Slots::default(),
            steps: 0,
        }
    }
}

impl<T: Float> Optimizer<T> for RmsProp<T> {
    fn name(&self) -> &'static str {
        "rmsprop"
    }

    fn begin_step(&mut self) {
        self.steps += 1;
    }

    fn update(&mut self, name: &str, mut p: Param<'_, T>) {
        let c = &self.config;
        let (lr, rho, eps) = (T::of(c.lr), T::of(c.decay), T::of(c.eps));
        let h = self.h.get(name, p.grad.shape());
        Zip::from(&mut p.value)
            .and(h)
            .and(&p.grad)
            .for_each(|w, h, &g| {
                *h = rho * *h + (T::one() - rho) * g * g; // running mean of g²
                *w = *w - lr * g / (h.sqrt() + eps);
            });
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn state(&self) -> OptimizerState<T> {
        self.h.state("h", self.steps)
    }

    fn set_state(&mut self, state: OptimizerState<T>) -> Result<()> {
        (self.h, self.steps) = Slots::restore("h", "rmsprop", state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testing::{assert_close, run, state_round_trips};

    #[test]
    fn matches_pytorch() {
        // torch.optim.RMSprop(p, lr=0.01, alpha=0.99, eps=1e-7), 5 steps: `rmsprop` of the
        // script in optim/mod.rs.
        let expected = [
            0.7784288389650844,
            -0.6854816328630298,
            1.6964658836236048,
            0.30353411637639516,
            1.2215711610349156,
            -0.1890254815413061,
            0.10318493176573532,
            -1.0706210066657527,
            0.9087225917982733,
        ];
        assert_close(
            &run(&mut RmsProp::new(RmsPropConfig::default()), 5),
            &expected,
        );
    }

    #[test]
    fn state_round_trips_through_a_checkpoint() {
        state_round_trips(|| Box::new(RmsProp::new(RmsPropConfig::default())));
    }
}
