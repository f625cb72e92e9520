//! `backprop data DIR`: what a data set holds (counts, classes, shape, pixel statistics, the
//! share of zero pixels, files left out), and the helpers other commands share to load one.

use std::path::PathBuf;
use std::process::ExitCode;

use backprop::Error;
use backprop::data::folder::FolderOptions;
use backprop::data::{Dataset, Mnist};

#[derive(clap::Args)]
pub struct DataArgs {
    /// A directory of the four IDX files, `fashion`, or a folder of class subfolders.
    data: PathBuf,
    /// An image folder's images resized to N x N (or HxW).
    #[arg(long, value_name = "N|HxW")]
    image_size: Option<String>,
    /// An image folder's images as 1 (grey) or 3 (RGB) channels.
    #[arg(long)]
    channels: Option<usize>,
}

pub fn run(args: DataArgs) -> Result<ExitCode, Error> {
    let size = args
        .image_size
        .as_deref()
        .map(|s| parse_size(s, "--image-size"))
        .transpose()?;
    let options = FolderOptions {
        size,
        channels: args.channels,
    };
    let data = Mnist::load_with(&args.data, &options)?;
    println!("data: {}", args.data.display());
    let (c, h, w) = data.train.shape();
    println!(
        "images: {} training, {} test, each {} ({c} channel{}, {h} rows, {w} columns)",
        data.train.len(),
        data.test.len(),
        shape_text((c, h, w)),
        if c == 1 { "" } else { "s" }
    );
    print_classes(&data);
    for (name, set) in [("training", &data.train), ("test", &data.test)] {
        println!("{name} pixels (x / 255): {}", pixel_stats(set));
    }
    if data.skipped.is_empty() {
        println!("files left out: none");
    } else {
        println!("files left out: {}", data.skipped.len());
        for s in &data.skipped {
            println!("  {}: {}", s.path.display(), s.reason);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Each class with its training and test counts.
fn print_classes(data: &Mnist) {
    let count = |set: &Dataset| {
        let mut n = vec![0usize; data.classes];
        set.labels().iter().for_each(|&l| n[l as usize] += 1);
        n
    };
    let (train, test) = (count(&data.train), count(&data.test));
    let width = data
        .class_names
        .iter()
        .map(|n| n.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!("classes: {}", data.classes);
    println!(
        "  {:>3}  {:<width$}  {:>8}  {:>6}",
        "", "name", "training", "test"
    );
    for (k, name) in data.class_names.iter().enumerate() {
        println!("  {k:>3}  {name:<width$}  {:>8}  {:>6}", train[k], test[k]);
    }
}

/// Mean and standard deviation of x / 255 per channel, and the share of zero pixels.
fn pixel_stats(set: &Dataset) -> String {
    if set.is_empty() {
        return "no images".into();
    }
    let (c, h, w) = set.shape();
    let plane = h * w;
    let mut sums = vec![(0f64, 0f64); c];
    for image in set.images().chunks_exact(c * plane) {
        for (ch, pixels) in image.chunks_exact(plane).enumerate() {
            for &p in pixels {
                let x = p as f64 / 255.0;
                sums[ch].0 += x;
                sums[ch].1 += x * x;
            }
        }
    }
    let n = (set.len() * plane) as f64;
    let per_channel: Vec<String> = sums
        .iter()
        .map(|&(s, q)| {
            let mean = s / n;
            let std = (q / n - mean * mean).max(0.0).sqrt();
            format!("mean {mean:.4} std {std:.4}")
        })
        .collect();
    let zeros = set.images().iter().filter(|&&p| p == 0).count() as f64;
    format!(
        "{}; zero {:.1}%",
        per_channel.join(" | "),
        100.0 * zeros / set.images().len() as f64
    )
}

/// `28` or `32x24` (rows x columns) as (height, width).
pub fn parse_size(text: &str, flag: &str) -> Result<(usize, usize), Error> {
    let (h, w) = text.split_once('x').unwrap_or((text, text));
    match (h.trim().parse::<usize>(), w.trim().parse::<usize>()) {
        (Ok(h), Ok(w)) if (1..=4096).contains(&h) && (1..=4096).contains(&w) => Ok((h, w)),
        _ => Err(Error::Config(format!(
            "{flag} {text}: a size like 28 or 32x24, from 1 to 4096"
        ))),
    }
}

/// `28x28`, or `3x32x32` with channels.
pub fn shape_text((c, h, w): (usize, usize, usize)) -> String {
    if c == 1 {
        format!("{h}x{w}")
    } else {
        format!("{c}x{h}x{w}")
    }
}

/// Tells (on stderr, even with --quiet) how many files of an image folder were left out,
/// and the first few with their reasons.
pub fn report_skipped(data: &Mnist) {
    const SHOWN: usize = 10;
    if data.skipped.is_empty() {
        return;
    }
    eprintln!(
        "left out {} file(s) of the image folder (`backprop data DIR` lists them all):",
        data.skipped.len()
    );
    for s in data.skipped.iter().take(SHOWN) {
        eprintln!("  {}: {}", s.path.display(), s.reason);
    }
    if data.skipped.len() > SHOWN {
        eprintln!("  ... and {} more", data.skipped.len() - SHOWN);
    }
}
