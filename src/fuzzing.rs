//! The readers of outside input, as the fuzzers (`fuzz/`, cargo-fuzz) and the corpus replay
//! (`tests/fuzz_replay.rs`) call them: each takes any bytes and must return, an error being
//! as good as a success. A network a description or file would build is built, and run on
//! one sample, only below [`SMALL`]: the fuzzers look for crashes, not for the memory budget
//! (`crate::budget` refuses the large ones in the commands).

use std::path::Path;

use crate::budget::Need;
use crate::checkpoint::SavedFile;
use crate::describe::Spec;
use crate::layers::Input;
use crate::{Network, Rng};

/// Bytes of the largest network (weights and one sample's activations) built here.
pub const SMALL: u64 = 64 << 20;

/// An IDX image file and a label file, raw or gzip.
pub fn idx(data: &[u8]) {
    let path = Path::new("fuzz.idx");
    let _ = crate::data::idx::parse_images(path, data);
    let _ = crate::data::idx::parse_labels(path, data, Some(10));
}

/// A model or checkpoint file: read, rebuilt, and run on a blank sample.
pub fn model(data: &[u8]) {
    let Ok(saved) = SavedFile::parse(Path::new("fuzz.safetensors"), data) else {
        return;
    };
    let Ok(spec) = saved.info.spec() else { return };
    if Need::inference(&spec, 1).total() > SMALL {
        return;
    }
    if let Ok(net) = saved.network() {
        run_once(&net, &spec);
    }
}

/// A layer description for 1x28x28 images and 10 classes (the first byte picks others).
pub fn describe(data: &[u8]) {
    let Some((&first, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let input = match first % 3 {
        0 => (1, 28, 28),
        1 => (3, 7, 5),
        _ => (1, 1, 300),
    };
    let Ok(spec) = Spec::parse(text, input, 10) else {
        return;
    };
    if Need::training(&spec, 1, 2, 1, 1).total() <= SMALL {
        let net = spec.build::<f32>(&mut Rng::new(0));
        run_once(&net, &spec);
    }
}

/// An image file, prepared for a digit model (1x28x28) and for an RGB one (3x32x32).
pub fn image(data: &[u8]) {
    let path = Path::new("fuzz.png");
    let _ = crate::image::model_input(path, data, [1, 28, 28], true);
    let _ = crate::image::model_input(path, data, [3, 32, 32], false);
}

fn run_once(net: &Network<f32>, spec: &Spec) {
    let (c, h, w) = spec.input;
    let x = ndarray::ArrayD::<f32>::zeros(vec![1, c, h, w]);
    let _ = net.predict(Input::from(x));
}
