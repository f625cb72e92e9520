use super::*;
use crate::layers::{Affine, Layer};
use crate::{DeepConvNet, Rng, SimpleConvNet};
use ndarray::{Array1, Array2};

fn decode(net: &mut Network<f32>, input: [usize; 3]) -> (ModelProto, ModelInfo) {
    let info = ModelInfo::of(net, input, 10);
    let bytes = to_onnx(net, &info).unwrap();
    (ModelProto::decode(bytes.as_slice()).unwrap(), info)
}

fn ops(graph: &GraphProto) -> Vec<&str> {
    graph.node.iter().map(|n| n.op_type.as_str()).collect()
}

fn dims(v: &ValueInfoProto) -> Vec<String> {
    let t = v.r#type.as_ref().unwrap().tensor_type.as_ref().unwrap();
    t.shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value.as_ref().unwrap() {
            DimensionValue::DimValue(v) => v.to_string(),
            DimensionValue::DimParam(p) => p.clone(),
        })
        .collect()
}

#[test]
fn the_simple_convnet_is_conv_relu_maxpool_flatten_gemm_relu_gemm_softmax() {
    let mut net = SimpleConvNet::new::<f32>((1, 28, 28), 10, &mut Rng::new(1));
    let (model, info) = decode(&mut net, [1, 28, 28]);
    let graph = model.graph.as_ref().unwrap();
    assert_eq!(
        ops(graph),
        [
            "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm", "Softmax"
        ]
    );
    assert_eq!(model.opset_import[0].version, OPSET);
    assert_eq!(model.metadata_props[0].key, MODEL_KEY);
    let meta: ModelInfo = serde_json::from_str(&model.metadata_props[0].value).unwrap();
    assert_eq!(meta, info);
    assert_eq!(dims(&graph.input[0]), ["N", "1", "28", "28"]);
    let outputs: Vec<_> = graph
        .output
        .iter()
        .map(|o| (o.name.as_str(), dims(o)))
        .collect();
    assert_eq!(outputs[0], (LOGITS, vec!["N".into(), "10".into()]));
    assert_eq!(outputs[1].0, PROBABILITIES);
    let conv = graph.value_info.iter().find(|v| v.name == "Conv1").unwrap();
    assert_eq!(dims(conv), ["N", "30", "24", "24"]);
    // the weights, by name, with their shapes and bits
    for ((name, p), t) in net.params().into_iter().zip(&graph.initializer) {
        assert_eq!(name, t.name);
        let shape: Vec<i64> = p.value.shape().iter().map(|&d| d as i64).collect();
        assert_eq!(shape, t.dims);
        let bytes: Vec<u8> = p.value.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(bytes, t.raw_data, "{name}");
    }
    // each node reads what the one before it gave; the last gives the probabilities
    for pair in graph.node.windows(2) {
        assert_eq!(pair[1].input[0], pair[0].output[0]);
    }
    assert_eq!(graph.node.last().unwrap().output, [PROBABILITIES]);
}

#[test]
fn pooling_windows_keep_their_padding_and_average_counts_it() {
    let text = "conv 2 3 stride=2 pad=1\npool avg 3x2 stride=2 pad=1\npool max 3 stride=1 pad=1\nbatchnorm\ndropout 0.5\naffine classes";
    let mut net =
        crate::describe::from_description::<f32>(text, (1, 12, 12), 10, &mut Rng::new(0)).unwrap();
    let (model, _) = decode(&mut net, [1, 12, 12]);
    let graph = model.graph.unwrap();
    assert_eq!(
        ops(&graph),
        [
            "Conv",
            "AveragePool",
            "MaxPool",
            "BatchNormalization",
            "Identity",
            "Flatten",
            "Gemm",
            "Softmax"
        ]
    );
    let attr = |node: usize, name: &str| -> AttributeProto {
        graph.node[node]
            .attribute
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("node {node} has no {name}"))
            .clone()
    };
    assert_eq!(attr(0, "strides").ints, [2, 2]);
    assert_eq!(attr(0, "pads").ints, [1, 1, 1, 1]);
    assert_eq!(attr(1, "kernel_shape").ints, [3, 2]);
    assert_eq!(attr(1, "count_include_pad").i, 1);
    assert_eq!(attr(1, "ceil_mode").i, 0);
    assert_eq!(attr(2, "pads").ints, [1, 1, 1, 1]);
    assert_eq!(
        attr(3, "epsilon").f,
        crate::layers::BatchNormalization::<f32>::EPS as f32
    );
    assert_eq!(
        graph.node[3].input[1..],
        ["gamma1", "beta1", "running_mean1", "running_var1"]
    );
    // (12 + 2 - 3)/2 + 1 = 6; pooled (6 + 2 - 3)/2 + 1 = 3 by (6 + 2 - 2)/2 + 1 = 4
    let pooled = graph.value_info.iter().find(|v| v.name == "Pool1").unwrap();
    assert_eq!(dims(pooled), ["N", "2", "3", "4"]);
}

#[test]
fn the_deep_convnet_exports_every_weight() {
    let mut net = DeepConvNet::new::<f32>((1, 28, 28), 10, &mut Rng::new(2));
    let (model, _) = decode(&mut net, [1, 28, 28]);
    let graph = model.graph.unwrap();
    assert_eq!(graph.initializer.len(), net.params().len());
    assert_eq!(ops(&graph).iter().filter(|o| **o == "Conv").count(), 6);
    assert_eq!(ops(&graph).iter().filter(|o| **o == "Identity").count(), 2);
}

/// A layer the description language does not know.
#[derive(Clone)]
struct Doubling;

impl Layer<f32> for Doubling {
    fn kind(&self) -> &'static str {
        "Doubling"
    }
    fn forward(&mut self, x: ArrayD<f32>) -> ArrayD<f32> {
        x * 2.0
    }
    fn predict(&self, x: ArrayD<f32>) -> ArrayD<f32> {
        x * 2.0
    }
    fn backward(&mut self, dout: ArrayD<f32>) -> ArrayD<f32> {
        dout * 2.0
    }
    fn describe(&self) -> String {
        "double".into()
    }
}

#[test]
fn a_layer_with_no_onnx_form_is_named() {
    let mut net = Network::new();
    net.push(Affine::new(Array2::zeros((4, 3)), Array1::zeros(3)))
        .push(Doubling);
    let info = ModelInfo {
        input: [1, 2, 2],
        classes: 3,
        layers: net.description(),
        class_names: vec![],
    };
    let e = to_onnx(&mut net, &info).unwrap_err().to_string();
    assert!(
        e.contains("cannot export layer Doubling1 (`double`)"),
        "{e}"
    );
}

#[test]
fn export_errors_name_the_file_and_leave_nothing_behind() {
    let dir = std::env::temp_dir().join(format!("backprop-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a model").unwrap();
    let e = export_file(&junk, &dir.join("junk.onnx"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&junk.display().to_string()), "{e}");
    assert!(!dir.join("junk.onnx").exists());

    let mut net = SimpleConvNet::new::<f32>((1, 28, 28), 10, &mut Rng::new(1));
    let model = dir.join("model.safetensors");
    let info = ModelInfo::of(&net, [1, 28, 28], 10);
    crate::checkpoint::save_model(&model, &mut net, &info).unwrap();
    let out = dir.join("no-such-dir/model.onnx");
    let e = export_file(&model, &out).unwrap_err().to_string();
    assert!(e.contains("no-such-dir/model.onnx"), "{e}");
    // a directory where the file should go: refused, the directory untouched
    let taken = dir.join("taken.onnx");
    std::fs::create_dir_all(&taken).unwrap();
    assert!(export_file(&model, &taken).is_err());
    assert!(taken.is_dir());
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|n| !n.ends_with(".tmp")), "{left:?}");
    export_file(&model, &dir.join("model.onnx")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
