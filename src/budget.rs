//! What a run will need, checked before anything is allocated: the memory a network and a
//! batch take, estimated from the network's description ([`Spec`]), against a budget (the
//! memory the machine has available, or `--max-memory`). Above it the run is refused with
//! one line saying how much it needs and which setting to lower, where it would otherwise
//! die of a failed allocation (an abort, no message) or push the machine into swap.

use crate::describe::{LayerSpec, Shape, Spec};
use crate::error::{Error, Result};

/// Bytes of one value (training runs in f32).
const VALUE: u64 = 4;

/// The memory a run may take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    pub bytes: u64,
    /// Where the figure comes from, for the message: `--max-memory` or the machine.
    pub from_flag: bool,
}

impl Budget {
    /// The machine's available memory (`MemAvailable` in /proc/meminfo); unbounded where the
    /// system does not say.
    pub fn machine() -> Budget {
        let available = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_available(&text));
        Budget {
            bytes: available.unwrap_or(u64::MAX),
            from_flag: false,
        }
    }

    /// `max_memory` bytes (from `--max-memory`) where given, else [`Budget::machine`].
    pub fn or_machine(max_memory: Option<u64>) -> Budget {
        match max_memory {
            Some(bytes) => Budget {
                bytes,
                from_flag: true,
            },
            None => Budget::machine(),
        }
    }

    /// A `--max-memory` flag's bytes, if given (see [`Budget::parse`]).
    pub fn flag(text: Option<&str>) -> Result<Option<u64>> {
        Ok(text.map(Budget::parse).transpose()?.map(|b| b.bytes))
    }

    /// `--max-memory`'s value: bytes, or a number with K, M, G or T (powers of 1024;
    /// `8G`, `512MiB`, `1.5GB`).
    pub fn parse(text: &str) -> Result<Budget> {
        let bad = || {
            Error::Config(format!(
                "--max-memory: {text:?} is not a size (bytes, or a number with K, M, G or T: 8G, 512M)"
            ))
        };
        let t = text.trim().to_ascii_uppercase();
        let t = t.trim_end_matches("IB").trim_end_matches('B');
        let (number, unit) = match t.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
            _ => (t, ' '),
        };
        let scale: f64 = match unit {
            ' ' => 1.0,
            'K' => 1024.0,
            'M' => 1024f64.powi(2),
            'G' => 1024f64.powi(3),
            'T' => 1024f64.powi(4),
            _ => return Err(bad()),
        };
        let value: f64 = number.trim().parse().map_err(|_| bad())?;
        if !(value.is_finite() && value > 0.0) || value * scale >= u64::MAX as f64 {
            return Err(bad());
        }
        Ok(Budget {
            bytes: (value * scale) as u64,
            from_flag: true,
        })
    }

    /// Refuses `need` above the budget: what it needs, what there is, what to lower.
    pub fn check(&self, need: &Need, what: &str, lower: &str) -> Result<()> {
        if need.total() <= self.bytes {
            return Ok(());
        }
        let have = match self.from_flag {
            true => format!("the {} of --max-memory", size(self.bytes)),
            false => format!("the {} this machine has available", size(self.bytes)),
        };
        Err(Error::Config(format!(
            "{what} needs about {} ({} of parameters and optimizer state, {} of activations), more than {have}: lower {lower}",
            size(need.total()),
            size(need.parameters),
            size(need.activations),
        )))
    }
}

/// The memory a network takes, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    /// Weights, their gradients, a packed copy for the kernels, and the optimizer's buffers.
    pub parameters: u64,
    /// What one batch's forward and backward passes keep, and the evaluation's chunks.
    pub activations: u64,
}

impl Need {
    /// For training `spec` on batches of `batch`, with an optimizer that keeps
    /// `optimizer_buffers` values a parameter, evaluated `threads` chunks of `chunk` at a
    /// time. Saturates rather than overflows: a need past u64 is refused all the same.
    pub fn training(
        spec: &Spec,
        batch: usize,
        optimizer_buffers: u64,
        chunk: usize,
        threads: usize,
    ) -> Need {
        let (params, forward, col) = counts(spec);
        // a layer keeps its output (or mask) for backward and gets a gradient of its size;
        // a convolution keeps its unrolled input (im2col) and builds its gradient
        let per_sample = (3 * forward).saturating_add(2 * col);
        let per_eval = forward.saturating_add(col);
        let activations = per_sample
            .saturating_mul(batch as u64)
            .saturating_add(per_eval.saturating_mul((chunk * threads) as u64))
            .saturating_mul(VALUE);
        Need {
            parameters: params.saturating_mul((3 + optimizer_buffers) * VALUE),
            activations,
        }
    }

    /// For inference only: the weights and `batch` samples' forward pass.
    pub fn inference(spec: &Spec, batch: usize) -> Need {
        let (params, forward, col) = counts(spec);
        Need {
            parameters: params.saturating_mul(VALUE),
            activations: forward
                .saturating_add(col)
                .saturating_mul(batch as u64)
                .saturating_mul(VALUE),
        }
    }

    /// `k` of this: networks side by side, or f64 (k = 2) where this counted f32.
    pub fn times(self, k: u64) -> Need {
        Need {
            parameters: self.parameters.saturating_mul(k),
            activations: self.activations.saturating_mul(k),
        }
    }

    pub fn total(&self) -> u64 {
        self.parameters.saturating_add(self.activations)
    }
}

/// The parameters `spec` has (weights, biases, batch norm's four vectors).
pub fn parameter_count(spec: &Spec) -> u64 {
    counts(spec).0
}

/// Parameters, values a sample between layers (the input included), and values a sample of
/// the convolutions' unrolled inputs.
fn counts(spec: &Spec) -> (u64, u64, u64) {
    let (c, h, w) = spec.input;
    let mut forward = len(Shape::Image(c, h, w));
    let (mut params, mut col) = (0u64, 0u64);
    for line in &spec.layers {
        forward = forward.saturating_add(len(line.output));
        let d_in = len(line.input);
        match (&line.layer, line.output) {
            (
                LayerSpec::Conv {
                    filters, window, ..
                },
                Shape::Image(_, oh, ow),
            ) => {
                let unrolled = channel_count(line.input) * (window.fh * window.fw) as u64;
                params = params.saturating_add((*filters as u64).saturating_mul(unrolled + 1));
                col = col.saturating_add(unrolled.saturating_mul((oh * ow) as u64));
            }
            (LayerSpec::Affine { outputs, .. }, _) => {
                let weights = (d_in + 1).saturating_mul(*outputs as u64);
                params = params.saturating_add(weights);
            }
            (LayerSpec::BatchNorm { .. }, _) => {
                params = params.saturating_add(4 * channel_count(line.input));
            }
            _ => {}
        }
    }
    (params, forward, col)
}

/// Values a sample of `shape`, saturating.
fn len(shape: Shape) -> u64 {
    match shape {
        Shape::Image(c, h, w) => (c as u64).saturating_mul(h as u64).saturating_mul(w as u64),
        Shape::Flat(d) => d as u64,
    }
}

fn channel_count(shape: Shape) -> u64 {
    match shape {
        Shape::Image(c, _, _) => c as u64,
        Shape::Flat(d) => d as u64,
    }
}

/// `MemAvailable:   123456 kB` in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Bytes as people read them: `446.3 GB`, `512 MB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} bytes"),
        _ if value >= 100.0 => format!("{value:.0} {}", UNITS[unit]),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(Budget::parse("8G").unwrap().bytes, 8 << 30);
        assert_eq!(Budget::parse("512MiB").unwrap().bytes, 512 << 20);
        assert_eq!(Budget::parse("1.5GB").unwrap().bytes, 3 << 29);
        assert_eq!(Budget::parse("1000").unwrap().bytes, 1000);
        for bad in ["", "G", "-1G", "8X", "1e30T", "nan"] {
            assert!(Budget::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(size(512), "512 bytes");
        assert_eq!(size(3 << 29), "1.5 GB");
        assert_eq!(size(446 << 30), "446 GB");
        let meminfo = "MemTotal: 24000000 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(mem_available(meminfo), Some(2 << 20));
    }

    /// The book's SimpleConvNet: 30·(1·5·5 + 1) + (4320 + 1)·100 + (100 + 1)·10 parameters;
    /// a batch's activations grow with the batch; the budget refuses above it.
    #[test]
    fn needs_count_the_network_and_grow_with_the_batch() {
        let spec = Spec::parse(crate::SimpleConvNet::DESCRIPTION, (1, 28, 28), 10).unwrap();
        let params = 30 * 26 + 4321 * 100 + 101 * 10;
        let one = Need::training(&spec, 100, 0, 0, 1);
        assert_eq!(one.parameters, params * 3 * VALUE);
        let two = Need::training(&spec, 200, 0, 0, 1);
        assert_eq!(two.activations, 2 * one.activations);
        let forward = 784 + 2 * 30 * 24 * 24 + 30 * 12 * 12 + 2 * 100 + 10;
        let col = 25 * 24 * 24;
        assert_eq!(one.activations, (3 * forward + 2 * col) * 100 * VALUE);
        let budget = Budget {
            bytes: one.total(),
            from_flag: true,
        };
        assert!(budget.check(&one, "this run", "--batch-size").is_ok());
        let refused = budget.check(&two, "this run", "--batch-size").unwrap_err();
        assert!(
            refused.to_string().contains("lower --batch-size"),
            "{refused}"
        );
        let huge = Need::training(&spec, usize::MAX, 2, 24, 2);
        assert_eq!(huge.total(), u64::MAX);
    }
}
