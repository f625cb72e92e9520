//! One module per subcommand: flags, then calls into the library, then printing.

pub mod bench;
pub mod compare;
pub mod data;
pub mod eval;
pub mod export;
pub mod gradcheck;
pub mod metrics;
pub mod plot;
pub mod predict;
pub mod serve;
pub mod train;

pub use plot::plot_run;

/// JSON has no NaN or infinity: those become null.
pub fn json_number(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}
