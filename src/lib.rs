//! # backprop
//!
//! Neural networks in which every layer carries its own hand-written forward and backward pass,
//! after "Deep Learning from Scratch" (Saito Koki), chapter 5 onward.
//!
//! ```text
//! x ─▶ Affine1 ─▶ Relu1 ─▶ Affine2 ─▶ SoftmaxWithLoss ─▶ L
//!        ◀─ dW1,db1 ◀──── ◀─ dW2,db2 ◀──────────────── 1
//! ```
//! A [`Network`] is an ordered list of [`layers::Layer`]s followed by
//! [`layers::SoftmaxWithLoss`]. Each layer's `forward` keeps what its `backward` needs;
//! `backward` takes ∂L/∂y and returns ∂L/∂x, filling its parameters' gradients on the way.
//! Training is forward, loss, backward in reverse, then an [`optim::Optimizer`] step.
//! The numerical gradient ([`gradcheck`]) checks every backward pass.
//!
//! Everything is generic over the element type ([`Float`]: `f32` or `f64`): training runs in
//! `f32`, gradient checks in `f64`.
//!
//! ```
//! use backprop::{layers::Targets, Rng, TwoLayerNet};
//! use ndarray::Array2;
//!
//! let mut rng = Rng::new(0);
//! let mut net = TwoLayerNet::new::<f64>(4, 5, 3, 0.1, &mut rng);
//! let x = Array2::from_shape_fn((2, 4), |(i, j)| (i + j) as f64 / 10.0).into_dyn();
//! let t = Targets::Labels(&[0, 2]);
//! let loss = net.backprop(x.clone(), t);           // fills every gradient
//! let report = net.gradient_check(&x, t, 1e-5);    // backprop vs central differences
//! assert!(loss > 0.0 && report.iter().all(|r| r.max_rel_err < 1e-6));
//! ```

#[doc(hidden)]
pub mod alloc;
pub mod budget;
pub mod checkpoint;
pub mod compare;
pub mod data;
pub mod describe;
pub mod error;
pub mod evaluate;
mod float;
#[doc(hidden)]
pub mod flops;
#[doc(hidden)]
pub mod fuzzing;
pub mod gradcheck;
pub mod image;
pub mod init;
#[doc(hidden)]
pub mod kernels;
pub mod limits;
// the book's algorithms: safe code only, the kernels live in `kernels`
#[forbid(unsafe_code)]
pub mod layers;
pub mod models;
mod network;
pub mod onnx;
pub mod optim;
#[doc(hidden)]
pub mod parallel;
#[doc(hidden)]
pub mod plan;
pub mod plot;
mod rng;
pub mod train;

pub use error::{Error, Result};
pub use float::Float;
pub use init::Init;
pub use models::{Activation, DeepConvNet, MlpConfig, MultiLayerNet, SimpleConvNet, TwoLayerNet};
pub use network::{Network, correct_predictions};
pub use rng::Rng;
