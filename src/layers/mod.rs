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
//!
//! The layers are the book's algorithms and nothing else: safe Rust (the crate forbids
//! anything else here), no processor features. Where a faster kernel applies (the crate's
//! `kernels` module), a layer calls it in one line that names the reference it must equal;
//! `--reference` (or [`crate::Network::set_reference`]) runs the book's code alone.

mod affine;
mod batch_norm;
pub(crate) mod convolution;
mod dropout;
mod pooling;
mod relu;
mod sigmoid;
mod softmax_loss;
mod tanh;

pub use affine::Affine;
pub use batch_norm::BatchNormalization;
pub use convolution::{Convolution, Window, col2im, im2col};
pub(crate) use convolution::{col2im_image, im2col_image};
pub use dropout::Dropout;
pub use pooling::{PoolKind, Pooling};
pub use relu::Relu;
pub use sigmoid::Sigmoid;
pub use softmax_loss::{SoftmaxWithLoss, Targets, softmax};
pub use tanh::Tanh;

use ndarray::{Array2, ArrayD, ArrayViewMutD};

use crate::Float;
use crate::kernels::sparse::SparseRows;
use crate::plan::Accelerated;

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

/// A layer of the network: forward and backward side by side. This is all a layer of your
/// own implements (`examples/custom_layer.rs`); the built-in layers also have fast paths,
/// which the network reaches through [`Layer::accelerated`] and a layer of your own need
/// not know about.
pub trait Layer<T: Float>: Send + Sync + BoxedClone<T> {
    /// The kind, used to name the layer in a network (`"Affine"` → `Affine1`).
    fn kind(&self) -> &'static str;

    /// Training forward pass: computes the output and keeps what `backward` needs.
    fn forward(&mut self, x: ArrayD<T>) -> ArrayD<T>;

    /// Inference forward pass: the same output, nothing kept.
    fn predict(&self, x: ArrayD<T>) -> ArrayD<T>;

    /// Backward pass: ∂L/∂x from `dout` = ∂L/∂y; overwrites the parameter gradients. The
    /// layer may reuse `dout`'s memory.
    fn backward(&mut self, dout: ArrayD<T>) -> ArrayD<T>;

    /// This layer as one line of the layer description ([`crate::describe`]): what
    /// rebuilds it, weights aside (`affine 100`, `conv 30 5 stride=1 pad=0`, `relu`).
    fn describe(&self) -> String;

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

    /// State that is not learned by gradient but belongs with the weights (batch norm's
    /// running statistics), by short name (`"running_mean"`), for checkpoints.
    fn buffers(&mut self) -> Vec<(&'static str, ArrayViewMutD<'_, T>)> {
        Vec::new()
    }

    /// The state of the layer's own random generator (Dropout's), for checkpoints.
    fn rng_state(&self) -> Option<[u64; 4]> {
        None
    }

    /// Restores what [`Layer::rng_state`] gave.
    fn set_rng_state(&mut self, _state: [u64; 4]) {}

    /// Layers that draw random numbers in forward (Dropout) reuse their last draw while `hold`
    /// is true, so that the loss is a fixed function of x and the parameters (for gradient
    /// checks). Other layers ignore it.
    fn hold_mask(&mut self, _hold: bool) {}

    /// Training behaviour in forward and backward (`true`, the default), or inference's
    /// (`false`): dropout then passes everything and batch norm normalizes by its running
    /// statistics, leaving them as they are, and backward differentiates that function (the
    /// gradient of a trained model's output with respect to its input). Layers that behave
    /// the same either way ignore it; [`Layer::predict`] always behaves as inference.
    fn set_training(&mut self, _training: bool) {}

    /// The layer's fast paths and what the network's plan may rewrite around it
    /// ([`crate::plan`]); none for a layer of your own (the default).
    #[doc(hidden)]
    fn accelerated(&mut self) -> Option<&mut dyn Accelerated<T>> {
        None
    }

    /// [`Layer::accelerated`] for the inference path.
    #[doc(hidden)]
    fn accelerated_ref(&self) -> Option<&dyn Accelerated<T>> {
        None
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
