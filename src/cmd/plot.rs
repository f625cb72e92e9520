//! `backprop plot RUN_DIR`: learning curves and the confusion matrix of a run, SVG and PNG.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use backprop::Error;
use backprop::checkpoint::write_atomic;
use backprop::plot::{
    BLUE, GREEN, Heatmap, LineChart, ORANGE, Series, render_chart, render_heatmap,
};

use super::metrics;

#[derive(clap::Args)]
pub struct PlotArgs {
    /// A run directory (what `backprop train` wrote: metrics.csv, confusion.csv).
    run_dir: PathBuf,
}

pub fn run(args: PlotArgs) -> Result<ExitCode, Error> {
    for file in plot_run(&args.run_dir)? {
        println!("{}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Draws `loss`, `accuracy` (from metrics.csv) and `confusion` (from confusion.csv, when the
/// run finished) into `dir`, each as .svg and .png; returns the files written.
pub fn plot_run(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let rows = metrics::read(&dir.join("metrics.csv"))?;
    if rows.is_empty() {
        return Err(Error::file(
            &dir.join("metrics.csv"),
            "no epoch finished yet: nothing to plot",
        ));
    }
    let epochs = |f: fn(&metrics::Row) -> f64| -> Vec<(f64, f64)> {
        rows.iter().map(|r| (r.epoch as f64, f(r))).collect()
    };
    let mut written = Vec::new();
    let mut save = |name: &str, (svg, png): (String, Vec<u8>)| -> Result<(), Error> {
        for (ext, bytes) in [("svg", svg.into_bytes()), ("png", png)] {
            let path = dir.join(format!("{name}.{ext}"));
            write_atomic(&path, &bytes)?;
            written.push(path);
        }
        Ok(())
    };
    save(
        "loss",
        render_chart(&LineChart {
            title: "training loss (mean over each epoch's mini-batches)".into(),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            series: vec![Series {
                name: "train".into(),
                color: BLUE,
                points: epochs(|r| r.train_loss),
            }],
        }),
    )?;
    let mut series = vec![
        Series {
            name: "train".into(),
            color: BLUE,
            points: epochs(|r| r.train_accuracy),
        },
        Series {
            name: "test".into(),
            color: ORANGE,
            points: epochs(|r| r.test_accuracy),
        },
    ];
    if rows.iter().all(|r| r.validation_accuracy.is_some()) {
        series.push(Series {
            name: "validation".into(),
            color: GREEN,
            points: epochs(|r| r.validation_accuracy.unwrap_or(f64::NAN)),
        });
    }
    save(
        "accuracy",
        render_chart(&LineChart {
            title: "accuracy after each epoch".into(),
            x_label: "epoch".into(),
            y_label: "accuracy".into(),
            series,
        }),
    )?;
    let confusion = dir.join("confusion.csv");
    if confusion.exists() {
        let (labels, counts) = metrics::read_confusion(&confusion)?;
        save(
            "confusion",
            render_heatmap(&Heatmap {
                title: "test set: true class (rows) vs predicted (columns)".into(),
                labels,
                counts,
            }),
        )?;
    }
    Ok(written)
}
