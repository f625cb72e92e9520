//! The forward of a stride-1 convolution summed straight from the zero-padded image: no
//! im2col.
//!
//! Reference: im2col and the packed product with its row bias (`convolve_image`), whose
//! bits it gives (`kernels::conv` tests).

use std::any::TypeId;

use super::PartDims;
use super::window_sums::STRIP;
use crate::Float;
use crate::kernels::{copy_short, madd};

/// Vectors of outputs along a row that [`convolve_direct`] keeps in registers ...
const XB: usize = 3;
/// ... for this many filters (9 accumulators).
/// NOTE: 3, not 4: 4 filters' 12 accumulators, the XB vectors of the image row and a weight
/// took all 16 vector registers, and LLVM kept one accumulator on the stack (a load, the FMA
/// and a store a term: half the samples of the loop in perf annotate). `conv.predict` of 30
/// images, one thread, alternating (µs, FB 4 -> 3): 30 filters 1x5x5 over 28x28 625-631 ->
/// 410-442, 30 of 2x5x5 over 24x24 1019-1098 -> 521-555, 30 of 1x7x7 1115-1213 -> 611-737,
/// 16 of 3x3x3 over 26x26 349-371 -> 256-342, 64 of 16x3x3 6942-7205 -> 3793-4277.
const FB: usize = 3;

/// True when [`convolve_direct`] computes this layer's forward: stride 1 (a row of outputs
/// reads a row of the image), at most the 144 products per output measured, and rows that
/// blocks of [`XB`] vectors cover with no more lanes to spare than blocks of 2 or 1 would.
/// NOTE: `conv.predict` of 30 images, one thread, alternating (ms), im2col with the packed
/// product -> direct: 30 filters 1x5x5 over 28x28 (rows of 24) 0.46-0.70 -> 0.42-0.59,
/// 30 of 2x5x5 over 24x24 0.77 -> 0.69, 30 of 1x7x7 0.78-0.95 -> 0.58-0.66, 16 of 3x3x3
/// 0.33-0.40 -> 0.22-0.28, 64 of 16x3x3 (K = 144) 5.3-5.7 -> 3.9-4.5; 30 of 1x3x3 (K = 9)
/// even. In blocks of 2 vectors x 6 filters it lost: 16 of 1x5x5 pad 2 over 28x28 (rows of
/// 28) 0.66 -> 0.87, 32 of 16x3x3 over 14x14 1.2 -> 2.0.
pub(super) fn direct_applies(d: &PartDims) -> bool {
    let ow = d.win.output(d.h, d.w).1;
    let lanes = |vectors: usize| ow.next_multiple_of(vectors * STRIP);
    d.win.stride == 1 && d.k <= 144 && lanes(XB) <= lanes(2).min(lanes(1))
}

/// y_i = Wc·col_i + b for one image at stride 1, read from its padded image instead of a col:
/// ```text
/// y[f, oy, ox] = b[f] + Σ_(c, fy, fx) Wc[f, (c, fy, fx)] · image[c, oy + fy, ox + fx]
/// ```
/// A row of outputs is cut into [`XB`] vectors of STRIP along ox, times [`FB`] filters, kept
/// in registers over the C·FH·FW terms; each term loads XB vectors of an image row (shifted
/// by fx) and one weight per filter. The sum runs in the order of im2col's rows from zero and
/// the bias comes last, as in the packed product with its row bias: the same bits as
/// [`convolve_image`].
pub(super) fn convolve_direct<T: Float>(
    wc: &[T],
    b: &[T],
    image: &[T],
    offsets: &[usize],
    d: &PartDims,
    y: &mut [T],
) {
    let (oh, ow) = d.win.output(d.h, d.w);
    let wp = d.w + 2 * d.win.pad;
    assert!(
        wc.len() == d.fn_ * d.k && b.len() == d.fn_ && offsets.len() == d.k,
        "convolve_direct: weights, bias and offsets do not fit"
    );
    assert_eq!(
        y.len(),
        d.fn_ * oh * ow,
        "convolve_direct: y is not (FN, OH, OW)"
    );
    // the furthest read: the last row's last block of vectors at the furthest offset
    let last = offsets.iter().max().copied().unwrap_or(0) + (oh - 1) * wp;
    assert!(
        last + ow.next_multiple_of(XB * STRIP) <= image.len(),
        "convolve_direct: the image has no slack for the last row's vectors"
    );
    let terms = (wc, b, image, offsets);
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::avx2_fma() {
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            // SAFETY: T is f32 (same TypeId), so the slices have f32's layout; the CPU has
            // AVX2 and FMA (and AVX-512F for the first); the reads are checked by the asserts
            // above.
            return unsafe {
                let f32s = |a: &[T]| &*(a as *const [T] as *const [f32]);
                let y = &mut *(y as *mut [T] as *mut [f32]);
                let terms = (f32s(wc), f32s(b), f32s(image), offsets);
                if crate::kernels::cpu::avx512() {
                    direct_rows_f32_avx512(terms, (oh, ow, wp), y)
                } else {
                    direct_rows_f32(terms, (oh, ow, wp), y)
                }
            };
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn rows_fma<T: Float>(terms: Terms<'_, T>, sizes: RowSizes, y: &mut [T]) {
            direct_rows::<T, true>(terms, sizes, y)
        }
        // SAFETY: the CPU has the features the function is compiled for
        return unsafe { rows_fma(terms, (oh, ow, wp), y) };
    }
    direct_rows::<T, false>(terms, (oh, ow, wp), y)
}

/// What [`convolve_direct`] sums: Wc (FN, K), b (FN), the padded image and each term's offset.
type Terms<'a, T> = (&'a [T], &'a [T], &'a [T], &'a [usize]);
/// (OH, OW, W + 2P): output rows and their length, the padded image's row length.
type RowSizes = (usize, usize, usize);

/// [`convolve_direct`]'s loops (the reads checked by its asserts).
#[inline(always)]
fn direct_rows<T: Float, const FMA: bool>(
    (wc, b, image, offsets): Terms<'_, T>,
    (oh, ow, wp): RowSizes,
    y: &mut [T],
) {
    let (fn_, q) = (b.len(), oh * ow);
    for (oy, ox0, f0) in direct_blocks(oh, ow, fn_, FB) {
        // SAFETY: offsets[p] + oy·wp + ox0 + XB·STRIP <= the furthest read (asserted)
        let corner = unsafe { image.as_ptr().add(oy * wp + ox0) };
        let rows: [&[T]; FB] = block_weights(wc, fn_, f0);
        let mut acc = [[[T::zero(); STRIP]; XB]; FB];
        for (p, &off) in offsets.iter().enumerate() {
            let x: [[T; STRIP]; XB] =
                std::array::from_fn(|j| unsafe { *corner.add(off + j * STRIP).cast() });
            for r in 0..FB {
                let w = rows[r][p];
                for j in 0..XB {
                    for t in 0..STRIP {
                        acc[r][j][t] = madd::<T, FMA>(acc[r][j][t], w, x[j][t]);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(fn_ - f0) {
            let (f, bias) = (f0 + r, b[f0 + r]);
            let row = &mut y[f * q + oy * ow..][..ow];
            for (j, v) in acc.iter().enumerate() {
                let at = ox0 + j * STRIP;
                if at + STRIP <= ow {
                    let y: &mut [T; STRIP] =
                        (&mut row[at..at + STRIP]).try_into().expect("STRIP wide");
                    *y = std::array::from_fn(|t| bias + v[t]);
                } else if at < ow {
                    for (y, &v) in row[at..].iter_mut().zip(v) {
                        *y = bias + v;
                    }
                }
            }
        }
    }
}

/// The blocks [`convolve_direct`] sums, (row, first column, first filter): each row of OW
/// outputs in runs of XB·STRIP, each run for `fb` filters at a time ([`FB`], or
/// `FB_WIDE` with AVX-512).
fn direct_blocks(
    oh: usize,
    ow: usize,
    fn_: usize,
    fb: usize,
) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..oh).flat_map(move |oy| {
        (0..ow)
            .step_by(XB * STRIP)
            .flat_map(move |ox0| (0..fn_).step_by(fb).map(move |f0| (oy, ox0, f0)))
    })
}

/// The weight rows (the C·FH·FW terms of each) of filters f0..f0 + F; a last block of fewer
/// filters repeats its last one (computed, not stored).
fn block_weights<T: Float, const F: usize>(wc: &[T], fn_: usize, f0: usize) -> [&[T]; F] {
    let k = wc.len() / fn_;
    std::array::from_fn(|r| &wc[(f0 + r).min(fn_ - 1) * k..][..k])
}

/// [`direct_rows`] for f32, its nine sums in AVX registers by name.
/// NOTE: the generic loops keep their sums in an array, which LLVM built on the stack at each
/// block's start and read back in pieces, stalling on the store (a sixth of the loop's samples
/// in perf annotate); explicit registers start from zero in place. The same operations in the
/// same order: the same bits.
/// SAFETY: the CPU has AVX2 and FMA; every read is within `image` ([`convolve_direct`]'s
/// asserts).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn direct_rows_f32(
    (wc, b, image, offsets): Terms<'_, f32>,
    (oh, ow, wp): RowSizes,
    y: &mut [f32],
) {
    use std::arch::x86_64::*;
    const { assert!(XB == 3 && FB == 3 && STRIP == 8) };
    let (fn_, q) = (b.len(), oh * ow);
    for (oy, ox0, f0) in direct_blocks(oh, ow, fn_, FB) {
        // SAFETY: offsets[p] + oy·wp + ox0 + XB·STRIP <= the furthest read (asserted)
        let corner = unsafe { image.as_ptr().add(oy * wp + ox0) };
        let [w0, w1, w2] = block_weights(wc, fn_, f0);
        let z = _mm256_setzero_ps();
        let (mut s00, mut s01, mut s02) = (z, z, z);
        let (mut s10, mut s11, mut s12) = (z, z, z);
        let (mut s20, mut s21, mut s22) = (z, z, z);
        for (p, &off) in offsets.iter().enumerate() {
            // s[r][j] += w_r[p] · (the image row's vector j, shifted to this term)
            let (x0, x1, x2) = unsafe {
                let at = corner.add(off);
                (
                    _mm256_loadu_ps(at),
                    _mm256_loadu_ps(at.add(STRIP)),
                    _mm256_loadu_ps(at.add(2 * STRIP)),
                )
            };
            let w = _mm256_set1_ps(w0[p]);
            s00 = _mm256_fmadd_ps(w, x0, s00);
            s01 = _mm256_fmadd_ps(w, x1, s01);
            s02 = _mm256_fmadd_ps(w, x2, s02);
            let w = _mm256_set1_ps(w1[p]);
            s10 = _mm256_fmadd_ps(w, x0, s10);
            s11 = _mm256_fmadd_ps(w, x1, s11);
            s12 = _mm256_fmadd_ps(w, x2, s12);
            let w = _mm256_set1_ps(w2[p]);
            s20 = _mm256_fmadd_ps(w, x0, s20);
            s21 = _mm256_fmadd_ps(w, x1, s21);
            s22 = _mm256_fmadd_ps(w, x2, s22);
        }
        let sums = [[s00, s01, s02], [s10, s11, s12], [s20, s21, s22]];
        for (r, sums) in sums.iter().enumerate().take(fn_ - f0) {
            let (f, bias) = (f0 + r, _mm256_set1_ps(b[f0 + r]));
            let row = &mut y[f * q + oy * ow..][..ow];
            for (j, &v) in sums.iter().enumerate() {
                let at = ox0 + j * STRIP;
                let v = _mm256_add_ps(bias, v);
                if at + STRIP <= ow {
                    // SAFETY: at + STRIP <= ow = row.len()
                    unsafe { _mm256_storeu_ps(row.as_mut_ptr().add(at), v) };
                } else if at < ow {
                    let mut part = [0f32; STRIP];
                    // SAFETY: `part` holds STRIP f32
                    unsafe { _mm256_storeu_ps(part.as_mut_ptr(), v) };
                    row[at..].copy_from_slice(&part[..ow - at]);
                }
            }
        }
    }
}

/// [`direct_rows_f32`] with AVX-512, six filters a block ([`FB_WIDE`]): each run of XB·STRIP =
/// 24 outputs as one 16-lane vector and one 8-lane, twelve independent sums. The same
/// operations on each output in the same order: the same bits.
/// NOTE: with three filters a block, as the AVX2 kernel, the six sums' chains of dependent
/// multiply-adds bound a term to their latency (4 cycles) and the kernel was no faster (perf:
/// 24.3% of a SimpleConvNet epoch before, 23.4% after); twelve fill the two 512-bit FMA
/// units of a Xeon core.
/// SAFETY: the CPU has AVX-512F; every read is within `image` ([`convolve_direct`]'s asserts:
/// the same reads as [`direct_rows_f32`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn direct_rows_f32_avx512(
    (wc, b, image, offsets): Terms<'_, f32>,
    (oh, ow, wp): RowSizes,
    y: &mut [f32],
) {
    use std::arch::x86_64::*;
    const { assert!(XB == 3 && STRIP == 8) };
    let (fn_, q) = (b.len(), oh * ow);
    for (oy, ox0, f0) in direct_blocks(oh, ow, fn_, FB_WIDE) {
        // SAFETY: offsets[p] + oy·wp + ox0 + XB·STRIP <= the furthest read (asserted)
        let corner = unsafe { image.as_ptr().add(oy * wp + ox0) };
        let w: [&[f32]; FB_WIDE] = block_weights(wc, fn_, f0);
        let mut lo = [_mm512_setzero_ps(); FB_WIDE];
        let mut hi = [_mm256_setzero_ps(); FB_WIDE];
        for (p, &off) in offsets.iter().enumerate() {
            // s[r] += w_r[p] · (the image row's 24 values, shifted to this term)
            let (x0, x1) = unsafe {
                let at = corner.add(off);
                (_mm512_loadu_ps(at), _mm256_loadu_ps(at.add(2 * STRIP)))
            };
            for r in 0..FB_WIDE {
                let w = w[r][p];
                lo[r] = _mm512_fmadd_ps(_mm512_set1_ps(w), x0, lo[r]);
                hi[r] = _mm256_fmadd_ps(_mm256_set1_ps(w), x1, hi[r]);
            }
        }
        for r in 0..FB_WIDE.min(fn_ - f0) {
            let (f, bias) = (f0 + r, b[f0 + r]);
            let row = &mut y[f * q + oy * ow..][..ow];
            let mut run = [0f32; XB * STRIP];
            // SAFETY: `run` holds 24 f32: 16 then 8
            unsafe {
                _mm512_storeu_ps(run.as_mut_ptr(), _mm512_add_ps(_mm512_set1_ps(bias), lo[r]));
                let hi = _mm256_add_ps(_mm256_set1_ps(bias), hi[r]);
                _mm256_storeu_ps(run.as_mut_ptr().add(2 * STRIP), hi);
            }
            let n = (ow - ox0).min(XB * STRIP);
            copy_short(&run[..n], &mut row[ox0..ox0 + n]);
        }
    }
}

/// Filters a block of the AVX-512 direct convolution ([`direct_rows_f32_avx512`]).
#[cfg(target_arch = "x86_64")]
const FB_WIDE: usize = 6;

/// Where entry (c, fy, fx) of a window is in the padded image, from the window's corner:
/// c·(H + 2P)·(W + 2P) + fy·(W + 2P) + fx.
pub(super) fn window_offset(d: &PartDims, c: usize, fy: usize, fx: usize) -> usize {
    let (hp, wp) = (d.h + 2 * d.win.pad, d.w + 2 * d.win.pad);
    c * hp * wp + fy * wp + fx
}

/// Each term's [`window_offset`], in im2col's row order (c, fy, fx).
pub(super) fn term_offsets(d: &PartDims, offsets: &mut Vec<usize>) {
    offsets.clear();
    for c in 0..d.c {
        for fy in 0..d.win.fh {
            offsets.extend((0..d.win.fw).map(|fx| window_offset(d, c, fy, fx)));
        }
    }
}
