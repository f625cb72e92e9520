//! A data set from a folder of images in class subfolders, torchvision's ImageFolder
//! convention: `DIR/train/<class>/*` and `DIR/test/<class>/*`, or `DIR/<class>/*` alone, of
//! which every fifth image of each class (in name order) is held out as the test set.
//! Classes are the subfolders' names, sorted. PNG, JPEG and PGM files of any size and
//! colour are made one size (the most common one, or `size`) and one channel count (RGB when
//! any image has colour, or `channels`). A file that cannot be used is listed with the reason,
//! never dropped silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Dataset;
use crate::error::{Error, Result};
use crate::image::{Picture, load_picture};

/// How a folder's images are prepared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FolderOptions {
    /// Every image resized to (height, width); None: all must share one size (the most
    /// common), the others are listed and left out.
    pub size: Option<(usize, usize)>,
    /// 1 (grey) or 3 (RGB); None: 3 if any image has colour, else 1.
    pub channels: Option<usize>,
}

/// A file left out of a data set, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// A folder's training and test sets, its classes, and what was left out.
#[derive(Debug)]
pub struct FolderData {
    pub train: Dataset,
    pub test: Dataset,
    pub class_names: Vec<String>,
    pub skipped: Vec<Skipped>,
}

/// True when `dir` holds class subfolders (or `train/`) rather than IDX files.
pub fn is_image_folder(dir: &Path) -> bool {
    subfolders(dir).is_ok_and(|s| !s.is_empty())
}

/// Reads the image folder `dir` (see the module's docs); `threads` decode the files.
pub fn load_folder(dir: &Path, options: &FolderOptions, threads: usize) -> Result<FolderData> {
    if let Some(c) = options.channels
        && c != 1
        && c != 3
    {
        return Err(Error::Config(format!(
            "--channels {c}: 1 (grey) or 3 (RGB)"
        )));
    }
    let (train_root, test_root) = if dir.join("train").is_dir() {
        (dir.join("train"), Some(dir.join("test")))
    } else {
        (dir.to_path_buf(), None)
    };
    let class_names = subfolders(&train_root)?;
    if class_names.is_empty() {
        return Err(Error::file(dir, "no class subfolders of images"));
    }
    if class_names.len() > 256 {
        return Err(Error::file(
            dir,
            format!("{} classes; at most 256", class_names.len()),
        ));
    }
    let mut skipped = Vec::new();
    let mut files = class_files(&train_root, &class_names, &mut skipped)?;
    let test_files = match &test_root {
        Some(root) if root.is_dir() => class_files(root, &class_names, &mut skipped)?,
        Some(root) => return Err(Error::file(root, "train/ has no test/ beside it")),
        None => hold_out(&mut files),
    };
    let decoded = decode(files, threads, &mut skipped);
    let decoded_test = decode(test_files, threads, &mut skipped);
    let size = options
        .size
        .unwrap_or_else(|| common_size(&decoded, &decoded_test));
    let colour = decoded
        .iter()
        .chain(&decoded_test)
        .any(|(_, _, p)| p.is_colour());
    let channels = options.channels.unwrap_or(if colour { 3 } else { 1 });
    let prepare = |set: Vec<(PathBuf, u8, Picture)>, skipped: &mut Vec<Skipped>| {
        samples(set, size, options.size.is_some(), channels, skipped)
    };
    let train = prepare(decoded, &mut skipped)?;
    let test = prepare(decoded_test, &mut skipped)?;
    if train.is_empty() {
        let why = skipped.first().map_or("no image files".into(), |s| {
            format!(
                "{} files unusable, the first {}: {}",
                skipped.len(),
                s.path.display(),
                s.reason
            )
        });
        return Err(Error::file(
            dir,
            format!("no usable training images ({why})"),
        ));
    }
    empty_classes(&train, &class_names, &train_root, &mut skipped);
    Ok(FolderData {
        train,
        test,
        class_names,
        skipped,
    })
}

/// The names of `dir`'s subfolders, sorted (hidden ones, `.name`, left out).
fn subfolders(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Every file under `root/<class>/`, with its label, in name order; other folders there (a
/// class the training set lacks, a folder inside a class) are listed as skipped.
fn class_files(
    root: &Path,
    classes: &[String],
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<(PathBuf, u8)>> {
    let mut files = Vec::new();
    for name in subfolders(root)? {
        let Some(label) = classes.iter().position(|c| *c == name) else {
            skipped.push(Skipped {
                path: root.join(&name),
                reason: "a class the training set does not have".into(),
            });
            continue;
        };
        let dir = root.join(&name);
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        entries.sort();
        for path in entries {
            if path.is_file() {
                files.push((path, label as u8));
            } else {
                let reason = "not a regular file".into();
                skipped.push(Skipped { path, reason });
            }
        }
    }
    Ok(files)
}

/// Takes every fifth file of each class (the 5th, 10th, ... in name order) out of `files`
/// as the test set.
fn hold_out(files: &mut Vec<(PathBuf, u8)>) -> Vec<(PathBuf, u8)> {
    let mut seen: BTreeMap<u8, usize> = BTreeMap::new();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (path, label) in files.drain(..) {
        let n = seen.entry(label).or_default();
        *n += 1;
        if n.is_multiple_of(5) {
            test.push((path, label));
        } else {
            train.push((path, label));
        }
    }
    *files = train;
    test
}

/// Decodes the files on `threads` threads; the unreadable ones are listed.
fn decode(
    files: Vec<(PathBuf, u8)>,
    threads: usize,
    skipped: &mut Vec<Skipped>,
) -> Vec<(PathBuf, u8, Picture)> {
    let results = crate::parallel::map(files, threads, |(path, label)| {
        let picture = load_picture(&path);
        (path, label, picture)
    });
    let mut decoded = Vec::with_capacity(results.len());
    for (path, label, picture) in results {
        match picture {
            Ok(p) => decoded.push((path, label, p)),
            Err(e) => {
                let reason = match e {
                    Error::File { problem, .. } => problem,
                    Error::Io { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                skipped.push(Skipped { path, reason });
            }
        }
    }
    decoded
}

/// The most common (height, width) of the pictures (the first seen on a tie).
fn common_size(a: &[(PathBuf, u8, Picture)], b: &[(PathBuf, u8, Picture)]) -> (usize, usize) {
    let mut counts: Vec<((usize, usize), usize)> = Vec::new();
    for (_, _, p) in a.iter().chain(b) {
        let size = (p.height, p.width);
        match counts.iter_mut().find(|(s, _)| *s == size) {
            Some((_, n)) => *n += 1,
            None => counts.push((size, 1)),
        }
    }
    let best = counts.iter().map(|&(_, n)| n).max().unwrap_or(0);
    counts
        .iter()
        .find(|&&(_, n)| n == best)
        .map_or((1, 1), |&(s, _)| s)
}

/// The pictures as one data set of `channels x size` images; pictures of another size are
/// resized when `resize`, else listed and left out.
fn samples(
    set: Vec<(PathBuf, u8, Picture)>,
    (h, w): (usize, usize),
    resize: bool,
    channels: usize,
    skipped: &mut Vec<Skipped>,
) -> Result<Dataset> {
    let mut images = Vec::with_capacity(set.len() * channels * h * w);
    let mut labels = Vec::with_capacity(set.len());
    for (path, label, picture) in set {
        if !resize && (picture.height, picture.width) != (h, w) {
            let (ph, pw) = (picture.height, picture.width);
            let reason =
                format!("{pw}x{ph}, not the {w}x{h} of the others (give --image-size to resize)");
            skipped.push(Skipped { path, reason });
            continue;
        }
        images.extend(prepare(&picture, (h, w), channels));
        labels.push(label);
    }
    Dataset::with_channels(images, labels, channels, h.max(1), w.max(1))
}

/// Lists the classes with no training image left.
fn empty_classes(train: &Dataset, names: &[String], root: &Path, skipped: &mut Vec<Skipped>) {
    let mut count = vec![0usize; names.len()];
    train.labels().iter().for_each(|&l| count[l as usize] += 1);
    for (name, _) in names.iter().zip(&count).filter(|(_, n)| **n == 0) {
        skipped.push(Skipped {
            path: root.join(name),
            reason: "an empty class: no usable training image".into(),
        });
    }
}

/// A picture as a sample of a data set of `channels x h x w` images: resized, then split
/// into planes (what [`load_folder`] does to every file, and `predict` to a named-class
/// model's images).
pub fn prepare(p: &Picture, (h, w): (usize, usize), channels: usize) -> Vec<u8> {
    planes(&resized(p, h, w), channels)
}

/// `p` as `channels` planes of bytes (grey copied to R, G, B; RGB to grey by its luma,
/// 0.299 R + 0.587 G + 0.114 B, as `image::load` weighs them).
fn planes(p: &Picture, channels: usize) -> Vec<u8> {
    let n = p.width * p.height;
    match (p.channels, channels) {
        (1, 1) => p.data.clone(),
        (3, 3) => (0..3)
            .flat_map(|c| p.data.iter().skip(c).step_by(3).copied())
            .collect(),
        (1, _) => (0..3).flat_map(|_| p.data.iter().copied()).collect(),
        _ => (0..n)
            .map(|i| {
                let px = &p.data[3 * i..3 * i + 3];
                let y = 0.299 * px[0] as f32 + 0.587 * px[1] as f32 + 0.114 * px[2] as f32;
                y.round().min(255.0) as u8
            })
            .collect(),
    }
}

/// `p` resized to `h x w` (interleaved, as `p`): each output pixel the mean of the source
/// area it covers when shrinking, a bilinear sample when enlarging.
pub fn resized(p: &Picture, h: usize, w: usize) -> Picture {
    if (p.height, p.width) == (h, w) {
        return p.clone();
    }
    let c = p.channels;
    let (xs, ys) = (taps(p.width, w), taps(p.height, h));
    // rows first: (p.height, w, c), then columns: (h, w, c)
    let mut rows = vec![0f32; p.height * w * c];
    for y in 0..p.height {
        for (ox, tap) in xs.iter().enumerate() {
            for ch in 0..c {
                let v: f32 = tap
                    .iter()
                    .map(|&(x, wt)| wt * p.data[(y * p.width + x) * c + ch] as f32)
                    .sum();
                rows[(y * w + ox) * c + ch] = v;
            }
        }
    }
    let mut data = vec![0u8; h * w * c];
    for (oy, tap) in ys.iter().enumerate() {
        for i in 0..w * c {
            let v: f32 = tap.iter().map(|&(y, wt)| wt * rows[y * w * c + i]).sum();
            data[oy * w * c + i] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    Picture {
        width: w,
        height: h,
        channels: c,
        data,
    }
}

/// For each of `dst` output positions, the source positions of `src` and their weights.
fn taps(src: usize, dst: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|o| {
            if scale > 1.0 {
                // the source interval [o·s, (o + 1)·s), each pixel weighed by its overlap
                let (a, b) = (o as f64 * scale, (o + 1) as f64 * scale);
                let (first, last) = (a.floor() as usize, (b.ceil() as usize).min(src));
                (first..last)
                    .map(|x| {
                        let overlap = (b.min(x as f64 + 1.0) - a.max(x as f64)).max(0.0);
                        (x, (overlap / scale) as f32)
                    })
                    .collect()
            } else {
                // bilinear between the two nearest source centres
                let at = ((o as f64 + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f64);
                let x0 = at.floor() as usize;
                let t = (at - x0 as f64) as f32;
                let x1 = (x0 + 1).min(src - 1);
                vec![(x0, 1.0 - t), (x1, t)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(w: usize, h: usize, channels: usize, f: impl Fn(usize) -> u8) -> Picture {
        Picture {
            width: w,
            height: h,
            channels,
            data: (0..w * h * channels).map(f).collect(),
        }
    }

    #[test]
    fn shrinking_averages_the_area_and_enlarging_interpolates() {
        // 4x4 grey of 0, 4, 8, ... halves to the means of its 2x2 blocks
        let p = picture(4, 4, 1, |i| (i * 4) as u8);
        let half = resized(&p, 2, 2);
        assert_eq!(half.data, [10, 18, 42, 50]);
        // a 2x1 of 0 and 200 doubled: the outer pixels keep the ends, the inner blend
        let q = picture(2, 1, 1, |i| (i * 200) as u8);
        assert_eq!(resized(&q, 1, 4).data, [0, 50, 150, 200]);
        // a constant image stays constant at any size, in every channel
        let flat = picture(7, 5, 3, |i| [10, 20, 30][i % 3]);
        let out = resized(&flat, 3, 11);
        assert!(out.data.chunks_exact(3).all(|px| px == [10, 20, 30]));
    }

    #[test]
    fn channels_are_split_into_planes_or_merged_to_grey() {
        let rgb = picture(2, 1, 3, |i| [255, 0, 0, 0, 0, 255][i]);
        assert_eq!(planes(&rgb, 3), [255, 0, 0, 0, 0, 255]);
        assert_eq!(planes(&rgb, 1), [76, 29]);
        let grey = picture(2, 1, 1, |i| [7, 9][i]);
        assert_eq!(planes(&grey, 3), [7, 9, 7, 9, 7, 9]);
        assert_eq!(planes(&grey, 1), [7, 9]);
    }

    #[test]
    fn every_fifth_file_of_each_class_is_held_out() {
        let mut files: Vec<(PathBuf, u8)> = (0..12)
            .map(|i| (PathBuf::from(format!("{i}")), (i % 2) as u8))
            .collect();
        let test = hold_out(&mut files);
        let names: Vec<String> = test.iter().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(names, ["8", "9"]);
        assert_eq!(files.len(), 10);
    }
}
