//! Optimizers: one trait, one file each. They update every parameter from its gradient.
//!
//! Hyperparameters live in a `...Config` struct with `Default`; the optimizer keeps its
//! per-parameter buffers (velocities, moments) by parameter name, created as zeros at the first
//! step, and a step count. [`Optimizer::state`] and [`Optimizer::set_state`] read and write
//! all of it, for checkpoints.

mod adagrad;
mod adam;
mod adamw;
mod momentum;
mod nesterov;
mod rmsprop;
mod sgd;

pub use adagrad::{AdaGrad, AdaGradConfig};
pub use adam::{Adam, AdamConfig};
pub use adamw::{AdamW, AdamWConfig};
pub use momentum::{Momentum, MomentumConfig};
pub use nesterov::{Nesterov, NesterovConfig, NesterovTorch};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use sgd::Sgd;

use std::collections::BTreeMap;

use ndarray::ArrayD;

use crate::Float;
use crate::error::{Error, Result};
use crate::layers::Param;

/// Updates parameters in place from their gradients (filled by the last backprop).
pub trait Optimizer<T: Float>: BoxedClone<T> {
    /// The name users type (`"adam"`).
    fn name(&self) -> &'static str;

    /// Starts an update step: counts it (Adam's bias corrections depend on the count).
    fn begin_step(&mut self) {}

    /// Updates one parameter, by its name in the network (`"W1"`), from its gradient. A
    /// step is [`Optimizer::begin_step`], then this for every parameter in the network's
    /// fixed order ([`crate::Network::update`]); it allocates nothing after the first step.
    fn update(&mut self, name: &str, p: Param<'_, T>);

    /// Threads an update may use on a large parameter (each entry is updated on its own, so
    /// the results do not depend on it). Default: the optimizer ignores it.
    fn set_threads(&mut self, _threads: usize) {}

    /// One update step over all parameters, given in the network's fixed order with their names.
    fn step(&mut self, params: Vec<(String, Param<'_, T>)>) {
        self.begin_step();
        for (name, p) in params {
            self.update(&name, p);
        }
    }

    /// The current learning rate.
    fn learning_rate(&self) -> f64;

    /// Changes the learning rate (schedules call this between steps).
    fn set_learning_rate(&mut self, lr: f64);

    /// Everything the optimizer has learnt: step count and per-parameter buffers.
    fn state(&self) -> OptimizerState<T>;

    /// Restores a state from [`Optimizer::state`]; fails naming the buffer that does not fit.
    fn set_state(&mut self, state: OptimizerState<T>) -> Result<()>;
}

/// A copy of a boxed optimizer, state included (training keeps the state of an epoch's end
/// while its evaluation runs in the background). Every optimizer that is `Clone` has it.
pub trait BoxedClone<T: Float> {
    fn boxed_clone(&self) -> Box<dyn Optimizer<T>>;
}

impl<T: Float, O: Optimizer<T> + Clone + 'static> BoxedClone<T> for O {
    fn boxed_clone(&self) -> Box<dyn Optimizer<T>> {
        Box::new(self.clone())
    }
}

impl<T: Float> Clone for Box<dyn Optimizer<T>> {
    fn clone(&self) -> Self {
        self.boxed_clone()
    }
}

/// An optimizer's state: the number of steps taken and its buffers, named
/// `"<buffer>.<parameter>"` (`"m.W1"`, `"v.W1"`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState<T> {
    pub steps: u64,
    pub buffers: BTreeMap<String, ArrayD<T>>,
}

/// One buffer per parameter, by parameter name (`"W1"`), zeros until first written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Slots<T> {
    by_param: BTreeMap<String, ArrayD<T>>,
}

impl<T: Float> Slots<T> {
    /// The buffer of parameter `name`, created as zeros of `shape` when missing.
    pub fn get(&mut self, name: &str, shape: &[usize]) -> &mut ArrayD<T> {
        // NOTE: looked up by &str first: the name is copied only when the slot is created
        if !self.by_param.contains_key(name) {
            self.by_param.insert(name.to_string(), ArrayD::zeros(shape));
        }
        let slot = self.by_param.get_mut(name).expect("inserted above");
        assert_eq!(
            slot.shape(),
            shape,
            "optimizer buffer of {name} changed shape"
        );
        slot
    }

    /// The whole state of an optimizer whose only buffers these are, as `kind`.
    fn state(&self, kind: &str, steps: u64) -> OptimizerState<T> {
        let mut state = OptimizerState {
            steps,
            ..Default::default()
        };
        self.save(kind, &mut state);
        state
    }

    /// The buffers and step count of an optimizer whose only buffers are `kind`; anything
    /// else in `state` is refused, naming the optimizer.
    fn restore(
        kind: &str,
        optimizer: &str,
        mut state: OptimizerState<T>,
    ) -> Result<(Slots<T>, u64)> {
        let slots = Slots::load(kind, &mut state);
        no_leftovers(optimizer, &state)?;
        Ok((slots, state.steps))
    }

    /// Adds these buffers to `state` as `"<kind>.<parameter>"`.
    fn save(&self, kind: &str, state: &mut OptimizerState<T>) {
        for (name, buffer) in &self.by_param {
            state
                .buffers
                .insert(format!("{kind}.{name}"), buffer.clone());
        }
    }

    /// Takes the buffers named `"<kind>.<parameter>"` out of `state`.
    fn load(kind: &str, state: &mut OptimizerState<T>) -> Slots<T> {
        let prefix = format!("{kind}.");
        let names: Vec<String> = state
            .buffers
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        let by_param = names
            .into_iter()
            .map(|k| {
                let buffer = state.buffers.remove(&k).expect("listed just above");
                (k[prefix.len()..].to_string(), buffer)
            })
            .collect();
        Slots { by_param }
    }
}

/// Fails when `state` still holds buffers the optimizer does not know.
fn no_leftovers<T>(optimizer: &str, state: &OptimizerState<T>) -> Result<()> {
    match state.buffers.keys().next() {
        Some(k) => Err(Error::Config(format!(
            "{optimizer} optimizer state: unknown buffer {k}"
        ))),
        None => Ok(()),
    }
}

/// Values an optimizer keeps a parameter (a velocity, Adam's two moments): what its state
/// adds to a run's memory. Unknown names count as none; [`by_name`] refuses them.
pub fn buffers_per_parameter(name: &str) -> u64 {
    match name.to_ascii_lowercase().as_str() {
        "momentum" | "nesterov" | "nesterov-torch" | "adagrad" | "rmsprop" => 1,
        "adam" | "adamw" => 2,
        _ => 0,
    }
}

/// The optimizers by the names users type: `sgd`, `momentum`, `nesterov`, `adagrad`,
/// `rmsprop`, `adam`, `adamw`, each with its defaults and the learning rate `lr`.
pub fn by_name<T: Float>(name: &str, lr: f64) -> Result<Box<dyn Optimizer<T>>> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "sgd" => Box::new(Sgd { lr }),
        "momentum" => Box::new(Momentum::new(MomentumConfig {
            lr,
            ..Default::default()
        })),
        "nesterov" => Box::new(Nesterov::new(NesterovConfig {
            lr,
            ..Default::default()
        })),
        "nesterov-torch" => Box::new(NesterovTorch::new(NesterovConfig {
            lr,
            ..Default::default()
        })),
        "adagrad" => Box::new(AdaGrad::new(AdaGradConfig {
            lr,
            ..Default::default()
        })),
        "rmsprop" => Box::new(RmsProp::new(RmsPropConfig {
            lr,
            ..Default::default()
        })),
        "adam" => Box::new(Adam::new(AdamConfig {
            lr,
            ..Default::default()
        })),
        "adamw" => Box::new(AdamW::new(AdamWConfig {
            adam: AdamConfig {
                lr,
                ..Default::default()
            },
            ..Default::default()
        })),
        other => {
            return Err(Error::Config(format!(
                "--optimizer: unknown optimizer {other:?} (sgd, momentum, nesterov, nesterov-torch, adagrad, rmsprop, adam, adamw)"
            )));
        }
    })
}

/// Test helpers: run an optimizer on a fixed problem and compare with reference values.
///
/// The reference values come from PyTorch's own optimizers, in float64, by this script
/// (PyTorch 2.15.0 on CPU):
///
/// ```python
/// import torch
///
/// def run(make, steps=5):
///     W = torch.tensor([[0.5, -1.0, 2.0], [0.0, 1.5, -0.5]], dtype=torch.float64, requires_grad=True)
///     b = torch.tensor([0.3, -0.7, 1.2], dtype=torch.float64, requires_grad=True)
///     opt = make([W, b])
///     for _ in range(steps):
///         opt.zero_grad()
///         loss = ((W - 1) ** 2).sum() + (b ** 3).sum() / 3  # dW = 2 (W - 1), db = b^2
///         loss.backward()
///         opt.step()
///     return [float(v) for v in torch.cat([W.detach().flatten(), b.detach()])]
///
/// refs = {
///     "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
///     "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
///     "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-7),
///     "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.99, eps=1e-7),
///     "adam": lambda p: torch.optim.Adam(p, lr=0.1, betas=(0.9, 0.999), eps=1e-8),
///     "adamw": lambda p: torch.optim.AdamW(p, lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
/// }
/// for name, make in refs.items():
///     print(name, "=", "[" + ", ".join(repr(v) for v in run(make)) + "]")
/// ```
///
/// PyTorch has no optimizer of the book's Nesterov form; its values come from the book's
/// formula in NumPy, float64:
///
/// ```python
/// import numpy as np
/// W = np.array([[0.5, -1.0, 2.0], [0.0, 1.5, -0.5]]); b = np.array([0.3, -0.7, 1.2])
/// lr, mu = 0.1, 0.9
/// vW = np.zeros_like(W); vb = np.zeros_like(b)
/// for _ in range(5):
///     gW = 2 * (W - 1); gb = b * b
///     for p, g, v in ((W, gW, vW), (b, gb, vb)):
///         v *= mu; v -= lr * g
///         p += mu * mu * v
///         p -= (1 + mu) * lr * g
/// print(list(W.flatten()) + list(b))
/// ```
///
/// PyTorch's Nesterov (`SGD(p, lr=0.1, momentum=0.9, nesterov=True)`), written out as its
/// documentation's algorithm in Python floats:
///
/// ```python
/// W = [0.5, -1.0, 2.0, 0.0, 1.5, -0.5]; b = [0.3, -0.7, 1.2]; lr, mu = 0.1, 0.9
/// bw = bb = None
/// for _ in range(5):
///     gW = [2 * (w - 1) for w in W]; gb = [v * v for v in b]
///     bw = gW[:] if bw is None else [mu * x + g for x, g in zip(bw, gW)]
///     bb = gb[:] if bb is None else [mu * x + g for x, g in zip(bb, gb)]
///     W = [w - lr * (g + mu * x) for w, g, x in zip(W, gW, bw)]
///     b = [v - lr * (g + mu * x) for v, g, x in zip(b, gb, bb)]
/// print(W + b)
/// ```
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    /// The fixed problem of the reference scripts: parameters W (2x3) and b (3), loss
    /// L = Σ (W - 1)² + Σ b³ / 3, so dW = 2 (W - 1) and db = b². Returns W and b (flattened)
    /// after `steps` steps.
    pub fn run(opt: &mut dyn Optimizer<f64>, steps: usize) -> Vec<f64> {
        let mut w =
            ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0.5, -1.0, 2.0, 0.0, 1.5, -0.5]).unwrap();
        let mut b = ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.3, -0.7, 1.2]).unwrap();
        for _ in 0..steps {
            let mut dw = w.mapv(|v| 2.0 * (v - 1.0));
            let mut db = b.mapv(|v| v * v);
            let params = vec![
                (
                    "W1".to_string(),
                    Param {
                        name: "W",
                        value: w.view_mut(),
                        grad: dw.view_mut(),
                    },
                ),
                (
                    "b1".to_string(),
                    Param {
                        name: "b",
                        value: b.view_mut(),
                        grad: db.view_mut(),
                    },
                ),
            ];
            opt.step(params);
        }
        w.iter().chain(b.iter()).copied().collect()
    }

    /// Every value within 1e-12 of the reference (both run in f64).
    pub fn assert_close(got: &[f64], expected: &[f64]) {
        assert_eq!(got.len(), expected.len());
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            assert!(
                (g - e).abs() < 1e-12,
                "entry {i}: {g} vs reference {e}\n{got:?}"
            );
        }
    }

    /// state() then set_state() on a fresh optimizer continues exactly as the original.
    pub fn state_round_trips(make: impl Fn() -> Box<dyn Optimizer<f64>>) {
        let mut a = make();
        run(a.as_mut(), 3);
        let mut b = make();
        b.set_state(a.state()).unwrap();
        assert_eq!(a.state(), b.state());
        assert_eq!(run(a.as_mut(), 2), run(b.as_mut(), 2));
        let mut extra = a.state();
        extra
            .buffers
            .insert("zz.W9".into(), ArrayD::zeros(IxDyn(&[1])));
        assert!(
            make().set_state(extra).is_err(),
            "an unknown buffer must be refused"
        );
    }

    #[test]
    fn optimizers_by_name() {
        for name in [
            "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "AdamW",
        ] {
            let opt = by_name::<f32>(name, 0.5).unwrap();
            assert_eq!(opt.name(), name.to_ascii_lowercase());
            assert_eq!(opt.learning_rate(), 0.5);
        }
        let e = by_name::<f32>("adamax", 0.1).err().unwrap();
        assert!(
            e.to_string().contains("--optimizer") && e.to_string().contains("adamax"),
            "{e}"
        );
    }
}
