//! The dense matrix product `C ← A·B + β·C`, blocked and packed as GotoBLAS and BLIS do.
//!
//! ```text
//! for each block of NC columns of B and C
//!   for each block of KC rows of B (columns of A)      B block packed: KC x NC, panels NR wide
//!     for each block of MC rows of A and C             A block packed: MC x KC, panels MR tall
//!       for each NR panel of B, each MR panel of A     micro-kernel: an MR x NR tile of C,
//!         tile = Σₚ A[i, p]·B[p, j]   (p in the block)   kept in registers over the KC depth
//!         C[tile] ← (first KC block: β·C, else C) + tile
//! ```
//! A product of few columns (N <= [`DIRECT_N`]: an affine layer of 100 outputs) reads A where
//! it is instead: its packing would be shared by few panels of B, and it was a sixth of such a
//! product. A short row-major B (M <= [`DIRECT_M`]) is read in place the same way.
//!
//! The packed blocks live in buffers that each thread keeps from call to call, so a product
//! allocates nothing once its thread has seen a product of that size.
//!
//! Every entry of C is summed in the same order (p within a block, blocks in order) whatever
//! the part of C a call covers: splitting C over threads by rows or columns changes no bit.
//!
//! NOTE: the micro-kernel is plain Rust that LLVM vectorises; on x86-64 it is compiled a
//! second time with AVX2 and FMA enabled and picked at run time when the CPU has them (6 x 16
//! f32: twelve 8-wide accumulators, as BLIS's Haswell/Zen kernel). Without FMA the sums are
//! rounded after each product, so results differ in the last bits between the two paths.
//! f32 on a CPU with AVX-512F takes a third kernel, 6 x 32 (two panels of B at once, twelve
//! 16-wide accumulators, written with intrinsics): the same chains of fused multiply-adds, so
//! the same bits as the AVX2 one. On a Xeon with two 512-bit FMA units it doubles what a
//! cycle computes (`backprop bench --workload sgemm`); on AMD's Zen 4, which splits 512-bit
//! operations in two, it computes what the AVX2 kernel does with half the instructions.

use std::any::TypeId;
use std::cell::RefCell;

use ndarray::{ArrayView2, ArrayViewMut2};

use super::{copy_short, madd};
use crate::Float;

/// Rows of a micro-tile (A panel height).
const MR: usize = 6;
/// Columns of a micro-tile (B panel width).
const NR: usize = 16;
/// Rows of A packed at a time: MC x KC f32 is 144 KiB, within the 1 MiB L2.
const MC: usize = 144;
/// Depth of a block: a KC x NR panel of B (16 KiB f32) stays in the 32 KiB L1.
const KC: usize = 256;
/// Columns of B packed at a time.
const NC: usize = 4080;
/// At most this many rows of A, a row-major B is read in place rather than packed: its packing
/// would be a large share of so short a product (an evaluation chunk of 30 images through a
/// 4320x100 affine layer; a convolution's 30 filters over one image's columns).
const DIRECT_M: usize = 32;
/// At most this many columns of B, A is read in place rather than packed: its packing is then
/// shared by few panels of B.
/// NOTE: one thread, medians of 200: W3's affine forward 100x4320·4320x100 78 -> 90 GFLOP/s,
/// its dW (Aᵀ read in place) 77 -> 82, an evaluation chunk 25x4320·4320x100 64 -> 75; the
/// 2048³ peak measured alongside was 79-83.
const DIRECT_N: usize = 128;

thread_local! {
    /// This thread's packing space, in f64 words (reinterpreted as the element type).
    static PACKED: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// What C holds before A·B is added to it.
#[derive(Clone, Copy, Debug)]
enum Start<'a, T> {
    /// β·C (with β = 0, C is only written: whatever it held, NaN included, is overwritten)
    Scaled(T),
    /// the bias of each row: C[i, j] = bias[i] (C is only written)
    RowBias(&'a [T]),
}

/// C ← A·B + β·C, on the calling thread. `A: (M, K)`, `B: (K, N)`, `C: (M, N)`, any strides.
/// With β = 0, C is only written (whatever it held, NaN included, is overwritten).
pub fn gemm_serial<T: Float>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    beta: T,
    c: &mut ArrayViewMut2<T>,
) {
    product(a, b, Start::Scaled(beta), c)
}

/// C ← A·B + bias, `bias[i]` added to row i, on the calling thread; C is only written. The
/// same bits as filling C's rows with the bias and adding A·B with [`gemm_serial`] (β = 1),
/// without that pass over C (a convolution's y = Wc·col + b: a fifth of its forward).
#[track_caller]
pub fn gemm_serial_bias<T: Float>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    bias: &[T],
    c: &mut ArrayViewMut2<T>,
) {
    assert_eq!(bias.len(), c.nrows(), "gemm: a bias for each row of C");
    product(a, b, Start::RowBias(bias), c)
}

#[track_caller]
fn product<T: Float>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    start: Start<'_, T>,
    c: &mut ArrayViewMut2<T>,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    assert!(
        b.nrows() == k && c.dim() == (m, n),
        "gemm: A {:?} · B {:?} does not fit C {:?}",
        a.dim(),
        b.dim(),
        c.dim()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for (i, mut row) in c.rows_mut().into_iter().enumerate() {
            row.map_inplace(|v| {
                *v = match start {
                    Start::Scaled(beta) if beta == T::zero() => T::zero(),
                    Start::Scaled(beta) => beta * *v,
                    Start::RowBias(bias) => bias[i],
                }
            });
        }
        return;
    }
    let a_len = MC.min(m).next_multiple_of(MR) * KC.min(k);
    let b_len = KC.min(k) * NC.min(n).next_multiple_of(NR);
    PACKED.with(|space| {
        let mut space = space.borrow_mut();
        let (ap, bp) = split_space::<T>(&mut space, a_len, b_len);
        #[cfg(target_arch = "x86_64")]
        if TypeId::of::<T>() == TypeId::of::<f32>() && crate::kernels::cpu::avx512() {
            // SAFETY: the CPU has the features the function is compiled for, and T is f32.
            unsafe { blocks_avx512(a, b, start, c, ap, bp) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::cpu::avx2_fma() {
            // SAFETY: the CPU has the features the function is compiled for.
            unsafe { blocks_fma(a, b, start, c, ap, bp) };
            return;
        }
        blocks::<T, false, false>(a, b, start, c, ap, bp);
    });
}

/// Two aligned slices of the thread's space, of `a_len` and `b_len` elements; the space grows
/// (the only allocation here) when they do not fit.
fn split_space<T: Float>(space: &mut Vec<f64>, a_len: usize, b_len: usize) -> (&mut [T], &mut [T]) {
    const ALIGN: usize = 64; // a cache line: the kernel's loads never straddle two
    let size = std::mem::size_of::<T>();
    assert!(size == 4 || size == 8, "Float is f32 or f64");
    let a_bytes = (a_len * size).next_multiple_of(ALIGN);
    let words = (a_bytes + b_len * size + ALIGN) / 8 + 1;
    if space.len() < words {
        *space = vec![0.0; words];
    }
    let skip = space.as_ptr().align_offset(ALIGN) * 8 / size;
    // SAFETY: f64 storage reinterpreted as f32 or f64 (both plain numbers, alignment 8 ≥
    // theirs); `words` leaves room for the alignment, the A part and the B part.
    let all: &mut [T] =
        unsafe { std::slice::from_raw_parts_mut(space.as_mut_ptr().cast::<T>(), words * 8 / size) };
    let (ap, rest) = all[skip..].split_at_mut(a_bytes / size);
    (&mut ap[..a_len], &mut rest[..b_len])
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn blocks_fma<T: Float>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    start: Start<'_, T>,
    c: &mut ArrayViewMut2<T>,
    ap: &mut [T],
    bp: &mut [T],
) {
    blocks::<T, true, false>(a, b, start, c, ap, bp)
}

/// [`blocks`] with the AVX-512 kernel: two panels of B at a time ([`micro_kernel_avx512`]).
/// SAFETY: the CPU has AVX-512F, and T is f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn blocks_avx512<T: Float>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    start: Start<'_, T>,
    c: &mut ArrayViewMut2<T>,
    ap: &mut [T],
    bp: &mut [T],
) {
    blocks::<T, true, true>(a, b, start, c, ap, bp)
}

/// The three outer loops: blocks of C's columns, of the depth, of C's rows. WIDE: T is f32
/// and the CPU has AVX-512F; the tiles are then MR x 2·NR where two panels of B remain.
#[inline(always)]
fn blocks<T: Float, const FMA: bool, const WIDE: bool>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    start: Start<'_, T>,
    c: &mut ArrayViewMut2<T>,
    ap: &mut [T],
    bp: &mut [T],
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let direct = b.strides()[1] == 1 && m <= DIRECT_M;
    let direct_a = n <= DIRECT_N;
    for j0 in (0..n).step_by(NC) {
        let nc = NC.min(n - j0);
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            if !direct {
                pack_b(b, p0, kc, j0, nc, bp);
            }
            for i0 in (0..m).step_by(MC) {
                let mc = MC.min(m - i0);
                if !direct_a {
                    pack_a(a, i0, mc, p0, kc, ap);
                }
                let first = p0 == 0;
                let mut jr = 0;
                while jr < nc {
                    let cols = NR.min(nc - jr);
                    // two panels at a time with the AVX-512 kernel, where a second remains
                    let pair = WIDE && nc - jr > NR;
                    let panel = |jr: usize, slot: usize, bp: &mut [T]| {
                        b_panel(b, (p0, kc), (j0, nc, jr), direct, slot, bp)
                    };
                    let b0 = panel(jr, 0, bp);
                    let b1 = if pair { panel(jr + NR, 1, bp) } else { b0 };
                    for ir in (0..mc).step_by(MR) {
                        let rows = MR.min(mc - ir);
                        let (rows_at, step) = match direct_a {
                            true => a_rows(a, i0 + ir, rows, p0),
                            false => packed_rows(&ap[ir * kc..(ir + MR) * kc]),
                        };
                        #[cfg(target_arch = "x86_64")]
                        if WIDE {
                            // NOTE: C's tile fetched while the kernel runs: C is read and
                            // written once per depth block, from wherever it was (a large C
                            // lies beyond L2), and the stores waited on it
                            let width = if pair { 2 * NR } else { NR }.min(nc - jr);
                            prefetch_tile(c, (i0 + ir, rows), (j0 + jr, width));
                            // SAFETY: kc steps of `step` from each row pointer stay inside A,
                            // kc rows of each panel inside B or the packing space; WIDE only
                            // where T is f32 and the CPU has AVX-512F
                            let tiles = unsafe { wide_tiles(kc, (rows_at, step), b0, b1, pair) };
                            store(c, i0 + ir, j0 + jr, rows, cols, &tiles[0], first, start);
                            if pair {
                                let cols = NR.min(nc - jr - NR);
                                let j = j0 + jr + NR;
                                store(c, i0 + ir, j, rows, cols, &tiles[1], first, start);
                            }
                            continue;
                        }
                        // SAFETY: kc steps of `step` from each row pointer stay inside A, kc
                        // rows of the panel inside B or the packing space
                        let tile = unsafe {
                            let (b0, stride) = b0;
                            let b0 = std::slice::from_raw_parts(b0, (kc - 1) * stride + NR);
                            micro_kernel_rows::<T, FMA>(kc, rows_at, step, b0, stride)
                        };
                        store(c, i0 + ir, j0 + jr, rows, cols, &tile, first, start);
                    }
                    jr += if pair { 2 * NR } else { NR };
                }
            }
        }
    }
}

/// [`micro_kernel_avx512`] for a T that is f32: one or two MR x NR tiles.
/// SAFETY: T is f32; the CPU has AVX-512F; kc steps of `step` from each row pointer stay
/// inside A, kc rows of each panel inside B or the packing space.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn wide_tiles<T: Float>(
    kc: usize,
    (rows_at, step): ([*const T; MR], isize),
    b0: (*const T, usize),
    b1: (*const T, usize),
    pair: bool,
) -> [[[T; NR]; MR]; 2] {
    let rows_at = rows_at.map(|r| r.cast::<f32>());
    let b0 = (b0.0.cast::<f32>(), b0.1);
    let b1 = (b1.0.cast::<f32>(), b1.1);
    // SAFETY: as the caller promises
    let tiles = unsafe { micro_kernel_avx512(kc, rows_at, step, b0, b1, pair) };
    // SAFETY: T is f32: the same layout
    unsafe { std::mem::transmute_copy::<_, [[[T; NR]; MR]; 2]>(&tiles) }
}

/// B's panel at column `jr` of the block from `j0` (of `nc` columns): packed, or B itself
/// (rows rsb apart) when read in place; a last panel narrower than NR is packed either way
/// (into slot 0 or 1 of the packing space). Returns where it starts and its row stride.
#[inline(always)]
fn b_panel<T: Float>(
    b: &ArrayView2<T>,
    (p0, kc): (usize, usize),
    (j0, nc, jr): (usize, usize, usize),
    direct: bool,
    slot: usize,
    bp: &mut [T],
) -> (*const T, usize) {
    let cols = NR.min(nc - jr);
    if !direct {
        (bp[jr * kc..(jr + NR) * kc].as_ptr(), NR)
    } else if cols < NR {
        let space = &mut bp[slot * NR * kc..(slot + 1) * NR * kc];
        pack_b(b, p0, kc, j0 + jr, cols, space);
        (space.as_ptr(), NR)
    } else {
        let rsb = b.strides()[0];
        // SAFETY: row p0, column j0 + jr lies inside B; the kernel reads rows p0..p0 + kc,
        // columns j0 + jr..+NR, rows rsb apart and contiguous (column stride 1)
        let at = unsafe { b.as_ptr().offset(p0 as isize * rsb + (j0 + jr) as isize) };
        (at, rsb as usize)
    }
}

/// Where MR rows of A from row `i0` start at column `p0` (the last of `rows` repeated past
/// the end), read in place, and the step from one column to the next.
#[inline(always)]
fn a_rows<T: Float>(
    a: &ArrayView2<T>,
    i0: usize,
    rows: usize,
    p0: usize,
) -> ([*const T; MR], isize) {
    let (rsa, csa) = (a.strides()[0], a.strides()[1]);
    // SAFETY: rows i0.. (the last one repeated past the end) and column p0 lie inside A
    let at = std::array::from_fn(|i| unsafe {
        a.as_ptr()
            .offset((i0 + i.min(rows - 1)) as isize * rsa + p0 as isize * csa)
    });
    (at, csa)
}

/// Where each of the MR rows of a packed panel of A starts (its kc entries MR apart).
#[inline(always)]
fn packed_rows<T: Float>(a_panel: &[T]) -> ([*const T; MR], isize) {
    (std::array::from_fn(|i| a_panel[i..].as_ptr()), MR as isize)
}

/// Asks for C's tile (rows `row0..row0 + rows`, columns `col0..col0 + width`) to be loaded
/// into the cache while the kernel runs: its first and last entry of each row.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_tile<T: Float>(
    c: &ArrayViewMut2<T>,
    (row0, rows): (usize, usize),
    (col0, width): (usize, usize),
) {
    let (rs, cs) = (c.strides()[0], c.strides()[1]);
    for row in row0..row0 + rows {
        for j in [col0, col0 + width - 1] {
            let at = row as isize * rs + j as isize * cs;
            // SAFETY: (row, j) lies inside C; a prefetch only hints
            unsafe {
                use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                _mm_prefetch::<_MM_HINT_T0>(c.as_ptr().offset(at).cast());
            }
        }
    }
}

/// A[i0.., p0..] (mc x kc) as panels of MR rows: panel r holds, for each p, the MR entries
/// A[i0 + r·MR + 0..MR, p0 + p] side by side; rows past the end are zeros.
#[inline(always)]
fn pack_a<T: Float>(a: &ArrayView2<T>, i0: usize, mc: usize, p0: usize, kc: usize, ap: &mut [T]) {
    let (rs, cs) = (a.strides()[0], a.strides()[1]);
    for (r, panel) in ap[..mc.next_multiple_of(MR) * kc]
        .chunks_exact_mut(MR * kc)
        .enumerate()
    {
        let rows = MR.min(mc - r * MR);
        if rows < MR {
            panel.fill(T::zero());
        }
        // SAFETY: every (i, p) read below has i0 + r·MR + i < M and p0 + p < K
        let at = |i: usize, p: usize| unsafe {
            *a.as_ptr()
                .offset((i0 + r * MR + i) as isize * rs + (p0 + p) as isize * cs)
        };
        if cs == 1 {
            // rows are contiguous: read along them
            for i in 0..rows {
                for p in 0..kc {
                    panel[p * MR + i] = at(i, p);
                }
            }
        } else {
            for p in 0..kc {
                for i in 0..rows {
                    panel[p * MR + i] = at(i, p);
                }
            }
        }
    }
}

/// B[p0.., j0..] (kc x nc) as panels of NR columns: panel q holds, for each p, the NR entries
/// B[p0 + p, j0 + q·NR + 0..NR] side by side; columns past the end are zeros.
#[inline(always)]
fn pack_b<T: Float>(b: &ArrayView2<T>, p0: usize, kc: usize, j0: usize, nc: usize, bp: &mut [T]) {
    let (rs, cs) = (b.strides()[0], b.strides()[1]);
    for (q, panel) in bp[..nc.next_multiple_of(NR) * kc]
        .chunks_exact_mut(NR * kc)
        .enumerate()
    {
        let cols = NR.min(nc - q * NR);
        if cols < NR {
            panel.fill(T::zero());
        }
        // SAFETY: every (p, j) read below has p0 + p < K and j0 + q·NR + j < N
        let ptr = |p: usize, j: usize| unsafe {
            b.as_ptr()
                .offset((p0 + p) as isize * rs + (j0 + q * NR + j) as isize * cs)
        };
        if cs == 1 && cols == NR {
            for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
                // SAFETY: NR contiguous entries of row p0 + p, inside B
                let src: &[T; NR] = unsafe { &*ptr(p, 0).cast() };
                // NOTE: a fixed-size copy: two vector moves, where a slice copy of a run-time
                // length called memmove (10% of a SimpleConvNet step, perf)
                let dst: &mut [T; NR] = dst.try_into().expect("NR wide");
                *dst = *src;
            }
        } else if cs == 1 {
            for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
                // SAFETY: cols contiguous entries of row p0 + p, inside B
                let src = unsafe { std::slice::from_raw_parts(ptr(p, 0), cols) };
                copy_short(src, &mut dst[..cols]);
            }
        } else {
            for j in 0..cols {
                for p in 0..kc {
                    // SAFETY: see above
                    panel[p * NR + j] = unsafe { *ptr(p, j) };
                }
            }
        }
    }
}

/// [`micro_kernel`] with A read where it is: a[i] at `rows[i] + p·step`.
/// SAFETY: each `rows[i] + p·step`, p < kc, is inside one allocation.
#[inline(always)]
unsafe fn micro_kernel_rows<T: Float, const FMA: bool>(
    kc: usize,
    rows: [*const T; MR],
    step: isize,
    b: &[T],
    stride: usize,
) -> [[T; NR]; MR] {
    let mut tile = [[T::zero(); NR]; MR];
    let b = &b[..(kc - 1) * stride + NR];
    for p in 0..kc {
        // SAFETY: the caller's promise for A; p < kc and b holds (kc - 1)·stride + NR entries
        let a: [T; MR] = std::array::from_fn(|i| unsafe { *rows[i].offset(p as isize * step) });
        let b: &[T; NR] = unsafe { &*b.as_ptr().add(p * stride).cast() };
        for i in 0..MR {
            for j in 0..NR {
                tile[i][j] = madd::<T, FMA>(tile[i][j], a[i], b[j]);
            }
        }
    }
    tile
}

/// [`micro_kernel_rows`] for f32 with AVX-512, over two panels of B at once when `pair`
/// (b0 and b1, each (start, row stride)), else over b0 alone: tile q of the result is
/// Σₚ a[i]·b_q[p·stride_q + j], p < kc, each entry the same chain of fused multiply-adds as
/// there (the same bits). An MR x 2·NR tile keeps 12 vectors of 16 in registers: enough
/// independent sums to cover the multiply-add's latency on both of the FMA units of a core
/// that has two 512-bit ones (Intel's Xeons), where the AVX2 kernel fills them half.
/// SAFETY: the CPU has AVX-512F; each `rows[i] + p·step` and `b_q + p·stride_q + 0..NR`,
/// p < kc, lies inside one allocation.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn micro_kernel_avx512(
    kc: usize,
    rows: [*const f32; MR],
    step: isize,
    (b0, s0): (*const f32, usize),
    (b1, s1): (*const f32, usize),
    pair: bool,
) -> [[[f32; NR]; MR]; 2] {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    // SAFETY (all loads): the caller's promise, p < kc
    if pair {
        for p in 0..kc {
            let b = unsafe {
                [
                    _mm512_loadu_ps(b0.add(p * s0)),
                    _mm512_loadu_ps(b1.add(p * s1)),
                ]
            };
            for (i, acc) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(unsafe { *rows[i].offset(p as isize * step) });
                acc[0] = _mm512_fmadd_ps(a, b[0], acc[0]);
                acc[1] = _mm512_fmadd_ps(a, b[1], acc[1]);
            }
        }
    } else {
        for p in 0..kc {
            let b = unsafe { _mm512_loadu_ps(b0.add(p * s0)) };
            for (i, acc) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(unsafe { *rows[i].offset(p as isize * step) });
                acc[0] = _mm512_fmadd_ps(a, b, acc[0]);
            }
        }
    }
    let mut tiles = [[[0.0f32; NR]; MR]; 2];
    for (i, acc) in acc.iter().enumerate() {
        for (q, tile) in tiles.iter_mut().enumerate() {
            // SAFETY: NR = 16 f32 of the tile's row
            unsafe { _mm512_storeu_ps(tile[i].as_mut_ptr(), acc[q]) };
        }
    }
    tiles
}

/// C[i0.., j0..] (rows x cols) ← tile + (C's start on the first block of the depth, else C).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn store<T: Float>(
    c: &mut ArrayViewMut2<T>,
    i0: usize,
    j0: usize,
    rows: usize,
    cols: usize,
    tile: &[[T; NR]; MR],
    first: bool,
    start: Start<'_, T>,
) {
    let (rs, cs) = (c.strides()[0], c.strides()[1]);
    let (overwrite, bias, beta) = match start {
        _ if !first => (false, None, T::one()),
        Start::Scaled(beta) => (beta == T::zero(), None, beta),
        Start::RowBias(bias) => (false, Some(bias), T::one()),
    };
    let scale = !overwrite && beta != T::one();
    for (i, t) in tile.iter().enumerate().take(rows) {
        // SAFETY: the tile's valid part (rows x cols, clipped by the caller) lies inside C
        let row = unsafe {
            c.as_mut_ptr()
                .offset((i0 + i) as isize * rs + j0 as isize * cs)
        };
        if cs == 1 {
            // SAFETY: cols contiguous entries of C's row i0 + i
            let row = unsafe { std::slice::from_raw_parts_mut(row, cols) };
            if let Some(bias) = bias {
                // the bias, then the tile added to it
                let b = bias[i0 + i];
                row.iter_mut().zip(t).for_each(|(v, &t)| *v = b + t);
            } else if overwrite {
                copy_short(&t[..cols], row);
            } else if scale {
                row.iter_mut().zip(t).for_each(|(v, &t)| *v = beta * *v + t);
            } else {
                row.iter_mut().zip(t).for_each(|(v, &t)| *v = *v + t);
            }
        } else {
            for (j, &t) in t.iter().enumerate().take(cols) {
                // SAFETY: as above, entry j of the row
                let v = unsafe { &mut *row.offset(j as isize * cs) };
                *v = if let Some(bias) = bias {
                    bias[i0 + i] + t
                } else if overwrite {
                    t
                } else if scale {
                    beta * *v + t
                } else {
                    *v + t
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use ndarray::Array2;

    /// C[i, j] as the kernels define it: per block of KC, the chain of fused multiply-adds
    /// over p from zero, added to C's start (β·C on the first block), then to C.
    fn chains(a: &Array2<f32>, b: &Array2<f32>, beta: f32, c0: &Array2<f32>) -> Array2<f32> {
        let (m, k) = a.dim();
        Array2::from_shape_fn((m, b.ncols()), |(i, j)| {
            let mut c = c0[[i, j]];
            for p0 in (0..k).step_by(KC) {
                let t = (p0..k.min(p0 + KC)).fold(0.0f32, |t, p| a[[i, p]].mul_add(b[[p, j]], t));
                c = match (p0, beta) {
                    (0, 0.0) => t,
                    (0, 1.0) => c + t,
                    (0, beta) => beta * c + t,
                    _ => c + t,
                };
            }
            c
        })
    }

    #[test]
    fn every_f32_entry_is_its_chain_of_fused_multiply_adds_whichever_kernel_runs() {
        // the kernel this CPU picks (AVX-512: two panels of B at a time, or AVX2) against
        // the same sums written out: a pair of panels, a lone last panel, a narrow one;
        // B packed and read in place (M <= DIRECT_M), A packed and read in place (N <=
        // DIRECT_N), transposed operands, depths across KC
        if !crate::kernels::cpu::fma() {
            return; // without FMA the sums are rounded twice (documented)
        }
        let mut rng = Rng::new(21);
        let mut random =
            |r: usize, c: usize| Array2::from_shape_fn((r, c), |_| rng.normal() as f32);
        for (m, k, n) in [
            (1, 1, 1),
            (6, 16, 32),
            (7, 17, 33),
            (13, 300, 48),
            (40, 260, 10),
            (150, 300, 20),
            (20, 5, 200),
            (100, 50, 140),
            (150, 520, 150),
        ] {
            let (a, b, c0) = (random(m, k), random(k, n), random(m, n));
            let (at, bt) = (a.t().to_owned(), b.t().to_owned());
            for beta in [0.0, 1.0, 2.0] {
                let expected = chains(&a, &b, beta, &c0);
                for (a, b) in [(a.view(), b.view()), (at.t(), bt.t())] {
                    let mut c = c0.clone();
                    gemm_serial(&a, &b, beta, &mut c.view_mut());
                    assert!(
                        c.iter()
                            .zip(&expected)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{m}x{k}x{n}, beta {beta}"
                    );
                }
            }
        }
    }
}
