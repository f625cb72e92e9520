//! A network from a small text description, one layer a line, for stacks no model type names:
//!
//! ```text
//! # SimpleConvNet, written out
//! init 0.01                 # he (default), xavier, or a standard deviation; applies below
//! conv 30 5                 # filters, size (5, or 5x3 for 5 rows 3 columns);
//!                           # optional stride=S pad=P (default 1 and 0)
//! relu
//! pool max 2 stride=2       # max or avg, window (2 or 2x3); optional stride=S (default the
//!                           # window's height), pad=P
//! affine 100
//! relu
//! affine classes            # a number, or `classes` for the data's class count
//! ```
//! Also `sigmoid`, `tanh`, `batchnorm`, `dropout RATIO`. Shapes are followed from the input:
//! convolution and pooling need an image, affine flattens whatever it gets. The softmax with
//! cross-entropy loss always comes last and is not written.

use ndarray::{Array1, Array4};

use crate::error::{Error, Result};
use crate::layers::{
    Affine, BatchNormalization, Convolution, Dropout, PoolKind, Pooling, Relu, Sigmoid, Tanh,
    Window,
};
use crate::models::gaussian;
use crate::{Float, Init, Network, Rng};

/// The most weights (or, for a convolution, weights times output positions) one layer may
/// have: a bound that turns a corrupt or mistyped size into an error rather than an
/// allocation of terabytes.
const MAX_WEIGHTS: usize = 1 << 32;

/// The shape of one sample between layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Image(usize, usize, usize), // (C, H, W)
    Flat(usize),
}

impl Shape {
    fn len(&self) -> usize {
        match *self {
            Shape::Image(c, h, w) => c * h * w,
            Shape::Flat(d) => d,
        }
    }
}

/// Builds the network `text` describes, for samples of `input = (C, H, W)` and `classes`
/// outputs, drawing weights from `rng` in order. Errors name the line and what is wrong.
pub fn from_description<T: Float>(
    text: &str,
    input: (usize, usize, usize),
    classes: usize,
    rng: &mut Rng,
) -> Result<Network<T>> {
    let mut net = Network::new();
    net.set_input_shape(&[input.0, input.1, input.2]);
    let mut shape = Shape::Image(input.0, input.1, input.2);
    let mut init = Init::He;
    let mut layers = 0;
    for (number, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |msg: String| {
            Error::Config(format!(
                "layer description, line {}: {msg} (\"{line}\")",
                number + 1
            ))
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let (positional, options) = split_options(&words[1..]).map_err(err)?;
        let count = |i: usize| -> Result<usize> {
            let word = positional
                .get(i)
                .ok_or_else(|| err(format!("{} needs a number", words[0])))?;
            if *word == "classes" {
                return Ok(classes);
            }
            word.parse::<usize>()
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| err(format!("{word:?} is not a positive whole number")))
        };
        // a window size: `5` or `5x3` (rows x columns)
        let size = |i: usize| -> Result<(usize, usize)> {
            let word = positional
                .get(i)
                .ok_or_else(|| err(format!("{} needs a size", words[0])))?;
            let (h, w) = word.split_once('x').unwrap_or((word, word));
            match (h.parse::<usize>(), w.parse::<usize>()) {
                (Ok(h), Ok(w)) if h > 0 && w > 0 => Ok((h, w)),
                _ => Err(err(format!("{word:?} is not a size like 5 or 5x3"))),
            }
        };
        let option = |name: &str, default: usize| -> Result<usize> {
            match options.iter().find(|(k, _)| *k == name) {
                None => Ok(default),
                Some((_, v)) => v
                    .parse::<usize>()
                    .map_err(|_| err(format!("{name}={v} is not a whole number"))),
            }
        };
        let image = |what: &str| match shape {
            Shape::Image(c, h, w) => Ok((c, h, w)),
            Shape::Flat(_) => Err(err(format!(
                "{what} needs an image, but the layers above flattened it"
            ))),
        };
        match words[0] {
            "init" => {
                init = Init::parse(positional.first().copied().unwrap_or(""))
                    .map_err(|e| err(e.to_string()))?
            }
            "conv" => {
                let (c, h, w) = image("conv")?;
                let (f, (kh, kw)) = (count(0)?, size(1)?);
                let (stride, pad) = (option("stride", 1)?.max(1), option("pad", 0)?);
                let win = Window {
                    fh: kh,
                    fw: kw,
                    stride,
                    pad,
                };
                if h + 2 * pad < kh || w + 2 * pad < kw {
                    return Err(err(format!(
                        "a {kh}x{kw} filter does not fit the {h}x{w} image"
                    )));
                }
                let (oh, ow) = win.output(h, w);
                let weights = [f, c, kh, kw, oh, ow]
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d));
                if weights.is_none_or(|n| n > MAX_WEIGHTS) {
                    return Err(err(format!(
                        "{f} filters of {c}x{kh}x{kw} over {oh}x{ow} positions are too many"
                    )));
                }
                let std = init.std(c * kh * kw);
                let filters =
                    Array4::from_shape_simple_fn((f, c, kh, kw), || T::of(std * rng.normal()));
                net.push(Convolution::new(filters, Array1::zeros(f), stride, pad));
                shape = Shape::Image(f, oh, ow);
            }
            "pool" => {
                let (c, h, w) = image("pool")?;
                let kind = match positional.first() {
                    Some(&"max") => PoolKind::Max,
                    Some(&"avg") | Some(&"average") => PoolKind::Average,
                    _ => return Err(err("pool needs max or avg, then the window size".into())),
                };
                let (kh, kw) = size(1)?;
                let (stride, pad) = (option("stride", kh)?.max(1), option("pad", 0)?);
                if 2 * pad > kh.min(kw) {
                    return Err(err(format!(
                        "padding {pad} is more than half the {kh}x{kw} window"
                    )));
                }
                if h + 2 * pad < kh || w + 2 * pad < kw {
                    return Err(err(format!(
                        "a {kh}x{kw} window does not fit the {h}x{w} image"
                    )));
                }
                let (oh, ow) = Window {
                    fh: kh,
                    fw: kw,
                    stride,
                    pad,
                }
                .output(h, w);
                net.push(Pooling::new(kind, kh, kw, stride, pad));
                shape = Shape::Image(c, oh, ow);
            }
            "affine" => {
                let (d_in, d_out) = (shape.len(), count(0)?);
                if d_in.checked_mul(d_out).is_none_or(|n| n > MAX_WEIGHTS) {
                    return Err(err(format!("{d_in}x{d_out} weights are too many")));
                }
                net.push(Affine::new(
                    gaussian(d_in, d_out, init.std(d_in), rng),
                    Array1::zeros(d_out),
                ));
                shape = Shape::Flat(d_out);
            }
            "batchnorm" => {
                let channels = match shape {
                    Shape::Image(c, _, _) => c,
                    Shape::Flat(d) => d,
                };
                net.push(BatchNormalization::new(channels));
            }
            "dropout" => {
                let ratio: f64 = positional
                    .first()
                    .and_then(|r| r.parse().ok())
                    .ok_or_else(|| err("dropout needs a ratio".into()))?;
                if !(0.0..1.0).contains(&ratio) {
                    return Err(err(format!("dropout {ratio} is not in [0, 1)")));
                }
                net.push(Dropout::new(ratio, rng.next_u64()));
            }
            "relu" => {
                net.push(Relu::new());
            }
            "sigmoid" => {
                net.push(Sigmoid::new());
            }
            "tanh" => {
                net.push(Tanh::new());
            }
            other => {
                return Err(err(format!(
                    "unknown layer {other:?} (conv, pool, affine, relu, sigmoid, tanh, batchnorm, dropout, init)"
                )));
            }
        }
        layers += usize::from(words[0] != "init");
    }
    if layers == 0 {
        return Err(Error::Config("layer description: no layers".into()));
    }
    if shape != Shape::Flat(classes) {
        return Err(Error::Config(format!(
            "layer description: the last layer gives {} values a sample; end with `affine classes` ({classes})",
            shape.len()
        )));
    }
    Ok(net)
}

/// A line's words: the positional ones, and `name=value` options.
type Words<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);

/// Splits `stride=2 pad=1`-style options from the positional words.
fn split_options<'a>(words: &[&'a str]) -> std::result::Result<Words<'a>, String> {
    let (mut positional, mut options) = (Vec::new(), Vec::new());
    for w in words {
        match w.split_once('=') {
            Some((k, v)) if ["stride", "pad"].contains(&k) => options.push((k, v)),
            Some((k, _)) => return Err(format!("unknown option {k:?}")),
            None => positional.push(*w),
        }
    }
    Ok((positional, options))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Targets;
    use crate::{Activation, DeepConvNet, MlpConfig, MultiLayerNet, SimpleConvNet, gradcheck};
    use ndarray::Array;

    const SIMPLE: &str = "
        # SimpleConvNet, written out
        init 0.01
        conv 30 5
        relu
        pool max 2 stride=2
        affine 100
        relu
        affine classes
    ";

    #[test]
    fn every_model_is_rebuilt_from_its_own_description() {
        let mut rng = Rng::new(3);
        let mlp = MlpConfig {
            input_size: 784,
            hidden: vec![30, 20],
            output_size: 10,
            activation: Activation::Tanh,
            init: Init::Xavier,
            batch_norm: true,
            dropout: 0.25,
            weight_decay: 0.0,
        };
        let mut nets: Vec<Network<f32>> = vec![
            SimpleConvNet::new((1, 28, 28), 10, &mut rng),
            DeepConvNet::new((1, 28, 28), 10, &mut rng),
            MultiLayerNet::new(&mlp, &mut rng).unwrap(),
            from_description(
                "conv 3 5x3 stride=2 pad=1\nsigmoid\npool avg 3x2 stride=2 pad=1\naffine classes",
                (1, 28, 28),
                10,
                &mut rng,
            )
            .unwrap(),
        ];
        for net in &mut nets {
            let text = net.description();
            let mut again: Network<f32> =
                from_description(&text, (1, 28, 28), 10, &mut rng).unwrap();
            assert_eq!(again.description(), text);
            let shapes = |n: &mut Network<f32>| -> Vec<(String, Vec<usize>)> {
                n.params()
                    .into_iter()
                    .map(|(name, p)| (name, p.value.shape().to_vec()))
                    .collect()
            };
            assert_eq!(shapes(&mut again), shapes(net), "{text}");
        }
    }

    #[test]
    fn sizes_that_would_allocate_terabytes_are_refused() {
        let mut rng = Rng::new(0);
        for text in [
            "affine 99999999999\naffine classes",
            "conv 99999 28 pad=9000\naffine classes",
        ] {
            let e = from_description::<f32>(text, (1, 28, 28), 10, &mut rng)
                .err()
                .unwrap();
            assert!(e.to_string().contains("too many"), "{e}");
        }
    }

    #[test]
    fn the_simple_convnet_written_out_is_the_simple_convnet() {
        let mut a = from_description::<f64>(SIMPLE, (1, 28, 28), 10, &mut Rng::new(3)).unwrap();
        let mut b = SimpleConvNet::new::<f64>((1, 28, 28), 10, &mut Rng::new(3));
        assert_eq!(a.layer_names(), b.layer_names());
        for ((na, pa), (nb, pb)) in a.params().iter().zip(b.params().iter()) {
            assert_eq!((na, &pa.value), (nb, &pb.value));
        }
    }

    #[test]
    fn a_described_stack_checks() {
        let text = "conv 4 3 pad=1\nbatchnorm\ntanh\npool avg 2\nconv 3 2 stride=2\nrelu\ndropout 0.2\naffine 5\nsigmoid\naffine classes";
        let mut rng = Rng::new(8);
        let mut net = from_description::<f64>(text, (2, 8, 8), 3, &mut rng).unwrap();
        let x = Array::from_shape_fn((4, 128), |_| rng.normal()).into_dyn();
        net.loss(x.clone(), Targets::Labels(&[0, 1, 2, 1]));
        net.hold_dropout_masks(true);
        for row in net.gradient_check(&x, Targets::Labels(&[0, 1, 2, 1]), gradcheck::DEFAULT_H) {
            assert!(row.max_rel_err < 1e-6, "{row}");
        }
    }

    #[test]
    fn mistakes_name_their_line() {
        for (text, expected) in [
            ("conv 30 5\nrelu\nlinear 10", "line 3: unknown layer"),
            (
                "affine 50\nconv 4 3\naffine classes",
                "line 2: conv needs an image",
            ),
            (
                "conv 4 30\naffine classes",
                "line 1: a 30x30 filter does not fit",
            ),
            (
                "conv four 3\naffine classes",
                "line 1: \"four\" is not a positive whole number",
            ),
            ("pool 2\naffine classes", "line 1: pool needs max or avg"),
            (
                "dropout 1.5\naffine classes",
                "line 1: dropout 1.5 is not in [0, 1)",
            ),
            (
                "conv 4 3 step=2\naffine classes",
                "line 1: unknown option \"step\"",
            ),
            (
                "pool max 2 pad=2\naffine classes",
                "line 1: padding 2 is more than half",
            ),
            ("affine 7", "end with `affine classes`"),
            ("# nothing\n", "no layers"),
        ] {
            let e = from_description::<f32>(text, (1, 28, 28), 10, &mut Rng::new(0))
                .err()
                .expect("refused");
            assert!(e.to_string().contains(expected), "{text:?}: {e}");
        }
    }
}
