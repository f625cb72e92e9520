//! Fully connected layer: `y = x·W + b`.

use ndarray::{Array1, Array2, ArrayD, ArrayView2, Ix2, IxDyn};

use super::{Input, Layer, Param};
use crate::Float;
use crate::kernels::sparse::SparseRows;
use crate::kernels::{Lhs, SPARSE_ZERO_FRACTION, matmul_nt};
use crate::plan::Accelerated;

/// Affine (fully connected) layer.
///
/// # Shapes
/// `x: (N, D_in) -> (N, D_out)`. An N-D input `(N, d1, d2, ...)` is flattened to
/// `(N, d1·d2·...)` as the book does, and `dx` gets the original shape back.
///
/// # Gradient
/// ```text
/// y  = x·W + b
/// dx = dy·Wᵀ          (N, D_in)
/// dW = xᵀ·dy          (D_in, D_out)
/// db = Σₙ dy[n, :]    (D_out)
/// ```
///
/// # Fast path
/// Unless the layer is in reference mode, the products go to [`crate::kernels`]: the packed
/// product split over threads, and for a mostly-zero input (MNIST) the zero-skipping
/// sparse products. They must equal the plain products of `forward_reference` /
/// `backward_reference` (`kernels::reference_tests`).
///
/// # Memory
/// Nothing is allocated in a training step once the batch size is steady: the input is kept
/// for dW and its memory then receives dx; the dout that backward is given becomes the next
/// forward's y; the input's non-zero index and its transpose are rebuilt in place.
#[derive(Clone, Debug)]
pub struct Affine<T: Float = f32> {
    pub w: Array2<T>,           // (D_in, D_out)
    pub b: Array1<T>,           // (D_out)
    pub dw: Array2<T>,          // (D_in, D_out)
    pub db: Array1<T>,          // (D_out)
    x: Option<Array2<T>>,       // (N, D_in) the flattened input, kept for dW; becomes dx
    nz: Option<SparseRows<T>>,  // (N, D_in) its non-zero entries, when it is mostly zeros
    sparse: bool,               // whether the last forward went through `nz`
    nz_t: SparseRows<T>,        // (D_in, N) the transpose of `nz`, for dW
    x_shape: Option<IxDyn>,     // the input's original shape, for dx
    y_spare: Option<Array2<T>>, // (N, D_out) memory for the next y (the last dout)
    threads: usize,
    reference: bool, // the book's products only (ndarray's `dot`), no kernel
}

impl<T: Float> Affine<T> {
    /// A layer with the given weights `(D_in, D_out)` and bias `(D_out)`.
    #[track_caller]
    pub fn new(w: Array2<T>, b: Array1<T>) -> Self {
        assert_eq!(
            w.ncols(),
            b.len(),
            "Affine: W {:?} and b ({}) disagree on D_out",
            w.dim(),
            b.len()
        );
        let dw = Array2::zeros(w.dim());
        let db = Array1::zeros(b.len());
        Affine {
            w,
            b,
            dw,
            db,
            x: None,
            nz: None,
            sparse: false,
            nz_t: SparseRows::new(0),
            x_shape: None,
            y_spare: None,
            threads: 1,
            reference: false,
        }
    }

    /// (N, d1, d2, ...) -> (N, D_in); `D_in` must match `W`.
    #[track_caller]
    fn flatten(&self, x: ArrayD<T>) -> Array2<T> {
        let n = x.shape().first().copied().unwrap_or(0);
        let d = x.len() / n.max(1);
        assert_eq!(
            d,
            self.w.nrows(),
            "Affine: input {:?} flattens to D_in = {d}, W is {:?}",
            x.shape(),
            self.w.dim()
        );
        let x = if x.is_standard_layout() {
            x
        } else {
            x.as_standard_layout().into_owned()
        };
        x.into_shape_with_order((n, d))
            .expect("standard layout reshapes")
    }

    /// y = x·W + b, with y preset to b so that the product accumulates onto it; y is
    /// written into `y` when it has the shape (N, D_out).
    /// (Lhs skips the zeros of a mostly-zero input, such as an MNIST batch.)
    #[track_caller]
    fn affine(&self, x: &Lhs<'_, T>, y: Option<Array2<T>>, threads: usize) -> Array2<T> {
        let (n, d_in) = x.dim();
        assert_eq!(
            d_in,
            self.w.nrows(),
            "Affine: input (N, {d_in}) for W {:?}",
            self.w.dim()
        );
        let mut y = match y {
            Some(y) if y.dim() == (n, self.w.ncols()) => y,
            _ => Array2::zeros((n, self.w.ncols())),
        };
        // NOTE: rows as slices: through ndarray's row views the fill cost 10-20 ns a row
        match (self.b.as_slice(), y.as_slice_mut()) {
            (Some(b), Some(y)) if !b.is_empty() => y
                .chunks_exact_mut(b.len())
                .for_each(|r| r.copy_from_slice(b)),
            _ => y.rows_mut().into_iter().for_each(|mut r| r.assign(&self.b)),
        }
        x.matmul_acc(&self.w.view(), &mut y.view_mut(), threads);
        y
    }

    /// The input kept by the last forward, as the left operand of its products: from the
    /// fields, so that the other fields stay free to borrow.
    #[track_caller]
    fn kept<'a>(
        x: &'a Option<Array2<T>>,
        nz: &'a Option<SparseRows<T>>,
        sparse: bool,
    ) -> Lhs<'a, T> {
        match (x, nz) {
            (_, Some(nz)) if sparse => Lhs::Sparse(nz),
            (Some(x), _) => Lhs::Dense(x.view()),
            _ => panic!("Affine::backward called without a forward before it"),
        }
    }

    /// Training forward from the input kept in `self.x` / `self.nz`.
    fn forward_kept(&mut self) -> Array2<T> {
        let y = self.y_spare.take();
        let x = Self::kept(&self.x, &self.nz, self.sparse);
        self.affine(&x, y, self.threads)
    }

    /// dW = xᵀ·dy, db = Σₙ dy.
    #[track_caller]
    fn param_grads(&mut self, dy: &ArrayView2<T>) {
        let x = Self::kept(&self.x, &self.nz, self.sparse);
        assert_eq!(
            dy.dim(),
            (x.dim().0, self.dw.ncols()),
            "Affine::backward: dout {:?} does not match the output (N, D_out)",
            dy.dim()
        );
        // written, not added to: no zeroing pass over dW first
        x.matmul_tn(dy, &mut self.dw.view_mut(), &mut self.nz_t, self.threads);
        // db = Σₙ dy[n, :], pairwise over the rows (kernels::sum: its error grows with log N,
        // not N) when dy is in standard layout
        match (self.db.as_slice_mut(), dy.as_slice()) {
            (Some(db), Some(dy)) if !db.is_empty() => {
                let width = db.len();
                crate::kernels::sum::column_sums(dy, width, db);
            }
            _ => {
                self.db.fill(T::zero());
                for row in dy.rows() {
                    self.db.zip_mut_with(&row, |s, &d| *s = *s + d);
                }
            }
        }
    }

    /// dout as (N, D_out).
    #[track_caller]
    fn dy(dout: ArrayD<T>) -> Array2<T> {
        dout.into_dimensionality::<Ix2>()
            .expect("Affine::backward: dout must be (N, D_out)")
    }
}

impl<T: Float> Affine<T> {
    /// The fast training forward: the input indexed by its non-zeros when it is mostly
    /// zeros, the product on the kernels (forward_reference's values).
    fn forward_fast(&mut self, x: ArrayD<T>) -> ArrayD<T> {
        self.x_shape = Some(x.raw_dim());
        let x = self.flatten(x);
        let nz = self.nz.get_or_insert_with(|| SparseRows::new(0));
        self.sparse = x
            .as_slice()
            .is_some_and(|s| nz.index_into(s, x.ncols(), SPARSE_ZERO_FRACTION));
        self.x = Some(x);
        self.forward_kept().into_dyn()
    }

    /// The fast inference forward (the same values as forward_fast).
    fn predict_fast(&self, x: ArrayD<T>) -> ArrayD<T> {
        let x = self.flatten(x);
        match x
            .as_slice()
            .and_then(|s| SparseRows::index(s, x.ncols(), SPARSE_ZERO_FRACTION))
        {
            Some(nz) => self.affine(&Lhs::Sparse(&nz), None, 1),
            None => self.affine(&Lhs::Dense(x.view()), None, 1),
        }
        .into_dyn()
    }

    fn forward_input_fast(&mut self, x: Input<T>) -> ArrayD<T> {
        match x {
            Input::Dense(x) => self.forward_fast(x),
            Input::Sparse(x) => {
                self.x_shape = Some(IxDyn(&[x.nrows(), x.ncols()]));
                self.x = None;
                self.nz = Some(x);
                self.sparse = true;
                self.forward_kept().into_dyn()
            }
        }
    }

    fn predict_input_fast(&self, x: Input<T>) -> ArrayD<T> {
        match x {
            Input::Dense(x) => self.predict_fast(x),
            Input::Sparse(x) => self.affine(&Lhs::Sparse(&x), None, 1).into_dyn(),
        }
    }

    /// The fast backward (backward_reference's values).
    fn backward_fast(&mut self, dout: ArrayD<T>) -> ArrayD<T> {
        let dy = Self::dy(dout);
        let (n, d_in) = (dy.nrows(), self.w.nrows());
        // NOTE: dW and dx one after the other, each split over the threads. Computing them side
        // by side (one thread each, dx into memory of its own) was faster when a split cost a
        // thread spawn; with the helper threads it is slower: `backprop bench --workload W3`,
        // 4 alternating rounds, 4.15-5.04 s side by side, 3.80-4.04 s one after the other.
        self.param_grads(&dy.view());
        // dx = dy·Wᵀ, into the input's memory
        let mut dx = match self.x.take() {
            Some(x) => x,
            None => Array2::zeros((n, d_in)), // the input came sparse
        };
        matmul_nt(&dy.view(), &self.w.view(), &mut dx.view_mut(), self.threads);
        self.y_spare = Some(dy);
        // back to the input's original shape
        let shape = self.x_shape.clone().expect("set by forward");
        dx.into_shape_with_order(shape).expect("same element count")
    }

    /// The book's forward: `y = x·W + b`, x kept for backward.
    pub fn forward_reference(&mut self, x: ArrayD<T>) -> ArrayD<T> {
        self.x_shape = Some(x.raw_dim());
        let x = self.flatten(x);
        let y = x.dot(&self.w) + &self.b;
        self.x = Some(x);
        self.sparse = false;
        y.into_dyn()
    }

    /// The book's backward: `dx = dy·Wᵀ`, `dW = xᵀ·dy`, `db = Σₙ dy`.
    #[track_caller]
    pub fn backward_reference(&mut self, dout: ArrayD<T>) -> ArrayD<T> {
        let dy = Self::dy(dout);
        let x = self
            .x
            .take()
            .expect("Affine::backward called without a forward before it");
        assert_eq!(
            dy.dim(),
            (x.nrows(), self.w.ncols()),
            "Affine::backward: dout shape"
        );
        self.dw.assign(&x.t().dot(&dy));
        self.db.assign(&dy.sum_axis(ndarray::Axis(0)));
        let dx = dy.dot(&self.w.t());
        let shape = self.x_shape.clone().expect("set by forward");
        dx.into_shape_with_order(shape).expect("same element count")
    }
}

impl<T: Float> Layer<T> for Affine<T> {
    fn kind(&self) -> &'static str {
        "Affine"
    }

    fn describe(&self) -> String {
        format!("affine {}", self.w.ncols())
    }

    fn forward(&mut self, x: ArrayD<T>) -> ArrayD<T> {
        match self.reference {
            true => self.forward_reference(x),
            false => self.forward_fast(x), // kernels: forward_reference's values
        }
    }

    fn predict(&self, x: ArrayD<T>) -> ArrayD<T> {
        match self.reference {
            true => (self.flatten(x).dot(&self.w) + &self.b).into_dyn(),
            false => self.predict_fast(x), // kernels: the same values
        }
    }

    fn backward(&mut self, dout: ArrayD<T>) -> ArrayD<T> {
        match self.reference {
            true => self.backward_reference(dout),
            false => self.backward_fast(dout), // kernels: backward_reference's values
        }
    }

    fn accelerated(&mut self) -> Option<&mut dyn Accelerated<T>> {
        Some(self)
    }

    fn accelerated_ref(&self) -> Option<&dyn Accelerated<T>> {
        Some(self)
    }

    fn visit_params<'a>(&'a mut self, f: &mut dyn FnMut(Param<'a, T>)) {
        f(Param {
            name: "W",
            value: self.w.view_mut().into_dyn(),
            grad: self.dw.view_mut().into_dyn(),
        });
        f(Param {
            name: "b",
            value: self.b.view_mut().into_dyn(),
            grad: self.db.view_mut().into_dyn(),
        });
    }
}

/// The fast paths the plan may take ([`crate::plan`]).
impl<T: Float> Accelerated<T> for Affine<T> {
    fn takes_sparse_input(&self) -> bool {
        !self.reference
    }

    fn forward_input(&mut self, x: Input<T>) -> ArrayD<T> {
        match self.reference {
            true => self.forward_reference(x.into_dense()),
            false => self.forward_input_fast(x),
        }
    }

    fn predict_input(&self, x: Input<T>) -> ArrayD<T> {
        match self.reference {
            true => self.predict(x.into_dense()),
            false => self.predict_input_fast(x),
        }
    }

    fn backward_params(&mut self, dout: ArrayD<T>) {
        // NOTE: the first layer's dx (the gradient w.r.t. the images) is a third of the
        // arithmetic of a two-layer step and nobody uses it: skip it.
        if self.reference {
            self.backward_reference(dout);
            return;
        }
        let dy = Self::dy(dout);
        self.param_grads(&dy.view());
        self.y_spare = Some(dy);
    }

    fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    fn set_reference(&mut self, on: bool) {
        self.reference = on;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use crate::gradcheck::check_layer;
    use ndarray::{Array, arr1, arr2};

    #[test]
    fn forward_by_hand() {
        // x = [[1, 2]], W = [[1, 2, 3], [4, 5, 6]], b = [0.5, 0, -1]
        // y = [1+8, 2+10, 3+12] + b = [9.5, 12, 14]
        let mut layer =
            Affine::<f64>::new(arr2(&[[1., 2., 3.], [4., 5., 6.]]), arr1(&[0.5, 0., -1.]));
        let y = layer.forward(arr2(&[[1., 2.]]).into_dyn());
        assert_eq!(y, arr2(&[[9.5, 12., 14.]]).into_dyn());
        // dy = [[1, 0, 2]]: dx = dy·Wᵀ = [1+6, 4+12] = [7, 16]; dW = xᵀ·dy; db = dy
        let dx = layer.backward(arr2(&[[1., 0., 2.]]).into_dyn());
        assert_eq!(dx, arr2(&[[7., 16.]]).into_dyn());
        assert_eq!(layer.dw, arr2(&[[1., 0., 2.], [2., 0., 4.]]));
        assert_eq!(layer.db, arr1(&[1., 0., 2.]));
    }

    fn random_affine(d_in: usize, d_out: usize, rng: &mut Rng) -> Affine<f64> {
        let w = Array::from_shape_fn((d_in, d_out), |_| rng.normal());
        let b = Array::from_shape_fn(d_out, |_| rng.normal());
        Affine::new(w, b)
    }

    #[test]
    fn gradient_check_2d_input() {
        let mut rng = Rng::new(1);
        let mut layer = random_affine(6, 4, &mut rng);
        let x = Array::from_shape_fn((3, 6), |_| rng.normal()).into_dyn();
        for row in check_layer(&mut layer, x, &mut rng) {
            assert!(row.max_rel_err < 1e-7, "{row}");
        }
    }

    #[test]
    fn gradient_check_4d_input_and_dx_keeps_its_shape() {
        let mut rng = Rng::new(2);
        let mut layer = random_affine(2 * 3 * 2, 5, &mut rng);
        let x = Array::from_shape_fn((4, 2, 3, 2), |_| rng.normal()).into_dyn();
        let y = layer.forward(x.clone());
        assert_eq!(y.shape(), &[4, 5]);
        assert_eq!(layer.backward(y).shape(), &[4, 2, 3, 2]);
        for row in check_layer(&mut layer, x, &mut rng) {
            assert!(row.max_rel_err < 1e-7, "{row}");
        }
    }

    #[test]
    fn sparse_input_takes_the_zero_skipping_path_with_the_same_gradient() {
        let mut rng = Rng::new(3);
        let mut layer = random_affine(20, 3, &mut rng);
        // 90% zeros, like MNIST background: matmul_acc / matmul_tn_acc skip them.
        let x = Array::from_shape_fn((5, 20), |_| {
            if rng.uniform() < 0.9 {
                0.0
            } else {
                rng.uniform()
            }
        })
        .into_dyn();
        for row in check_layer(&mut layer, x, &mut rng) {
            assert!(row.max_rel_err < 1e-7, "{row}");
        }
    }

    #[test]
    fn two_threads_give_the_same_bits() {
        let mut rng = Rng::new(5);
        let (n, d_in, d_out) = (40, 400, 300); // large enough to split (parallel::threads_for)
        assert!(crate::parallel::threads_for(n * d_in * d_out, 2) == 2);
        let mut one = random_affine(d_in, d_out, &mut rng);
        let mut two = one.clone();
        Accelerated::<f64>::set_threads(&mut two, 2);
        for step in 0..3 {
            let x = Array::from_shape_fn((n, 4, d_in / 4), |_| rng.normal()).into_dyn();
            let dy = Array::from_shape_fn((n, d_out), |_| rng.normal()).into_dyn();
            assert_eq!(one.forward(x.clone()), two.forward(x));
            let (dx1, dx2) = (one.backward(dy.clone()), two.backward(dy));
            assert_eq!(
                dx2.shape(),
                [n, 4, d_in / 4],
                "step {step}: dx keeps x's shape"
            );
            assert_eq!(dx1, dx2, "step {step}");
            assert_eq!((&one.dw, &one.db), (&two.dw, &two.db), "step {step}");
        }
    }

    #[test]
    fn backward_params_gives_the_same_parameter_gradients() {
        let mut rng = Rng::new(4);
        let mut a = random_affine(5, 3, &mut rng);
        let mut b = a.clone();
        let x = Array::from_shape_fn((2, 5), |_| rng.normal()).into_dyn();
        let dy = Array::from_shape_fn((2, 3), |_| rng.normal()).into_dyn();
        a.forward(x.clone());
        a.backward(dy.clone());
        b.forward(x);
        b.backward_params(dy);
        assert_eq!((a.dw, a.db), (b.dw, b.db));
    }

    #[test]
    #[should_panic(expected = "without a forward")]
    fn backward_without_forward_panics_with_a_message() {
        let mut layer = Affine::<f64>::new(Array2::zeros((2, 2)), Array1::zeros(2));
        layer.backward(Array2::zeros((1, 2)).into_dyn());
    }
}
