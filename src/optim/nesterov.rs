//! Nesterov's accelerated gradient, in the book's form and in PyTorch's.

use ndarray::Zip;

use super::{Optimizer, OptimizerState, Slots};
use crate::Float;
use crate::error::Result;
use crate::layers::Param;

/// Hyperparameters of [`Nesterov`].
#[derive(Clone, Debug, PartialEq)]
pub struct NesterovConfig {
    pub lr: f64,
    pub momentum: f64,
}

impl Default for NesterovConfig {
    /// The book's: lr 0.01, momentum 0.9.
    fn default() -> Self {
        NesterovConfig {
            lr: 0.01,
            momentum: 0.9,
        }
    }
}

/// Nesterov momentum as the book's `common/optimizer.py` writes it
/// (after arXiv:1212.0901, Bengio et al.):
/// ```text
/// v ← μ·v - lr·g
/// W ← W + μ²·v - (1 + μ)·lr·g
/// ```
/// NOTE: this is the book's formula, not PyTorch's `SGD(nesterov=True)` (which keeps its
/// velocity as μ·v + g: [`NesterovTorch`]); the tests check it against the formula run in
/// NumPy.
#[derive(Clone, Debug)]
pub struct Nesterov<T: Float = f32> {
    pub config: NesterovConfig,
    velocity: Slots<T>,
    steps: u64,
}

impl<T: Float> Nesterov<T> {
    pub fn new(config: NesterovConfig) -> Self {
        Nesterov {
            config,
            velocity: Slots::default(),
            steps: 0,
        }
    }
}

impl<T: Float> Optimizer<T> for Nesterov<T> {
    fn name(&self) -> &'static str {
        "nesterov"
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
                *v = mu * *v - lr * g; // velocity
                *w = *w + mu * mu * *v; // look ahead along the velocity
                *w = *w - (T::one() + mu) * lr * g;
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
        (self.velocity, self.steps) = Slots::restore("velocity", "nesterov", state)?;
        Ok(())
    }
}

/// Nesterov momentum as PyTorch's `SGD(momentum=μ, nesterov=True)` (dampening 0; after
/// Sutskever et al. 2013, "On the importance of initialization and momentum"):
/// ```text
/// b ← μ·b + g          (b = g at the first step)
/// W ← W - lr·(g + μ·b)
/// ```
/// `--optimizer nesterov-torch`, for runs that are to match PyTorch's.
#[derive(Clone, Debug)]
pub struct NesterovTorch<T: Float = f32> {
    pub config: NesterovConfig,
    buffer: Slots<T>,
    steps: u64,
}

impl<T: Float> NesterovTorch<T> {
    pub fn new(config: NesterovConfig) -> Self {
        NesterovTorch {
            config,
            buffer: Slots::default(),
            steps: 0,
        }
    }
}

impl<T: Float> Optimizer<T> for NesterovTorch<T> {
    fn name(&self) -> &'static str {
        "nesterov-torch"
    }

    fn begin_step(&mut self) {
        self.steps += 1;
    }

    fn update(&mut self, name: &str, mut p: Param<'_, T>) {
        let (lr, mu) = (T::of(self.config.lr), T::of(self.config.momentum));
        let b = self.buffer.get(name, p.grad.shape());
        Zip::from(&mut p.value)
            .and(b)
            .and(&p.grad)
            .for_each(|w, b, &g| {
                *b = mu * *b + g; // zeros at first: μ·0 + g = g, PyTorch's first buffer
                *w = *w - lr * (g + mu * *b);
            });
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn state(&self) -> OptimizerState<T> {
        self.buffer.state("momentum_buffer", self.steps)
    }

    fn set_state(&mut self, state: OptimizerState<T>) -> Result<()> {
        (self.buffer, self.steps) = Slots::restore("momentum_buffer", "nesterov-torch", state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testing::{assert_close, run, state_round_trips};

    #[test]
    fn matches_the_books_formula() {
        // lr 0.1, momentum 0.9, 5 steps: the NumPy script in optim/mod.rs.
        let expected = [
            1.132723312704816,
            1.530893250819264,
            0.734553374590368,
            1.2654466254096322,
            0.8672766872951839,
            1.3981699381144481,
            0.1654592557163187,
            -3.7175309590994092,
            -0.010165171687505924,
        ];
        let got = run(
            &mut Nesterov::new(NesterovConfig {
                lr: 0.1,
                momentum: 0.9,
            }),
            5,
        );
        assert_close(&got, &expected);
    }

    #[test]
    fn state_round_trips_through_a_checkpoint() {
        state_round_trips(|| Box::new(Nesterov::new(NesterovConfig::default())));
        state_round_trips(|| Box::new(NesterovTorch::new(NesterovConfig::default())));
    }

    #[test]
    fn the_torch_form_matches_pytorchs_update() {
        // lr 0.1, momentum 0.9, 5 steps: PyTorch's SGD(nesterov=True) update, as its
        // documentation writes it, in Python floats (the script in optim/mod.rs)
        let expected = [
            1.2078587904,
            1.8314351616000002,
            0.5842824191999999,
            1.4157175808,
            0.7921412096,
            1.6235763712,
            0.17871090230262618,
            -2.4086279797381223,
            -0.01745550246184599,
        ];
        let config = NesterovConfig {
            lr: 0.1,
            momentum: 0.9,
        };
        assert_close(&run(&mut NesterovTorch::new(config), 5), &expected);
    }
}
