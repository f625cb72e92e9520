//! Counted arithmetic of a network: the multiply-adds of its matrix products and
//! convolutions, from its layer description (element-wise layers are not counted).
//!
//! ```text
//! Affine D_in -> D_out             D_in·D_out                  multiply-adds a sample
//! Conv F filters C x FH x FW       F·C·FH·FW·OH·OW
//! training step, batch N           2·N·(3·Σ - first)   FLOPs: forward, dW, dX (no dX for the
//!                                                      first layer)
//! inference, N samples             2·N·Σ
//! ```
//! Counted dense: the zeros a sparse first layer skips still count, as in the peers' figures.

use crate::layers::Window;

/// Multiply-adds per sample of each weight layer, in order, for samples of `input` (C, H, W),
/// from a [`crate::Network::description`].
pub fn layer_macs(description: &str, input: [usize; 3]) -> Vec<u64> {
    let [mut c, mut h, mut w] = input;
    let mut flat: Option<usize> = None;
    let mut out = Vec::new();
    for line in description.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let option = |name: &str| {
            words
                .iter()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse::<usize>().ok())
        };
        let size = |word: Option<&&str>| -> (usize, usize) {
            let word = word.copied().unwrap_or("1");
            let (a, b) = word.split_once('x').unwrap_or((word, word));
            (a.parse().unwrap_or(1), b.parse().unwrap_or(1))
        };
        match words.first().copied() {
            Some("affine") => {
                let d_in = flat.unwrap_or(c * h * w);
                let d_out: usize = words.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
                out.push((d_in * d_out) as u64);
                flat = Some(d_out);
            }
            Some("conv") => {
                let f: usize = words.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
                let (fh, fw) = size(words.get(2));
                let win = Window {
                    fh,
                    fw,
                    stride: option("stride").unwrap_or(1),
                    pad: option("pad").unwrap_or(0),
                };
                let (oh, ow) = win.output(h, w);
                out.push((f * c * fh * fw * oh * ow) as u64);
                (c, h, w) = (f, oh, ow);
            }
            Some("pool") => {
                let (fh, fw) = size(words.get(2));
                let win = Window {
                    fh,
                    fw,
                    stride: option("stride").unwrap_or(fh),
                    pad: option("pad").unwrap_or(0),
                };
                (h, w) = win.output(h, w);
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
        let two_layer = "affine 50\nrelu\naffine 10";
        assert_eq!(layer_macs(two_layer, [1, 28, 28]), vec![784 * 50, 500]);
        let simple = "conv 30 5 stride=1 pad=0\nrelu\npool max 2 stride=2 pad=0\naffine 100\nrelu\naffine 10";
        assert_eq!(
            layer_macs(simple, [1, 28, 28]),
            vec![30 * 25 * 24 * 24, 30 * 12 * 12 * 100, 1000]
        );
        // forward + dW + dX, less the first layer's dX
        let macs = layer_macs(two_layer, [1, 28, 28]);
        assert_eq!(step_flops(&macs, 100), 2 * 100 * (3 * 39700 - 39200));
        assert_eq!(inference_flops(&macs, 10), 2 * 10 * 39700);
    }
}
