//! Checkpoints and model files: bit-identical resumes, bad files, readable by Python.

mod common;

use std::path::Path;

use backprop::checkpoint::{ModelInfo, SavedFile, save_checkpoint, save_model};
use backprop::data::Mnist;
use backprop::train::{Length, Model, Observer, Run, Sampling, TrainConfig, train_with};
use backprop::{Error, Network, Rng};

/// 2000 training and 500 test images.
fn slice() -> Mnist {
    let data = common::mnist();
    Mnist {
        train: data.train.slice(0..2000),
        test: data.test.slice(0..500),
        ..data
    }
}

/// Stops after `at` updates (never when None).
struct StopAt(Option<usize>, usize);

impl Observer for StopAt {
    fn iteration(&mut self, p: &backprop::train::Progress) {
        self.1 = p.iteration;
    }
    fn should_stop(&self) -> bool {
        self.0.is_some_and(|at| self.1 >= at)
    }
}

fn weights(net: &mut Network<f32>) -> Vec<(String, Vec<u32>)> {
    let mut out: Vec<(String, Vec<u32>)> = net
        .params()
        .into_iter()
        .map(|(n, p)| (n, p.value.iter().map(|v| v.to_bits()).collect()))
        .collect();
    out.extend(
        net.buffers()
            .into_iter()
            .map(|(n, b)| (n, b.iter().map(|v| v.to_bits()).collect())),
    );
    out
}

fn info(run: &Run, data: &Mnist) -> ModelInfo {
    ModelInfo::of(
        &run.state.network,
        [1, data.train.rows(), data.train.cols()],
        data.classes,
    )
}

/// N updates straight, against N/2, a checkpoint written and read back, then the rest.
fn assert_resume_is_bit_identical(cfg: &TrainConfig, stop_at: usize, name: &str) {
    let data = slice();
    let dir = common::scratch_dir(name);
    let straight = train_with(cfg, &data, |_| Ok(()), &mut StopAt(None, 0)).unwrap();
    assert!(!straight.stopped());

    let mut first = train_with(cfg, &data, |_| Ok(()), &mut StopAt(Some(stop_at), 0)).unwrap();
    assert!(first.stopped());
    assert_eq!(first.state.iteration, stop_at);
    let path = dir.join("last.safetensors");
    let info = info(&first, &data);
    save_checkpoint(&path, &mut first.state, &info, "# settings").unwrap();
    drop(first);

    let saved = SavedFile::read(&path).unwrap();
    assert!(saved.is_checkpoint());
    assert_eq!(saved.iteration(), stop_at);
    let resumed = train_with(cfg, &data, |s| saved.restore(s), &mut StopAt(None, 0)).unwrap();
    let (mut a, mut b) = (straight.state, resumed.state);
    assert_eq!(a.iteration, b.iteration);
    assert_eq!(a.rng.state(), b.rng.state(), "{name}: generator");
    assert_eq!(
        weights(&mut a.network),
        weights(&mut b.network),
        "{name}: weights differ"
    );
    assert_eq!(
        a.optimizer.state(),
        b.optimizer.state(),
        "{name}: optimizer state"
    );
    assert_eq!(
        straight.summary.unwrap().test_accuracy,
        resumed.summary.unwrap().test_accuracy
    );
}

#[test]
fn sgd_resumed_halfway_ends_bit_identical() {
    let cfg = TrainConfig {
        length: Length::Iterations(60),
        ..TrainConfig::default()
    };
    assert_resume_is_bit_identical(&cfg, 30, "sgd");
}

#[test]
fn adam_with_dropout_and_batch_norm_resumed_mid_epoch_ends_bit_identical() {
    // shuffled epochs of 16 batches, stopped inside the second: the shuffle, Adam's moments,
    // dropout's generators and batch norm's running statistics all have to come back
    let cfg = TrainConfig {
        model: Model::Mlp,
        hidden: vec![40, 30],
        batch_norm: true,
        dropout: 0.2,
        optimizer: "adam".into(),
        lr: 0.001,
        length: Length::Epochs(3),
        batch_size: 128,
        sampling: Sampling::Shuffle,
        validation: 0.1,
        ..TrainConfig::default()
    };
    assert_resume_is_bit_identical(&cfg, 21, "adam");
}

#[test]
fn a_model_file_alone_rebuilds_the_network_with_the_same_predictions() {
    let data = slice();
    let dir = common::scratch_dir("model-file");
    for (model, layers) in [
        (Model::SimpleCnn, None),
        (
            Model::Described,
            Some(
                "conv 4 3x2 stride=2 pad=1\nrelu\npool avg 2\nbatchnorm\naffine 20\ntanh\ndropout 0.3\naffine classes",
            ),
        ),
    ] {
        let cfg = TrainConfig {
            model,
            layers: layers.map(String::from),
            optimizer: "adam".into(),
            lr: 0.001,
            length: Length::Iterations(5),
            ..TrainConfig::default()
        };
        let mut run = train_with(&cfg, &data, |_| Ok(()), &mut StopAt(None, 0)).unwrap();
        let path = dir.join("model.safetensors");
        let info = info(&run, &data);
        save_model(&path, &mut run.state.network, &info).unwrap();
        let loaded = SavedFile::read(&path).unwrap();
        assert!(!loaded.is_checkpoint());
        let net = loaded.network().unwrap();
        let (x, _) = data.test.input_batch::<f32>(&(0..50).collect::<Vec<_>>());
        let expected = run.state.network.predict(x.clone());
        assert_eq!(net.predict(x), expected, "{model:?}");
    }
}

/// The one-line message of an error, checked to name the file.
fn message(e: Error, path: &Path) -> String {
    let m = e.to_string();
    assert!(
        m.contains(&path.display().to_string()),
        "error does not name the file: {m}"
    );
    assert!(!m.contains('\n'), "not one line: {m}");
    m
}

#[test]
fn bad_files_give_one_line_errors_naming_them() {
    let data = slice();
    let dir = common::scratch_dir("bad-files");
    let cfg = TrainConfig {
        length: Length::Iterations(3),
        ..TrainConfig::default()
    };
    let mut run = train_with(&cfg, &data, |_| Ok(()), &mut StopAt(None, 0)).unwrap();
    let good = dir.join("good.safetensors");
    let info = info(&run, &data);
    save_checkpoint(&good, &mut run.state, &info, "x").unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let missing = dir.join("missing.safetensors");
    let m = message(SavedFile::read(&missing).err().unwrap(), &missing);
    assert!(m.contains("No such file"), "{m}");

    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let m = message(SavedFile::read(&truncated).err().unwrap(), &truncated);
    assert!(m.contains("truncated or corrupt"), "{m}");

    let corrupt = dir.join("corrupt.safetensors");
    let mut c = bytes.clone();
    c[12] ^= 0x55; // inside the JSON header
    std::fs::write(&corrupt, &c).unwrap();
    assert!(SavedFile::read(&corrupt).is_err());

    // a checkpoint of the two-layer net handed to a run of another model
    let other = TrainConfig {
        hidden: vec![30],
        ..cfg.clone()
    };
    let saved = SavedFile::read(&good).unwrap();
    let e = train_with(&other, &data, |s| saved.restore(s), &mut StopAt(None, 0))
        .err()
        .unwrap();
    let m = message(e, &good);
    assert!(m.contains("another model"), "{m}");

    // a model file cannot resume
    let model_file = dir.join("model.safetensors");
    save_model(&model_file, &mut run.state.network, &info).unwrap();
    let saved = SavedFile::read(&model_file).unwrap();
    let e = train_with(&cfg, &data, |s| saved.restore(s), &mut StopAt(None, 0))
        .err()
        .unwrap();
    assert!(message(e, &model_file).contains("not a checkpoint"));
}

#[test]
fn random_and_damaged_bytes_never_panic_the_loader() {
    let data = slice();
    let cfg = TrainConfig {
        length: Length::Iterations(2),
        ..TrainConfig::default()
    };
    let mut run = train_with(&cfg, &data, |_| Ok(()), &mut StopAt(None, 0)).unwrap();
    let dir = common::scratch_dir("fuzz");
    let good = dir.join("good.safetensors");
    let info = info(&run, &data);
    save_checkpoint(&good, &mut run.state, &info, "x").unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let path = Path::new("fuzz.safetensors");
    let mut rng = Rng::new(77);
    for round in 0..3000 {
        let sample: Vec<u8> = match round % 4 {
            // pure noise
            0 => (0..rng.below(200)).map(|_| rng.below(256) as u8).collect(),
            // a valid header length, then noise
            1 => {
                let mut b = (40u64).to_le_bytes().to_vec();
                b.extend((0..rng.below(80)).map(|_| rng.below(256) as u8));
                b
            }
            // the real file with a few bytes flipped, mostly in the header
            2 => {
                let mut b = bytes.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(8 + header_len + 64);
                    b[at] = rng.below(256) as u8;
                }
                b
            }
            // the real file cut anywhere
            _ => bytes[..rng.below(bytes.len())].to_vec(),
        };
        // parse, then everything a caller would do with what parsed
        if let Ok(saved) = SavedFile::parse(path, &sample) {
            if let Ok(net) = saved.network() {
                let (x, _) = data.test.input_batch::<f32>(&[0, 1]);
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    // a damaged description may build a network the data does not fit;
                    // that is the caller's shape error, not the loader's
                    net.predict(x)
                }));
            }
            let _ = train_with(&cfg, &data, |s| saved.restore(s), &mut StopAt(Some(0), 0));
        }
    }
}
