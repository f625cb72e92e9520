//! The network-level rewrites, in one place: what the passes run, in which order, and how
//! the gradient goes from one layer to the next.
//!
//! The book runs the layers in order, forward, and back in reverse. The plan keeps that
//! loop and changes four things, each giving the same outputs and gradients to the bit:
//! - **The first layer computes no dx**: nobody reads the gradient with respect to the
//!   images ([`Accelerated::backward_params`]).
//! - **A max pooling right after a ReLU runs before it**: max(relu(a), relu(b)) =
//!   relu(max(a, b)), and where the max is not positive the ReLU's gradient is zero either
//!   way; the ReLU then works on a quarter of the values.
//! - **The ReLU fused into a 2x2 max pooling**: the pooling writes relu(max) in its own
//!   pass and the ReLU is not run ([`Accelerated::fuse_relu`]).
//! - **dx left unwritten between a 2x2 max pooling and the layer below**: the layer below
//!   writes out each image's dy where it reads it ([`Accelerated::backward_unpooled`]).
//!
//! A plan in reference mode ([`crate::Network::set_reference`]) is the book's loop: every
//! layer in order, every dx written, no kernel. Rewrites are chosen by what a layer says it
//! is ([`Role`]), never by its name; a layer of your own has no [`Accelerated`] side and is
//! run as the book runs it.

use ndarray::ArrayD;

use crate::Float;
use crate::kernels::pool::Unpooled;
use crate::layers::{Input, Layer};

/// What a rewrite may assume of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `y = max(x, 0)`, elementwise.
    Relu,
    /// Max over windows: commutes with a ReLU before it.
    MaxPool,
    /// Anything else.
    Other,
}

/// A built-in layer's fast paths and what the plan may ask of it. Every method has the
/// book's behaviour as its default, so a layer implements only what it speeds up.
#[doc(hidden)]
pub trait Accelerated<T: Float>: Layer<T> {
    /// What the plan may assume of this layer.
    fn role(&self) -> Role {
        Role::Other
    }

    /// Whether the layer, first in a network, skips the zeros of an input given as its
    /// non-zero entries ([`Input::Sparse`]).
    fn takes_sparse_input(&self) -> bool {
        false
    }

    /// [`Layer::forward`] for a network's input, which may come as non-zero entries (Affine
    /// then skips the zeros).
    fn forward_input(&mut self, x: Input<T>) -> ArrayD<T> {
        self.forward(x.into_dense())
    }

    /// [`Layer::predict`] for a network's input; see [`Accelerated::forward_input`].
    fn predict_input(&self, x: Input<T>) -> ArrayD<T> {
        self.predict(x.into_dense())
    }

    /// Backward for the first layer, whose dx nobody reads: only the parameter gradients.
    fn backward_params(&mut self, dout: ArrayD<T>) {
        self.backward(dout);
    }

    /// Backward that leaves dx unwritten for the layer below (2x2 max pooling), or `dout`
    /// given back, nothing done.
    fn backward_unpooled(&mut self, dout: ArrayD<T>) -> Result<Unpooled<'_, T>, ArrayD<T>> {
        Err(dout)
    }

    /// [`Layer::backward`] from a dout the layer above left unwritten. Default: written out
    /// whole first.
    fn backward_from_unpooled(&mut self, dout: Unpooled<'_, T>) -> ArrayD<T> {
        self.backward(dout.into_dense())
    }

    /// [`Accelerated::backward_params`] from a dout the layer above left unwritten.
    fn backward_params_from_unpooled(&mut self, dout: Unpooled<'_, T>) {
        self.backward_params(dout.into_dense())
    }

    /// Asks the layer to apply the ReLU after it in its own pass (`on`), or to stop; true
    /// when it now does.
    fn fuse_relu(&mut self, _on: bool) -> bool {
        false
    }

    /// Threads a training pass may use; results do not depend on it.
    fn set_threads(&mut self, _threads: usize) {}

    /// Runs the book's code alone (`on`), or the fast paths where they apply.
    fn set_reference(&mut self, _on: bool) {}
}

/// The order the passes run the layers in, and whether the plan's rewrites are on.
#[derive(Clone, Debug, Default)]
pub(crate) struct Plan {
    /// Indices into the network's layers, in the order the passes run them.
    pub order: Vec<usize>,
    /// The book's loop (no rewrite), or the rewrites above.
    pub reference: bool,
}

/// The role of a layer (Other for one without fast paths).
fn role<T: Float>(layer: &dyn Layer<T>) -> Role {
    layer.accelerated_ref().map_or(Role::Other, |a| a.role())
}

impl Plan {
    /// The plan for `layers`: each layer is told whether to run the book's code alone, and
    /// the ReLU/max-pooling reorder and fusion are made where they apply.
    pub fn new<T: Float>(layers: &mut [Box<dyn Layer<T>>], reference: bool) -> Plan {
        let mut order = Vec::with_capacity(layers.len());
        for index in 0..layers.len() {
            if let Some(a) = layers[index].accelerated() {
                a.set_reference(reference);
                a.fuse_relu(false);
            }
            let after_relu = index >= 2
                && order.last() == Some(&(index - 1))
                && role(&*layers[index - 1]) == Role::Relu;
            if !reference && after_relu && role(&*layers[index]) == Role::MaxPool {
                // before the ReLU: [..., this layer, ReLU]
                order.insert(order.len() - 1, index);
                let fused = layers[index]
                    .accelerated()
                    .is_some_and(|a| a.fuse_relu(true));
                if fused {
                    order.pop();
                }
            } else {
                order.push(index);
            }
        }
        Plan { order, reference }
    }
}

/// The first layer's training forward, from the network's input.
pub(crate) fn forward_input<T: Float>(layer: &mut dyn Layer<T>, x: Input<T>) -> ArrayD<T> {
    match layer.accelerated() {
        Some(a) => a.forward_input(x),
        None => layer.forward(x.into_dense()),
    }
}

/// The first layer's inference forward, from the network's input.
pub(crate) fn predict_input<T: Float>(layer: &dyn Layer<T>, x: Input<T>) -> ArrayD<T> {
    match layer.accelerated_ref() {
        Some(a) => a.predict_input(x),
        None => layer.predict(x.into_dense()),
    }
}

/// Backward through the layers of `plan`, from the last down, starting from `dout` =
/// ∂L/∂(scores). In reference mode each layer's [`Layer::backward`] in turn, the first
/// layer's dx included.
pub(crate) fn backward<T: Float>(
    layers: &mut [Box<dyn Layer<T>>],
    plan: &Plan,
    mut dout: ArrayD<T>,
) {
    let order = &plan.order;
    if plan.reference {
        for &l in order.iter().rev() {
            dout = layers[l].backward(dout);
        }
        return;
    }
    let mut at = order.len();
    while at > 0 {
        at -= 1;
        let l = order[at];
        if at > 0 {
            let below = order[at - 1];
            let [upper, lower] = layers
                .get_disjoint_mut([l, below])
                .expect("the order holds each layer once");
            match unpooled(&mut **upper, dout) {
                // the layer below writes out what it reads
                Ok(dy) if at - 1 == 0 => return backward_params_from_unpooled(&mut **lower, dy),
                Ok(dy) => {
                    dout = backward_from_unpooled(&mut **lower, dy);
                    at -= 1;
                    continue;
                }
                Err(d) => dout = d,
            }
        }
        if at == 0 {
            return backward_params(&mut *layers[l], dout);
        }
        dout = layers[l].backward(dout);
    }
}

/// dx left unwritten by `layer`, or `dout` given back.
fn unpooled<T: Float>(
    layer: &mut dyn Layer<T>,
    dout: ArrayD<T>,
) -> Result<Unpooled<'_, T>, ArrayD<T>> {
    match layer.accelerated() {
        Some(a) => a.backward_unpooled(dout),
        None => Err(dout),
    }
}

fn backward_params<T: Float>(layer: &mut dyn Layer<T>, dout: ArrayD<T>) {
    match layer.accelerated() {
        Some(a) => a.backward_params(dout),
        None => {
            layer.backward(dout);
        }
    }
}

fn backward_from_unpooled<T: Float>(layer: &mut dyn Layer<T>, dy: Unpooled<'_, T>) -> ArrayD<T> {
    match layer.accelerated() {
        Some(a) => a.backward_from_unpooled(dy),
        None => layer.backward(dy.into_dense()),
    }
}

fn backward_params_from_unpooled<T: Float>(layer: &mut dyn Layer<T>, dy: Unpooled<'_, T>) {
    match layer.accelerated() {
        Some(a) => a.backward_params_from_unpooled(dy),
        None => {
            layer.backward(dy.into_dense());
        }
    }
}
