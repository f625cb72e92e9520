//! Column sums of a row-major matrix by pairwise (blocked) summation: the rows are halved
//! until a block is at most [`BLOCK`] rows, summed in order, and the halves' sums added. The
//! rounding error grows with log N rather than N: at N = 32768 rows of f32 a row-by-row sum
//! is off by about N·ε, this by about log₂(N/BLOCK)·BLOCK·ε.
//!
//! Reference: `Σₙ rows[n, :]` in order, [`crate::layers::Affine::backward_reference`]'s
//! `dy.sum_axis(Axis(0))` (the book's `np.sum(dout, axis=0)`): the same sum up to rounding.

use crate::Float;

/// Rows summed in order within a block: short enough to keep the error small, long enough
/// that a batch of 100 is one block and costs what the plain loop did.
pub const BLOCK: usize = 128;

/// `out[j] = Σₙ rows[n·width + j]`, pairwise over the rows. `rows.len()` is a multiple of
/// `width` (> 0); `out` has `width` entries, overwritten.
pub fn column_sums<T: Float>(rows: &[T], width: usize, out: &mut [T]) {
    debug_assert!(width > 0 && rows.len().is_multiple_of(width) && out.len() == width);
    let n = rows.len() / width;
    out.fill(T::zero());
    if n <= BLOCK {
        for row in rows.chunks_exact(width) {
            out.iter_mut().zip(row).for_each(|(s, &v)| *s = *s + v);
        }
        return;
    }
    let (top, bottom) = rows.split_at(n / 2 * width);
    column_sums(top, width, out);
    let mut second = vec![T::zero(); width];
    column_sums(bottom, width, &mut second);
    out.iter_mut().zip(&second).for_each(|(s, &v)| *s = *s + v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    /// At N = 32768 the pairwise f32 sums stay within a few ε·Σ|v| of the f64 sums; the
    /// row-by-row sums are several times further off. Below a block, the two are one.
    #[test]
    fn pairwise_sums_stay_close_to_f64_at_32768_rows() {
        let (n, width) = (32768, 7);
        let mut rng = Rng::new(5);
        let values: Vec<f32> = (0..n * width).map(|_| 0.1 + rng.normal() as f32).collect();
        let mut pairwise = vec![0f32; width];
        column_sums(&values, width, &mut pairwise);
        let mut plain = vec![0f32; width];
        for row in values.chunks_exact(width) {
            plain.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
        }
        let (mut worst_pairwise, mut worst_plain) = (0f64, 0f64);
        for j in 0..width {
            let exact: f64 = values
                .iter()
                .skip(j)
                .step_by(width)
                .map(|&v| v as f64)
                .sum();
            let scale: f64 = values
                .iter()
                .skip(j)
                .step_by(width)
                .map(|&v| v.abs() as f64)
                .sum();
            worst_pairwise = worst_pairwise.max((pairwise[j] as f64 - exact).abs() / scale);
            worst_plain = worst_plain.max((plain[j] as f64 - exact).abs() / scale);
        }
        eprintln!(
            "relative error at N = {n}: pairwise {worst_pairwise:.1e}, in order {worst_plain:.1e}"
        );
        assert!(worst_pairwise < 1e-6, "pairwise {worst_pairwise:e}");
        assert!(
            worst_plain > 4.0 * worst_pairwise,
            "plain {worst_plain:e}, pairwise {worst_pairwise:e}"
        );
        let few = &values[..100 * width];
        let mut small = vec![0f32; width];
        column_sums(few, width, &mut small);
        let mut in_order = vec![0f32; width];
        for row in few.chunks_exact(width) {
            in_order.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
        }
        assert_eq!(small, in_order);
    }
}
