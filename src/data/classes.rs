//! Where a data set is and what its classes are called: `--data fashion`, class names from
//! the data's folder, MNIST's digits otherwise.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where Debian's `dataset-fashion-mnist` package puts the four IDX files.
pub const FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's ten classes, in label order (Zalando's README).
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The directory `--data` names: itself, or for `fashion` (when no such directory is here)
/// Fashion-MNIST's: `$BACKPROP_FASHION_MNIST`, else [`FASHION_DIR`]; a message says how to
/// install it when it is absent.
pub fn resolve(data: &Path) -> Result<PathBuf> {
    if data != Path::new("fashion") || data.is_dir() {
        return Ok(data.to_path_buf());
    }
    let dir = std::env::var_os("BACKPROP_FASHION_MNIST").map_or(FASHION_DIR.into(), PathBuf::from);
    if dir.is_dir() {
        return Ok(dir);
    }
    Err(Error::Config(format!(
        "--data fashion: Fashion-MNIST is not in {}; install it with `apt-get install dataset-fashion-mnist`, or give --data the folder of its four IDX files",
        dir.display()
    )))
}

/// The names of `classes` classes of the data in `dir`: the lines of `dir/classes.txt` when
/// there is one, Fashion-MNIST's for a folder whose name says `fashion`, else `0`, `1`, ...
pub fn class_names(dir: &Path, classes: usize) -> Result<Vec<String>> {
    let file = dir.join("classes.txt");
    if file.is_file() {
        let text = crate::limits::read_text(&file)?;
        let names: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if names.len() != classes {
            return Err(Error::file(
                &file,
                format!("{} names for {classes} classes", names.len()),
            ));
        }
        return Ok(names);
    }
    let named_fashion = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .components()
        .any(|c| {
            c.as_os_str()
                .to_string_lossy()
                .to_lowercase()
                .contains("fashion")
        });
    if named_fashion && classes == FASHION_CLASSES.len() {
        return Ok(FASHION_CLASSES.iter().map(|s| s.to_string()).collect());
    }
    Ok(digits(classes))
}

/// `0`, `1`, ..., `classes - 1`: MNIST's names.
pub fn digits(classes: usize) -> Vec<String> {
    (0..classes).map(|k| k.to_string()).collect()
}

/// True when `names` are the digits (or none are given): classes that are MNIST's.
pub fn are_digits(names: &[String]) -> bool {
    names.iter().enumerate().all(|(k, n)| *n == k.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_folder() {
        let dir = std::env::temp_dir().join(format!("backprop-classes-{}", std::process::id()));
        let fashion = dir.join("my-fashion-mnist");
        std::fs::create_dir_all(&fashion).unwrap();
        assert_eq!(class_names(&dir, 3).unwrap(), ["0", "1", "2"]);
        assert_eq!(class_names(&fashion, 10).unwrap()[9], "Ankle boot");
        std::fs::write(dir.join("classes.txt"), "cat\ndog\n\nbird\n").unwrap();
        assert_eq!(class_names(&dir, 3).unwrap(), ["cat", "dog", "bird"]);
        let e = class_names(&dir, 4).unwrap_err().to_string();
        assert!(e.contains("classes.txt: 3 names for 4 classes"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
