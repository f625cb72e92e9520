//! The fuzzers' seeds and every input that once crashed one, replayed on stable Rust through
//! the same entry points (`backprop::fuzzing`): each must return. The fuzzers themselves run
//! with cargo-fuzz on nightly (`fuzz/README.md`); this keeps what they found fixed.

use std::fs;
use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for dir in [
        root.join("corpus").join(target),
        root.join("regressions").join(target),
    ] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // the corpus folder also holds what a local fuzzing run found; seeds are committed
            if dir.ends_with(Path::new("corpus").join(target)) && !name.starts_with("seed-") {
                continue;
            }
            run(&fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no inputs for {target}");
}

#[test]
fn idx_inputs_return() {
    replay("idx", backprop::fuzzing::idx);
}

#[test]
fn model_inputs_return() {
    replay("model", backprop::fuzzing::model);
}

#[test]
fn describe_inputs_return() {
    replay("describe", backprop::fuzzing::describe);
}

#[test]
fn image_inputs_return() {
    replay("image", backprop::fuzzing::image);
}
