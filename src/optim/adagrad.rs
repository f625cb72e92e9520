//! AdaGrad: a learning rate per parameter entry, shrinking with its gradients' history.

use ndarray::Zip;

use super::{Optimizer, OptimizerState, Slots};
use crate::Float;
use crate::error::Result;
use crate::layers::Param;

/// Hyperparameters of [`AdaGrad`].
#[derive(Clone, Debug, PartialEq)]
pub struct AdaGradConfig {
    pub lr: f64,
    pub eps: f64,
}

impl Default for AdaGradConfig {
    /// The book's: lr 0.01, eps 1e-7.
    fn default() -> Self {
        AdaGradConfig {
            lr: 0.01,
            eps: 1e-7,
        }
    }
}

/// AdaGrad (the book's `AdaGrad`, ch. 6.1.5; PyTorch's `Adagrad`):
/// ```text
/// h ← h + g²                      (sum of squared gradients, zero at the start)
/// W ← W - lr·g / (√h + eps)
/// ```
#[derive(Clone, Debug)]
pub struct AdaGrad<T: Float = f32> {
    pub config: AdaGradConfig,
    h: Slots<T>,
    steps: u64,
}

impl<T: Float> AdaGrad<T> {
    pub fn new(config: AdaGradConfig) -> Self {
        AdaGrad {
            config,
            h: Slots::default(),
            steps: 0,
        }
    }
}

impl<T: Float> Optimizer<T> for AdaGrad<T> {
    fn name(&self) -> &'static str {
        "adagrad"
    }

    fn begin_step(&mut self) {
        self.steps += 1;
    }

    fn update(&mut self, name: &str, mut p: Param<'_, T>) {
        let (lr, eps) = (T::of(self.config.lr), T::of(self.config.eps));
        let h = self.h.get(name, p.grad.shape());
        Zip::from(&mut p.value)
            .and(h)
            .and(&p.grad)
            .for_each(|w, h, &g| {
                *h = *h + g * g; // squared-gradient sum
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
        (self.h, self.steps) = Slots::restore("h", "adagrad", state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testing::{assert_close, run, state_round_trips};

    #[test]
    fn matches_pytorch() {
        // torch.optim.Adagrad(p, lr=0.1, eps=1e-7), 5 steps: `adagrad` of the script in
        // optim/mod.rs.
        let expected = [
            0.7773081979726523,
            -0.6867616036370312,
            1.6977148725142572,
            0.30228512748574266,
            1.2226918020273478,
            -0.19029726142214048,
            0.1038027078383876,
            -1.0694274851571064,
            0.9099360751264367,
        ];
        assert_close(
            &run(&mut AdaGrad::new(AdaGradConfig { lr: 0.1, eps: 1e-7 }), 5),
            &expected,
        );
    }

    #[test]
    fn state_round_trips_through_a_checkpoint() {
        state_round_trips(|| Box::new(AdaGrad::new(AdaGradConfig::default())));
    }
}
