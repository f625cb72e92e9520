//! Optimizers: one trait, one file each. They update every parameter from its gradient.

mod sgd;

pub use sgd::Sgd;

use crate::Float;
use crate::layers::Param;

/// Updates parameters in place from their gradients (filled by the last backprop).
pub trait Optimizer<T: Float> {
    /// One update step over all parameters, given in the network's fixed order with their names.
    fn step(&mut self, params: Vec<(String, Param<'_, T>)>);

    /// The current learning rate.
    fn learning_rate(&self) -> f64;
}
