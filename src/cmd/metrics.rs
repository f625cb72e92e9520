//! A run directory's `metrics.csv` (one row per epoch) and `confusion.csv`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use backprop::Error;
use backprop::checkpoint::write_atomic;
use backprop::train::EpochReport;

pub const HEADER: &str =
    "epoch,iteration,train_loss,train_accuracy,validation_accuracy,test_accuracy,lr,elapsed_s";

/// Appends one row per epoch, flushed at once.
pub struct Writer {
    path: PathBuf,
}

impl Writer {
    /// A fresh `metrics.csv`, or, resuming from update `from`, the existing one cut back to
    /// the rows up to it.
    pub fn start(path: &Path, from: usize) -> Result<Writer, Error> {
        let kept: Vec<String> = match std::fs::read_to_string(path) {
            Ok(text) if from > 0 => text
                .lines()
                .skip(1)
                .filter(|line| {
                    line.split(',')
                        .nth(1)
                        .and_then(|i| i.parse::<usize>().ok())
                        .is_some_and(|i| i <= from)
                })
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let mut text = format!("{HEADER}\n");
        kept.iter().for_each(|l| text.push_str(&format!("{l}\n")));
        write_atomic(path, text.as_bytes())?;
        Ok(Writer {
            path: path.to_path_buf(),
        })
    }

    pub fn row(&mut self, r: &EpochReport) -> Result<(), Error> {
        let val = r
            .validation_accuracy
            .map_or(String::new(), |v| v.to_string());
        let line = format!(
            "{},{},{},{},{val},{},{},{:.3}\n",
            r.epoch, r.iteration, r.loss, r.train_accuracy, r.test_accuracy, r.lr, r.elapsed_s
        );
        OpenOptions::new()
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// One epoch's row, read back.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub epoch: usize,
    pub iteration: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub validation_accuracy: Option<f64>,
    pub test_accuracy: f64,
}

/// Reads `metrics.csv`; errors name the file and line.
pub fn read(path: &Path) -> Result<Vec<Row>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(Error::file(path, "not a metrics.csv written by backprop"));
    }
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let bad = || Error::file(path, format!("line {}: malformed row {line:?}", i + 2));
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != 8 {
                return Err(bad());
            }
            let num = |s: &str| s.parse::<f64>().map_err(|_| bad());
            Ok(Row {
                epoch: f[0].parse().map_err(|_| bad())?,
                iteration: f[1].parse().map_err(|_| bad())?,
                train_loss: num(f[2])?,
                train_accuracy: num(f[3])?,
                validation_accuracy: if f[4].is_empty() {
                    None
                } else {
                    Some(num(f[4])?)
                },
                test_accuracy: num(f[5])?,
            })
        })
        .collect()
}

/// `confusion.csv`: a header of predicted classes, then one row per true class, each class
/// by its name (commas in a name become spaces).
pub fn write_confusion(
    path: &Path,
    confusion: &[Vec<usize>],
    names: &[String],
) -> Result<(), Error> {
    let name = |k: usize| names.get(k).map_or(k.to_string(), |n| n.replace(',', " "));
    let mut text = String::from("true\\predicted");
    (0..confusion.len()).for_each(|p| text.push_str(&format!(",{}", name(p))));
    text.push('\n');
    for (t, row) in confusion.iter().enumerate() {
        text.push_str(&name(t));
        row.iter().for_each(|c| text.push_str(&format!(",{c}")));
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Reads `confusion.csv` back: the class names (the first column) and a square matrix of
/// counts.
pub fn read_confusion(path: &Path) -> Result<(Vec<String>, Vec<Vec<usize>>), Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut names = Vec::new();
    let rows: Vec<Vec<usize>> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut cells = l.split(',');
            names.push(cells.next().unwrap_or("").trim().to_string());
            cells
                .map(|c| c.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()
        .map_err(|_| Error::file(path, "malformed counts"))?;
    if rows.is_empty() || rows.iter().any(|r| r.len() != rows.len()) {
        return Err(Error::file(path, "not a square confusion matrix"));
    }
    Ok((names, rows))
}
