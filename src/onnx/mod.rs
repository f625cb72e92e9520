//! ONNX export: a network as an [ONNX](https://onnx.ai) model that ONNX Runtime, Netron,
//! PyTorch and every other ONNX reader can open.
//!
//! The mapping is direct; each layer of the description language is one ONNX operator (opset
//! 17), its weights the initializers of the same names as in the safetensors file:
//!
//! ```text
//! conv F K stride=S pad=P   Conv(x, W, b)        W (F, C, KH, KW) as it is; pads [P, P, P, P]
//! pool max K stride=S pad=P MaxPool              padding never wins a max, as ours
//! pool avg K stride=S pad=P AveragePool          count_include_pad=1: we divide by KH·KW
//!                                                (both ceil_mode=0: OH = (H + 2P - KH)/S + 1)
//! affine D                  [Flatten] Gemm(x, W, b)   W (D_in, D) as it is (transB=0); the
//!                                                book's C-order flatten is ONNX's Flatten
//! batchnorm                 BatchNormalization   inference: running statistics, our eps
//! dropout R                 Identity             inverted dropout does nothing at inference
//! relu, sigmoid, tanh       Relu, Sigmoid, Tanh
//! (last)                    Softmax(axis=1)      the output `probabilities`, beside `logits`
//! ```
//! The input is `input`, `(N, C, H, W)` float with a dynamic batch `N`; every value between
//! layers carries its shape (`value_info`), so that ONNX's shape inference checks our output
//! sizes against its own. The model's metadata holds `backprop.model`, the JSON a safetensors
//! model file holds: the input shape, the class count and the layer description.

pub mod proto;

use std::collections::VecDeque;
use std::path::Path;

use ndarray::ArrayD;
use prost::Message;

use crate::Network;
use crate::checkpoint::{ModelInfo, SavedFile, write_atomic};
use crate::describe::{LayerSpec, Shape, Spec, SpecLine};
use crate::error::{Error, Result};
use crate::layers::{PoolKind, Window};
use proto::{
    AttributeProto, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TensorTypeProto,
    TypeProto, ValueInfoProto, attribute_type,
};

/// The ONNX operator set the export uses (ONNX Runtime 1.12 on, PyTorch 1.13 on read it).
pub const OPSET: i64 = 17;
/// The IR version that goes with opset 17.
const IR_VERSION: i64 = 8;
/// The name of the model's input.
pub const INPUT: &str = "input";
/// The class scores before the softmax.
pub const LOGITS: &str = "logits";
/// The softmax of the logits.
pub const PROBABILITIES: &str = "probabilities";
/// The metadata key of the model's description (the JSON of [`ModelInfo`]).
pub const MODEL_KEY: &str = "backprop.model";

/// The layers of the description language: each has an ONNX form.
const KNOWN: [&str; 8] = [
    "conv",
    "pool",
    "affine",
    "batchnorm",
    "dropout",
    "relu",
    "sigmoid",
    "tanh",
];

/// `net`, which `info` describes, as the bytes of an ONNX model. An error names the layer
/// when `net` has one the description language (and so the export) does not know.
pub fn to_onnx(net: &mut Network<f32>, info: &ModelInfo) -> Result<Vec<u8>> {
    let [c, h, w] = info.input;
    if net.description() != info.layers {
        return Err(Error::Config(
            "to_onnx: the network is not the one its ModelInfo describes".into(),
        ));
    }
    let names: Vec<String> = net.layer_names().iter().map(|s| s.to_string()).collect();
    for (name, line) in names.iter().zip(info.layers.lines()) {
        let word = line.split_whitespace().next().unwrap_or("");
        if !KNOWN.contains(&word) {
            return Err(Error::Config(format!(
                "cannot export layer {name} (`{line}`) to ONNX: only the layers of the description language map to ONNX operators ({})",
                KNOWN.join(", ")
            )));
        }
    }
    let spec = Spec::parse(&info.layers, (c, h, w), info.classes)
        .map_err(|e| Error::Config(format!("cannot export to ONNX: {e}")))?;
    let mut tensors = Tensors::of(net);
    let mut graph = Graph::new(spec.input);
    for (line, name) in spec.layers.iter().zip(&names) {
        graph.layer(line, name, &mut tensors)?;
    }
    graph.finish(info.classes);
    Ok(model(graph.proto, info).encode_to_vec())
}

/// Reads the model or checkpoint file `model` and writes its ONNX form to `out`, whole or not
/// at all (a temporary file renamed over `out`). Errors name the file.
pub fn export_file(model: &Path, out: &Path) -> Result<()> {
    let saved = SavedFile::read(model)?;
    let mut net = saved.network()?;
    let bytes = to_onnx(&mut net, &saved.info).map_err(|e| Error::file(model, e.to_string()))?;
    write_atomic(out, &bytes)
}

/// The model around `graph`: opset, producer, and our description in the metadata.
fn model(graph: GraphProto, info: &ModelInfo) -> ModelProto {
    let json = serde_json::to_string(info).expect("ModelInfo serializes");
    ModelProto {
        ir_version: IR_VERSION,
        producer_name: "backprop".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: info.layers.clone(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props: vec![StringStringEntryProto {
            key: MODEL_KEY.into(),
            value: json,
        }],
        ..Default::default()
    }
}

/// A network's parameters and buffers in layer order, taken as the layers ask for them.
struct Tensors {
    params: VecDeque<(String, ArrayD<f32>)>,
    buffers: VecDeque<(String, ArrayD<f32>)>,
}

impl Tensors {
    fn of(net: &mut Network<f32>) -> Tensors {
        let owned = |(name, a): (String, ndarray::ArrayViewMutD<'_, f32>)| (name, a.to_owned());
        Tensors {
            params: net
                .params()
                .into_iter()
                .map(|(n, p)| (n, p.value))
                .map(owned)
                .collect(),
            buffers: net.buffers().into_iter().map(owned).collect(),
        }
    }

    /// The next parameter, which must be `kind` (`W`, `b`, `gamma`, `beta`) of `layer`.
    fn param(&mut self, kind: &str, layer: &str) -> Result<(String, ArrayD<f32>)> {
        next_named(&mut self.params, kind, layer)
    }

    /// The next buffer, which must be `kind` (`running_mean`, `running_var`) of `layer`.
    fn buffer(&mut self, kind: &str, layer: &str) -> Result<(String, ArrayD<f32>)> {
        next_named(&mut self.buffers, kind, layer)
    }
}

fn next_named(
    queue: &mut VecDeque<(String, ArrayD<f32>)>,
    kind: &str,
    layer: &str,
) -> Result<(String, ArrayD<f32>)> {
    match queue.pop_front() {
        Some((name, a)) if name.strip_prefix(kind).is_some_and(is_number) => Ok((name, a)),
        found => Err(Error::Config(format!(
            "cannot export {layer}: expected its {kind}, found {:?}",
            found.map(|(n, _)| n)
        ))),
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The graph as it is built: nodes in order and the name of the value the last one gave.
struct Graph {
    proto: GraphProto,
    value: String,
}

impl Graph {
    /// An empty graph of one input, `input` (N, C, H, W).
    fn new(input: (usize, usize, usize)) -> Graph {
        let (c, h, w) = input;
        let mut proto = GraphProto {
            name: "backprop".into(),
            ..Default::default()
        };
        proto.input.push(value_info(INPUT, Shape::Image(c, h, w)));
        Graph {
            proto,
            value: INPUT.into(),
        }
    }

    /// Appends `op` on the current value and `weights`, giving the value `output`.
    fn node(
        &mut self,
        op: &str,
        output: &str,
        weights: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) {
        let mut input = vec![std::mem::take(&mut self.value)];
        input.extend(weights);
        self.proto.node.push(NodeProto {
            input,
            output: vec![output.into()],
            name: output.into(),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        self.value = output.into();
    }

    /// Records a weight as an initializer of its own name; returns the name.
    fn weight(&mut self, (name, a): (String, ArrayD<f32>)) -> String {
        self.proto.initializer.push(TensorProto {
            dims: a.shape().iter().map(|&d| d as i64).collect(),
            data_type: proto::FLOAT,
            name: name.clone(),
            raw_data: a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// The nodes of one layer of the description, named `name` (`Conv1`, `Affine2`, ...).
    fn layer(&mut self, line: &SpecLine, name: &str, tensors: &mut Tensors) -> Result<()> {
        match line.layer {
            LayerSpec::Conv { window, .. } => {
                let w = self.weight(tensors.param("W", name)?);
                let b = self.weight(tensors.param("b", name)?);
                self.node("Conv", name, vec![w, b], window_attributes(window));
            }
            LayerSpec::Pool { kind, window } => {
                let mut attributes = window_attributes(window);
                attributes.push(int("ceil_mode", 0));
                let op = match kind {
                    PoolKind::Max => "MaxPool",
                    PoolKind::Average => {
                        attributes.push(int("count_include_pad", 1));
                        "AveragePool"
                    }
                };
                self.node(op, name, vec![], attributes);
            }
            LayerSpec::Affine { .. } => {
                if let Shape::Image(..) = line.input {
                    let flat = format!("{name}.flatten");
                    self.node("Flatten", &flat, vec![], vec![int("axis", 1)]);
                    self.shape(&flat, Shape::Flat(line.input.len()));
                }
                let w = self.weight(tensors.param("W", name)?);
                let b = self.weight(tensors.param("b", name)?);
                self.node("Gemm", name, vec![w, b], vec![]);
            }
            LayerSpec::BatchNorm { eps, .. } => {
                let inputs = vec![
                    self.weight(tensors.param("gamma", name)?),
                    self.weight(tensors.param("beta", name)?),
                    self.weight(tensors.buffer("running_mean", name)?),
                    self.weight(tensors.buffer("running_var", name)?),
                ];
                let eps = float("epsilon", eps as f32);
                self.node("BatchNormalization", name, inputs, vec![eps]);
            }
            LayerSpec::Dropout(_) => self.node("Identity", name, vec![], vec![]),
            LayerSpec::Relu => self.node("Relu", name, vec![], vec![]),
            LayerSpec::Sigmoid => self.node("Sigmoid", name, vec![], vec![]),
            LayerSpec::Tanh => self.node("Tanh", name, vec![], vec![]),
        }
        self.shape(name, line.output);
        Ok(())
    }

    /// Declares the shape of the value `name`, for shape inference to check.
    fn shape(&mut self, name: &str, shape: Shape) {
        self.proto.value_info.push(value_info(name, shape));
    }

    /// Names the last layer's value `logits`, adds the softmax, and declares both outputs.
    fn finish(&mut self, classes: usize) {
        let last = self
            .proto
            .node
            .last_mut()
            .expect("a description has layers");
        last.output = vec![LOGITS.into()];
        self.proto.value_info.pop();
        self.value = LOGITS.into();
        self.node("Softmax", PROBABILITIES, vec![], vec![int("axis", 1)]);
        for name in [LOGITS, PROBABILITIES] {
            self.proto
                .output
                .push(value_info(name, Shape::Flat(classes)));
        }
    }
}

/// Conv's and pooling's `kernel_shape`, `strides` and `pads` (top, left, bottom, right).
fn window_attributes(w: Window) -> Vec<AttributeProto> {
    let (fh, fw, s, p) = (w.fh as i64, w.fw as i64, w.stride as i64, w.pad as i64);
    vec![
        ints("kernel_shape", &[fh, fw]),
        ints("strides", &[s, s]),
        ints("pads", &[p, p, p, p]),
    ]
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        r#type: attribute_type::INT,
        ..Default::default()
    }
}

fn ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: ints.to_vec(),
        r#type: attribute_type::INTS,
        ..Default::default()
    }
}

fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f,
        r#type: attribute_type::FLOAT,
        ..Default::default()
    }
}

/// A float tensor value `name` of one sample's `shape` behind a dynamic batch dimension `N`.
fn value_info(name: &str, shape: Shape) -> ValueInfoProto {
    let sizes = match shape {
        Shape::Image(c, h, w) => vec![c, h, w],
        Shape::Flat(d) => vec![d],
    };
    let mut dim = vec![Dimension {
        value: Some(DimensionValue::DimParam("N".into())),
    }];
    dim.extend(sizes.into_iter().map(|d| Dimension {
        value: Some(DimensionValue::DimValue(d as i64)),
    }));
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: proto::FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
