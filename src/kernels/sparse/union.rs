//! C += A·B for f32 with AVX-512, four rows of A at a time over the union of their non-zeros.
//!
//! ```text
//! for each group of 4 rows i0..i0+4 of A:
//!   U = the columns k where any of the 4 rows is non-zero, in increasing order
//!   for each pass of 64 columns j of B and C:
//!     C[i0 + r, j..j+64] += Σ over k in U of A[i0 + r, k] · B[k, j..j+64]     (r = 0..4)
//! ```
//! Each row of B in U is read once for the group, where the row-by-row kernel reads it once
//! for each row that has it: a 784x256 B (the MLP's first layer) lies in the L2 cache, and that
//! kernel waits on it (14.5 ns a non-zero). Four MNIST images ink 305 distinct pixels of their
//! 600 (random images), so the group reads half the rows of B, and pays with the products of
//! the zeros in the union: 4 x 4 x 16 lanes a column of U.
//!
//! The same bits as the row-by-row kernel: each entry of C is the chain of multiply-adds over
//! its row's non-zeros in increasing column order, from C's value, with `+ 0·b` terms in
//! between for the columns only another row of the group has. Such a term changes no value
//! but -0: a chain is -0 only where C held -0 and nothing was added yet (a sum that cancels
//! is +0), and there `+ 0·b` may give +0, the sign of a zero being all that differs. (A B
//! with an infinite or NaN entry gives NaN where the row-by-row kernel skips the entry, as a
//! dense product does.)

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::SparseRows;

/// Rows of A summed together.
const GROUP: usize = 4;
/// Columns of C a pass keeps in registers: 4 vectors of 16 f32 for each of the 4 rows.
const PASS: usize = 64;

/// A group's union: for each column in it, the group's 4 values there (0 where a row has none).
#[derive(Default)]
struct Space {
    values: Vec<[f32; GROUP]>, // (K) a column's values, zero except while a group is built
    marked: Vec<u64>,          // (K / 64) the columns of the group, one bit each
    union: Vec<(u32, [f32; GROUP])>,
}

thread_local! {
    /// This thread's space (grows to the widest A it has seen: no allocation after that).
    static SPACE: RefCell<Space> = RefCell::new(Space::default());
}

/// Whether [`rows_product`] takes this product: N a multiple of [`PASS`], B too tall for the
/// packed passes (B in place), and rows with enough non-zeros that scanning a group's
/// column bits (K / 64 words) costs little beside its sums.
pub fn takes(a: &SparseRows<f32>, n: usize) -> bool {
    n > 0
        && n.is_multiple_of(PASS)
        && a.nrows() > 0
        && a.ncols() / 64 <= a.nnz() / a.nrows()
        && crate::kernels::cpu::avx512()
}

/// Rows `first..` of C (M, N) += A·B (K, N) (or = without ACC), as [`super::sparse_ab`] gives
/// them; `c` holds those rows. Only for a product that [`takes`] says yes to.
pub fn rows_product<const ACC: bool>(a: &SparseRows<f32>, first: usize, b: &[f32], c: &mut [f32]) {
    let n = b.len() / a.ncols();
    assert!(
        n.is_multiple_of(PASS) && b.len() == a.ncols() * n && c.len().is_multiple_of(n),
        "union product: B or C does not fit A"
    );
    assert!(crate::kernels::cpu::avx512());
    SPACE.with(|space| {
        let mut space = space.borrow_mut();
        let k = a.ncols();
        if space.values.len() < k {
            space.values.resize(k, [0.0; GROUP]);
            space.marked.resize(k.div_ceil(64), 0);
            space.union.reserve(k);
        }
        // SAFETY: the CPU has AVX-512F (asserted above)
        unsafe { groups::<ACC>(a, first, b, n, c, &mut space) }
    });
}

#[target_feature(enable = "avx512f")]
fn groups<const ACC: bool>(
    a: &SparseRows<f32>,
    first: usize,
    b: &[f32],
    n: usize,
    c: &mut [f32],
    space: &mut Space,
) {
    let m = c.len() / n;
    for g in (0..m).step_by(GROUP) {
        let rows = GROUP.min(m - g);
        gather(a, first + g..first + g + rows, space);
        for j in (0..n).step_by(PASS) {
            pass::<ACC>(&space.union, b, n, j, &mut c[g * n..(g + rows) * n]);
        }
    }
}

/// The union of rows `rows` of A into `space.union`, in increasing column order; leaves
/// `values` zero and `marked` clear again.
fn gather(a: &SparseRows<f32>, rows: std::ops::Range<usize>, space: &mut Space) {
    let Space {
        values,
        marked,
        union,
    } = space;
    for (r, i) in rows.enumerate() {
        let (cols, vals) = a.row(i);
        for (&k, &v) in cols.iter().zip(vals) {
            values[k as usize][r] = v;
            marked[k as usize / 64] |= 1 << (k % 64);
        }
    }
    union.clear();
    for (w, word) in marked.iter_mut().enumerate() {
        let mut bits = std::mem::take(word);
        while bits != 0 {
            let k = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            union.push((k as u32, std::mem::take(&mut values[k])));
        }
    }
}

/// Columns j..j + PASS of the group's rows of C (`c`: 1 to 4 rows, N wide) += Σ over the
/// union of value · B[k, j..j + PASS], in registers: 16 vectors of 16 lanes.
#[target_feature(enable = "avx512f")]
fn pass<const ACC: bool>(
    union: &[(u32, [f32; GROUP])],
    b: &[f32],
    n: usize,
    j: usize,
    c: &mut [f32],
) {
    let rows = c.len() / n;
    let mut acc = [_mm512_setzero_ps(); GROUP * 4];
    if ACC {
        for r in 0..rows {
            let row: &[f32; PASS] = c[r * n + j..r * n + j + PASS].try_into().unwrap();
            for q in 0..4 {
                // SAFETY: 16 lanes of the row's pass, inside `row`
                acc[r * 4 + q] = unsafe { _mm512_loadu_ps(row.as_ptr().add(16 * q)) };
            }
        }
    }
    for &(k, v) in union {
        let b_row: &[f32; PASS] = b[k as usize * n + j..k as usize * n + j + PASS]
            .try_into()
            .unwrap();
        // SAFETY: 16 lanes at 0, 16, 32, 48 of the pass's PASS columns of B's row k
        let bk: [__m512; 4] =
            std::array::from_fn(|q| unsafe { _mm512_loadu_ps(b_row.as_ptr().add(16 * q)) });
        for r in 0..GROUP {
            let x = _mm512_set1_ps(v[r]);
            for q in 0..4 {
                acc[r * 4 + q] = _mm512_fmadd_ps(x, bk[q], acc[r * 4 + q]);
            }
        }
    }
    for r in 0..rows {
        let row: &mut [f32; PASS] = (&mut c[r * n + j..r * n + j + PASS]).try_into().unwrap();
        for q in 0..4 {
            // SAFETY: 16 lanes of the row's pass, inside `row`
            unsafe { _mm512_storeu_ps(row.as_mut_ptr().add(16 * q), acc[r * 4 + q]) };
        }
    }
}
