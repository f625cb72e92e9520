//! Counted arithmetic of a network: the multiply-adds of its matrix products and
//! convolutions, from its parsed layer description ([`Spec`]; element-wise layers are not
//! counted).
//!
//! ```text
//! Affine D_in -> D_out             D_in·D_out                  multiply-adds a sample
//! Conv F filters C x FH x FW       F·C·FH·FW·OH·OW
//! training step, batch N           2·N·(3·Σ - first)   FLOPs: forward, dW, dX (no dX for the
//!                                                      first layer)
//! inference, N samples             2·N·Σ
//! ```
//! Counted dense: the zeros a sparse first layer skips still count, as in the peers' figures.

use crate::describe::{LayerSpec, Shape, Spec};

/// Multiply-adds per sample of each weight layer of `spec`, in order.
pub fn layer_macs(spec: &Spec) -> Vec<u64> {
    let mut out = Vec::new();
    for line in &spec.layers {
        match (&line.layer, line.input, line.output) {
            (LayerSpec::Affine { outputs, .. }, input, _) => {
                out.push((input.len() * outputs) as u64);
            }
            (LayerSpec::Conv { window, .. }, Shape::Image(c, _, _), Shape::Image(f, oh, ow)) => {
                out.push((f * c * window.fh * window.fw * oh * ow) as u64);
            }
            _ => {}
        }
    }
    out
}

/// FLOPs of one training step on `batch` samples (the first weight layer computes no dX).
pub fn step_flops(macs: &[u64], batch: usize) -> u64 {
    let total: u64 = macs.iter().sum();
    let first = macs.first().copied().unwrap_or(0);
    2 * batch as u64 * (3 * total - first)
}

/// FLOPs of inference on `samples` samples.
pub fn inference_flops(macs: &[u64], samples: usize) -> u64 {
    2 * samples as u64 * macs.iter().sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_books_networks_by_hand() {
        let spec = |text: &str| Spec::parse(text, (1, 28, 28), 10).unwrap();
        let two_layer = spec("affine 50\nrelu\naffine 10");
        assert_eq!(layer_macs(&two_layer), vec![784 * 50, 500]);
        let simple = "conv 30 5 stride=1 pad=0\nrelu\npool max 2 stride=2 pad=0\naffine 100\nrelu\naffine 10";
        assert_eq!(
            layer_macs(&spec(simple)),
            vec![30 * 25 * 24 * 24, 30 * 12 * 12 * 100, 1000]
        );
        // forward + dW + dX, less the first layer's dX
        let macs = layer_macs(&two_layer);
        assert_eq!(step_flops(&macs, 100), 2 * 100 * (3 * 39700 - 39200));
        assert_eq!(inference_flops(&macs, 10), 2 * 10 * 39700);
    }
}
