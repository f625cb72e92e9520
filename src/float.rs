//! The element type every layer and network is generic over: `f32` (training) or `f64`
//! (gradient checks, where central differences are accurate to about 1e-10).

use std::fmt::{Debug, Display};
use std::iter::Sum;

use ndarray::{LinalgScalar, ScalarOperand};

/// `f32` or `f64`. One bound for the whole library; nothing else implements it.
pub trait Float:
    num_traits::Float
    + num_traits::FromPrimitive
    + LinalgScalar
    + ScalarOperand
    + Sum
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + 'static
{
    /// Short name used in reports (`"f32"`, `"f64"`).
    const NAME: &'static str;

    /// Converts an `f64` constant (a learning rate, a standard deviation) to this type.
    fn of(x: f64) -> Self;
}

impl Float for f32 {
    const NAME: &'static str = "f32";
    fn of(x: f64) -> Self {
        x as f32
    }
}

impl Float for f64 {
    const NAME: &'static str = "f64";
    fn of(x: f64) -> Self {
        x
    }
}
