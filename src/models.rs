//! The book's networks, built on [`Network`].

use ndarray::{Array1, Array2};

use crate::layers::{Affine, Relu};
use crate::{Float, Network, Rng};

/// `weight_init_std · N(0, 1)` in a (rows, cols) matrix, filled row by row from `rng` (the
/// book's `weight_init_std * np.random.randn(rows, cols)`).
pub fn gaussian<T: Float>(rows: usize, cols: usize, std: f64, rng: &mut Rng) -> Array2<T> {
    Array2::from_shape_simple_fn((rows, cols), || T::of(std * rng.normal()))
}

/// The book's `TwoLayerNet` (ch. 5): `Affine1 -> Relu1 -> Affine2 -> SoftmaxWithLoss`, with
/// parameters `W1 (input, hidden)`, `b1 (hidden)`, `W2 (hidden, output)`, `b2 (output)`.
///
/// ```
/// use backprop::{Rng, TwoLayerNet};
/// let mut rng = Rng::new(0);
/// let net = TwoLayerNet::new::<f32>(784, 50, 10, 0.01, &mut rng);
/// assert_eq!(net.layer_names(), ["Affine1", "Relu1", "Affine2"]);
/// ```
pub struct TwoLayerNet;

impl TwoLayerNet {
    /// Weights drawn from N(0, weight_init_std²) (W1 first, then W2); biases zero.
    // The book's `TwoLayerNet(input_size, ...)`; what it builds is a general Network.
    #[allow(clippy::new_ret_no_self)]
    pub fn new<T: Float>(
        input_size: usize,
        hidden_size: usize,
        output_size: usize,
        weight_init_std: f64,
        rng: &mut Rng,
    ) -> Network<T> {
        let w1 = gaussian(input_size, hidden_size, weight_init_std, rng);
        let w2 = gaussian(hidden_size, output_size, weight_init_std, rng);
        let mut net = Network::new();
        net.push(Affine::new(w1, Array1::zeros(hidden_size)))
            .push(Relu::new())
            .push(Affine::new(w2, Array1::zeros(output_size)));
        net
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Targets;
    use ndarray::Array;

    #[test]
    fn names_shapes_and_init() {
        let mut rng = Rng::new(0);
        let mut net = TwoLayerNet::new::<f64>(20, 8, 3, 0.01, &mut rng);
        let shapes: Vec<(String, Vec<usize>)> = net
            .params()
            .into_iter()
            .map(|(n, p)| (n, p.value.shape().to_vec()))
            .collect();
        assert_eq!(
            shapes,
            [
                ("W1".to_string(), vec![20, 8]),
                ("b1".to_string(), vec![8]),
                ("W2".to_string(), vec![8, 3]),
                ("b2".to_string(), vec![3])
            ]
        );
        assert_eq!(net.num_params(), 20 * 8 + 8 + 8 * 3 + 3);
        let w1 = net.params().swap_remove(0).1.value.to_owned();
        let std = (w1.mapv(|v| v * v).mean().unwrap()).sqrt();
        assert!((0.007..0.013).contains(&std), "std {std}");
    }

    #[test]
    fn whole_network_gradient_check() {
        let mut rng = Rng::new(1);
        // A larger init than the book's so that every gradient is well above round-off.
        let mut net = TwoLayerNet::new::<f64>(12, 6, 4, 0.5, &mut rng);
        let x = Array::from_shape_fn((5, 12), |_| rng.uniform()).into_dyn();
        let labels = [0, 3, 1, 1, 2];
        for row in net.gradient_check(&x, Targets::Labels(&labels), 1e-5) {
            assert!(row.max_rel_err < 1e-7, "{row}");
        }
    }
}
