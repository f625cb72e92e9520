//! The matrix products every layer calls.
//!
//! ```text
//! Lhs::matmul_acc(b, c, t)     C ← A·B  + C      (forward:  Y = X·W + b, with C preset to b)
//! Lhs::matmul_tn(b, c, _, t)  C ← Aᵀ·B          (backward: dW = Xᵀ·dY; matmul_tn_acc adds)
//! matmul_nt(a, b, c, t)        C ← A·Bᵀ          (backward: dX = dY·Wᵀ)
//! ```
//! A dense product of enough work is split over up to `t` threads by rows of C ([`gemm`]):
//! each row is computed exactly as on one thread, so the thread count changes no bit.
//!
//! Dense operands go to [`gemm_serial`] (packed and blocked, an AVX2/FMA kernel picked at run
//! time). A left operand that is mostly zeros, as MNIST images
//! are (about 80% background pixels), is indexed once ([`SparseRows::index`] lists its non-zero
//! entries row by row) and both of its products then skip the zeros ([`sparse`]): a fifth of
//! the arithmetic on MNIST.

pub mod conv;
pub mod cpu;
mod dot;
mod exp;
mod packed;
pub(crate) mod pixels;
pub mod pool;
#[cfg(test)]
mod reference_tests;
pub mod sparse;
pub mod sum;

pub use dot::{gemm_nt_acc, row_sums_acc};
pub use exp::exp_in_place;
pub use packed::{gemm_serial, gemm_serial_bias};

use ndarray::{ArrayView2, ArrayViewMut2, Axis};

use crate::Float;
use crate::parallel;
use sparse::SparseRows;

/// acc + a·b: one fused multiply-add where the processor has it (one rounding), else a
/// multiply and an add. Every kernel's inner step (packed, sparse, dot).
#[inline(always)]
pub(crate) fn madd<T: Float, const FMA: bool>(acc: T, a: T, b: T) -> T {
    if FMA { a.mul_add(b, acc) } else { acc + a * b }
}

/// `dst = src` for a short run (an image row of 24 values in im2col, a panel row of 10 in
/// packing), 8 at a time inline. NOTE: `copy_from_slice` of a run-time length called the C
/// library's memmove for each run (im2col: 600 calls an image, 5% of an evaluation in perf),
/// whose set-up costs more than such a copy.
#[inline(always)]
pub(crate) fn copy_short<T: Copy>(src: &[T], dst: &mut [T]) {
    assert_eq!(src.len(), dst.len(), "copy_short: lengths differ");
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        let s: &[T; 8] = s.try_into().expect("8 values");
        let d: &mut [T; 8] = d.try_into().expect("8 values");
        *d = *s;
    }
    for (d, &s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = s;
    }
}

/// Runs `f` compiled for AVX2 where the CPU has it, else as it is: an element-wise loop
/// written for LLVM to vectorise (Adam's update, max pooling's backward) then runs 8 f32 lanes
/// wide instead of SSE2's 4. No FMA is enabled, so the results are the same bits on either
/// path. Mark the closure `#[inline(always)]`: only what is inlined into the AVX2 copy gets
/// AVX2.
/// NOTE: time what you wrap. Max pooling's forward rows behind it ran at 0.4 times the speed of
/// the same loop in a `#[target_feature]` function of its own (272 -> 650 µs a SimpleConvNet
/// batch, even with the closure inlined); that one keeps its own function.
#[inline(always)]
pub(crate) fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if crate::kernels::cpu::avx2() {
            // SAFETY: the CPU has the feature the function is compiled for
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// A matrix with at least this fraction of zeros takes the zero-skipping path.
/// NOTE: measured with `cargo bench --bench layers`: the sparse kernels beat matrixmultiply
/// at the first layer's shapes well below this density; ReLU outputs (about half zeros) are
/// left to matrixmultiply.
pub const SPARSE_ZERO_FRACTION: f64 = 0.6;

/// The left operand of a product, `A: (M, K)`: dense, or by its non-zero entries when it is
/// mostly zeros ([`SparseRows::index`], at least [`SPARSE_ZERO_FRACTION`] zeros).
#[derive(Clone, Copy, Debug)]
pub enum Lhs<'a, T: Float> {
    Dense(ArrayView2<'a, T>),
    Sparse(&'a SparseRows<T>),
}

impl<T: Float> Lhs<'_, T> {
    /// True when the products skip zeros.
    pub fn is_sparse(&self) -> bool {
        matches!(self, Lhs::Sparse(_))
    }

    /// (M, K).
    pub fn dim(&self) -> (usize, usize) {
        match self {
            Lhs::Dense(a) => a.dim(),
            Lhs::Sparse(a) => (a.nrows(), a.ncols()),
        }
    }

    /// C ← A·B + C, with B: (K, N), C: (M, N).
    #[track_caller]
    pub fn matmul_acc(&self, b: &ArrayView2<T>, c: &mut ArrayViewMut2<T>, threads: usize) {
        let (m, k) = self.dim();
        assert!(
            b.nrows() == k && c.dim() == (m, b.ncols()),
            "matmul_acc: A {:?} · B {:?} does not fit C {:?}",
            self.dim(),
            b.dim(),
            c.dim()
        );
        match self {
            Lhs::Dense(a) => gemm(a, b, T::one(), c, threads),
            Lhs::Sparse(a) => {
                let b = b.as_standard_layout();
                let c = c.as_slice_mut().expect("C is created contiguous");
                a.matmul_acc(b.as_slice().expect("standard layout"), c, threads)
            }
        }
    }

    /// C ← Aᵀ·B + C, with B: (M, N), C: (K, N). A sparse A's transposed index is the one it
    /// came with ([`SparseRows::with_transpose`]), else built in `scratch` (reused).
    #[track_caller]
    pub fn matmul_tn_acc(
        &self,
        b: &ArrayView2<T>,
        c: &mut ArrayViewMut2<T>,
        scratch: &mut SparseRows<T>,
        threads: usize,
    ) {
        self.product_tn::<true>(b, c, scratch, threads)
    }

    /// C ← Aᵀ·B, C only written (no zeroing pass first); see [`Lhs::matmul_tn_acc`].
    #[track_caller]
    pub fn matmul_tn(
        &self,
        b: &ArrayView2<T>,
        c: &mut ArrayViewMut2<T>,
        scratch: &mut SparseRows<T>,
        threads: usize,
    ) {
        self.product_tn::<false>(b, c, scratch, threads)
    }

    /// C ← Aᵀ·B, plus C's old values when ACC.
    #[track_caller]
    fn product_tn<const ACC: bool>(
        &self,
        b: &ArrayView2<T>,
        c: &mut ArrayViewMut2<T>,
        scratch: &mut SparseRows<T>,
        threads: usize,
    ) {
        let (m, k) = self.dim();
        assert!(
            b.nrows() == m && c.dim() == (k, b.ncols()),
            "matmul_tn: Aᵀ {:?} · B {:?} does not fit C {:?}",
            (k, m),
            b.dim(),
            c.dim()
        );
        match self {
            Lhs::Dense(a) => {
                let beta = if ACC { T::one() } else { T::zero() };
                gemm(&a.t(), b, beta, c, threads)
            }
            Lhs::Sparse(a) => {
                let at = match a.transposed() {
                    Some(at) => at,
                    None => {
                        a.transpose_into(scratch);
                        scratch
                    }
                };
                let b = b.as_standard_layout();
                let (b, c) = (
                    b.as_slice().expect("standard layout"),
                    c.as_slice_mut().expect("C is created contiguous"),
                );
                if ACC {
                    at.matmul_acc(b, c, threads)
                } else {
                    at.matmul(b, c, threads)
                }
            }
        }
    }
}

/// C ← A·Bᵀ, with A: (M, K), B: (N, K), C: (M, N).
#[track_caller]
pub fn matmul_nt<T: Float>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    c: &mut ArrayViewMut2<T>,
    threads: usize,
) {
    assert!(
        a.ncols() == b.ncols() && c.dim() == (a.nrows(), b.nrows()),
        "matmul_nt: A {:?} · Bᵀ {:?} does not fit C {:?}",
        a.dim(),
        b.t().dim(),
        c.dim()
    );
    gemm(a, &b.t(), T::zero(), c, threads);
}

/// C ← A·B + β·C (dense, any strides), split over up to `threads` threads when the product is
/// large enough to pay for them: by rows of A and C when C is tall, by columns of B and C when
/// it is wide (each thread then packs only its part of the larger operand). Every entry of C
/// is computed as on one thread.
pub fn gemm<T: Float>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    beta: T,
    c: &mut ArrayViewMut2<T>,
    threads: usize,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let tall = m >= n;
    let side = m.max(n);
    // NOTE: at least 48 rows (columns) a thread: below, the kernel's 8- to 16-wide blocks lose
    // more to packing the other operand twice than the second core brings
    let threads = parallel::threads_for(m * k * n, threads).min((side / 48).max(1));
    if threads == 1 {
        gemm_serial(a, b, beta, c);
        return;
    }
    let size = side.div_ceil(threads);
    if tall {
        let parts: Vec<_> = a
            .axis_chunks_iter(Axis(0), size)
            .zip(c.axis_chunks_iter_mut(Axis(0), size))
            .collect();
        parallel::map(parts, threads, |(a, mut c)| {
            gemm_serial(&a, b, beta, &mut c)
        });
    } else {
        let parts: Vec<_> = b
            .axis_chunks_iter(Axis(1), size)
            .zip(c.axis_chunks_iter_mut(Axis(1), size))
            .collect();
        parallel::map(parts, threads, |(b, mut c)| {
            gemm_serial(a, &b, beta, &mut c)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use ndarray::{Array2, ArrayView1};

    /// Obviously-correct triple loop: C = A·B.
    fn naive(a: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
        let mut c = Array2::zeros((a.nrows(), b.ncols()));
        for i in 0..a.nrows() {
            for j in 0..b.ncols() {
                for k in 0..a.ncols() {
                    c[[i, j]] += a[[i, k]] * b[[k, j]];
                }
            }
        }
        c
    }

    fn random(rows: usize, cols: usize, zero_fraction: f64, rng: &mut Rng) -> Array2<f64> {
        Array2::from_shape_fn((rows, cols), |_| {
            if rng.uniform() < zero_fraction {
                0.0
            } else {
                rng.normal()
            }
        })
    }

    /// The non-zero index of `a` when it is mostly zeros.
    fn index(a: &Array2<f64>) -> Option<SparseRows<f64>> {
        SparseRows::index(a.as_slice().unwrap(), a.ncols(), SPARSE_ZERO_FRACTION)
    }

    /// `a` as a left operand: by its index when it has one.
    fn lhs<'a>(a: &'a Array2<f64>, nz: &'a Option<SparseRows<f64>>) -> Lhs<'a, f64> {
        match nz {
            Some(nz) => Lhs::Sparse(nz),
            None => Lhs::Dense(a.view()),
        }
    }

    #[test]
    fn all_three_products_match_the_triple_loop_dense_and_sparse() {
        let mut rng = Rng::new(5);
        for zero_fraction in [0.0, 0.8] {
            let a = random(7, 13, zero_fraction, &mut rng);
            let b = random(13, 5, 0.0, &mut rng);
            let c0 = random(7, 5, 0.0, &mut rng);
            let expected = naive(&a, &b) + &c0;

            let nz = index(&a);
            let lhs = lhs(&a, &nz);
            assert_eq!(lhs.is_sparse(), zero_fraction > SPARSE_ZERO_FRACTION);
            let mut c = c0.clone();
            lhs.matmul_acc(&b.view(), &mut c.view_mut(), 1);
            assert!((&c - &expected).iter().all(|d| d.abs() < 1e-12));

            let a_t = a.t().as_standard_layout().into_owned();
            let nz_t = index(&a_t);
            let at = super::tests::lhs(&a_t, &nz_t);
            let mut c = c0.clone();
            at.matmul_tn_acc(&b.view(), &mut c.view_mut(), &mut SparseRows::new(0), 1);
            assert!((&c - &expected).iter().all(|d| d.abs() < 1e-12));

            let bt = b.t().as_standard_layout().into_owned();
            let mut c = Array2::zeros((7, 5));
            matmul_nt(&a.view(), &bt.view(), &mut c.view_mut(), 1);
            assert!((&c - &naive(&a, &b)).iter().all(|d| d.abs() < 1e-12));
        }
    }

    #[test]
    fn packed_product_matches_the_triple_loop_across_its_blocks() {
        // Shapes below, at and across MR (6), NR (16), MC (144), KC (256) and NC (4080); A
        // read in place (N <= DIRECT_N, 128) and packed; operands transposed (column
        // strides); β = 0 over NaN, β = 1, β = 2.
        let mut rng = Rng::new(3);
        for (m, k, n) in [
            (1, 1, 1),
            (6, 16, 16),
            (7, 17, 33),
            (150, 300, 20),
            (13, 270, 150),
            (5, 3, 4100),
        ] {
            let a = random(m, k, 0.0, &mut rng);
            let b = random(k, n, 0.0, &mut rng);
            let at = a.t().as_standard_layout().into_owned();
            let bt = b.t().as_standard_layout().into_owned();
            let c0 = random(m, n, 0.0, &mut rng);
            let ab = naive(&a, &b);
            for (beta, expected) in [
                (0.0, ab.clone()),
                (1.0, &ab + &c0),
                (2.0, &ab + &(&c0 * 2.0)),
            ] {
                for (a, b) in [(a.view(), b.view()), (at.t(), bt.t())] {
                    let mut c = if beta == 0.0 {
                        Array2::from_elem((m, n), f64::NAN)
                    } else {
                        c0.clone()
                    };
                    gemm_serial(&a, &b, beta, &mut c.view_mut());
                    let err = (&c - &expected).iter().fold(0.0f64, |e, d| e.max(d.abs()));
                    assert!(err < 1e-12, "{m}x{k}x{n}, beta {beta}: error {err}");
                }
            }
        }
    }

    #[test]
    fn a_row_bias_gives_the_bits_of_filling_c_with_it_then_adding() {
        // depth 0, within one block, across blocks (KC = 256); C first holds NaN, which must
        // be overwritten
        let mut rng = Rng::new(13);
        for (m, k, n) in [(4, 0, 5), (30, 25, 40), (7, 300, 20)] {
            let a = random(m, k, 0.0, &mut rng).mapv(|v| v as f32);
            let b = random(k, n, 0.0, &mut rng).mapv(|v| v as f32);
            let bias: Vec<f32> = (0..m).map(|_| rng.normal() as f32).collect();
            let mut filled = Array2::from_shape_fn((m, n), |(i, _)| bias[i]);
            gemm_serial(&a.view(), &b.view(), 1.0, &mut filled.view_mut());
            let mut c = Array2::from_elem((m, n), f32::NAN);
            packed::gemm_serial_bias(&a.view(), &b.view(), &bias, &mut c.view_mut());
            assert!(
                c.iter()
                    .zip(&filled)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{m}x{k}x{n}"
            );
        }
    }

    #[test]
    fn threaded_products_are_bit_identical_tall_and_wide() {
        let mut rng = Rng::new(11);
        for (m, k, n) in [(700, 200, 130), (100, 300, 900)] {
            let a = random(m, k, 0.0, &mut rng).mapv(|v| v as f32);
            let b = random(k, n, 0.0, &mut rng).mapv(|v| v as f32);
            let c0 = random(m, n, 0.0, &mut rng).mapv(|v| v as f32);
            let mut one = c0.clone();
            gemm(&a.view(), &b.view(), 1.0, &mut one.view_mut(), 1);
            for threads in [2, 3] {
                let mut many = c0.clone();
                gemm(&a.view(), &b.view(), 1.0, &mut many.view_mut(), threads);
                assert!(
                    one.iter()
                        .zip(&many)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{m}x{k}x{n}, {threads} threads"
                );
            }
        }
    }

    #[test]
    fn sparse_products_match_at_awkward_shapes() {
        // Widths below, at and between the kernel's blocks; rows that are all zero.
        let mut rng = Rng::new(9);
        for n in [1, 7, 31, 32, 33, 50, 64, 100] {
            let mut a = random(6, 19, 0.85, &mut rng);
            a.row_mut(2).fill(0.0);
            let b = random(19, n, 0.0, &mut rng);
            let nz = index(&a);
            let lhs = lhs(&a, &nz);
            assert!(lhs.is_sparse());
            let mut c = Array2::zeros((6, n));
            lhs.matmul_acc(&b.view(), &mut c.view_mut(), 1);
            assert!(
                (&c - &naive(&a, &b)).iter().all(|d| d.abs() < 1e-12),
                "A·B, n = {n}"
            );
            // written, not added to: whatever C held (NaN here) is gone, empty rows included
            let mut c = Array2::from_elem((6, n), f64::NAN);
            let nz = nz.as_ref().unwrap();
            nz.matmul(b.as_slice().unwrap(), c.as_slice_mut().unwrap(), 1);
            assert!(
                (&c - &naive(&a, &b)).iter().all(|d| d.abs() < 1e-12),
                "A·B written, n = {n}"
            );

            let b = random(6, n, 0.0, &mut rng);
            let mut c = Array2::zeros((19, n));
            lhs.matmul_tn_acc(&b.view(), &mut c.view_mut(), &mut SparseRows::new(0), 1);
            let at = a.t().to_owned();
            assert!(
                (&c - &naive(&at, &b)).iter().all(|d| d.abs() < 1e-12),
                "Aᵀ·B, n = {n}"
            );
        }
    }

    /// The sparse product of a 7 x K A (80% zeros) and a K x N B against its sums in order.
    fn check_short_b<T: Float>(rng: &mut Rng, k: usize, n: usize) {
        let fma = cfg!(target_arch = "x86_64") && crate::kernels::cpu::avx2_fma();
        let mut a = random(7, k, 0.8, rng).mapv(T::of);
        a.row_mut(3).fill(T::zero());
        let b = random(k, n, 0.0, rng).mapv(T::of);
        let c0 = random(7, n, 0.0, rng).mapv(T::of);
        let nz = SparseRows::index(a.as_slice().unwrap(), k, 0.0).unwrap();
        for acc in [true, false] {
            let mut expected = if acc {
                c0.clone()
            } else {
                Array2::zeros((7, n))
            };
            for i in 0..7 {
                let (cols, vals) = nz.row(i);
                for j in 0..n {
                    let mut sum = expected[[i, j]];
                    for (&kk, &v) in cols.iter().zip(vals) {
                        let bv = b[[kk as usize, j]];
                        sum = if fma {
                            madd::<T, true>(sum, v, bv)
                        } else {
                            madd::<T, false>(sum, v, bv)
                        };
                    }
                    expected[[i, j]] = sum;
                }
            }
            for threads in [1, 2] {
                let mut c = if acc {
                    c0.clone()
                } else {
                    Array2::from_elem((7, n), T::nan())
                };
                let (bs, cs) = (b.as_slice().unwrap(), c.as_slice_mut().unwrap());
                if acc {
                    nz.matmul_acc(bs, cs, threads);
                } else {
                    nz.matmul(bs, cs, threads);
                }
                // the exact values, the sign of a zero included
                assert!(
                    c.iter()
                        .zip(&expected)
                        .all(|(x, y)| x.integer_decode() == y.integer_decode()),
                    "{} K {k}, N {n}, added to: {acc}, {threads} threads",
                    T::NAME
                );
            }
        }
    }

    #[test]
    fn a_short_b_packed_gives_the_bits_of_each_sum_in_order() {
        // B of at most 32 KiB a pass of 64 columns (packed a pass at a time: f32 up to 128
        // rows, f64 up to 64) and longer (read in place), widths of whole passes and not; and
        // widths whose rows go two at a time (33..=56: B copied once, 32 + 8..24 columns a
        // row, when it fits 32 KiB); rows empty and not, an odd row count, C added to and
        // written, 1-2 threads: every entry is c + Σ v·b over the row's non-zeros in order,
        // one multiply-add each
        let mut rng = Rng::new(22);
        // (K, N): passes of 64 columns, then rows two at a time (B copied while its rows of
        // 32 + 8..24 lanes fit 32 KiB: at N 50, 146 rows of f32, 73 of f64; beyond, in place)
        let f32_shapes = [(19, 64), (128, 256), (100, 100), (128, 300), (129, 256)];
        let paired = [
            (100, 50),
            (146, 33),
            (100, 40),
            (100, 56),
            (147, 50),
            (784, 50),
        ];
        for (k, n) in f32_shapes.into_iter().chain(paired) {
            check_short_b::<f32>(&mut rng, k, n);
        }
        let f64_shapes = [
            (19, 64),
            (64, 256),
            (60, 100),
            (65, 256),
            (60, 50),
            (100, 41),
        ];
        for (k, n) in f64_shapes {
            check_short_b::<f64>(&mut rng, k, n);
        }
    }

    #[test]
    fn four_rows_over_their_union_give_the_bits_of_each_sum_in_order() {
        // f32 with AVX-512 and N a multiple of 64: groups of 4 rows (and a last of 1-3), rows
        // empty and not, an MNIST-like A (784 columns, 80% zeros), C added to and written,
        // 1-2 threads: every entry is c + Σ v·b over its row's non-zeros in order
        let mut rng = Rng::new(23);
        for (m, n) in [(1, 64), (4, 128), (5, 256), (9, 64), (130, 256)] {
            let mut a = random(m, 784, 0.8, &mut rng).mapv(|v| v as f32);
            if m > 1 {
                a.row_mut(m / 2).fill(0.0);
            }
            let b = random(784, n, 0.0, &mut rng).mapv(|v| v as f32);
            let c0 = random(m, n, 0.0, &mut rng).mapv(|v| v as f32);
            let nz = SparseRows::index(a.as_slice().unwrap(), 784, 0.0).unwrap();
            #[cfg(target_arch = "x86_64")]
            assert_eq!(
                sparse::by_union(&nz, n).is_some(),
                crate::kernels::cpu::avx512(),
                "{m}x{n}"
            );
            for acc in [true, false] {
                let mut expected = if acc {
                    c0.clone()
                } else {
                    Array2::zeros((m, n))
                };
                for i in 0..m {
                    let (cols, vals) = nz.row(i);
                    for j in 0..n {
                        let mut sum = expected[[i, j]];
                        for (&k, &v) in cols.iter().zip(vals) {
                            sum = v.mul_add(b[[k as usize, j]], sum);
                        }
                        expected[[i, j]] = sum;
                    }
                }
                for threads in [1, 2] {
                    let mut c = if acc {
                        c0.clone()
                    } else {
                        Array2::from_elem((m, n), f32::NAN)
                    };
                    let (bs, cs) = (b.as_slice().unwrap(), c.as_slice_mut().unwrap());
                    if acc {
                        nz.matmul_acc(bs, cs, threads);
                    } else {
                        nz.matmul(bs, cs, threads);
                    }
                    if !crate::kernels::cpu::fma() {
                        continue; // the sums rounded twice: checked elsewhere
                    }
                    assert!(
                        c.iter()
                            .zip(&expected)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{m}x{n}, added to: {acc}, {threads} threads"
                    );
                }
            }
        }
    }

    #[test]
    fn rows_summed_in_pairs_give_the_bits_of_each_row_alone() {
        // widths whose rows the sparse kernel sums two at a time (33..=56), row counts odd and
        // even, rows of different lengths and empty ones, C added to and written
        let mut rng = Rng::new(21);
        let index = |a: &Array2<f64>| SparseRows::index(a.as_slice().unwrap(), a.ncols(), 0.0);
        for n in [33, 40, 41, 50, 56, 57] {
            for m in [2, 3, 6] {
                let mut a = random(m, 40, 0.7, &mut rng);
                a.row_mut(m / 2).fill(0.0);
                a.row_mut(0).slice_mut(ndarray::s![..20]).fill(0.5); // a longer first row
                let b = random(40, n, 0.0, &mut rng);
                let c0 = random(m, n, 0.0, &mut rng);
                let nz = index(&a).unwrap();
                let (mut added, mut written) = (c0.clone(), Array2::from_elem((m, n), f64::NAN));
                nz.matmul_acc(b.as_slice().unwrap(), added.as_slice_mut().unwrap(), 1);
                nz.matmul(b.as_slice().unwrap(), written.as_slice_mut().unwrap(), 1);
                for i in 0..m {
                    let row = index(&a.slice(ndarray::s![i..i + 1, ..]).to_owned()).unwrap();
                    let mut alone = c0.slice(ndarray::s![i..i + 1, ..]).to_owned();
                    row.matmul_acc(b.as_slice().unwrap(), alone.as_slice_mut().unwrap(), 1);
                    let mut fresh = Array2::zeros((1, n));
                    row.matmul(b.as_slice().unwrap(), fresh.as_slice_mut().unwrap(), 1);
                    let same = |x: ArrayView1<f64>, y: ArrayView1<f64>| {
                        x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
                    };
                    assert!(
                        same(added.row(i), alone.row(0)),
                        "added, n {n}, m {m}, row {i}"
                    );
                    assert!(
                        same(written.row(i), fresh.row(0)),
                        "written, n {n}, m {m}, row {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn sparse_products_split_over_threads_give_the_same_bits() {
        // large enough to split (see parallel::threads_for); rows of C of very different
        // non-zero counts, some empty, so that the parts' boundaries fall unevenly
        let mut rng = Rng::new(12);
        let mut a = random(300, 784, 0.8, &mut rng);
        for r in (0..300).step_by(7) {
            a.row_mut(r).fill(0.0);
        }
        a.slice_mut(ndarray::s![..40, ..]).mapv_inplace(|v| v + 1.0); // 40 dense rows
        let nz = index(&a.mapv(|v| if v > 0.95 { v } else { 0.0 })).unwrap();
        let b = random(784, 50, 0.0, &mut rng);
        let dy = random(300, 50, 0.0, &mut rng);
        let run = |threads| {
            let mut c = Array2::from_elem((300, 50), f64::NAN);
            nz.matmul(b.as_slice().unwrap(), c.as_slice_mut().unwrap(), threads);
            let mut dw = Array2::zeros((784, 50));
            Lhs::Sparse(&nz).matmul_tn(
                &dy.view(),
                &mut dw.view_mut(),
                &mut SparseRows::new(0),
                threads,
            );
            (c, dw)
        };
        let (c1, dw1) = run(1);
        assert!(
            (&c1 - &naive(
                &Array2::from_shape_vec((300, 784), nz.to_dense()).unwrap(),
                &b
            ))
                .iter()
                .all(|d| d.abs() < 1e-9)
        );
        for threads in [2, 3, 8] {
            let (c, dw) = run(threads);
            let same = |x: &Array2<f64>, y: &Array2<f64>| {
                x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
            };
            assert!(same(&c, &c1) && same(&dw, &dw1), "{threads} threads");
        }
    }
}
