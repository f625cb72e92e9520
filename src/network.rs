//! An ordered list of layers followed by [`SoftmaxWithLoss`]: the book's `TwoLayerNet`
//! generalised (`self.layers = OrderedDict()` ... `self.lastLayer = SoftmaxWithLoss()`).

use ndarray::{ArrayD, ArrayViewMutD, Dimension, IxDyn};

use crate::Float;
use crate::gradcheck::{self, GradCheckRow};
use crate::layers::{Input, Layer, Param, SoftmaxWithLoss, Targets};
use crate::optim::Optimizer;
use crate::plan::{self, Plan};

/// The name the network gave a layer (`Affine1`) and the number its parameters carry
/// (`W1`, `b1`).
#[derive(Clone)]
struct Named {
    name: String,
    number: usize,
    param_names: Vec<String>, // `W1`, `b1`, in the layer's order
}

/// A feed-forward network: layers in order, then softmax with cross-entropy.
///
/// Parameters are named as in the book: the n-th layer that has a weight `W` is numbered n
/// (`W1`, `b1`, `W2`, ...); a parameter layer without a weight (batch norm) takes the number of
/// the weight layer before it (`gamma1`, `beta1`).
#[derive(Clone)]
pub struct Network<T: Float = f32> {
    layers: Vec<Box<dyn Layer<T>>>,
    names: Vec<Named>, // one for each layer
    /// The order the passes run the layers in, and the rewrites ([`crate::plan`]).
    plan: Plan,
    last_layer: SoftmaxWithLoss<T>,
    weight_layers: usize,
    weight_decay: f64,
    input_shape: Option<Vec<usize>>,
    /// Whether forward and backward behave as in training ([`Network::set_training`]).
    training: bool,
}

impl<T: Float> Default for Network<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> Network<T> {
    /// An empty network (only the loss layer).
    pub fn new() -> Self {
        Network {
            layers: Vec::new(),
            names: Vec::new(),
            plan: Plan::default(),
            last_layer: SoftmaxWithLoss::new(),
            weight_layers: 0,
            weight_decay: 0.0,
            input_shape: None,
            training: true,
        }
    }

    /// The shape of one sample the first layer expects, such as `[1, 28, 28]` for a
    /// convolution on MNIST: flat (N, D) or sparse input is then given that shape,
    /// (N, 1, 28, 28). Without it, the input goes to the first layer as it comes.
    pub fn set_input_shape(&mut self, shape: &[usize]) -> &mut Self {
        self.input_shape = Some(shape.to_vec());
        self
    }

    /// The input as the first layer expects it (see [`Network::set_input_shape`]).
    #[track_caller]
    fn shaped(&self, x: Input<T>) -> Input<T> {
        let Some(shape) = &self.input_shape else {
            return x;
        };
        let n = x.len();
        let x = x.into_dense();
        // (N, ...shape); NOTE: IxDyn keeps up to 4 axes inline, so this allocates nothing for
        // an image batch (N, C, H, W)
        let mut full = IxDyn::zeros(shape.len() + 1);
        full[0] = n;
        full.slice_mut()[1..].copy_from_slice(shape);
        let x = if x.is_standard_layout() {
            x
        } else {
            x.as_standard_layout().into_owned()
        };
        let got = x.raw_dim();
        Input::Dense(x.into_shape_with_order(full).unwrap_or_else(|_| {
            panic!("input {:?} does not fit samples of {shape:?}", got.slice())
        }))
    }

    /// L2 weight decay as the book adds it (ch. 6.4.1): `½·λ·Σ‖W‖²` over the weights (not the
    /// biases, nor batch norm's γ and β) is added to the loss, and `λ·W` to each weight's
    /// gradient.
    pub fn set_weight_decay(&mut self, lambda: f64) -> &mut Self {
        self.weight_decay = lambda;
        self
    }

    /// λ of the L2 weight decay (0 when off).
    pub fn weight_decay(&self) -> f64 {
        self.weight_decay
    }

    /// ½·λ·Σ‖W‖² over the weights.
    fn decay_loss(&mut self) -> T {
        if self.weight_decay == 0.0 {
            return T::zero();
        }
        let half_lambda = T::of(0.5 * self.weight_decay);
        let mut sum = T::zero();
        self.visit_params(&mut |_, p| {
            if p.name == "W" {
                sum = sum + p.value.iter().map(|&w| w * w).sum::<T>();
            }
        });
        half_lambda * sum
    }

    /// Appends a layer, named after its kind and position (`Affine1`, `Relu1`, `Affine2`),
    /// in the network's behaviour ([`Network::set_training`]).
    ///
    /// The passes run the layers in the order of the plan ([`crate::plan`]): the book's
    /// order, with rewrites that give the same bits (a max pooling right after a ReLU runs
    /// before it and may take the ReLU in). Names, descriptions and checkpoints keep the
    /// layers in the order they were pushed.
    pub fn push(&mut self, mut layer: impl Layer<T> + 'static) -> &mut Self {
        let kind = layer.kind();
        let same_kind = self.layers.iter().filter(|l| l.kind() == kind).count();
        if layer.params().iter().any(|p| p.name == "W") {
            self.weight_layers += 1;
        }
        let number = self.weight_layers.max(1);
        let param_names = layer
            .params()
            .iter()
            .map(|p| format!("{}{number}", p.name))
            .collect();
        self.names.push(Named {
            name: format!("{kind}{}", same_kind + 1),
            number,
            param_names,
        });
        layer.set_training(self.training);
        self.layers.push(Box::new(layer));
        self.plan = Plan::new(&mut self.layers, self.plan.reference);
        self
    }

    /// Runs the book's code alone (`true`): every layer in order, every dx written, no
    /// kernel and no rewrite; or the fast paths (`false`, the default). The two agree to
    /// rounding (`tests/reference.rs`).
    pub fn set_reference(&mut self, reference: bool) -> &mut Self {
        // NOTE: the softmax's vector exp stays: it gives the bits of `exp` on every input
        self.plan = Plan::new(&mut self.layers, reference);
        self
    }

    /// Whether the network runs the book's code alone ([`Network::set_reference`]).
    pub fn is_reference(&self) -> bool {
        self.plan.reference
    }

    /// The layers' names in order (`["Affine1", "Relu1", "Affine2"]`).
    pub fn layer_names(&self) -> Vec<&str> {
        self.names.iter().map(|l| l.name.as_str()).collect()
    }

    /// Class scores for a batch (inference: nothing is kept, `&self`).
    /// `x: (N, ...) -> (N, C)`, dense or as non-zero entries ([`Input`]).
    pub fn predict(&self, x: impl Into<Input<T>>) -> ArrayD<T> {
        match self.plan.order.split_first() {
            None => x.into().into_dense(),
            Some((&first, rest)) => {
                let y = plan::predict_input(&*self.layers[first], self.shaped(x.into()));
                rest.iter().fold(y, |x, &l| self.layers[l].predict(x))
            }
        }
    }

    /// Training forward pass to the scores, keeping what backward needs.
    pub fn forward(&mut self, x: impl Into<Input<T>>) -> ArrayD<T> {
        let x = self.shaped(x.into());
        let layers = &mut self.layers;
        match self.plan.order.split_first() {
            None => x.into_dense(),
            Some((&first, rest)) => {
                let y = plan::forward_input(&mut *layers[first], x);
                rest.iter().fold(y, |x, &l| layers[l].forward(x))
            }
        }
    }

    /// The loss of the training forward pass (dropout drawing, batch norm on the batch's
    /// statistics), weight decay included: the function [`Network::backprop`] differentiates.
    pub fn loss(&mut self, x: impl Into<Input<T>>, t: Targets<'_, T>) -> T {
        let scores = self.forward(x);
        self.last_layer.forward_owned(scores, t) + self.decay_loss()
    }

    /// The loss in inference mode (no dropout, batch norm on its running statistics), weight
    /// decay included: for validation and test sets.
    pub fn eval_loss(&mut self, x: impl Into<Input<T>>, t: Targets<'_, T>) -> T {
        let scores = self.predict(x);
        SoftmaxWithLoss::new().forward_owned(scores, t) + self.decay_loss()
    }

    /// Fraction of samples whose highest score is the label.
    pub fn accuracy(&self, x: impl Into<Input<T>>, labels: &[usize]) -> f64 {
        let n = labels.len();
        if n == 0 {
            return 0.0;
        }
        correct_predictions(&self.predict(x), labels) as f64 / n as f64
    }

    /// Forward, loss, and backward through every layer: fills each parameter's gradient and
    /// returns the loss (the book's `gradient`, without the copies).
    pub fn backprop(&mut self, x: impl Into<Input<T>>, t: Targets<'_, T>) -> T {
        let loss = self.loss(x, t);
        let dout = self.last_layer.backward(T::one());
        // from the last layer down, as the plan runs them
        plan::backward(&mut self.layers, &self.plan, dout);
        if self.weight_decay != 0.0 {
            let lambda = T::of(self.weight_decay);
            self.visit_params(&mut |_, mut p| {
                if p.name == "W" {
                    p.grad.zip_mut_with(&p.value, |g, &w| *g = *g + lambda * w); // ∂(½λ‖W‖²)/∂W
                }
            });
        }
        loss
    }

    /// The book's `gradient(x, t)`: backprop, then a copy of every gradient by name.
    pub fn gradient(
        &mut self,
        x: impl Into<Input<T>>,
        t: Targets<'_, T>,
    ) -> Vec<(String, ArrayD<T>)> {
        self.backprop(x, t);
        self.params()
            .into_iter()
            .map(|(n, p)| (n, p.grad.to_owned()))
            .collect()
    }

    /// The book's `numerical_gradient(x, t)`: central differences of [`Network::loss`] for every
    /// parameter entry (two forward passes each: slow, for checking only).
    pub fn numerical_gradient(
        &mut self,
        x: &ArrayD<T>,
        t: Targets<'_, T>,
        h: T,
    ) -> Vec<(String, ArrayD<T>)> {
        let names: Vec<String> = self.params().into_iter().map(|(n, _)| n).collect();
        let mut grads = Vec::new();
        for (p, name) in names.into_iter().enumerate() {
            let mut value = self.params().swap_remove(p).1.value.to_owned();
            let grad = gradcheck::numerical_gradient(
                |v| {
                    self.params().swap_remove(p).1.value.assign(v);
                    self.loss(x.clone(), t)
                },
                &mut value,
                h,
            );
            self.params().swap_remove(p).1.value.assign(&value); // the original, exactly
            grads.push((name, grad));
        }
        grads
    }

    /// Backprop against the numerical gradient, one report row per parameter.
    pub fn gradient_check(&mut self, x: &ArrayD<T>, t: Targets<'_, T>, h: T) -> Vec<GradCheckRow> {
        let numeric = self.numerical_gradient(x, t, h);
        let analytic = self.gradient(x.clone(), t);
        analytic
            .iter()
            .zip(&numeric)
            .map(|((name, a), (_, n))| gradcheck::compare(name, a, n))
            .collect()
    }

    /// Every parameter with its gradient, named `W1`, `b1`, ... in layer order.
    pub fn params(&mut self) -> Vec<(String, Param<'_, T>)> {
        let mut params = Vec::new();
        self.visit_params(&mut |name, p| params.push((name.to_string(), p)));
        params
    }

    /// Hands every parameter with its gradient and name to `f`, in the order of
    /// [`Network::params`], allocating nothing.
    pub fn visit_params<'a>(&'a mut self, f: &mut dyn FnMut(&'a str, Param<'a, T>)) {
        for (layer, named) in self.layers.iter_mut().zip(&self.names) {
            let mut names = named.param_names.iter();
            layer.visit_params(&mut |p| f(names.next().expect("one name per parameter"), p));
        }
    }

    /// One optimizer step over every parameter from its gradient (the last
    /// [`Network::backprop`]'s).
    pub fn update(&mut self, optimizer: &mut dyn Optimizer<T>) {
        optimizer.begin_step();
        self.visit_params(&mut |name, p| optimizer.update(name, p));
    }

    /// The layers as a layer description ([`crate::describe`]), one line each: with the
    /// sample shape and class count, what rebuilds this network (weights aside).
    pub fn description(&self) -> String {
        let lines: Vec<String> = self.layers.iter().map(|l| l.describe()).collect();
        lines.join("\n")
    }

    /// Whether the first layer skips the zeros of an input given as non-zero entries
    /// ([`Input::Sparse`]): an affine layer on flat samples. Others take images dense.
    pub fn takes_sparse_input(&self) -> bool {
        self.input_shape.is_none()
            && self
                .layers
                .first()
                .and_then(|l| l.accelerated_ref())
                .is_some_and(|a| a.takes_sparse_input())
    }

    /// The shape of one sample, if set ([`Network::set_input_shape`]).
    pub fn input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    /// The layers' non-learned state (batch norm's running statistics), named as the
    /// parameters: `running_mean1`, `running_var1`.
    pub fn buffers(&mut self) -> Vec<(String, ArrayViewMutD<'_, T>)> {
        self.layers
            .iter_mut()
            .zip(&self.names)
            .flat_map(|(l, named)| {
                let number = named.number;
                l.buffers()
                    .into_iter()
                    .map(move |(name, b)| (format!("{name}{number}"), b))
            })
            .collect()
    }

    /// The states of the layers' own generators (dropout's), in layer order.
    pub fn rng_states(&self) -> Vec<[u64; 4]> {
        self.layers.iter().filter_map(|l| l.rng_state()).collect()
    }

    /// Restores [`Network::rng_states`]; false (and nothing changed) when the count differs.
    pub fn set_rng_states(&mut self, states: &[[u64; 4]]) -> bool {
        if states.len() != self.rng_states().len() {
            return false;
        }
        let mut states = states.iter();
        for l in &mut self.layers {
            if l.rng_state().is_some() {
                l.set_rng_state(*states.next().expect("counted"));
            }
        }
        true
    }

    /// Training behaviour in [`Network::forward`] and backward (`true`, the default), or
    /// inference's ([`Layer::set_training`]: no dropout, batch norm on its running
    /// statistics), so that a backward pass differentiates what [`Network::predict`]
    /// computes.
    pub fn set_training(&mut self, training: bool) -> &mut Self {
        self.layers
            .iter_mut()
            .for_each(|l| l.set_training(training));
        self.training = training;
        self
    }

    /// Each layer's output for `x`, in inference, in the order the layers were pushed (the
    /// book's order): `[("Conv1", (N, 30, 24, 24)), ("Relu1", ...), ...]`, the last being the
    /// class scores.
    pub fn activations(&self, x: impl Into<Input<T>>) -> Vec<(String, ArrayD<T>)> {
        let mut outputs = Vec::with_capacity(self.layers.len());
        let mut x = self.shaped(x.into());
        for (layer, named) in self.layers.iter().zip(&self.names) {
            let y = plan::predict_input(&**layer, x);
            outputs.push((named.name.clone(), y.clone()));
            x = Input::Dense(y);
        }
        outputs
    }

    /// The gradient with respect to the input of `Σ dscores · scores`, the scores as
    /// [`Network::predict`] computes them: for a `dscores` that is 1 at class k and 0
    /// elsewhere, how each pixel moves class k's score (a saliency map). The book's loop,
    /// every layer's backward carried down to the input, in inference behaviour
    /// ([`Network::set_training`]). `x: (N, ...)`, `dscores: (N, C) -> (N, ...sample shape)`.
    /// The parameter gradients are overwritten on the way.
    pub fn input_gradient(&mut self, x: impl Into<Input<T>>, dscores: ArrayD<T>) -> ArrayD<T> {
        let (reference, training) = (self.plan.reference, self.training);
        self.set_reference(true).set_training(false);
        let x = self.shaped(x.into()).into_dense();
        let scores = self.layers.iter_mut().fold(x, |x, l| l.forward(x));
        assert_eq!(
            scores.shape(),
            dscores.shape(),
            "input_gradient: dscores must have the shape of the scores"
        );
        let dx = self
            .layers
            .iter_mut()
            .rev()
            .fold(dscores, |d, l| l.backward(d));
        self.set_training(training).set_reference(reference);
        dx
    }

    /// While `hold` is true, dropout layers reuse their last masks (for gradient checks).
    pub fn hold_dropout_masks(&mut self, hold: bool) {
        self.layers.iter_mut().for_each(|l| l.hold_mask(hold));
    }

    /// Threads each layer may use in training forward and backward; the results do not
    /// depend on it.
    pub fn set_threads(&mut self, threads: usize) -> &mut Self {
        for l in &mut self.layers {
            if let Some(a) = l.accelerated() {
                a.set_threads(threads);
            }
        }
        self
    }

    /// Total number of learnable scalars.
    pub fn num_params(&mut self) -> usize {
        self.params().iter().map(|(_, p)| p.value.len()).sum()
    }
}

/// How many rows of `scores` (N, C) have their maximum at the label (first maximum on ties,
/// like NumPy's `argmax`).
pub fn correct_predictions<T: Float>(scores: &ArrayD<T>, labels: &[usize]) -> usize {
    assert_eq!(
        scores.shape()[0],
        labels.len(),
        "one label per row of scores"
    );
    // NOTE: rows as slices: through the n-dimensional views of `axis_iter` this was 6% of
    // the book's evaluation (70 000 images through 784-50-10, perf). Scores come in standard
    // layout from `predict`; another layout is copied.
    let scores = scores.as_standard_layout();
    let flat = scores.as_slice().expect("standard layout");
    let classes = flat.len() / labels.len().max(1);
    labels
        .iter()
        .enumerate()
        .filter(|&(i, &t)| argmax(flat[i * classes..(i + 1) * classes].iter().copied()) == t)
        .count()
}

/// The index of the first maximum (NumPy's `argmax`).
pub(crate) fn argmax<T: Float>(values: impl Iterator<Item = T>) -> usize {
    let mut best = (0, T::neg_infinity());
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use crate::layers::{Affine, Convolution, PoolKind, Pooling, Relu};
    use crate::plan::Accelerated;
    use ndarray::{Array1, Array2, Array4, ShapeBuilder, arr2};

    /// conv -> relu -> max pool -> affine: the network runs the pooling before the ReLU (and
    /// a 2x2 pooling applies the ReLU itself); the same layers run by hand in the book's order
    /// give the same loss, scores and gradients, bit for bit.
    #[test]
    fn max_pooling_after_relu_runs_first_with_the_same_bits() {
        let mut rng = Rng::new(7);
        let mut normal = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.normal()).collect() };
        let w1 = Array4::from_shape_vec((4, 1, 3, 3), normal(36)).unwrap();
        let b1 = Array1::from_vec(normal(4)) * 0.1;
        // small integers besides normals: ties and windows that are all negative
        let mut x = normal(5 * 8 * 8);
        x[..64].iter_mut().for_each(|v| *v = (*v * 2.0).round());
        let x = Array4::from_shape_vec((5, 1, 8, 8), x).unwrap().into_dyn();
        let labels = [0, 1, 2, 1, 0];
        // (pooling, the features it leaves of the 4x6x6 convolution, the order the net runs)
        let pools = [
            (Pooling::max(2, 2, 2), 4 * 3 * 3, vec![0, 2, 3]), // the ReLU fused in
            (
                Pooling::new(PoolKind::Max, 2, 2, 2, 1),
                4 * 4 * 4,
                vec![0, 2, 1, 3],
            ),
        ];
        for (pooling, features, order) in pools {
            let w2 = Array2::from_shape_vec((features, 3), normal(features * 3)).unwrap();
            let b2 = Array1::from_vec(normal(3));
            let mut net = Network::<f64>::new();
            net.push(Convolution::new(w1.clone(), b1.clone(), 1, 0))
                .push(Relu::new())
                .push(pooling.clone())
                .push(Affine::new(w2.clone(), b2.clone()));
            assert_eq!(net.plan.order, order);
            assert_eq!(net.layer_names(), ["Conv1", "Relu1", "Pool1", "Affine1"]);
            let loss = net.backprop(x.clone(), Targets::Labels(&labels));
            let scores = net.predict(x.clone());

            let (mut conv, mut relu, mut pool, mut affine) = (
                Convolution::new(w1.clone(), b1.clone(), 1, 0),
                Relu::new(),
                pooling,
                Affine::new(w2, b2),
            );
            let y = affine.forward(pool.forward(relu.forward(conv.forward(x.clone()))));
            assert_eq!(scores, y);
            let mut last = SoftmaxWithLoss::new();
            let book_loss = last.forward_owned(y, Targets::Labels(&labels));
            assert_eq!(loss.to_bits(), book_loss.to_bits());
            let d = relu_backward(
                &mut relu,
                pool.backward(affine.backward(last.backward(1.0))),
            );
            conv.backward_params(d);
            let grads: Vec<(String, ArrayD<f64>)> = net
                .params()
                .into_iter()
                .map(|(name, p)| (name, p.grad.to_owned()))
                .collect();
            let book = [
                ("W1", conv.dw.into_dyn()),
                ("b1", conv.db.into_dyn()),
                ("W2", affine.dw.into_dyn()),
                ("b2", affine.db.into_dyn()),
            ];
            for ((name, grad), (book_name, book_grad)) in grads.iter().zip(&book) {
                assert_eq!(name, book_name);
                assert_eq!(grad, book_grad, "{name}");
            }
        }
    }

    /// The first maximum wins ties, NaN never wins; any layout of the scores counts the same.
    #[test]
    fn correct_predictions_by_hand_in_any_layout() {
        let scores = arr2(&[
            [0.1, 0.7, 0.2],
            [0.5, 0.5, 0.0],
            [f64::NAN, 0.1, 0.3],
            [-1.0, -2.0, -0.5],
        ]);
        let labels = [1, 0, 2, 1];
        assert_eq!(correct_predictions(&scores.clone().into_dyn(), &labels), 3);
        let mut column_major = Array2::zeros((4, 3).f());
        column_major.assign(&scores);
        let column_major = column_major.into_dyn();
        assert!(column_major.as_slice().is_none());
        assert_eq!(correct_predictions(&column_major, &labels), 3);
        assert_eq!(
            correct_predictions(&ArrayD::<f64>::zeros(vec![0, 3]), &[]),
            0
        );
    }

    /// Two poolings, each after a ReLU: each is run before its ReLU and takes it in.
    #[test]
    fn every_relu_before_a_2x2_max_pooling_is_fused() {
        let mut rng = Rng::new(8);
        let mut normal = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.normal()).collect() };
        let w = |n: usize, c: usize, v: Vec<f64>| Array4::from_shape_vec((n, c, 3, 3), v).unwrap();
        let mut net = Network::<f64>::new();
        net.push(Convolution::new(
            w(2, 1, normal(18)),
            Array1::zeros(2),
            1,
            1,
        ))
        .push(Relu::new())
        .push(Pooling::max(2, 2, 2))
        .push(Convolution::new(
            w(2, 2, normal(36)),
            Array1::zeros(2),
            1,
            1,
        ))
        .push(Relu::new())
        .push(Pooling::max(2, 2, 2));
        assert_eq!(net.plan.order, [0, 2, 3, 5]);
    }

    /// Every kind of layer (batch norm 1-D and 2-D with running statistics away from 0 and
    /// 1, dropout, overlapping and padded poolings): the input gradient of Σ r·predict(x) is
    /// the central difference of predict, in f64; training behaviour and the fast plan come
    /// back after it, and the run goes on with the bits of one that never asked.
    #[test]
    fn input_gradient_is_the_numerical_gradient_of_predict() {
        let text = "conv 4 3 pad=1\nbatchnorm\nrelu\npool max 2 stride=2\nconv 3 3\ntanh\n\
                    pool avg 2 stride=1 pad=1\naffine 12\nbatchnorm\nsigmoid\ndropout 0.3\n\
                    affine classes";
        let mut rng = Rng::new(21);
        let mut net =
            crate::describe::from_description::<f64>(text, (1, 8, 8), 3, &mut rng).unwrap();
        net.set_input_shape(&[1, 8, 8]);
        let mut x = ArrayD::from_shape_fn(vec![2, 64], |_| rng.normal());
        for _ in 0..3 {
            net.backprop(x.clone(), Targets::Labels(&[0, 2])); // running statistics move
        }
        let mut twin = net.clone();
        let r = ArrayD::from_shape_fn(vec![2, 3], |_| rng.normal());
        let dx = net.input_gradient(x.clone(), r.clone());
        assert_eq!(dx.shape(), [2, 1, 8, 8]);
        let numeric =
            gradcheck::numerical_gradient(|x| (net.predict(x.clone()) * &r).sum(), &mut x, 1e-5);
        let row = gradcheck::compare(
            "x",
            &dx.into_shape_with_order(vec![2, 64]).unwrap(),
            &numeric,
        );
        assert!(row.max_rel_err < 1e-6, "{row}");
        assert!(!net.is_reference());
        let (a, b) = (
            net.backprop(x.clone(), Targets::Labels(&[1, 0])),
            twin.backprop(x.clone(), Targets::Labels(&[1, 0])),
        );
        assert_eq!(a.to_bits(), b.to_bits());
    }

    /// One output per layer, in the order pushed; the last is what predict gives.
    #[test]
    fn activations_end_in_the_scores() {
        let mut rng = Rng::new(22);
        let text = "conv 2 3\nrelu\npool max 2 stride=2\naffine classes";
        let mut net =
            crate::describe::from_description::<f64>(text, (1, 6, 6), 4, &mut rng).unwrap();
        net.set_input_shape(&[1, 6, 6]);
        let x = ArrayD::from_shape_fn(vec![3, 36], |_| rng.normal());
        let outputs = net.activations(x.clone());
        let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Conv1", "Relu1", "Pool1", "Affine1"]);
        assert_eq!(outputs[0].1.shape(), [3, 2, 4, 4]);
        assert_eq!(outputs[2].1.shape(), [3, 2, 2, 2]);
        assert!(outputs[1].1.iter().all(|&v| v >= 0.0));
        assert_eq!(outputs[3].1, net.predict(x));
    }

    fn relu_backward(relu: &mut Relu, d: ArrayD<f64>) -> ArrayD<f64> {
        Layer::<f64>::backward(relu, d)
    }
}
