//! The models the page can pick, and what the Draw and Filters tabs ask of them: the
//! prepared input, class probabilities, every layer's output, the saliency map, the first
//! layer's filters.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use backprop::checkpoint::{ModelInfo, SavedFile};
use backprop::data::Dataset;
use backprop::layers::softmax;
use backprop::{Error, Network};
use ndarray::{Array2, ArrayD, Axis, Ix2};
use serde::Serialize;
use serde_json::{Value, json};

use super::http::{Outcome, Refusal, Reply, number_param, param};

/// A model file, read and built once.
pub struct Entry {
    /// What the page and the endpoints call it: the file's path as given.
    pub name: String,
    pub info: ModelInfo,
    pub net: Network<f32>,
    /// Digit classes: images are then prepared as MNIST's digits were.
    pub digits: bool,
    /// Each layer's name, description line and output shape for one sample.
    layers: Vec<(String, String, Vec<usize>)>,
    params: usize,
}

impl Entry {
    /// Reads `path`: a model or checkpoint file, or a run directory (its best.safetensors,
    /// else last.safetensors).
    pub fn read(path: &Path) -> Result<Entry, Error> {
        let file = if path.is_dir() {
            ["best.safetensors", "last.safetensors"]
                .iter()
                .map(|f| path.join(f))
                .find(|f| f.is_file())
                .ok_or_else(|| {
                    Error::file(
                        path,
                        "a directory without best.safetensors or last.safetensors",
                    )
                })?
        } else {
            path.to_path_buf()
        };
        let saved = SavedFile::read(&file)?;
        let mut net = saved.network()?;
        let [c, h, w] = saved.info.input;
        let outputs = net.activations(Array2::<f32>::zeros((1, c * h * w)));
        let descriptions = saved
            .info
            .layers
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty());
        let layers = outputs
            .into_iter()
            .zip(descriptions)
            .map(|((name, y), line)| (name, line.to_string(), y.shape()[1..].to_vec()))
            .collect();
        Ok(Entry {
            name: file.display().to_string(),
            digits: backprop::data::classes::are_digits(&saved.info.class_names),
            params: net.num_params(),
            info: saved.info,
            net,
            layers,
        })
    }

    /// Name, input, classes and layers, as `/api/models` lists them.
    pub fn summary(&self) -> Value {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|(name, line, shape)| json!({ "name": name, "description": line, "shape": shape }))
            .collect();
        json!({
            "name": self.name,
            "input": self.info.input,
            "classes": self.info.classes,
            "class_names": (0..self.info.classes).map(|k| self.info.class_name(k)).collect::<Vec<_>>(),
            "digits": self.digits,
            "params": self.params,
            "layers": layers,
        })
    }

    fn sample_len(&self) -> usize {
        self.info.input.iter().product()
    }
}

/// The models on offer, in the order given; a finished run's checkpoint joins them.
#[derive(Default)]
pub struct Models {
    entries: RwLock<Vec<Arc<Entry>>>,
}

impl Models {
    /// Every file or run directory in `paths`; the first that cannot be read is the error.
    pub fn read(paths: &[PathBuf]) -> Result<Models, Error> {
        let models = Models::default();
        for path in paths {
            models.add(Entry::read(path)?);
        }
        Ok(models)
    }

    /// Adds `entry`, or replaces the one of its name (a run's checkpoint, saved again).
    pub fn add(&self, entry: Entry) -> Arc<Entry> {
        let entry = Arc::new(entry);
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        match entries.iter_mut().find(|e| e.name == entry.name) {
            Some(old) => *old = entry.clone(),
            None => entries.push(entry.clone()),
        }
        entry
    }

    pub fn list(&self) -> Vec<Arc<Entry>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The model named in the query (`model=`), or the first.
    pub fn pick(&self, query: &[(String, String)]) -> Result<Arc<Entry>, Refusal> {
        let entries = self.list();
        match param(query, "model") {
            None => entries.first().cloned().ok_or_else(|| {
                Refusal::new(
                    404,
                    "no model is loaded: give one to backprop serve, or train one",
                )
            }),
            Some(name) => entries
                .iter()
                .find(|e| e.name == name)
                .cloned()
                .ok_or_else(|| Refusal::new(404, format!("no model named {name:?}"))),
        }
    }
}

/// The test images the "random test digit" button draws from.
pub struct TestSet {
    pub images: Dataset,
    pub class_names: Vec<String>,
}

impl TestSet {
    fn shape(&self) -> [usize; 3] {
        let (c, h, w) = self.images.shape();
        [c, h, w]
    }

    /// Test image `index` as values in [0, 1].
    fn image(&self, index: usize) -> Result<(Vec<f32>, usize), Refusal> {
        if index >= self.images.len() {
            return Err(Refusal::new(
                404,
                format!(
                    "no test image {index}: the test set has {}",
                    self.images.len()
                ),
            ));
        }
        let (x, labels) = self.images.batch_range::<f32>(index..index + 1);
        Ok((x.into_raw_vec_and_offset().0, labels[0]))
    }

    /// `/api/test-digit?index=I`: image I (a random one without `index`) with its label.
    pub fn endpoint(this: Option<&TestSet>, query: &[(String, String)]) -> Outcome {
        let set = this.ok_or_else(|| Refusal::new(404, "the server has no test set (--data)"))?;
        let index = match number_param(query, "index")? {
            Some(i) => i,
            None => random_below(set.images.len()),
        };
        let (pixels, label) = set.image(index)?;
        #[derive(Serialize)]
        struct TestImage {
            index: usize,
            label: usize,
            name: String,
            shape: [usize; 3],
            pixels: Vec<f32>,
        }
        Ok(Reply::json(&TestImage {
            index,
            label,
            name: set
                .class_names
                .get(label)
                .cloned()
                .unwrap_or_else(|| label.to_string()),
            shape: set.shape(),
            pixels,
        }))
    }
}

/// A number in 0..n from the clock: the button wants variety, not statistics.
fn random_below(n: usize) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64 ^ d.as_secs());
    let mixed = nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17;
    (mixed % n.max(1) as u64) as usize
}

/// The model's input for a request: test image `test=I`, a JSON `{"pixels": [...]}`
/// already prepared, or an image file (PNG, JPEG, PGM) prepared as `backprop predict`
/// prepares one.
fn input(
    entry: &Entry,
    query: &[(String, String)],
    body: &[u8],
    test: Option<&TestSet>,
) -> Result<Vec<f32>, Refusal> {
    if let Some(index) = number_param(query, "test")? {
        let set = test.ok_or_else(|| Refusal::new(404, "the server has no test set (--data)"))?;
        if set.shape() != entry.info.input {
            return Err(Refusal::bad(format!(
                "the test images are {:?}, the model takes {:?}",
                set.shape(),
                entry.info.input
            )));
        }
        return Ok(set.image(index)?.0);
    }
    if body.is_empty() {
        return Err(Refusal::bad(
            "no image: send a PNG, JPEG or PGM file as the body, {\"pixels\": [...]}, or ?test=INDEX",
        ));
    }
    if body.first() == Some(&b'{') {
        return pixels_from_json(entry, body);
    }
    backprop::image::model_input(
        Path::new("the uploaded image"),
        body,
        entry.info.input,
        entry.digits,
    )
    .map_err(|e| Refusal::bad(e.to_string()))
}

/// `{"pixels": [C·H·W numbers in [0, 1]]}`.
fn pixels_from_json(entry: &Entry, body: &[u8]) -> Result<Vec<f32>, Refusal> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pixels {
        pixels: Vec<f32>,
    }
    let p: Pixels =
        serde_json::from_slice(body).map_err(|e| Refusal::bad(format!("malformed JSON: {e}")))?;
    let [c, h, w] = entry.info.input;
    if p.pixels.len() != entry.sample_len() {
        return Err(Refusal::bad(format!(
            "pixels: {} values, the model takes {c}x{h}x{w} = {}",
            p.pixels.len(),
            entry.sample_len()
        )));
    }
    if p.pixels.iter().any(|v| !(0.0..=1.0).contains(v)) {
        return Err(Refusal::bad("pixels: every value must be in [0, 1]"));
    }
    Ok(p.pixels)
}

// NOTE: replies are structs, not `json!` values: a `Value` holds an f32 as the f64 it
// widens to, printed with twice the digits.
#[derive(Serialize)]
struct Ranked {
    class: usize,
    name: String,
    probability: f32,
}

#[derive(Serialize)]
struct Pixels<'a> {
    shape: [usize; 3],
    pixels: &'a [f32],
}

#[derive(Serialize)]
struct LayerOutput<'a> {
    name: &'a str,
    shape: &'a [usize],
    values: Vec<f32>,
}

/// What predict and activations answer.
#[derive(Serialize)]
struct Prediction<'a> {
    model: &'a str,
    input: Pixels<'a>,
    probabilities: Vec<f32>,
    top: Vec<Ranked>,
    #[serde(skip_serializing_if = "Option::is_none")]
    layers: Option<Vec<LayerOutput<'a>>>,
    server_ms: f64,
}

/// The reply's common part: model, prepared input, probabilities, the top three.
fn prediction<'a>(entry: &'a Entry, x: &'a [f32], scores: &ArrayD<f32>) -> Prediction<'a> {
    let scores = scores
        .view()
        .into_dimensionality::<Ix2>()
        .expect("the network gives (N, classes)");
    let probabilities: Vec<f32> = softmax(&scores).row(0).to_vec();
    let mut ranked: Vec<usize> = (0..probabilities.len()).collect();
    ranked.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    let top = ranked
        .iter()
        .take(3)
        .map(|&k| Ranked {
            class: k,
            name: entry.info.class_name(k),
            probability: probabilities[k],
        })
        .collect();
    Prediction {
        model: &entry.name,
        input: Pixels {
            shape: entry.info.input,
            pixels: x,
        },
        probabilities,
        top,
        layers: None,
        server_ms: 0.0,
    }
}

fn milliseconds(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

fn as_batch(x: &[f32]) -> Array2<f32> {
    Array2::from_shape_vec((1, x.len()), x.to_vec()).expect("one row")
}

/// `POST /api/predict`: the prepared input and the class probabilities.
pub fn predict(
    entry: &Entry,
    query: &[(String, String)],
    body: &[u8],
    test: Option<&TestSet>,
) -> Outcome {
    let start = Instant::now();
    let x = input(entry, query, body, test)?;
    let scores = entry.net.predict(as_batch(&x));
    let mut reply = prediction(entry, &x, &scores);
    reply.server_ms = milliseconds(start);
    Ok(Reply::json(&reply))
}

/// `POST /api/activations`: what predict gives, and every layer's output.
pub fn activations(
    entry: &Entry,
    query: &[(String, String)],
    body: &[u8],
    test: Option<&TestSet>,
) -> Outcome {
    let start = Instant::now();
    let x = input(entry, query, body, test)?;
    let outputs = entry.net.activations(as_batch(&x));
    let scores = &outputs.last().expect("a model has layers").1;
    let mut reply = prediction(entry, &x, scores);
    reply.layers = Some(
        outputs
            .iter()
            .map(|(name, y)| LayerOutput {
                name,
                shape: &y.shape()[1..],
                values: y.index_axis(Axis(0), 0).iter().copied().collect(),
            })
            .collect(),
    );
    reply.server_ms = milliseconds(start);
    Ok(Reply::json(&reply))
}

/// `POST /api/saliency?class=K`: ∂(class K's score)/∂(input), the backward pass carried
/// down to the pixels.
pub fn saliency(
    entry: &Entry,
    query: &[(String, String)],
    body: &[u8],
    test: Option<&TestSet>,
) -> Outcome {
    let start = Instant::now();
    let classes = entry.info.classes;
    let class =
        number_param(query, "class")?.ok_or_else(|| Refusal::bad("saliency needs class=K"))?;
    if class >= classes {
        return Err(Refusal::bad(format!(
            "class={class}: the model has classes 0 to {}",
            classes - 1
        )));
    }
    let x = input(entry, query, body, test)?;
    let mut net = entry.net.clone();
    let score = net.predict(as_batch(&x))[[0, class]];
    let mut dscores = ArrayD::zeros(vec![1, classes]);
    dscores[[0, class]] = 1.0;
    let gradient = net.input_gradient(as_batch(&x), dscores);
    #[derive(Serialize)]
    struct Saliency<'a> {
        model: &'a str,
        class: usize,
        name: String,
        score: f32,
        input: Pixels<'a>,
        gradient: Vec<f32>,
        server_ms: f64,
    }
    Ok(Reply::json(&Saliency {
        model: &entry.name,
        class,
        name: entry.info.class_name(class),
        score,
        input: Pixels {
            shape: entry.info.input,
            pixels: &x,
        },
        gradient: gradient.iter().copied().collect(),
        server_ms: milliseconds(start),
    }))
}

/// `GET /api/filters`: the first layer's weights, one image a filter: a convolution's
/// (FN, C, FH, FW) as they are, an affine layer's columns (D, M) as M images of the input's
/// shape.
pub fn filters(entry: &Entry) -> Outcome {
    let mut net = entry.net.clone();
    let first = entry
        .layers
        .first()
        .map(|(n, _, _)| n.clone())
        .unwrap_or_default();
    let params = net.params();
    let Some((_, w)) = params.iter().find(|(name, _)| name == "W1") else {
        return Err(Refusal::new(
            404,
            format!("{} has no weights to draw", entry.name),
        ));
    };
    let (shape, values): (Vec<usize>, Vec<f32>) = match w.value.ndim() {
        4 => (w.value.shape().to_vec(), w.value.iter().copied().collect()),
        2 if w.value.shape()[0] == entry.sample_len() => {
            let mut shape = vec![w.value.shape()[1]];
            shape.extend(entry.info.input);
            (shape, w.value.t().iter().copied().collect())
        }
        _ => {
            return Err(Refusal::new(
                404,
                format!("{first} is not a convolution or an affine layer on the input"),
            ));
        }
    };
    #[derive(Serialize)]
    struct Filters<'a> {
        model: &'a str,
        layer: String,
        shape: Vec<usize>,
        values: Vec<f32>,
    }
    Ok(Reply::json(&Filters {
        model: &entry.name,
        layer: first,
        shape,
        values,
    }))
}
