//! Products whose operands both run along the summed index: `C ← C + A·Bᵀ` with the rows
//! of A and of B contiguous, and the row sums `s ← s + A·1`.
//!
//! ```text
//! C[i][j] += Σ_q A[i][q]·B[j][q]      A: (M, L), B: (N, L), rows contiguous
//! ```
//! A convolution's filter gradient is this product for every image (`dWc += dy_i·col_iᵀ`: both
//! run along the image's output positions). A packed GEMM would transpose both operands into
//! panels; here a 5 x 2 tile of C is kept as ten 8-lane sums while the seven rows stream
//! through once, lane `t` summing the positions `q ≡ t (mod 8)`, and the lanes are added up at
//! the end. For a given L every entry is summed in the same order, whatever the tile.

/// Rows of A in a tile.
/// NOTE: SimpleConvNet's dW (30x25 over 576 positions), one thread, one col in cache: 3 x 3
/// tiles 59-60 GFLOP/s, 5 x 2 80-84, 6 x 2 77-83, 10 x 1 75, 4 x 2 63-73; 3 x 2, 4 x 3 and
/// 6 x 1 10-30 (LLVM kept their sums in memory). Check the rate when changing R or S.
const R: usize = 5;
/// Rows of B in a tile.
const S: usize = 2;
/// Partial sums a row pair keeps (one 256-bit vector of f32).
const LANES: usize = 8;

use super::madd;
use crate::Float;

/// C ← C + A·Bᵀ. `a`: (M, L) row-major, `b`: (N, L) row-major, `c`: (M, N) row-major.
#[track_caller]
pub fn gemm_nt_acc<T: Float>(a: &[T], b: &[T], l: usize, c: &mut [T]) {
    assert!(
        l > 0 && a.len().is_multiple_of(l) && b.len().is_multiple_of(l),
        "gemm_nt_acc: A ({}) and B ({}) are not rows of {l}",
        a.len(),
        b.len()
    );
    let (m, n) = (a.len() / l, b.len() / l);
    assert_eq!(c.len(), m * n, "gemm_nt_acc: C is not ({m}, {n})");
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::avx2_fma() {
        // SAFETY: the CPU has the features the function is compiled for.
        unsafe { tiles_fma(a, b, l, c) };
        return;
    }
    tiles::<T, false>(a, b, l, c);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tiles_fma<T: Float>(a: &[T], b: &[T], l: usize, c: &mut [T]) {
    tiles::<T, true>(a, b, l, c)
}

/// C in tiles of R x S; a last, partial tile repeats its last row of A (of B) and keeps only
/// the entries that exist.
#[inline(always)]
fn tiles<T: Float, const FMA: bool>(a: &[T], b: &[T], l: usize, c: &mut [T]) {
    let (m, n) = (a.len() / l, b.len() / l);
    for i0 in (0..m).step_by(R) {
        let rows = R.min(m - i0);
        let a_rows: [&[T]; R] = std::array::from_fn(|i| {
            let i = i0 + i.min(rows - 1);
            &a[i * l..(i + 1) * l]
        });
        for j0 in (0..n).step_by(S) {
            let cols = S.min(n - j0);
            let b_rows: [&[T]; S] = std::array::from_fn(|j| {
                let j = j0 + j.min(cols - 1);
                &b[j * l..(j + 1) * l]
            });
            let tile = tile::<T, FMA>(&a_rows, &b_rows, l);
            for (i, t) in tile.iter().enumerate().take(rows) {
                let row = &mut c[(i0 + i) * n + j0..][..cols];
                row.iter_mut().zip(t).for_each(|(v, &t)| *v = *v + t);
            }
        }
    }
}

/// tile[i][j] = Σ_q a[i][q]·b[j][q]: lanes of LANES partial sums, then the lanes in order,
/// then the last L mod LANES terms.
#[inline(always)]
fn tile<T: Float, const FMA: bool>(a: &[&[T]; R], b: &[&[T]; S], l: usize) -> [[T; S]; R] {
    let full = l / LANES * LANES;
    let acc = lanes::<T, FMA>(a, b, full);
    let mut tile = [[T::zero(); S]; R];
    for i in 0..R {
        for j in 0..S {
            let mut sum = acc[i][j].iter().fold(T::zero(), |s, &v| s + v);
            for q in full..l {
                sum = sum + a[i][q] * b[j][q];
            }
            tile[i][j] = sum;
        }
    }
    tile
}

/// acc[i][j][t] = Σ a[i][q]·b[j][q] over q < full, q ≡ t (mod LANES): R·S vectors kept in
/// registers over the whole row (returned by value, so that LLVM does not keep them in memory).
#[inline(always)]
fn lanes<T: Float, const FMA: bool>(
    a: &[&[T]; R],
    b: &[&[T]; S],
    full: usize,
) -> [[[T; LANES]; S]; R] {
    assert!(a.iter().chain(b).all(|row| row.len() >= full));
    let (a, b): ([*const T; R], [*const T; S]) = (
        std::array::from_fn(|i| a[i].as_ptr()),
        std::array::from_fn(|j| b[j].as_ptr()),
    );
    let mut acc = [[[T::zero(); LANES]; S]; R];
    for q in (0..full).step_by(LANES) {
        // SAFETY: q + LANES <= full, at most the length of every row (checked above)
        let av: [[T; LANES]; R] = std::array::from_fn(|i| unsafe { *a[i].add(q).cast() });
        let bv: [[T; LANES]; S] = std::array::from_fn(|j| unsafe { *b[j].add(q).cast() });
        for i in 0..R {
            for j in 0..S {
                for t in 0..LANES {
                    acc[i][j][t] = madd::<T, FMA>(acc[i][j][t], av[i][t], bv[j][t]);
                }
            }
        }
    }
    acc
}

/// `s[i] ← s[i] + Σ_q A[i][q]`, `a`: (M, L) row-major, summed as [`gemm_nt_acc`] sums (lanes,
/// then the tail).
#[track_caller]
pub fn row_sums_acc<T: Float>(a: &[T], l: usize, s: &mut [T]) {
    assert_eq!(
        a.len(),
        s.len() * l,
        "row_sums_acc: A is not ({}, {l})",
        s.len()
    );
    let full = l / LANES * LANES;
    for (row, s) in a.chunks_exact(l).zip(s) {
        let mut acc = [T::zero(); LANES];
        for chunk in row[..full].chunks_exact(LANES) {
            for t in 0..LANES {
                acc[t] = acc[t] + chunk[t];
            }
        }
        let lanes = acc.iter().fold(T::zero(), |s, &v| s + v);
        *s = *s + row[full..].iter().fold(lanes, |s, &v| s + v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], l: usize) -> Vec<f64> {
        let (m, n) = (a.len() / l, b.len() / l);
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..l).map(|q| a[i * l + q] * b[j * l + q]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_the_triple_loop_over_partial_tiles_and_tails() {
        let mut rng = crate::Rng::new(3);
        for (m, n, l) in [
            (1, 1, 1),
            (3, 3, 8),
            (30, 25, 576),
            (4, 5, 13),
            (7, 2, 31),
            (2, 7, 5),
        ] {
            let a: Vec<f64> = (0..m * l).map(|_| rng.normal()).collect();
            let b: Vec<f64> = (0..n * l).map(|_| rng.normal()).collect();
            let mut c = vec![1.0; m * n];
            gemm_nt_acc(&a, &b, l, &mut c);
            for (got, want) in c.iter().zip(naive(&a, &b, l)) {
                assert!(
                    (got - 1.0 - want).abs() < 1e-12,
                    "{m}x{n}x{l}: {got} vs 1 + {want}"
                );
            }
            let mut s = vec![2.0; m];
            row_sums_acc(&a, l, &mut s);
            for (i, got) in s.iter().enumerate() {
                let want: f64 = a[i * l..(i + 1) * l].iter().sum();
                assert!(
                    (got - 2.0 - want).abs() < 1e-12,
                    "row {i}: {got} vs 2 + {want}"
                );
            }
        }
    }
}
