//! SGD with momentum.

use ndarray::Zip;

use super::{Optimizer, OptimizerState, Slots};
use crate::Float;
use crate::error::Result;
use crate::layers::Param;

/// Hyperparameters of [`Momentum`].
#[derive(Clone, Debug, PartialEq)]
pub struct MomentumConfig {
    pub lr: f64,
    pub momentum: f64,
}

impl Default for MomentumConfig {
    /// The book's: lr 0.01, momentum 0.9.
    fn default() -> Self {
        MomentumConfig {
            lr: 0.01,
            momentum: 0.9,
        }
    }
}

/// Momentum SGD (the book's `Momentum`, ch. 6.1.4), in PyTorch's form:
/// ```text
/// v ← μ·v + g          (velocity, zero at the start)
/// W ← W - lr·v
/// ```
/// The book writes `v ← μ·v - lr·g; W ← W + v`, the same updates while lr stays fixed; this
/// form keeps the velocity independent of lr, so a learning-rate schedule acts at once.
#[derive(Clone, Debug)]
pub struct Momentum<T: Float = f32> {
    pub config: MomentumConfig,
    velocity: Slots<T>,
    steps: u64,
}

impl<T: Float> Momentum<T> {
    pub fn new(config: MomentumConfig) -> Self {
        Momentum {
            config,
            velocity: Slots::default(),
            steps: 0,
        }
    }
}

impl<T: Float> Optimizer<T> for Momentum<T> {
    fn name(&self) -> &'static str {
        "momentum"
    }

    fn begin_step(&mut self) {
        self.steps += 1;
    }

    fn update(&mut self, name: &str, mut p: Param<'_, T>) {
        let (lr, mu) = (T::of(self.config.lr), T::of(self.config.momentum));
        let v = self.velocity.get(name, p.grad.shape());
        Zip::from(&mut p.value)
            .and(v)
            .and(&p.grad)
            .for_each(|w, v, &g| {
                *v = mu * *v + g; // velocity
                *w = *w - lr * *v;
            });
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn state(&self) -> OptimizerState<T> {
        self.velocity.state("velocity", self.steps)
    }

    fn set_state(&mut self, state: OptimizerState<T>) -> Result<()> {
        (self.velocity, self.steps) = Slots::restore("velocity", "momentum", state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testing::{assert_close, run, state_round_trips};

    #[test]
    fn matches_pytorch() {
        // torch.optim.SGD(p, lr=0.1, momentum=0.9), 5 steps: `sgd_momentum` of the script in
        // optim/mod.rs.
        let expected = [
            1.29021,
            2.1608400000000003,
            0.41957999999999984,
            1.5804200000000002,
            0.7097899999999999,
            1.87063,
            0.19646540846840443,
            -1.6421377453777777,
            -0.012972700602010338,
        ];
        let got = run(
            &mut Momentum::new(MomentumConfig {
                lr: 0.1,
                momentum: 0.9,
            }),
            5,
        );
        assert_close(&got, &expected);
    }

    #[test]
    fn state_round_trips_through_a_checkpoint() {
        state_round_trips(|| Box::new(Momentum::new(MomentumConfig::default())));
    }
}
