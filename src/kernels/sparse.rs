//! Products with a mostly-zero left operand, skipping its zeros.
//!
//! ```text
//! A (M, K) as compressed sparse rows: for row i, the non-zero entries (k, a[i, k]).
//! C += A·B:   C[i, :] += Σ over non-zeros (k, v) of row i:  v · B[k, :]
//! C += Aᵀ·B:  the same with the rows of Aᵀ (A's columns), found by transposing the index.
//! ```
//! Skipping an exact zero drops a `+ 0·b` term, which changes no sum except the sign of an
//! exact zero result.

use std::any::TypeId;
use std::cell::RefCell;

use super::{copy_short, madd};
use crate::{Float, parallel};

#[cfg(target_arch = "x86_64")]
mod union;

/// Non-zero entries of a (M, K) matrix, row by row (compressed sparse rows).
#[derive(Clone, Debug)]
pub struct SparseRows<T> {
    ncols: usize,          // K
    row_start: Vec<usize>, // (M + 1): row i is entries row_start[i]..row_start[i + 1]
    col: Vec<u32>,         // (nnz) column of each entry, increasing within a row
    val: Vec<T>,           // (nnz) value of each entry
    /// Aᵀ's index, when it was built beforehand ([`SparseRows::with_transpose`]).
    transposed: Option<Box<SparseRows<T>>>,
}

/// Slack past the last entry: the vector compaction stores 8 lanes at a time.
pub const SLACK: usize = 8;

impl<T: Float> SparseRows<T> {
    /// The non-zero entries of row-major `a` with `k` columns, or None when less than
    /// `zero_fraction` of its entries are zero (the dense product is then faster).
    pub fn index(a: &[T], k: usize, zero_fraction: f64) -> Option<Self> {
        let mut nz = SparseRows::new(k.min(u32::MAX as usize));
        nz.index_into(a, k, zero_fraction).then_some(nz)
    }

    /// [`SparseRows::index`] into this matrix's storage (reused: no allocation once it has
    /// held as many rows and entries). False, and the matrix unspecified, when `a` has too few
    /// zeros.
    pub fn index_into(&mut self, a: &[T], k: usize, zero_fraction: f64) -> bool {
        if k == 0 || !a.len().is_multiple_of(k) || k > u32::MAX as usize {
            return false;
        }
        let nnz = count_nonzero(a);
        if ((a.len() - nnz) as f64) < zero_fraction * a.len() as f64 {
            return false;
        }
        self.ncols = k;
        self.transposed = None;
        // NOTE: room for every entry at once, so that a batch with more non-zeros than the
        // last never reallocates
        self.col.clear();
        self.val.clear();
        self.row_start.clear();
        self.col.reserve(a.len() + SLACK);
        self.val.reserve(a.len() + SLACK);
        self.row_start.reserve(a.len() / k + 1);
        self.col.resize(nnz + SLACK, 0);
        self.val.resize(nnz + SLACK, T::zero());
        let mut n = 0;
        for row in a.chunks_exact(k) {
            self.row_start.push(n);
            n = compress::<T, true>(row, &mut self.col, &mut self.val, n);
        }
        self.row_start.push(n);
        debug_assert_eq!(n, nnz);
        self.col.truncate(nnz);
        self.val.truncate(nnz);
        true
    }

    /// An empty matrix of `ncols` columns and no rows, to be filled with [`SparseRows::push`]
    /// and [`SparseRows::end_row`].
    pub fn new(ncols: usize) -> Self {
        Self::with_capacity(ncols, 0, 0)
    }

    /// Like [`SparseRows::new`], with room for `rows` rows and `nnz` entries.
    pub fn with_capacity(ncols: usize, rows: usize, nnz: usize) -> Self {
        assert!(
            ncols <= u32::MAX as usize,
            "SparseRows: {ncols} columns do not fit u32"
        );
        let mut row_start = Vec::with_capacity(rows + 1);
        row_start.push(0);
        SparseRows {
            ncols,
            row_start,
            col: Vec::with_capacity(nnz),
            val: Vec::with_capacity(nnz),
            transposed: None,
        }
    }

    /// A matrix from its parts: `row_start` (M + 1, starting at 0, non-decreasing, ending at
    /// nnz), and for each entry its column (below `ncols`, increasing within a row) and value.
    /// Panics if the parts do not fit together.
    #[track_caller]
    pub fn from_parts(ncols: usize, row_start: Vec<usize>, col: Vec<u32>, val: Vec<T>) -> Self {
        let a = Self::from_parts_trusted(ncols, row_start, col, val);
        assert!(a.parts_fit(), "SparseRows::from_parts: inconsistent parts");
        a
    }

    /// [`SparseRows::from_parts`] for parts made correct by construction (a data set's
    /// batches): checked in debug builds only.
    #[track_caller]
    pub(crate) fn from_parts_trusted(
        ncols: usize,
        row_start: Vec<usize>,
        col: Vec<u32>,
        val: Vec<T>,
    ) -> Self {
        let a = SparseRows {
            ncols,
            row_start,
            col,
            val,
            transposed: None,
        };
        debug_assert!(a.parts_fit(), "SparseRows: inconsistent parts");
        a
    }

    /// Whether the parts fit together, as [`SparseRows::from_parts`] asks.
    fn parts_fit(&self) -> bool {
        self.row_start.first() == Some(&0)
            && self.row_start.last() == Some(&self.val.len())
            && self.col.len() == self.val.len()
            && self.row_start.windows(2).all(|w| w[0] <= w[1])
            && self.col.iter().all(|&c| (c as usize) < self.ncols)
    }

    /// Appends entry (current row, `col`) = `val`. Columns must increase within a row.
    #[inline]
    #[track_caller]
    pub fn push(&mut self, col: usize, val: T) {
        debug_assert!(
            col < self.ncols,
            "SparseRows::push: column {col} of {}",
            self.ncols
        );
        self.col.push(col as u32);
        self.val.push(val);
    }

    /// Closes the current row.
    pub fn end_row(&mut self) {
        self.row_start.push(self.val.len());
    }

    /// The dense (M, K) matrix, row-major.
    pub fn to_dense(&self) -> Vec<T> {
        let mut a = vec![T::zero(); self.nrows() * self.ncols];
        for i in 0..self.nrows() {
            let (cols, vals) = self.row(i);
            for (&k, &v) in cols.iter().zip(vals) {
                a[i * self.ncols + k as usize] = v;
            }
        }
        a
    }

    /// Number of columns, K.
    pub fn ncols(&self) -> usize {
        self.ncols
    }

    /// Number of rows, M.
    pub fn nrows(&self) -> usize {
        self.row_start.len() - 1
    }

    /// Number of stored (non-zero) entries.
    pub fn nnz(&self) -> usize {
        self.val.len()
    }

    /// Row `i`'s non-zero entries: their columns (increasing) and values.
    pub fn row(&self, i: usize) -> (&[u32], &[T]) {
        let r = self.row_start[i]..self.row_start[i + 1];
        (&self.col[r.clone()], &self.val[r])
    }

    /// The index of Aᵀ (K, M), by counting sort on the column: within each of its rows the
    /// entries stay in increasing order.
    pub fn transpose(&self) -> SparseRows<T> {
        // NOTE: room for these entries only: transpose_into reserves a full matrix for the
        // storage it is given, so that a later batch with more entries does not reallocate,
        // but a fresh index is used once (W1's loader built one a batch: 2 x 313 KB, which
        // the allocator handed back to the system and faulted in again, batch after batch)
        let mut t = SparseRows::with_capacity(self.nrows(), self.ncols, self.nnz());
        self.transpose_into(&mut t);
        t
    }

    /// This matrix carrying the index of its transpose, built now: a batch assembled ahead
    /// on another thread comes with it, and the product Aᵀ·B then does not wait for it.
    pub fn with_transpose(mut self) -> Self {
        self.transposed = Some(Box::new(self.transpose()));
        self
    }

    /// The index of Aᵀ if it came with the matrix ([`SparseRows::with_transpose`]).
    pub fn transposed(&self) -> Option<&SparseRows<T>> {
        self.transposed.as_deref()
    }

    /// [`SparseRows::transpose`] into `t`'s storage (reused: no allocation once it has held
    /// as many entries).
    pub fn transpose_into(&self, t: &mut SparseRows<T>) {
        t.ncols = self.nrows();
        t.transposed = None;
        // count each column's entries, then row_start[c] = where row c of Aᵀ starts
        t.row_start.clear();
        t.row_start.resize(self.ncols + 1, 0);
        for &c in &self.col {
            t.row_start[c as usize + 1] += 1;
        }
        for k in 0..self.ncols {
            t.row_start[k + 1] += t.row_start[k];
        }
        // NOTE: room for a full matrix, so that a batch with more non-zeros than the last
        // never reallocates
        let dense = self.nrows() * self.ncols;
        t.col.clear();
        t.val.clear();
        if t.col.capacity() < self.nnz() {
            t.col.reserve(dense);
            t.val.reserve(dense);
        }
        // row_start[c] serves as row c's cursor: afterwards it points at row c + 1's start.
        // NOTE: written into the spare capacity, no zero fill first (it was a fifth of this
        // function): the cursors cover 0..nnz, every slot once
        let nnz = self.nnz();
        let (col, val) = (
            &mut t.col.spare_capacity_mut()[..nnz],
            &mut t.val.spare_capacity_mut()[..nnz],
        );
        for i in 0..self.nrows() {
            let (cols, vals) = self.row(i);
            for (&c, &v) in cols.iter().zip(vals) {
                // NOTE: the cursor read once into a register: through a reference, LLVM read
                // it again after the first store (it could not rule out that `col` overlaps
                // it), and that second load was a third of this function's samples
                let p = t.row_start[c as usize];
                col[p].write(i as u32);
                val[p].write(v);
                t.row_start[c as usize] = p + 1;
            }
        }
        // SAFETY: the column counts sum to nnz, so the cursors wrote each of 0..nnz once
        unsafe {
            t.col.set_len(nnz);
            t.val.set_len(nnz);
        }
        t.row_start.copy_within(0..self.ncols, 1);
        t.row_start[0] = 0;
    }

    /// C (M, N) += A · B (K, N); row-major slices. Split by rows of C over up to `threads`
    /// threads when large enough; each row is summed as on one thread.
    #[track_caller]
    pub fn matmul_acc(&self, b: &[T], c: &mut [T], threads: usize) {
        self.product::<true>(b, c, threads)
    }

    /// C (M, N) = A · B (K, N); row-major slices. C is only written (no zeroing pass first).
    #[track_caller]
    pub fn matmul(&self, b: &[T], c: &mut [T], threads: usize) {
        self.product::<false>(b, c, threads)
    }

    /// C = A·B, plus C's old values when ACC.
    #[track_caller]
    fn product<const ACC: bool>(&self, b: &[T], c: &mut [T], threads: usize) {
        let n = b.len() / self.ncols.max(1);
        assert!(
            b.len() == self.ncols * n && c.len() == self.nrows() * n,
            "sparse product: B has {} entries, C {}, for A ({}, {})",
            b.len(),
            c.len(),
            self.nrows(),
            self.ncols
        );
        // NOTE: a non-zero's multiply-adds cost about twice a dense product's (its index, an
        // unaligned row of B; `cargo bench --bench layers`): counted double
        let threads = parallel::threads_for(2 * self.nnz() * n, threads);
        if threads == 1 || n == 0 {
            return self.rows_product::<ACC>(0, b, c);
        }
        // 2 parts a thread of about equal non-zeros (a pixel's column of a batch may hold
        // none or all), claimed one at a time: a helper that comes late takes fewer
        let parts = 2 * threads;
        let total = self.nnz();
        let mut items = Vec::with_capacity(parts);
        let (mut first, mut rest) = (0, c);
        for p in 1..=parts {
            let end = if p == parts {
                self.nrows()
            } else {
                let goal = self.row_start[0] + total * p / parts;
                self.row_start
                    .partition_point(|&s| s < goal)
                    .clamp(first, self.nrows())
            };
            let (part, tail) = rest.split_at_mut((end - first) * n);
            items.push((first, part));
            (first, rest) = (end, tail);
        }
        parallel::map(items, threads, |(first, c)| {
            self.rows_product::<ACC>(first, b, c)
        });
    }

    /// The rows of C = A·B (+ C) from row `first` on, as many as `c` holds.
    fn rows_product<const ACC: bool>(&self, first: usize, b: &[T], c: &mut [T]) {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(a) = by_union(self, b.len() / self.ncols.max(1)) {
                // SAFETY: T is f32 (`by_union` checked its TypeId): the same layout
                let (b, c) = unsafe {
                    (
                        &*(b as *const [T] as *const [f32]),
                        &mut *(c as *mut [T] as *mut [f32]),
                    )
                };
                return union::rows_product::<ACC>(a, first, b, c);
            }
        }
        // NOTE: the space is fetched here, outside the kernels: code in a closure handed to
        // the thread-local is not compiled with the caller's target features (its `mul_add`
        // became a library call, 35 times slower)
        with_packing_space(|space| {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2_fma<T: Float, const ACC: bool>(
                    a: &SparseRows<T>,
                    first: usize,
                    (b, c): (&[T], &mut [T]),
                    space: &mut [T],
                ) {
                    sparse_ab::<T, true, ACC>(a, first, (b, c), space)
                }
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512<T: Float, const ACC: bool>(
                    a: &SparseRows<T>,
                    first: usize,
                    (b, c): (&[T], &mut [T]),
                    space: &mut [T],
                ) {
                    sparse_ab::<T, true, ACC>(a, first, (b, c), space)
                }
                if crate::kernels::cpu::avx512() {
                    // SAFETY: the processor supports AVX-512F, AVX2 and FMA, checked just above
                    return unsafe { avx512::<T, ACC>(self, first, (b, c), space) };
                }
                if crate::kernels::cpu::avx2_fma() {
                    // SAFETY: the processor supports AVX2 and FMA, checked just above.
                    return unsafe { avx2_fma::<T, ACC>(self, first, (b, c), space) };
                }
            }
            sparse_ab::<T, false, ACC>(self, first, (b, c), space)
        })
    }
}

/// A, as f32, when C = A·B (N wide) goes four rows at a time over their union: f32 with
/// AVX-512, N a multiple of 64, B not short ([`union::takes`]).
#[cfg(target_arch = "x86_64")]
pub(crate) fn by_union<T: Float>(a: &SparseRows<T>, n: usize) -> Option<&SparseRows<f32>> {
    if TypeId::of::<T>() != TypeId::of::<f32>() || short_b::<T>(a.ncols() * n, n) {
        return None;
    }
    // SAFETY: T is f32 (same TypeId): the same layout
    let a = unsafe { &*(a as *const SparseRows<T> as *const SparseRows<f32>) };
    union::takes(a, n).then_some(a)
}

/// Output columns handled at once: 2 x 32 accumulators stay in registers (8 AVX vectors of f32).
const BLOCK: usize = 32;

/// Rows `first..` of C (M, N) += A · B (K, N) (or = without ACC), A given by its non-zero
/// entries, `c` holding those rows. Row-major slices. For each row of C, two blocks of BLOCK
/// columns at a time are summed in registers over A's non-zeros, so that each row of B is
/// fetched once for 64 columns.
#[inline(always)]
fn sparse_ab<T: Float, const FMA: bool, const ACC: bool>(
    a: &SparseRows<T>,
    first: usize,
    (b, c): (&[T], &mut [T]),
    space: &mut [T],
) {
    let n = b.len() / a.ncols.max(1);
    if n == 0 {
        return;
    }
    // NOTE: rows of BLOCK + 8 to BLOCK + 24 columns (W1's 50) two at a time: a row's sums
    // are one chain of dependent multiply-adds whatever its width, and a second row's chain
    // beside it keeps the processor busy while the first waits (the first layer of W1,
    // one thread: 2.50 -> 2.20 ns a non-zero, 30 and 100 images). Wider rows would need more
    // than the 16 vector registers.
    if BLOCK < n && n <= BLOCK + 24 {
        // the second block: the last `w` columns
        let w = (n - BLOCK).next_multiple_of(8);
        let stride = BLOCK + w;
        if (b.len() / n) * stride * size_of::<T>() <= PACKED_PASS {
            // NOTE: a short B (W1's dY, 100 x 50, for dW1) read from a copy whose rows are
            // [its first BLOCK columns, its last w], 32-byte aligned (`PACKING`)
            let packed = &mut space[..b.len() / n * stride];
            for (row, p) in b.chunks_exact(n).zip(packed.chunks_exact_mut(stride)) {
                copy_short(&row[..BLOCK], &mut p[..BLOCK]);
                copy_short(&row[n - w..], &mut p[BLOCK..]);
            }
            return paired_rows::<T, FMA, ACC>(a, first, (packed, stride, BLOCK), n, c);
        }
        return paired_rows::<T, FMA, ACC>(a, first, (b, n, n - w), n, c);
    }
    if short_b::<T>(b.len(), n) {
        return packed_passes::<T, FMA, ACC>(a, first, (b, n), c, space);
    }
    for (i, c_row) in c.chunks_exact_mut(n).enumerate() {
        let (cols, vals) = a.row(first + i);
        if cols.is_empty() {
            // e.g. a pixel that no image of the batch inks: nothing to add
            if !ACC {
                c_row.fill(T::zero());
            }
            continue;
        }
        if n < BLOCK {
            // Narrow C (a convolution's few filters): the row is summed in a local buffer.
            let mut acc = [T::zero(); BLOCK];
            if ACC {
                copy_short(c_row, &mut acc[..n]);
            }
            for (&k, &v) in cols.iter().zip(vals) {
                let b_row = &b[k as usize * n..(k as usize + 1) * n];
                for (a, &bv) in acc[..n].iter_mut().zip(b_row) {
                    *a = madd::<T, FMA>(*a, v, bv);
                }
            }
            copy_short(&acc[..n], c_row);
            continue;
        }
        // NOTE: a block that would pass column N is moved back to end at N; it then overlaps
        // the block before it, and only its columns not stored yet are stored.
        let mut j = 0;
        while j < n {
            let s0 = j.min(n - BLOCK);
            if j + BLOCK < n {
                // NOTE: the second block only as wide as the columns left, in whole vectors
                // of 8 (W1's 50 columns: 32 + 24 lanes, where two blocks of 32 summed 64)
                let width = (n - j - BLOCK).next_multiple_of(8).min(BLOCK);
                let s1 = (j + BLOCK).min(n - width);
                let pass = (j, s0, s1, width);
                two_block_pass::<T, FMA, ACC>((cols, vals), (b, n, s0, s1), pass, c_row);
            } else {
                one_block_pass::<T, FMA, ACC>((cols, vals), b, (j, s0), c_row);
            }
            j += 2 * BLOCK;
        }
    }
}

/// The rows of C (N wide, BLOCK < N <= BLOCK + 24) two at a time ([`pair_of_rows`]), an odd
/// last row alone, from B's rows `stride` apart with the first block at column 0 of each and
/// the last `w` columns at `b1` (B in place: N and N - w; packed: BLOCK + w and BLOCK).
#[inline(always)]
fn paired_rows<T: Float, const FMA: bool, const ACC: bool>(
    a: &SparseRows<T>,
    first: usize,
    (b, stride, b1): (&[T], usize, usize),
    n: usize,
    c: &mut [T],
) {
    let (m, w) = (c.len() / n, (n - BLOCK).next_multiple_of(8));
    let mut paired = 0;
    while paired + 1 < m {
        let (r0, r1) = c[paired * n..(paired + 2) * n].split_at_mut(n);
        let rows = [a.row(first + paired), a.row(first + paired + 1)];
        let b = (b, stride, b1);
        match w {
            8 => pair_of_rows::<T, FMA, ACC, 8>(rows, b, n, [r0, r1]),
            16 => pair_of_rows::<T, FMA, ACC, 16>(rows, b, n, [r0, r1]),
            _ => pair_of_rows::<T, FMA, ACC, 24>(rows, b, n, [r0, r1]),
        }
        paired += 2;
    }
    if paired < m {
        // the pass the row-by-row loop gives a row this wide (one block, then the last w)
        let pass = (0, 0, n - w, w);
        let c_row = &mut c[paired * n..];
        two_block_pass::<T, FMA, ACC>(a.row(first + paired), (b, stride, 0, b1), pass, c_row);
    }
}

/// Whether B (`len` entries, N wide) is short enough for [`packed_passes`]: two blocks of
/// each of its rows fit [`PACKED_PASS`].
fn short_b<T>(len: usize, n: usize) -> bool {
    n >= 2 * BLOCK && (len / n) * 2 * BLOCK * std::mem::size_of::<T>() <= PACKED_PASS
}

/// Bytes of B's columns that [`packed_passes`] copies for one pass, at most: the 32 KiB of
/// the L1 data cache (W2's dY: 128 rows x 64 f32).
const PACKED_PASS: usize = 32 * 1024;

/// A cache line of the packing space.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f64; 8]);

thread_local! {
    /// This thread's packing space: [`PACKED_PASS`] bytes aligned to a cache line, so that no
    /// 8-lane read of a packed row (256 or 224 bytes apart) straddles two lines.
    /// NOTE: a throwaway timing of W1's dW1 with dY read in place, 100 rows, one thread: 56
    /// columns (rows 224 bytes apart, reads 32-byte aligned) 28.3-29.5 µs, 50 columns
    /// 33.8-35.2, 56 columns at an 8-byte offset 34.1-34.4: a read across two lines costs
    /// twice. Kept from call to call rather than a fresh array on the stack, which is zeroed
    /// (32 KiB) at each call.
    static PACKING: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's packing space, as [`PACKED_PASS`] bytes of T.
fn with_packing_space<T: Float, R>(f: impl FnOnce(&mut [T]) -> R) -> R {
    PACKING.with(|space| {
        let mut space = space.borrow_mut();
        if space.is_empty() {
            space.resize(PACKED_PASS / size_of::<Line>(), Line([0.0; 8]));
        }
        // SAFETY: T is f32 or f64 (Float): a line's alignment covers it, and the lines'
        // PACKED_PASS bytes hold PACKED_PASS / size_of::<T>() of them, all initialised
        let space: &mut [T] = unsafe {
            std::slice::from_raw_parts_mut(space.as_mut_ptr().cast(), PACKED_PASS / size_of::<T>())
        };
        f(space)
    })
}

/// [`sparse_ab`] for a B of few rows (W2's dW1 = Xᵀ·dY: dY is 128 x 256): pass by pass over
/// C's columns, the pass's columns of B copied next to each other first, then every row of C.
/// NOTE: B's rows are N apart (1 KiB for 256 f32): the same 16 L1 sets held a pass's four
/// lines of every row, 128 lines of them, and each pass read B from L2 again; packed, the pass
/// is one contiguous block. W2's dW1 alone, one thread: 12.2 -> 8.4 ns a non-zero.
#[inline(always)]
fn packed_passes<T: Float, const FMA: bool, const ACC: bool>(
    a: &SparseRows<T>,
    first: usize,
    (b, n): (&[T], usize),
    c: &mut [T],
    space: &mut [T],
) {
    for j in (0..n).step_by(2 * BLOCK) {
        let s0 = j.min(n - BLOCK);
        if j + BLOCK >= n {
            // one last block: summed from B where it lies
            for (i, c_row) in c.chunks_exact_mut(n).enumerate() {
                one_block_pass::<T, FMA, ACC>(a.row(first + i), b, (j, s0), c_row);
            }
            continue;
        }
        let width = (n - j - BLOCK).next_multiple_of(8).min(BLOCK);
        let s1 = (j + BLOCK).min(n - width);
        // row r of the pass: B[r, s0..s0 + BLOCK] then B[r, s1..s1 + width]
        let stride = BLOCK + width;
        for (row, packed) in b.chunks_exact(n).zip(space.chunks_exact_mut(stride)) {
            copy_short(&row[s0..s0 + BLOCK], &mut packed[..BLOCK]);
            copy_short(&row[s1..s1 + width], &mut packed[BLOCK..]);
        }
        let (packed, pass) = (&space[..b.len() / n * stride], (j, s0, s1, width));
        for (i, c_row) in c.chunks_exact_mut(n).enumerate() {
            two_block_pass::<T, FMA, ACC>(
                a.row(first + i),
                (packed, stride, 0, BLOCK),
                pass,
                c_row,
            );
        }
    }
}

/// Columns j..N of one row of C (N wide) when one block remains, starting at s0 (j, or N -
/// BLOCK where a block from j would pass N), from the row's non-zeros and B in place.
#[inline(always)]
fn one_block_pass<T: Float, const FMA: bool, const ACC: bool>(
    (cols, vals): (&[u32], &[T]),
    b: &[T],
    (j, s0): (usize, usize),
    c_row: &mut [T],
) {
    let zero = [T::zero(); BLOCK];
    let c0 = if ACC {
        &c_row[s0..s0 + BLOCK]
    } else {
        &zero[..]
    };
    let acc = sum_block::<T, FMA>(cols, vals, b, c_row.len(), s0, c0);
    copy_short(&acc[j - s0..], &mut c_row[j..s0 + BLOCK]);
}

/// Columns j..s1 + width of one row of C (N wide), its blocks starting at s0 (BLOCK wide) and
/// s1 (`width` wide), from the row's non-zeros: B's rows `stride` apart, the blocks' columns
/// at b0 and b1 of each (B in place: the same as s0 and s1; packed: 0 and BLOCK).
#[inline(always)]
fn two_block_pass<T: Float, const FMA: bool, const ACC: bool>(
    (cols, vals): (&[u32], &[T]),
    (b, stride, b0, b1): (&[T], usize, usize, usize),
    (j, s0, s1, width): (usize, usize, usize, usize),
    c_row: &mut [T],
) {
    let zero = [T::zero(); BLOCK];
    let (c0, c1) = if ACC {
        (&c_row[s0..s0 + BLOCK], &c_row[s1..s1 + width])
    } else {
        (&zero[..], &zero[..width])
    };
    let blocks = (cols, vals, b, stride, (b0, b1), (c0, c1));
    let (acc0, acc1) = match width {
        8 => two_blocks::<T, FMA, 8>(blocks),
        16 => two_blocks::<T, FMA, 16>(blocks),
        24 => two_blocks::<T, FMA, 24>(blocks),
        _ => two_blocks::<T, FMA, BLOCK>(blocks),
    };
    copy_short(&acc0[j - s0..], &mut c_row[j..s0 + BLOCK]);
    copy_short(
        &acc1[j + BLOCK - s1..width],
        &mut c_row[j + BLOCK..s1 + width],
    );
}

/// Two rows of C (BLOCK < N <= BLOCK + W) summed side by side: each row over its own
/// non-zeros in order, as [`sum_two_blocks`] sums one (the same bits), the two chains
/// interleaved while both rows have non-zeros left.
#[inline(always)]
fn pair_of_rows<T: Float, const FMA: bool, const ACC: bool, const W: usize>(
    [(k0, v0), (k1, v1)]: [(&[u32], &[T]); 2],
    (b, stride, b1): (&[T], usize, usize),
    n: usize,
    [c0, c1]: [&mut [T]; 2],
) {
    // the first block is columns 0..BLOCK, the second the last W (they overlap when N < BLOCK + W)
    let s1 = n - W;
    let (mut x0, mut x1, mut y0, mut y1) = if ACC {
        (
            c0[..BLOCK].try_into().unwrap(),
            c0[s1..].try_into().unwrap(),
            c1[..BLOCK].try_into().unwrap(),
            c1[s1..].try_into().unwrap(),
        )
    } else {
        (
            [T::zero(); BLOCK],
            [T::zero(); W],
            [T::zero(); BLOCK],
            [T::zero(); W],
        )
    };
    let common = k0.len().min(k1.len());
    for t in 0..common {
        let p = &b[k0[t] as usize * stride..(k0[t] as usize + 1) * stride];
        let q = &b[k1[t] as usize * stride..(k1[t] as usize + 1) * stride];
        let (p0, p1) = (&p[..BLOCK], &p[b1..b1 + W]);
        let (q0, q1) = (&q[..BLOCK], &q[b1..b1 + W]);
        let (u, v) = (v0[t], v1[t]);
        for l in 0..BLOCK {
            x0[l] = madd::<T, FMA>(x0[l], u, p0[l]);
            y0[l] = madd::<T, FMA>(y0[l], v, q0[l]);
        }
        for l in 0..W {
            x1[l] = madd::<T, FMA>(x1[l], u, p1[l]);
            y1[l] = madd::<T, FMA>(y1[l], v, q1[l]);
        }
    }
    // the longer row's rest alone
    let blocks = (0, b1);
    let (x0, x1) =
        sum_two_blocks::<T, FMA, W>(&k0[common..], &v0[common..], b, stride, blocks, (&x0, &x1));
    let (y0, y1) =
        sum_two_blocks::<T, FMA, W>(&k1[common..], &v1[common..], b, stride, blocks, (&y0, &y1));
    c0[..BLOCK].copy_from_slice(&x0);
    copy_short(&x1[BLOCK - s1..], &mut c0[BLOCK..]);
    c1[..BLOCK].copy_from_slice(&y0);
    copy_short(&y1[BLOCK - s1..], &mut c1[BLOCK..]);
}

/// The operands of [`sum_two_blocks`]: a row's non-zeros (columns, values), B and its width
/// N, where the two blocks start, and what they start from.
type TwoBlocks<'a, T> = (
    &'a [u32],
    &'a [T],
    &'a [T],
    usize,
    (usize, usize),
    (&'a [T], &'a [T]),
);

/// [`sum_two_blocks`] with its second block `W` wide, its result padded to BLOCK lanes.
#[inline(always)]
fn two_blocks<T: Float, const FMA: bool, const W: usize>(
    (cols, vals, b, n, starts, (c0, c1)): TwoBlocks<'_, T>,
) -> ([T; BLOCK], [T; BLOCK]) {
    let (acc0, acc1) = sum_two_blocks::<T, FMA, W>(cols, vals, b, n, starts, (c0, c1));
    let mut wide = [T::zero(); BLOCK];
    wide[..W].copy_from_slice(&acc1);
    (acc0, wide)
}

/// c0 + Σ v·B[k, s0..s0 + BLOCK] and c1 + Σ v·B[k, s1..s1 + W] over the non-zeros (k, v) of a
/// row, both blocks at once: BLOCK + W independent accumulators in registers.
#[inline(always)]
fn sum_two_blocks<T: Float, const FMA: bool, const W: usize>(
    cols: &[u32],
    vals: &[T],
    b: &[T],
    n: usize,
    (s0, s1): (usize, usize),
    (c0, c1): (&[T], &[T]),
) -> ([T; BLOCK], [T; W]) {
    let mut acc0: [T; BLOCK] = c0.try_into().unwrap();
    let mut acc1: [T; W] = c1.try_into().unwrap();
    for (&k, &v) in cols.iter().zip(vals) {
        let row = &b[k as usize * n..(k as usize + 1) * n];
        let (b0, b1) = (&row[s0..s0 + BLOCK], &row[s1..s1 + W]);
        for l in 0..BLOCK {
            acc0[l] = madd::<T, FMA>(acc0[l], v, b0[l]);
        }
        for l in 0..W {
            acc1[l] = madd::<T, FMA>(acc1[l], v, b1[l]);
        }
    }
    (acc0, acc1)
}

/// c0 + Σ v·B[k, s..s + BLOCK] over the non-zeros (k, v) of a row, in registers.
/// NOTE: even and odd non-zeros go to two sets of accumulators, added at the end: one chain
/// of dependent additions would leave the adder waiting on its own latency.
#[inline(always)]
fn sum_block<T: Float, const FMA: bool>(
    cols: &[u32],
    vals: &[T],
    b: &[T],
    n: usize,
    s: usize,
    c0: &[T],
) -> [T; BLOCK] {
    let mut even: [T; BLOCK] = c0.try_into().unwrap();
    let mut odd = [T::zero(); BLOCK];
    let row = |k: u32| &b[k as usize * n + s..k as usize * n + s + BLOCK];
    let mut pairs = cols.chunks_exact(2).zip(vals.chunks_exact(2));
    for (k, v) in &mut pairs {
        let (b0, b1) = (row(k[0]), row(k[1]));
        for l in 0..BLOCK {
            even[l] = madd::<T, FMA>(even[l], v[0], b0[l]);
            odd[l] = madd::<T, FMA>(odd[l], v[1], b1[l]);
        }
    }
    if cols.len() % 2 == 1 {
        let b0 = row(cols[cols.len() - 1]);
        let v = vals[vals.len() - 1];
        for l in 0..BLOCK {
            even[l] = madd::<T, FMA>(even[l], v, b0[l]);
        }
    }
    for l in 0..BLOCK {
        even[l] = even[l] + odd[l];
    }
    even
}

/// Number of entries that are not zero (NaN counts as non-zero).
fn count_nonzero<T: Float>(a: &[T]) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2<T: Float>(a: &[T]) -> usize {
            a.iter().map(|&v| (v != T::zero()) as usize).sum()
        }
        if crate::kernels::cpu::avx2() {
            // SAFETY: the processor supports AVX2, checked just above.
            return unsafe { avx2(a) };
        }
    }
    a.iter().map(|&v| (v != T::zero()) as usize).sum()
}

/// Appends the non-zeros of `row` (column j, value) to `col`/`val` from position `n`;
/// returns the new end. Every slot from `n` to the new end + 8 may be written: `col` and `val`
/// need room for all of `row` and 8 more. For zeros scattered rather than in runs (a gradient
/// through a max pooling, one pixel of each window): no test for blocks of zeros, which such a
/// row fails half the time at the cost of a mispredicted branch.
pub fn compress_scattered<T: Float>(row: &[T], col: &mut [u32], val: &mut [T], n: usize) -> usize {
    assert!(
        col.len().min(val.len()) >= n + row.len() + SLACK,
        "compress_scattered: no room for the row and its slack"
    );
    compress::<T, false>(row, col, val, n)
}

/// Appends the non-zeros of `row` to `col`/`val` from position `n`; returns the new end.
/// Needs [`SLACK`] spare slots past the last non-zero. `SKIP`: test each block of 8 for all
/// zeros first (for zeros in runs: an image's background).
fn compress<T: Float, const SKIP: bool>(
    row: &[T],
    col: &mut [u32],
    val: &mut [T],
    n: usize,
) -> usize {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() && crate::kernels::cpu::avx2() {
        // SAFETY: T is f32 (same TypeId), so both slices have f32's layout.
        let (row32, val32) = unsafe {
            (
                &*(row as *const [T] as *const [f32]),
                &mut *(val as *mut [T] as *mut [f32]),
            )
        };
        // SAFETY: the processor supports AVX2, checked just above.
        return unsafe { avx2::compress_f32::<SKIP>(row32, col, val32, n) };
    }
    // Branch-free: every entry is written, the cursor only advances past non-zeros.
    // (An `if` per entry mispredicts at every edge of a pen stroke.)
    let mut n = n;
    for (j, &v) in row.iter().enumerate() {
        col[n] = j as u32;
        val[n] = v;
        n += (v != T::zero()) as usize;
    }
    n
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// For each 8-bit mask: the lanes whose bit is set, in order, then zeros.
    static PERMUTATIONS: [[u32; 8]; 256] = permutations();

    const fn permutations() -> [[u32; 8]; 256] {
        let mut table = [[0u32; 8]; 256];
        let mut mask = 0;
        while mask < 256 {
            let (mut lane, mut out) = (0, 0);
            while lane < 8 {
                if mask & (1 << lane) != 0 {
                    table[mask][out] = lane as u32;
                    out += 1;
                }
                lane += 1;
            }
            mask += 1;
        }
        table
    }

    /// [`super::compress`] for f32, 8 entries at a time: compare with zero, gather the
    /// non-zero lanes to the front with one permutation, store all 8 lanes, advance by the
    /// number of non-zeros. Blocks of 8 zeros (background) cost one compare.
    #[target_feature(enable = "avx2")]
    pub fn compress_f32<const SKIP: bool>(
        row: &[f32],
        col: &mut [u32],
        val: &mut [f32],
        mut n: usize,
    ) -> usize {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mut blocks = row.chunks_exact(8);
        for (b, block) in (&mut blocks).enumerate() {
            // SAFETY: `block` has 8 f32; unaligned load.
            let v = unsafe { _mm256_loadu_ps(block.as_ptr()) };
            // NEQ_UQ: true for non-zeros and NaN, as `v != 0.0` is.
            let mask =
                _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(v, _mm256_setzero_ps())) as usize;
            if SKIP && mask == 0 {
                continue;
            }
            assert!(
                n + 8 <= col.len() && n + 8 <= val.len(),
                "compress: no slack left"
            );
            // SAFETY: the table row has 8 u32; the stores write 8 lanes at n..n + 8, in
            // bounds (checked just above).
            unsafe {
                let perm = _mm256_loadu_si256(PERMUTATIONS[mask].as_ptr() as *const __m256i);
                let idx = _mm256_add_epi32(lanes, _mm256_set1_epi32((b * 8) as i32));
                _mm256_storeu_ps(val.as_mut_ptr().add(n), _mm256_permutevar8x32_ps(v, perm));
                _mm256_storeu_si256(
                    col.as_mut_ptr().add(n) as *mut __m256i,
                    _mm256_permutevar8x32_epi32(idx, perm),
                );
            }
            n += mask.count_ones() as usize;
        }
        let start = row.len() - blocks.remainder().len();
        for (j, &v) in blocks.remainder().iter().enumerate() {
            col[n] = (start + j) as u32;
            val[n] = v;
            n += (v != 0.0) as usize;
        }
        n
    }
}
