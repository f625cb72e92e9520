//! Weights and checkpoints as [safetensors](https://github.com/huggingface/safetensors) files,
//! which Python's `safetensors`, NumPy and PyTorch read with no code of ours.
//!
//! ```text
//! model file   W1, b1, W2, ... (F32, the parameters' shapes; conv filters (FN, C, FH, FW))
//!              running_mean1, running_var1 (batch norm's statistics, if any)
//!              metadata "backprop.model": {"input": [C, H, W], "classes": K,
//!                                          "layers": "conv 30 5 stride=1 pad=0\nrelu\n..."}
//! checkpoint   a model file, plus
//!              optimizer.m.W1, optimizer.v.W1, ... (the optimizer's buffers, F32)
//!              train.order (I64: the current epoch's shuffle)
//!              metadata "backprop.checkpoint": {"iteration": ..., "rng": [...], ...}
//!                       "backprop.config": the run's settings (TOML)
//! ```
//! The layer lines are the [`crate::describe`] language: a file alone rebuilds its network.
//! Files are written whole to a temporary file in the same directory, synced, then renamed
//! over the old one ([`write_atomic`]): a crash leaves the old file or the new one, never half.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::describe::Spec;
use crate::error::{Error, Result};
use crate::optim::OptimizerState;
use crate::train::TrainState;
use crate::{Network, Rng};

/// What rebuilds a network besides its weights.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// One sample's shape, (C, H, W).
    pub input: [usize; 3],
    pub classes: usize,
    /// The layers, one [`crate::describe`] line each.
    pub layers: String,
    /// What the classes are called (`T-shirt/top`, ...); empty for files written without
    /// them, whose classes are the digits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
}

impl ModelInfo {
    /// `net`'s description, for samples of `input` and `classes` outputs.
    pub fn of(net: &Network<f32>, input: [usize; 3], classes: usize) -> ModelInfo {
        ModelInfo {
            input,
            classes,
            layers: net.description(),
            class_names: Vec::new(),
        }
    }

    /// The same, with the classes' names.
    pub fn with_class_names(mut self, names: &[String]) -> ModelInfo {
        self.class_names = names.to_vec();
        self
    }

    /// The name of class `k`: its own, else the digit.
    pub fn class_name(&self, k: usize) -> String {
        self.class_names
            .get(k)
            .cloned()
            .unwrap_or_else(|| k.to_string())
    }

    /// A network of this shape with weights to be loaded (drawn here from a fixed seed).
    pub fn build(&self) -> Result<Network<f32>> {
        Ok(self.spec()?.build(&mut Rng::new(0)))
    }

    /// The layers, checked against the input shape.
    pub fn spec(&self) -> Result<Spec> {
        let [c, h, w] = self.input;
        Spec::parse(&self.layers, (c, h, w), self.classes)
    }
}

/// The training progress a checkpoint holds besides tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Progress {
    optimizer: String,
    optimizer_steps: u64,
    iteration: usize,
    epoch_loss: f64,
    epoch_iters: usize,
    last_loss: Option<f64>,
    elapsed_s: f64,
    best_accuracy: f64,
    /// Generator states as decimal strings (JSON numbers lose u64 precision).
    rng: [String; 4],
    dropout_rngs: Vec<[String; 4]>,
}

const MODEL_KEY: &str = "backprop.model";
const PROGRESS_KEY: &str = "backprop.checkpoint";
const CONFIG_KEY: &str = "backprop.config";
const OPTIMIZER_PREFIX: &str = "optimizer.";
const ORDER: &str = "train.order";

/// A tensor to write: its dtype, shape and little-endian bytes.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Bytes {
    fn f32(a: &ndarray::ArrayViewD<'_, f32>) -> Bytes {
        Bytes {
            dtype: Dtype::F32,
            shape: a.shape().to_vec(),
            data: a.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// The weights and statistics of `net`, by name.
fn weight_tensors(net: &mut Network<f32>) -> Vec<(String, Bytes)> {
    let mut out: Vec<(String, Bytes)> = net
        .params()
        .into_iter()
        .map(|(name, p)| (name, Bytes::f32(&p.value.view())))
        .collect();
    out.extend(
        net.buffers()
            .into_iter()
            .map(|(name, b)| (name, Bytes::f32(&b.view()))),
    );
    out
}

fn serialize(
    tensors: Vec<(String, Bytes)>,
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<Vec<u8>> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, t)| {
            TensorView::new(t.dtype, t.shape.clone(), &t.data)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::file(path, format!("cannot write tensor {name}: {e}")))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::file(path, format!("cannot serialize: {e}")))
}

/// Saves f32 arrays by name to a safetensors file (NumPy reads it with
/// `safetensors.numpy.load_file`), whole or not at all.
pub fn save_arrays(path: &Path, arrays: &[(&str, ndarray::ArrayViewD<'_, f32>)]) -> Result<()> {
    let tensors = arrays
        .iter()
        .map(|(name, a)| (name.to_string(), Bytes::f32(a)))
        .collect();
    let bytes = serialize(tensors, HashMap::new(), path)?;
    write_atomic(path, &bytes)
}

/// Saves `net`'s weights (and batch norm statistics) with its description to `path`.
pub fn save_model(path: &Path, net: &mut Network<f32>, info: &ModelInfo) -> Result<()> {
    let meta = HashMap::from([(MODEL_KEY.to_string(), to_json(info))]);
    let bytes = serialize(weight_tensors(net), meta, path)?;
    write_atomic(path, &bytes)
}

/// Saves everything `state` needs to go on, with the model's description and the run's
/// settings (`config`, TOML), to `path`.
pub fn save_checkpoint(
    path: &Path,
    state: &mut TrainState,
    info: &ModelInfo,
    config: &str,
) -> Result<()> {
    let opt = state.optimizer.state();
    let progress = Progress {
        optimizer: state.optimizer.name().to_string(),
        optimizer_steps: opt.steps,
        iteration: state.iteration,
        epoch_loss: state.epoch_loss,
        epoch_iters: state.epoch_iters,
        last_loss: Some(state.last_loss).filter(|l| l.is_finite()),
        elapsed_s: state.elapsed_s,
        best_accuracy: state.best_accuracy,
        rng: words(state.rng.state()),
        dropout_rngs: state.network.rng_states().into_iter().map(words).collect(),
    };
    let mut tensors = weight_tensors(&mut state.network);
    for (name, buffer) in &opt.buffers {
        tensors.push((
            format!("{OPTIMIZER_PREFIX}{name}"),
            Bytes::f32(&buffer.view()),
        ));
    }
    tensors.push((
        ORDER.to_string(),
        Bytes {
            dtype: Dtype::I64,
            shape: vec![state.order.len()],
            data: state
                .order
                .iter()
                .flat_map(|&i| (i as i64).to_le_bytes())
                .collect(),
        },
    ));
    let meta = HashMap::from([
        (MODEL_KEY.to_string(), to_json(info)),
        (PROGRESS_KEY.to_string(), to_json(&progress)),
        (CONFIG_KEY.to_string(), config.to_string()),
    ]);
    let bytes = serialize(tensors, meta, path)?;
    write_atomic(path, &bytes)
}

fn to_json<S: Serialize>(value: &S) -> String {
    serde_json::to_string(value).expect("plain structs serialize")
}

fn words(state: [u64; 4]) -> [String; 4] {
    state.map(|w| w.to_string())
}

/// A model or checkpoint file, read and checked.
pub struct SavedFile {
    pub path: PathBuf,
    pub info: ModelInfo,
    /// The run's settings (TOML), in checkpoints.
    pub config: Option<String>,
    tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    progress: Option<Progress>,
}

impl SavedFile {
    /// Reads `path`; errors say what is wrong with it (missing, truncated, not a backprop
    /// file, corrupt header).
    pub fn read(path: &Path) -> Result<SavedFile> {
        let bytes = crate::limits::read_regular(path)?;
        Self::parse(path, &bytes)
    }

    /// [`SavedFile::read`] on bytes already read.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<SavedFile> {
        let bad = |problem: String| Error::file(path, problem);
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            bad(format!(
                "not a readable safetensors file ({e}): truncated or corrupt?"
            ))
        })?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("unreadable safetensors header ({e})")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let info: ModelInfo = meta
            .get(MODEL_KEY)
            .ok_or_else(|| {
                bad(format!(
                    "no {MODEL_KEY} entry in its metadata: not a model saved by backprop"
                ))
            })
            .and_then(|json| {
                serde_json::from_str(json).map_err(|e| bad(format!("bad {MODEL_KEY} ({e})")))
            })?;
        let progress = meta
            .get(PROGRESS_KEY)
            .map(|json| serde_json::from_str(json))
            .transpose()
            .map_err(|e| bad(format!("bad {PROGRESS_KEY} ({e})")))?;
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, t)| (name, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
            .collect();
        Ok(SavedFile {
            path: path.to_path_buf(),
            info,
            config: meta.get(CONFIG_KEY).cloned(),
            tensors,
            progress,
        })
    }

    /// True for a checkpoint (a file a run can resume from).
    pub fn is_checkpoint(&self) -> bool {
        self.progress.is_some() && self.config.is_some()
    }

    /// The updates done when this checkpoint was written (0 for a model file).
    pub fn iteration(&self) -> usize {
        self.progress.as_ref().map_or(0, |p| p.iteration)
    }

    fn err(&self, problem: String) -> Error {
        Error::file(&self.path, problem)
    }

    /// The f32 tensor `name`, checked to have `shape`.
    fn f32_tensor(&self, name: &str, shape: &[usize]) -> Result<ArrayD<f32>> {
        let (dtype, found, data) = self.tensors.get(name).ok_or_else(|| {
            self.err(format!(
                "no tensor {name}: the file is for another model or incomplete"
            ))
        })?;
        if *dtype != Dtype::F32 {
            return Err(self.err(format!("tensor {name} is {dtype:?}, expected F32")));
        }
        if found.as_slice() != shape {
            return Err(self.err(format!(
                "tensor {name} is {found:?}, the model needs {shape:?}: the file is for another model"
            )));
        }
        let values = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(ArrayD::from_shape_vec(shape.to_vec(), values).expect("shape checked by safetensors"))
    }

    /// Copies the weights and statistics into `net`, whose description must be the file's.
    pub fn load_weights(&self, net: &mut Network<f32>) -> Result<()> {
        if net.description() != self.info.layers {
            return Err(self.err(format!(
                "the file is for another model: it holds [{}], this run builds [{}]",
                self.info.layers.replace('\n', "; "),
                net.description().replace('\n', "; ")
            )));
        }
        for (name, mut p) in net.params() {
            let t = self.f32_tensor(&name, p.value.shape())?;
            p.value.assign(&t);
        }
        for (name, mut b) in net.buffers() {
            let t = self.f32_tensor(&name, b.shape())?;
            b.assign(&t);
        }
        Ok(())
    }

    /// The network the file describes, with its weights.
    pub fn network(&self) -> Result<Network<f32>> {
        let spec = self
            .info
            .spec()
            .map_err(|e| self.err(format!("its model description does not build: {e}")))?;
        // the weights are in the file: a description of more is corrupt, and is refused
        // before it is allocated
        let wanted = crate::budget::parameter_count(&spec);
        let held: u64 = (self.tensors.iter())
            .filter(|(name, _)| !name.starts_with(OPTIMIZER_PREFIX) && !name.starts_with("train."))
            .map(|(_, (_, shape, _))| shape.iter().map(|&d| d as u64).product::<u64>())
            .sum();
        if wanted > held {
            return Err(self.err(format!(
                "its model description has {wanted} parameters, but the file holds {held} values: it is corrupt"
            )));
        }
        let mut net = spec.build(&mut Rng::new(0));
        self.load_weights(&mut net)?;
        Ok(net)
    }

    /// Puts the checkpoint's state into `state` (a fresh run of the same settings): weights,
    /// optimizer, generators, shuffle, counters.
    pub fn restore(&self, state: &mut TrainState) -> Result<()> {
        let progress = self.progress.as_ref().ok_or_else(|| {
            self.err("a model file, not a checkpoint: it cannot resume a run".into())
        })?;
        self.load_weights(&mut state.network)?;
        if progress.optimizer != state.optimizer.name() {
            return Err(self.err(format!(
                "the checkpoint's optimizer is {}, this run's {}",
                progress.optimizer,
                state.optimizer.name()
            )));
        }
        let shapes: BTreeMap<String, Vec<usize>> = state
            .network
            .params()
            .into_iter()
            .map(|(name, p)| (name, p.value.shape().to_vec()))
            .collect();
        let mut buffers = BTreeMap::new();
        for (name, (_, shape, _)) in &self.tensors {
            if let Some(key) = name.strip_prefix(OPTIMIZER_PREFIX) {
                // "m.W1": a buffer of parameter W1, of W1's shape
                let param = key.split_once('.').map_or(key, |(_, p)| p);
                match shapes.get(param) {
                    Some(want) if want == shape => {}
                    Some(want) => {
                        return Err(self.err(format!(
                            "tensor {name} is {shape:?}, but the parameter {param} is {want:?}: this checkpoint does not match its model"
                        )));
                    }
                    None => {
                        return Err(self.err(format!(
                            "tensor {name} belongs to no parameter of the model ({param})"
                        )));
                    }
                }
                buffers.insert(key.to_string(), self.f32_tensor(name, shape)?);
            }
        }
        state
            .optimizer
            .set_state(OptimizerState {
                steps: progress.optimizer_steps,
                buffers,
            })
            .map_err(|e| self.err(format!("optimizer state: {e}")))?;
        let parse = |w: &[String; 4]| -> Result<[u64; 4]> {
            let mut out = [0u64; 4];
            for (o, s) in out.iter_mut().zip(w) {
                *o = s
                    .parse()
                    .map_err(|_| self.err(format!("bad generator state {s:?}")))?;
            }
            Ok(out)
        };
        state.rng = Rng::from_state(parse(&progress.rng)?);
        let dropout: Vec<[u64; 4]> = progress
            .dropout_rngs
            .iter()
            .map(parse)
            .collect::<Result<_>>()?;
        if !state.network.set_rng_states(&dropout) {
            return Err(self.err("dropout generator count does not match the model".into()));
        }
        let (dtype, shape, data) = self
            .tensors
            .get(ORDER)
            .ok_or_else(|| self.err(format!("no tensor {ORDER}")))?;
        if *dtype != Dtype::I64 || shape.len() != 1 {
            return Err(self.err(format!("tensor {ORDER} is not a 1-D I64 tensor")));
        }
        let n = shape[0];
        let order: Vec<usize> = data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .map(|i| usize::try_from(i).ok().filter(|&i| i < n))
            .collect::<Option<_>>()
            .ok_or_else(|| self.err(format!("tensor {ORDER} holds an index out of range")))?;
        state.order = order;
        state.iteration = progress.iteration;
        state.epoch_loss = progress.epoch_loss;
        state.epoch_iters = progress.epoch_iters;
        state.last_loss = progress.last_loss.unwrap_or(f64::NAN);
        state.elapsed_s = progress.elapsed_s;
        state.best_accuracy = progress.best_accuracy;
        Ok(())
    }
}

/// Removes from `dir` the temporary files of checkpoint and model writes ([`write_atomic`]:
/// `.NAME.safetensors.PID.tmp`) that a killed process never finished; errors are ignored.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") && name.contains(".safetensors.") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Writes `bytes` to `path` so that `path` holds either its old content or all of the new:
/// a temporary file in the same directory, flushed and synced, renamed over `path`, then the
/// directory synced. A full disk or a crash leaves the old file in place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file name"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id())); // see remove_stale_temporaries
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // the rename itself reaches the disk with the directory
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
