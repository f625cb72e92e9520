//! AdamW: Adam with decoupled weight decay.

use super::{Adam, AdamConfig, Optimizer, OptimizerState};
use crate::Float;
use crate::error::Result;
use crate::layers::Param;

/// Hyperparameters of [`AdamW`].
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWConfig {
    pub adam: AdamConfig,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// Adam's defaults and weight decay 0.01 (PyTorch's).
    fn default() -> Self {
        AdamWConfig {
            adam: AdamConfig::default(),
            weight_decay: 0.01,
        }
    }
}

/// AdamW (Loshchilov and Hutter, 2019), as PyTorch computes it: the weights shrink by a
/// fraction of the learning rate, apart from the gradient, then Adam steps.
/// ```text
/// W ← W · (1 - lr·λ)
/// W ← Adam(W, g)
/// ```
/// Like PyTorch's, it decays every parameter it is given, biases included.
#[derive(Clone, Debug)]
pub struct AdamW<T: Float = f32> {
    pub weight_decay: f64,
    adam: Adam<T>,
}

impl<T: Float> AdamW<T> {
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            weight_decay: config.weight_decay,
            adam: Adam::new(config.adam),
        }
    }
}

impl<T: Float> Optimizer<T> for AdamW<T> {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn begin_step(&mut self) {
        self.adam.begin_step();
    }

    fn update(&mut self, name: &str, mut p: Param<'_, T>) {
        let shrink = T::of(1.0 - self.adam.config.lr * self.weight_decay);
        p.value.mapv_inplace(|w| w * shrink); // decoupled weight decay
        self.adam.update(name, p);
    }

    fn learning_rate(&self) -> f64 {
        self.adam.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.adam.config.lr = lr;
    }

    fn state(&self) -> OptimizerState<T> {
        self.adam.state()
    }

    fn set_state(&mut self, state: OptimizerState<T>) -> Result<()> {
        self.adam.set_state(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testing::{assert_close, run, state_round_trips};

    #[test]
    fn matches_pytorch() {
        // torch.optim.AdamW(p, lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
        // 5 steps: `adamw` of the script in optim/mod.rs.
        let expected = [
            0.9690609071270806,
            -0.4989968524087222,
            1.499218544479575,
            0.4910571529907156,
            1.0221259855538498,
            -0.0028826733282383415,
            -0.08879663357380801,
            -1.1947517516037984,
            0.7102263796838038,
        ];
        let config = AdamWConfig {
            adam: AdamConfig {
                lr: 0.1,
                ..Default::default()
            },
            weight_decay: 0.01,
        };
        assert_close(&run(&mut AdamW::new(config), 5), &expected);
    }

    #[test]
    fn state_round_trips_through_a_checkpoint() {
        state_round_trips(|| Box::new(AdamW::new(AdamWConfig::default())));
    }
}
