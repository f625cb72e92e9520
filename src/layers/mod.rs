//! Layers with hand-written forward and backward passes ("Deep Learning from Scratch", ch. 5).
//!
//! # The contract
//! ```text
//! forward(x)      y = f(x)            keeps what backward needs (training)
//! predict(x)      y = f(x)            keeps nothing; &self, so threads can share a network
//! backward(dy)    dx = ∂L/∂x          from dy = ∂L/∂y; fills the parameter gradients
//! ```
//! - backward takes `dout` by value: the caller gives it up, and the layer may write dx
//!   into its memory or keep it for its next output (the book's `Relu.backward` writes into
//!   a dout its caller still holds; here no one else can see it).
//! - One backward per forward: backward may hand on memory that forward kept (Affine's
//!   input becomes its dx), so that a steady-state training step allocates nothing.
//! - Parameter gradients live beside their parameters (`dw` beside `w`) and are
//!   **overwritten** by each backward, never accumulated.
//! - backward without a forward before it is a bug and panics saying so.

mod affine;
mod batch_norm;
mod convolution;
mod dropout;
mod pooling;
mod relu;
mod sigmoid;
mod softmax_loss;
mod tanh;

pub use affine::Affine;
pub use batch_norm::BatchNormalization;
pub use convolution::{Convolution, Window, col2im, im2col};
pub use dropout::Dropout;
pub use pooling::{PoolKind, Pooling, Unpooled};
pub use relu::Relu;
pub use sigmoid::Sigmoid;
pub use softmax_loss::{SoftmaxWithLoss, Targets, softmax};
pub use tanh::Tanh;

use ndarray::{Array2, ArrayD, ArrayViewMutD};

use crate::Float;
use crate::linalg::sparse::SparseRows;

/// What a network is fed: a dense array `(N, ...)`, or a batch of rows `(N, D)` given by its
/// non-zero entries (MNIST images are 80% background: the first layer then skips the zeros
/// without a dense copy ever being made).
#[derive(Clone, Debug)]
pub enum Input<T: Float> {
    Dense(ArrayD<T>),
    Sparse(SparseRows<T>),
}

impl<T: Float> Input<T> {
    /// The dense array, `(N, ...)`.
    pub fn into_dense(self) -> ArrayD<T> {
        match self {
            Input::Dense(x) => x,
            Input::Sparse(x) => Array2::from_shape_vec((x.nrows(), x.ncols()), x.to_dense())
                .expect("rows x cols entries")
                .into_dyn(),
        }
    }

    /// Number of samples, N.
    pub fn len(&self) -> usize {
        match self {
            Input::Dense(x) => x.shape().first().copied().unwrap_or(0),
            Input::Sparse(x) => x.nrows(),
        }
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Float> From<ArrayD<T>> for Input<T> {
    fn from(x: ArrayD<T>) -> Self {
        Input::Dense(x)
    }
}

impl<T: Float> From<Array2<T>> for Input<T> {
    fn from(x: Array2<T>) -> Self {
        Input::Dense(x.into_dyn())
    }
}

impl<T: Float> From<SparseRows<T>> for Input<T> {
    fn from(x: SparseRows<T>) -> Self {
        Input::Sparse(x)
    }
}

/// One learnable tensor of a layer and its gradient, by its short name (`"W"`, `"b"`).
pub struct Param<'a, T> {
    /// The layer-local name: `"W"`, `"b"`. The network numbers them (`W1`, `b1`, ...).
    pub name: &'static str,
    /// The parameter itself, writable so that an optimizer can update it.
    pub value: ArrayViewMutD<'a, T>,
    /// ∂L/∂value from the last backward; writable so that the network can add weight decay's
    /// term and training can clip it.
    pub grad: ArrayViewMutD<'a, T>,
}

/// A layer of the network: forward and backward side by side.
pub trait Layer<T: Float>: Send + Sync + BoxedClone<T> {
    /// The kind, used to name the layer in a network (`"Affine"` → `Affine1`).
    fn kind(&self) -> &'static str;

    /// Training forward pass: computes the output and keeps what `backward` needs.
    fn forward(&mut self, x: ArrayD<T>) -> ArrayD<T>;

    /// Inference forward pass: the same output, nothing kept.
    fn predict(&self, x: ArrayD<T>) -> ArrayD<T>;

    /// [`Layer::forward`] for a network's input, which may come as non-zero entries. Layers
    /// that can use them directly (Affine) override it; the others get the dense array.
    fn forward_input(&mut self, x: Input<T>) -> ArrayD<T> {
        self.forward(x.into_dense())
    }

    /// [`Layer::predict`] for a network's input; see [`Layer::forward_input`].
    fn predict_input(&self, x: Input<T>) -> ArrayD<T> {
        self.predict(x.into_dense())
    }

    /// Backward pass: ∂L/∂x from `dout` = ∂L/∂y; overwrites the parameter gradients. The
    /// layer may reuse `dout`'s memory.
    fn backward(&mut self, dout: ArrayD<T>) -> ArrayD<T>;

    /// Backward pass for the first layer of a network, whose ∂L/∂x nobody needs: only the
    /// parameter gradients. Layers that can skip the work override it.
    fn backward_params(&mut self, dout: ArrayD<T>) {
        self.backward(dout);
    }

    /// Backward pass that leaves dx unwritten, for a layer whose dx is mostly zeros (2x2 max
    /// pooling, [`Unpooled`]): the layer below then writes out what it reads, one image at a
    /// time ([`Layer::backward_from_unpooled`]). Layers that cannot give `dout` back,
    /// nothing done (the default).
    fn backward_unpooled(&mut self, dout: ArrayD<T>) -> Result<Unpooled<'_, T>, ArrayD<T>> {
        Err(dout)
    }

    /// [`Layer::backward`] from a dout left unwritten by the layer above
    /// ([`Layer::backward_unpooled`]). Default: dout written out whole, then `backward`.
    fn backward_from_unpooled(&mut self, dout: Unpooled<'_, T>) -> ArrayD<T> {
        self.backward(dout.into_dense())
    }

    /// [`Layer::backward_params`] from a dout left unwritten by the layer above. Default:
    /// dout written out whole, then `backward_params`.
    fn backward_params_from_unpooled(&mut self, dout: Unpooled<'_, T>) {
        self.backward_params(dout.into_dense())
    }

    /// True for a layer that a ReLU just before it may follow instead, with the same output
    /// and the same gradients to the bit: max pooling, since max(relu(a), relu(b)) =
    /// relu(max(a, b)) and the gradient reaches the same pixel (see [`crate::Network::push`]).
    fn commutes_with_relu(&self) -> bool {
        false
    }

    /// Asks the layer to apply the ReLU that runs right after it in its own pass over the
    /// values, `y = relu(f(x))`, and to let through backward only the gradients where that
    /// ReLU would (`f(x) > 0`, or NaN): the same bits as the two layers one after the other,
    /// without a second walk over y and dy. True when the layer now does it (the network then
    /// skips the ReLU, see [`crate::Network::push`]); false, and nothing changed, for layers
    /// that cannot. Default: false.
    fn fuse_relu(&mut self) -> bool {
        false
    }

    /// Layers that draw random numbers in forward (Dropout) reuse their last draw while `hold`
    /// is true, so that the loss is a fixed function of x and the parameters (for gradient
    /// checks). Other layers ignore it.
    fn hold_mask(&mut self, _hold: bool) {}

    /// Threads a training forward and backward may use (layers with enough work split their
    /// batch; the others ignore it). Results do not depend on it. Default: 1.
    fn set_threads(&mut self, _threads: usize) {}

    /// This layer as one line of the layer description ([`crate::describe`]): what
    /// rebuilds it, weights aside (`affine 100`, `conv 30 5 stride=1 pad=0`, `relu`).
    fn describe(&self) -> String;

    /// State that is not learned by gradient but belongs with the weights (batch norm's
    /// running statistics), by short name (`"running_mean"`).
    fn buffers(&mut self) -> Vec<(&'static str, ArrayViewMutD<'_, T>)> {
        Vec::new()
    }

    /// The state of the layer's own random generator (Dropout's), for checkpoints.
    fn rng_state(&self) -> Option<[u64; 4]> {
        None
    }

    /// Restores what [`Layer::rng_state`] gave.
    fn set_rng_state(&mut self, _state: [u64; 4]) {}

    /// Hands each learnable parameter with its gradient to `f`, in a fixed order. Allocates
    /// nothing: an optimizer step walks the parameters this way.
    fn visit_params<'a>(&'a mut self, _f: &mut dyn FnMut(Param<'a, T>)) {}

    /// The learnable parameters with their gradients, in the order of
    /// [`Layer::visit_params`].
    fn params(&mut self) -> Vec<Param<'_, T>> {
        let mut params = Vec::new();
        self.visit_params(&mut |p| params.push(p));
        params
    }
}

/// A copy of a boxed layer, so that a [`crate::Network`] can be cloned (training evaluates a
/// copy of it in the background). Every layer that is `Clone` has it.
pub trait BoxedClone<T: Float> {
    fn boxed_clone(&self) -> Box<dyn Layer<T>>;
}

impl<T: Float, L: Layer<T> + Clone + 'static> BoxedClone<T> for L {
    fn boxed_clone(&self) -> Box<dyn Layer<T>> {
        Box::new(self.clone())
    }
}

impl<T: Float> Clone for Box<dyn Layer<T>> {
    fn clone(&self) -> Self {
        self.boxed_clone()
    }
}
