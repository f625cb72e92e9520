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

/// The most layers a description may have: ten times the deepest networks of the field
/// (ResNet-1001), where a runaway file would otherwise build, and train, for hours.
const MAX_LAYERS: usize = 10_000;

/// The shape of one sample between layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Image(usize, usize, usize), // (C, H, W)
    Flat(usize),
}

impl Shape {
    /// Values a sample.
    pub fn len(&self) -> usize {
        match *self {
            Shape::Image(c, h, w) => c * h * w,
            Shape::Flat(d) => d,
        }
    }

    /// True for a sample of no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One layer of a description, its sizes resolved (`classes` is a number here) and checked
/// against the shape it receives.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerSpec {
    /// `conv F FHxFW stride=S pad=P`, weights drawn as `init` says.
    Conv {
        filters: usize,
        window: Window,
        init: Init,
    },
    /// `pool max|avg PHxPW stride=S pad=P`.
    Pool {
        kind: PoolKind,
        window: Window,
    },
    /// `affine D_out`, weights drawn as `init` says.
    Affine {
        outputs: usize,
        init: Init,
    },
    /// `batchnorm eps=E momentum=M` (defaults [`BatchNormalization::EPS`] and
    /// [`BatchNormalization::MOMENTUM`]).
    BatchNorm {
        eps: f64,
        momentum: f64,
    },
    /// `dropout RATIO`.
    Dropout(f64),
    Relu,
    Sigmoid,
    Tanh,
}

/// A layer of a [`Spec`] with the shapes it takes and gives.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecLine {
    pub layer: LayerSpec,
    pub input: Shape,
    pub output: Shape,
}

/// A parsed description: what building, counting and exporting a network all read.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// One sample's shape, (C, H, W).
    pub input: (usize, usize, usize),
    pub layers: Vec<SpecLine>,
}

impl Spec {
    /// Parses `text` for samples of `input = (C, H, W)` and `classes` outputs: every line's
    /// words, sizes and shapes checked. Errors name the line and what is wrong.
    pub fn parse(text: &str, input: (usize, usize, usize), classes: usize) -> Result<Spec> {
        let mut shape = Shape::Image(input.0, input.1, input.2);
        let mut init = Init::He;
        let mut layers = Vec::new();
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
            let words = Line::new(line, classes).map_err(err)?;
            if words.name == "init" {
                init = Init::parse(words.positional.first().copied().unwrap_or(""))
                    .map_err(|e| err(e.to_string()))?;
                continue;
            }
            let layer = words.layer(init).map_err(err)?;
            if layers.len() == MAX_LAYERS {
                return Err(err(format!("more than {MAX_LAYERS} layers")));
            }
            let output = output_shape(&layer, shape).map_err(err)?;
            layers.push(SpecLine {
                layer,
                input: shape,
                output,
            });
            shape = output;
        }
        if layers.is_empty() {
            return Err(Error::Config("layer description: no layers".into()));
        }
        if shape != Shape::Flat(classes) {
            return Err(Error::Config(format!(
                "layer description: the last layer gives {} values a sample; end with `affine classes` ({classes})",
                shape.len()
            )));
        }
        Ok(Spec { input, layers })
    }

    /// The network, weights drawn from `rng` layer by layer in order.
    pub fn build<T: Float>(&self, rng: &mut Rng) -> Network<T> {
        let mut net = Network::new();
        net.set_input_shape(&[self.input.0, self.input.1, self.input.2]);
        for line in &self.layers {
            push_layer(&mut net, line, rng);
        }
        net
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
    Ok(Spec::parse(text, input, classes)?.build(rng))
}

/// Appends the layer `line` describes to `net`.
fn push_layer<T: Float>(net: &mut Network<T>, line: &SpecLine, rng: &mut Rng) {
    match line.layer {
        LayerSpec::Conv {
            filters,
            window: win,
            init,
        } => {
            let c = match line.input {
                Shape::Image(c, _, _) => c,
                Shape::Flat(_) => unreachable!("checked by Spec::parse"),
            };
            let std = init.std(c * win.fh * win.fw);
            let w = Array4::from_shape_simple_fn((filters, c, win.fh, win.fw), || {
                T::of(std * rng.normal())
            });
            net.push(Convolution::new(
                w,
                Array1::zeros(filters),
                win.stride,
                win.pad,
            ));
        }
        LayerSpec::Pool { kind, window: w } => {
            net.push(Pooling::new(kind, w.fh, w.fw, w.stride, w.pad));
        }
        LayerSpec::Affine { outputs, init } => {
            let d_in = line.input.len();
            let w = gaussian(d_in, outputs, init.std(d_in), rng);
            net.push(Affine::new(w, Array1::zeros(outputs)));
        }
        LayerSpec::BatchNorm { eps, momentum } => {
            let channels = match line.input {
                Shape::Image(c, _, _) => c,
                Shape::Flat(d) => d,
            };
            let mut bn = BatchNormalization::new(channels);
            (bn.eps, bn.momentum) = (eps, momentum);
            net.push(bn);
        }
        LayerSpec::Dropout(ratio) => {
            net.push(Dropout::new(ratio, rng.next_u64()));
        }
        LayerSpec::Relu => {
            net.push(Relu::new());
        }
        LayerSpec::Sigmoid => {
            net.push(Sigmoid::new());
        }
        LayerSpec::Tanh => {
            net.push(Tanh::new());
        }
    }
}

/// The shape `layer` gives for an input of `shape`; an error where it does not fit or its
/// weights are too many.
fn output_shape(layer: &LayerSpec, shape: Shape) -> std::result::Result<Shape, String> {
    let image = |what: &str| match shape {
        Shape::Image(c, h, w) => Ok((c, h, w)),
        Shape::Flat(_) => Err(format!(
            "{what} needs an image, but the layers above flattened it"
        )),
    };
    let fits = |win: &Window, h: usize, w: usize, what: &str| {
        let pads = win.pad.checked_mul(2);
        let (ph, pw) = (
            pads.and_then(|p| h.checked_add(p)),
            pads.and_then(|p| w.checked_add(p)),
        );
        if ph.is_none() || pw.is_none() || win.pad > MAX_WEIGHTS {
            return Err(format!("padding {} is too large", win.pad));
        }
        match (ph, pw) {
            (Some(ph), Some(pw)) if ph >= win.fh && pw >= win.fw => Ok(win.output(h, w)),
            _ => Err(format!(
                "a {}x{} {what} does not fit the {h}x{w} image",
                win.fh, win.fw
            )),
        }
    };
    match *layer {
        LayerSpec::Conv {
            filters: f, window, ..
        } => {
            let (c, h, w) = image("conv")?;
            let (oh, ow) = fits(&window, h, w, "filter")?;
            let weights = [f, c, window.fh, window.fw, oh, ow]
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d));
            if weights.is_none_or(|n| n > MAX_WEIGHTS) {
                let (kh, kw) = (window.fh, window.fw);
                return Err(format!(
                    "{f} filters of {c}x{kh}x{kw} over {oh}x{ow} positions are too many"
                ));
            }
            Ok(Shape::Image(f, oh, ow))
        }
        LayerSpec::Pool { window, .. } => {
            let (c, h, w) = image("pool")?;
            let (oh, ow) = fits(&window, h, w, "window")?;
            Ok(Shape::Image(c, oh, ow))
        }
        LayerSpec::Affine { outputs, .. } => {
            let d_in = shape.len();
            if d_in.checked_mul(outputs).is_none_or(|n| n > MAX_WEIGHTS) {
                return Err(format!("{d_in}x{outputs} weights are too many"));
            }
            Ok(Shape::Flat(outputs))
        }
        _ => Ok(shape),
    }
}

/// One line's words: the layer's name, its positional words and its `name=value` options.
struct Line<'a> {
    name: &'a str,
    positional: Vec<&'a str>,
    options: Vec<(&'a str, &'a str)>,
    classes: usize,
}

impl<'a> Line<'a> {
    fn new(line: &'a str, classes: usize) -> std::result::Result<Line<'a>, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (positional, options) = split_options(&words[1..])?;
        Ok(Line {
            name: words[0],
            positional,
            options,
            classes,
        })
    }

    /// Positional word `i` as a count (`classes` the data's class count).
    fn count(&self, i: usize) -> std::result::Result<usize, String> {
        let word = self
            .positional
            .get(i)
            .ok_or_else(|| format!("{} needs a number", self.name))?;
        if *word == "classes" {
            return Ok(self.classes);
        }
        word.parse::<usize>()
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("{word:?} is not a positive whole number"))
    }

    /// Positional word `i` as a window size: `5` or `5x3` (rows x columns).
    fn size(&self, i: usize) -> std::result::Result<(usize, usize), String> {
        let word = self
            .positional
            .get(i)
            .ok_or_else(|| format!("{} needs a size", self.name))?;
        let (h, w) = word.split_once('x').unwrap_or((word, word));
        match (h.parse::<usize>(), w.parse::<usize>()) {
            (Ok(h), Ok(w)) if h > 0 && w > 0 => Ok((h, w)),
            _ => Err(format!("{word:?} is not a size like 5 or 5x3")),
        }
    }

    /// Option `name=` as a whole number, or `default`.
    fn option(&self, name: &str, default: usize) -> std::result::Result<usize, String> {
        match self.options.iter().find(|(k, _)| *k == name) {
            None => Ok(default),
            Some((_, v)) => v
                .parse::<usize>()
                .map_err(|_| format!("{name}={v} is not a whole number")),
        }
    }

    /// Option `name=` as a real number: None when not given, Some(None) when not a number.
    fn real_option(&self, name: &str) -> Option<Option<f64>> {
        let (_, v) = self.options.iter().find(|(k, _)| *k == name)?;
        Some(v.parse::<f64>().ok())
    }

    /// The window of `size(i)` with its `stride=` (default `stride`) and `pad=` options.
    fn window(&self, i: usize, stride: Option<usize>) -> std::result::Result<Window, String> {
        let (fh, fw) = self.size(i)?;
        let stride = self.option("stride", stride.unwrap_or(fh))?.max(1);
        Ok(Window {
            fh,
            fw,
            stride,
            pad: self.option("pad", 0)?,
        })
    }

    /// The layer these words describe, its weights drawn as `init` says.
    fn layer(&self, init: Init) -> std::result::Result<LayerSpec, String> {
        Ok(match self.name {
            "conv" => LayerSpec::Conv {
                filters: self.count(0)?,
                window: self.window(1, Some(1))?,
                init,
            },
            "pool" => {
                let kind = match self.positional.first() {
                    Some(&"max") => PoolKind::Max,
                    Some(&"avg") | Some(&"average") => PoolKind::Average,
                    _ => return Err("pool needs max or avg, then the window size".into()),
                };
                let window = self.window(1, None)?;
                if window.pad > window.fh.min(window.fw) / 2 {
                    let (kh, kw, pad) = (window.fh, window.fw, window.pad);
                    return Err(format!(
                        "padding {pad} is more than half the {kh}x{kw} window"
                    ));
                }
                LayerSpec::Pool { kind, window }
            }
            "affine" => LayerSpec::Affine {
                outputs: self.count(0)?,
                init,
            },
            "batchnorm" => {
                let number = |name: &str, default: f64| match self.real_option(name) {
                    None => Ok(default),
                    Some(v) => v.ok_or(format!("{name}= is not a number")),
                };
                let eps = number("eps", BatchNormalization::<f32>::EPS)?;
                let momentum = number("momentum", BatchNormalization::<f32>::MOMENTUM)?;
                if !(eps.is_finite() && eps > 0.0) {
                    return Err(format!("eps={eps} is not a positive number"));
                }
                if !(0.0..1.0).contains(&momentum) {
                    return Err(format!("momentum={momentum} is not in [0, 1)"));
                }
                LayerSpec::BatchNorm { eps, momentum }
            }
            "dropout" => {
                let ratio: f64 = self
                    .positional
                    .first()
                    .and_then(|r| r.parse().ok())
                    .ok_or("dropout needs a ratio")?;
                if !(0.0..1.0).contains(&ratio) {
                    return Err(format!("dropout {ratio} is not in [0, 1)"));
                }
                LayerSpec::Dropout(ratio)
            }
            "relu" => LayerSpec::Relu,
            "sigmoid" => LayerSpec::Sigmoid,
            "tanh" => LayerSpec::Tanh,
            other => {
                return Err(format!(
                    "unknown layer {other:?} (conv, pool, affine, relu, sigmoid, tanh, batchnorm, dropout, init)"
                ));
            }
        })
    }
}

/// A line's words: the positional ones, and `name=value` options.
type Words<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);

/// Splits `stride=2 pad=1`-style options from the positional words.
fn split_options<'a>(words: &[&'a str]) -> std::result::Result<Words<'a>, String> {
    let (mut positional, mut options) = (Vec::new(), Vec::new());
    for w in words {
        match w.split_once('=') {
            Some((k, v)) if ["stride", "pad", "eps", "momentum"].contains(&k) => {
                options.push((k, v))
            }
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

    /// `batchnorm eps= momentum=` reach the layer and come back in its description (a
    /// default is left out, so that files saved before the options read the same); values
    /// out of range are refused with the line.
    #[test]
    fn batch_norm_takes_eps_and_momentum() {
        let text = "affine 20\nbatchnorm eps=1e-5 momentum=0.99\nrelu\naffine 10\nbatchnorm\naffine classes";
        let spec = Spec::parse(text, (1, 4, 4), 3).unwrap();
        assert_eq!(
            spec.layers[1].layer,
            LayerSpec::BatchNorm {
                eps: 1e-5,
                momentum: 0.99
            }
        );
        let net = spec.build::<f64>(&mut Rng::new(0));
        let lines: Vec<String> = net.description().lines().map(str::to_string).collect();
        assert_eq!(lines[1], "batchnorm eps=1e-5 momentum=0.99");
        assert_eq!(lines[4], "batchnorm");
        let again = Spec::parse(&net.description(), (1, 4, 4), 3).unwrap();
        assert_eq!(again.layers[1].layer, spec.layers[1].layer);
        for (line, says) in [
            ("batchnorm eps=0", "eps=0 is not a positive number"),
            ("batchnorm eps=abc", "eps= is not a number"),
            ("batchnorm momentum=1", "momentum=1 is not in [0, 1)"),
            ("batchnorm gamma=2", "unknown option \"gamma\""),
        ] {
            let err = Spec::parse(&format!("{line}\naffine classes"), (1, 4, 4), 3).unwrap_err();
            assert!(err.to_string().contains(says), "{line}: {err}");
        }
    }

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
            (
                "conv 3 5 pad=9223372036854775807\naffine classes",
                "line 1: padding 9223372036854775807 is too large",
            ),
            ("# nothing\n", "no layers"),
        ] {
            let e = from_description::<f32>(text, (1, 28, 28), 10, &mut Rng::new(0))
                .err()
                .expect("refused");
            assert!(e.to_string().contains(expected), "{text:?}: {e}");
        }
    }
}
