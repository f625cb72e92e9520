//! The book's networks, built on [`Network`].

use ndarray::{Array1, Array2, Array4};

use crate::error::{Error, Result};
use crate::layers::{
    Affine, BatchNormalization, Convolution, Dropout, Pooling, Relu, Sigmoid, Tanh,
};
use crate::{Float, Init, Network, Rng};

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

/// The activation after each hidden affine layer of a [`MultiLayerNet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Sigmoid,
    Tanh,
}

impl Activation {
    /// `relu`, `sigmoid` or `tanh`.
    pub fn parse(s: &str) -> Result<Activation> {
        match s.to_ascii_lowercase().as_str() {
            "relu" => Ok(Activation::Relu),
            "sigmoid" => Ok(Activation::Sigmoid),
            "tanh" => Ok(Activation::Tanh),
            _ => Err(Error::Config(format!(
                "--activation: {s:?} is not relu, sigmoid or tanh"
            ))),
        }
    }

    /// The initialisation that suits it: He for ReLU, Xavier for sigmoid and tanh.
    pub fn default_init(&self) -> Init {
        match self {
            Activation::Relu => Init::He,
            Activation::Sigmoid | Activation::Tanh => Init::Xavier,
        }
    }
}

/// A fully connected network of any depth: the book's `MultiLayerNet` and
/// `MultiLayerNetExtend` (ch. 6).
#[derive(Clone, Debug, PartialEq)]
pub struct MlpConfig {
    pub input_size: usize,
    /// Units of each hidden layer, in order (at least one).
    pub hidden: Vec<usize>,
    pub output_size: usize,
    pub activation: Activation,
    pub init: Init,
    /// Batch normalization after each hidden affine layer.
    pub batch_norm: bool,
    /// Dropout ratio after each hidden activation (0: none).
    pub dropout: f64,
    /// L2 weight decay λ (0: none).
    pub weight_decay: f64,
}

impl MlpConfig {
    /// Rejects what cannot be built, naming the flag.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.hidden.is_empty() {
            return bad("--hidden: at least one hidden layer is needed".into());
        }
        if let Some(i) = self.hidden.iter().position(|&h| h == 0) {
            return bad(format!("--hidden: layer {} has 0 units", i + 1));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("--dropout: {} is not in [0, 1)", self.dropout));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "--weight-decay: {} is not a non-negative number",
                self.weight_decay
            ));
        }
        Ok(())
    }
}

impl MlpConfig {
    /// The network in the description language ([`crate::describe`]): what is checked
    /// against the input, and sized, before anything is allocated.
    pub fn description(&self) -> String {
        let init = match self.init {
            Init::Std(s) => s.to_string(),
            Init::Xavier => "xavier".into(),
            Init::He => "he".into(),
        };
        let activation = match self.activation {
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
        };
        let mut text = format!("init {init}\n");
        for units in &self.hidden {
            text += &format!("affine {units}\n");
            if self.batch_norm {
                text += "batchnorm\n";
            }
            text += activation;
            text += "\n";
            if self.dropout > 0.0 {
                text += &format!("dropout {}\n", self.dropout);
            }
        }
        text + "affine classes\n"
    }
}

/// Builds [`MlpConfig`] networks.
pub struct MultiLayerNet;

impl MultiLayerNet {
    /// For each hidden layer: `Affine -> [BatchNorm] -> activation -> [Dropout]`; then
    /// `Affine -> SoftmaxWithLoss`. Weights from `config.init` with each layer's fan-in, drawn
    /// from `rng` layer by layer; biases zero; dropout generators seeded from `rng`.
    // The book's `MultiLayerNetExtend(...)`; what it builds is a general Network.
    #[allow(clippy::new_ret_no_self)]
    pub fn new<T: Float>(config: &MlpConfig, rng: &mut Rng) -> Result<Network<T>> {
        config.validate()?;
        let mut net = Network::new();
        net.set_weight_decay(config.weight_decay);
        let mut fan_in = config.input_size;
        for &units in &config.hidden {
            let w = gaussian(fan_in, units, config.init.std(fan_in), rng);
            net.push(Affine::new(w, Array1::zeros(units)));
            if config.batch_norm {
                net.push(BatchNormalization::new(units));
            }
            match config.activation {
                Activation::Relu => net.push(Relu::new()),
                Activation::Sigmoid => net.push(Sigmoid::new()),
                Activation::Tanh => net.push(Tanh::new()),
            };
            if config.dropout > 0.0 {
                net.push(Dropout::new(config.dropout, rng.next_u64()));
            }
            fan_in = units;
        }
        let w = gaussian(fan_in, config.output_size, config.init.std(fan_in), rng);
        net.push(Affine::new(w, Array1::zeros(config.output_size)));
        Ok(net)
    }
}

/// `std · N(0, 1)` filters (FN, C, K, K), filled in order from `rng`.
fn filters<T: Float>(fn_: usize, c: usize, k: usize, std: f64, rng: &mut Rng) -> Array4<T> {
    Array4::from_shape_simple_fn((fn_, c, k, k), || T::of(std * rng.normal()))
}

/// The book's `SimpleConvNet` (ch. 7.5):
/// `Conv(30 filters 5x5, stride 1, pad 0) -> Relu -> max pool 2x2 stride 2 -> Affine 100 ->
/// Relu -> Affine -> SoftmaxWithLoss`, weights N(0, 0.01²) (W1 conv, W2 and W3 affine).
pub struct SimpleConvNet;

impl SimpleConvNet {
    /// The network in the description language: what is checked against the input, and
    /// sized, before anything is allocated.
    pub const DESCRIPTION: &'static str = "init 0.01
conv 30 5 stride=1 pad=0
relu
pool max 2 stride=2 pad=0
affine 100
relu
affine classes
";

    /// For samples of `(channels, height, width)` and `classes` outputs.
    #[allow(clippy::new_ret_no_self)]
    pub fn new<T: Float>(
        input: (usize, usize, usize),
        classes: usize,
        rng: &mut Rng,
    ) -> Network<T> {
        let (c, h, w) = input;
        let (filters_n, k, hidden, std) = (30, 5, 100, 0.01);
        let (oh, ow) = (h + 1 - k, w + 1 - k); // stride 1, no padding
        let pooled = filters_n * (oh / 2) * (ow / 2);
        let mut net = Network::new();
        net.set_input_shape(&[c, h, w]);
        net.push(Convolution::new(
            filters(filters_n, c, k, std, rng),
            Array1::zeros(filters_n),
            1,
            0,
        ))
        .push(Relu::new())
        .push(Pooling::max(2, 2, 2))
        .push(Affine::new(
            gaussian(pooled, hidden, std, rng),
            Array1::zeros(hidden),
        ))
        .push(Relu::new())
        .push(Affine::new(
            gaussian(hidden, classes, std, rng),
            Array1::zeros(classes),
        ));
        net
    }
}

/// The book's `DeepConvNet` (ch. 8.1): six 3x3 convolutions of 16, 16, 32, 32, 64, 64 filters
/// (padding 1, the fourth 2), ReLU after each, max pool 2x2 stride 2 after every second; then
/// `Affine 50 -> Relu -> Dropout 0.5 -> Affine -> Dropout 0.5 -> SoftmaxWithLoss`; He
/// initialisation (std √(2 / fan-in) with fan-in C·3·3 for a convolution).
pub struct DeepConvNet;

impl DeepConvNet {
    /// The network in the description language: what is checked against the input, and
    /// sized, before anything is allocated.
    pub const DESCRIPTION: &'static str = "init he
conv 16 3 stride=1 pad=1
relu
conv 16 3 stride=1 pad=1
relu
pool max 2 stride=2 pad=0
conv 32 3 stride=1 pad=1
relu
conv 32 3 stride=1 pad=2
relu
pool max 2 stride=2 pad=0
conv 64 3 stride=1 pad=1
relu
conv 64 3 stride=1 pad=1
relu
pool max 2 stride=2 pad=0
affine 50
relu
dropout 0.5
affine classes
dropout 0.5
";

    /// For samples of `(channels, height, width)` and `classes` outputs.
    #[allow(clippy::new_ret_no_self)]
    pub fn new<T: Float>(
        input: (usize, usize, usize),
        classes: usize,
        rng: &mut Rng,
    ) -> Network<T> {
        let (mut c, mut h, mut w) = input;
        let mut net = Network::new();
        net.set_input_shape(&[c, h, w]);
        for (i, (filters_n, pad)) in [(16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1)]
            .into_iter()
            .enumerate()
        {
            let std = Init::He.std(c * 3 * 3);
            net.push(Convolution::new(
                filters(filters_n, c, 3, std, rng),
                Array1::zeros(filters_n),
                1,
                pad,
            ));
            net.push(Relu::new());
            (c, h, w) = (filters_n, h + 2 * pad - 2, w + 2 * pad - 2);
            if i % 2 == 1 {
                net.push(Pooling::max(2, 2, 2));
                (h, w) = (h / 2, w / 2);
            }
        }
        let (flat, hidden) = (c * h * w, 50);
        net.push(Affine::new(
            gaussian(flat, hidden, Init::He.std(flat), rng),
            Array1::zeros(hidden),
        ))
        .push(Relu::new())
        .push(Dropout::new(0.5, rng.next_u64()))
        .push(Affine::new(
            gaussian(hidden, classes, Init::He.std(hidden), rng),
            Array1::zeros(classes),
        ))
        .push(Dropout::new(0.5, rng.next_u64()));
        net
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Targets;
    use ndarray::Array;

    /// The parameters `net` holds, by name, as f64 values.
    fn weights(net: &mut Network<f64>) -> Vec<(String, Vec<f64>)> {
        let params = net.params();
        params
            .into_iter()
            .map(|(name, p)| (name, p.value.iter().copied().collect()))
            .collect()
    }

    /// Each book network's description builds it again, weight for weight from the same
    /// seed: what is checked and sized before a run is what runs.
    #[test]
    fn descriptions_build_the_same_networks() {
        let input = (1, 28, 28);
        let built = |text: &str, seed| {
            let spec = crate::describe::Spec::parse(text, input, 10).unwrap();
            spec.build::<f64>(&mut Rng::new(seed))
        };
        let mut cases: Vec<(Network<f64>, Network<f64>)> = vec![
            (
                SimpleConvNet::new(input, 10, &mut Rng::new(1)),
                built(SimpleConvNet::DESCRIPTION, 1),
            ),
            (
                DeepConvNet::new(input, 10, &mut Rng::new(2)),
                built(DeepConvNet::DESCRIPTION, 2),
            ),
        ];
        for (batch_norm, dropout, activation, init) in [
            (false, 0.0, Activation::Relu, Init::Std(0.01)),
            (true, 0.5, Activation::Tanh, Init::Xavier),
        ] {
            let config = MlpConfig {
                input_size: 784,
                hidden: vec![20, 30],
                output_size: 10,
                activation,
                init,
                batch_norm,
                dropout,
                weight_decay: 0.0,
            };
            let net = MultiLayerNet::new(&config, &mut Rng::new(3)).unwrap();
            cases.push((net, built(&config.description(), 3)));
        }
        for (mut book, mut described) in cases {
            assert_eq!(book.description(), described.description());
            assert_eq!(weights(&mut book), weights(&mut described));
        }
    }

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

    fn mlp(batch_norm: bool, dropout: f64, weight_decay: f64) -> MlpConfig {
        MlpConfig {
            input_size: 9,
            hidden: vec![7, 6, 5],
            output_size: 4,
            activation: Activation::Tanh,
            init: Init::Xavier,
            batch_norm,
            dropout,
            weight_decay,
        }
    }

    #[test]
    fn multi_layer_net_layers_and_names() {
        let mut net = MultiLayerNet::new::<f64>(&mlp(true, 0.2, 0.0), &mut Rng::new(0)).unwrap();
        assert_eq!(
            net.layer_names(),
            [
                "Affine1",
                "BatchNorm1",
                "Tanh1",
                "Dropout1",
                "Affine2",
                "BatchNorm2",
                "Tanh2",
                "Dropout2",
                "Affine3",
                "BatchNorm3",
                "Tanh3",
                "Dropout3",
                "Affine4"
            ]
        );
        let names: Vec<String> = net.params().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names[..4], ["W1", "b1", "gamma1", "beta1"]);
        assert_eq!(names.last().unwrap(), "b4");
    }

    #[test]
    fn deep_net_with_batch_norm_dropout_and_weight_decay_checks() {
        let mut rng = Rng::new(5);
        let mut net = MultiLayerNet::new::<f64>(&mlp(true, 0.3, 0.1), &mut rng).unwrap();
        let x = Array::from_shape_fn((6, 9), |_| rng.normal()).into_dyn();
        let labels = [0, 1, 2, 3, 1, 2];
        // One forward draws the dropout masks; then they are held so the loss is a fixed
        // function of the parameters.
        net.loss(x.clone(), Targets::Labels(&labels));
        net.hold_dropout_masks(true);
        for row in net.gradient_check(&x, Targets::Labels(&labels), 1e-5) {
            assert!(row.max_rel_err < 1e-6, "{row}");
        }
    }

    #[test]
    fn weight_decay_term_and_gradient() {
        // With everything else fixed, the decay adds ½λΣ‖W‖² to the loss and λW to dW only.
        let cfg = mlp(false, 0.0, 0.0);
        let mut plain = MultiLayerNet::new::<f64>(&cfg, &mut Rng::new(2)).unwrap();
        let mut decayed = MultiLayerNet::new::<f64>(
            &MlpConfig {
                weight_decay: 0.5,
                ..cfg
            },
            &mut Rng::new(2),
        )
        .unwrap();
        let x = Array::from_shape_fn((3, 9), |(i, j)| (i * 9 + j) as f64 / 27.0);
        let t = Targets::Labels(&[1, 0, 3]);
        let (l0, l1) = (plain.backprop(x.clone(), t), decayed.backprop(x.clone(), t));
        let sum_w2: f64 = plain
            .params()
            .iter()
            .filter(|(n, _)| n.starts_with('W'))
            .map(|(_, p)| p.value.mapv(|w| w * w).sum())
            .sum();
        assert!((l1 - l0 - 0.25 * sum_w2).abs() < 1e-12);
        for ((name, p0), (_, p1)) in plain.params().iter().zip(decayed.params().iter()) {
            let expected = if name.starts_with('W') {
                &p0.grad + &(&p0.value * 0.5)
            } else {
                p0.grad.to_owned()
            };
            assert!(
                (&p1.grad - &expected).iter().all(|d| d.abs() < 1e-12),
                "{name}"
            );
        }
        for row in decayed.gradient_check(&x.into_dyn(), t, 1e-5) {
            assert!(row.max_rel_err < 1e-7, "{row}");
        }
    }

    #[test]
    fn bad_configs_name_their_flag() {
        for (cfg, flag) in [
            (
                MlpConfig {
                    hidden: vec![],
                    ..mlp(false, 0.0, 0.0)
                },
                "--hidden",
            ),
            (
                MlpConfig {
                    hidden: vec![5, 0],
                    ..mlp(false, 0.0, 0.0)
                },
                "--hidden",
            ),
            (mlp(false, 1.0, 0.0), "--dropout"),
            (mlp(false, -0.1, 0.0), "--dropout"),
            (mlp(false, 0.0, -1e-4), "--weight-decay"),
        ] {
            let e = MultiLayerNet::new::<f32>(&cfg, &mut Rng::new(0))
                .err()
                .expect("refused");
            assert!(e.to_string().contains(flag), "{e}");
        }
        assert!(
            Activation::parse("gelu")
                .unwrap_err()
                .to_string()
                .contains("--activation")
        );
    }

    #[test]
    fn the_books_convnets_have_the_books_shapes() {
        let mut simple = SimpleConvNet::new::<f32>((1, 28, 28), 10, &mut Rng::new(0));
        let shapes: Vec<Vec<usize>> = simple
            .params()
            .into_iter()
            .map(|(_, p)| p.value.shape().to_vec())
            .collect();
        assert_eq!(
            shapes,
            [
                vec![30, 1, 5, 5],
                vec![30],
                vec![4320, 100],
                vec![100],
                vec![100, 10],
                vec![10]
            ]
        );
        let x = Array::from_shape_fn((2, 784), |(i, j)| ((i + j) % 7) as f32 / 7.0);
        assert_eq!(simple.predict(x.clone()).shape(), &[2, 10]);

        let mut deep = DeepConvNet::new::<f32>((1, 28, 28), 10, &mut Rng::new(0));
        assert_eq!(
            deep.layer_names(),
            [
                "Conv1", "Relu1", "Conv2", "Relu2", "Pool1", "Conv3", "Relu3", "Conv4", "Relu4",
                "Pool2", "Conv5", "Relu5", "Conv6", "Relu6", "Pool3", "Affine1", "Relu7",
                "Dropout1", "Affine2", "Dropout2"
            ]
        );
        let names: Vec<String> = deep.params().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 16);
        assert_eq!((names[0].as_str(), names[15].as_str()), ("W1", "b8"));
        let w7 = deep.params().swap_remove(12).1.value.shape().to_vec();
        assert_eq!(
            w7,
            [64 * 4 * 4, 50],
            "the book's 64·4·4 inputs to the first affine layer"
        );
        assert_eq!(deep.predict(x).shape(), &[2, 10]);
    }
}
