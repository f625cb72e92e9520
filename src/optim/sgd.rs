//! Stochastic gradient descent: `W ← W - lr · ∂L/∂W`.

use ndarray::Zip;

use super::{Optimizer, OptimizerState, no_leftovers};
use crate::Float;
use crate::error::Result;
use crate::layers::Param;

/// Plain SGD (the book's `SGD`, ch. 6.1.2).
#[derive(Clone, Debug)]
pub struct Sgd {
    pub lr: f64,
}

impl Default for Sgd {
    /// The book's default learning rate, 0.01. (Its ch05 training script uses 0.1.)
    fn default() -> Self {
        Sgd { lr: 0.01 }
    }
}

impl<T: Float> Optimizer<T> for Sgd {
    fn name(&self) -> &'static str {
        "sgd"
    }

    fn update(&mut self, _name: &str, mut p: Param<'_, T>) {
        let lr = T::of(self.lr);
        // W ← W - lr · dW
        Zip::from(&mut p.value)
            .and(&p.grad)
            .for_each(|w, &g| *w = *w - lr * g);
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn state(&self) -> OptimizerState<T> {
        OptimizerState::default() // plain SGD keeps nothing between steps
    }

    fn set_state(&mut self, state: OptimizerState<T>) -> Result<()> {
        no_leftovers("sgd", &state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testing::{assert_close, run};

    #[test]
    fn matches_pytorch() {
        // torch.optim.SGD(p, lr=0.1), 5 steps: `sgd` of the script in optim/mod.rs.
        let expected = [
            0.83616,
            0.34464000000000006,
            1.32768,
            0.67232,
            1.16384,
            0.50848,
            0.2598822047975098,
            -1.0350094844780935,
            0.7209575992693783,
        ];
        assert_close(&run(&mut Sgd { lr: 0.1 }, 5), &expected);
    }
    use ndarray::{Array1, arr1};

    #[test]
    fn one_step_by_hand() {
        let mut w = arr1(&[1.0f64, -2.0]);
        let mut g: Array1<f64> = arr1(&[0.5, -1.0]);
        let p = Param {
            name: "W",
            value: w.view_mut().into_dyn(),
            grad: g.view_mut().into_dyn(),
        };
        Sgd { lr: 0.1 }.step(vec![("W1".to_string(), p)]);
        assert_eq!(w, arr1(&[0.95, -1.9]));
    }
}
