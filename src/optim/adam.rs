//! Adam: momentum and RMSprop together, bias-corrected.

use ndarray::Zip;

use super::{Optimizer, OptimizerState, Slots, no_leftovers};
use crate::Float;
use crate::error::Result;
use crate::layers::Param;

/// Hyperparameters of [`Adam`].
#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamConfig {
    /// The book's lr 0.001, beta1 0.9, beta2 0.999; eps 1e-8 (PyTorch's).
    fn default() -> Self {
        AdamConfig {
            lr: 0.001,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Adam (Kingma and Ba, 2015; the book's `Adam`), as PyTorch computes it:
/// ```text
/// t ← t + 1
/// m ← β₁·m + (1 - β₁)·g            first moment, zero at the start
/// v ← β₂·v + (1 - β₂)·g²           second moment, zero at the start
/// W ← W - lr/(1 - β₁ᵗ) · m / (√v / √(1 - β₂ᵗ) + eps)      bias-corrected
/// ```
#[derive(Clone, Debug)]
pub struct Adam<T: Float = f32> {
    pub config: AdamConfig,
    m: Slots<T>,
    v: Slots<T>,
    steps: u64,
}

impl<T: Float> Adam<T> {
    pub fn new(config: AdamConfig) -> Self {
        Adam {
            config,
            m: Slots::default(),
            v: Slots::default(),
            steps: 0,
        }
    }
}

impl<T: Float> Optimizer<T> for Adam<T> {
    fn name(&self) -> &'static str {
        "adam"
    }

    fn begin_step(&mut self) {
        self.steps += 1;
    }

    fn update(&mut self, name: &str, mut p: Param<'_, T>) {
        let c = &self.config;
        let t = self.steps as i32;
        let (b1, b2, eps) = (T::of(c.beta1), T::of(c.beta2), T::of(c.eps));
        // bias corrections of the two moments, folded into the step size and the denominator
        let step_size = T::of(c.lr / (1.0 - c.beta1.powi(t)));
        let sqrt_bc2 = T::of((1.0 - c.beta2.powi(t)).sqrt());
        let m = self.m.get(name, p.grad.shape());
        let v = self.v.get(name, p.grad.shape());
        Zip::from(&mut p.value)
            .and(m)
            .and(v)
            .and(&p.grad)
            .for_each(|w, m, v, &g| {
                *m = b1 * *m + (T::one() - b1) * g; // first moment
                *v = b2 * *v + (T::one() - b2) * g * g; // second moment
                *w = *w - step_size * *m / (v.sqrt() / sqrt_bc2 + eps);
            });
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn state(&self) -> OptimizerState<T> {
        let mut state = OptimizerState {
            steps: self.steps,
            ..Default::default()
        };
        self.m.save("m", &mut state);
        self.v.save("v", &mut state);
        state
    }

    fn set_state(&mut self, mut state: OptimizerState<T>) -> Result<()> {
        let (m, v) = (Slots::load("m", &mut state), Slots::load("v", &mut state));
        no_leftovers(self.name(), &state)?;
        (self.m, self.v, self.steps) = (m, v, state.steps);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testing::{assert_close, run, state_round_trips};

    #[test]
    fn matches_pytorch() {
        // torch.optim.Adam(p, lr=0.1, betas=(0.9, 0.999), eps=1e-8), 5 steps: `adam` of the
        // script in optim/mod.rs.
        let expected = [
            0.9721855486293904,
            -0.5029557812950121,
            1.5079636592643417,
            0.492036340735658,
            1.0278144513706096,
            -0.0043581694516796055,
            -0.08846867936516402,
            -1.1991724671318253,
            0.7149672790166881,
        ];
        assert_close(
            &run(
                &mut Adam::new(AdamConfig {
                    lr: 0.1,
                    ..Default::default()
                }),
                5,
            ),
            &expected,
        );
    }

    #[test]
    fn state_round_trips_through_a_checkpoint() {
        state_round_trips(|| Box::new(Adam::new(AdamConfig::default())));
    }
}
