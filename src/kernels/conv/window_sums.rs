//! dW of a convolution from dy's non-zeros only, the windows read from the padded image.
//!
//! Reference: `dWc += dy_i·col_iᵀ` (`gemm_nt_acc` over the image's im2col), which gives the
//! same values to 1e-12 in f64 (`kernels::conv` tests).

use super::direct::window_offset;
use super::{Part, PartDims};
use crate::Float;
use crate::kernels::{copy_short, madd};

/// Values of a window row that one vector of [`window_sums`] holds (8 f32 lanes of AVX2).
pub(super) const STRIP: usize = 8;
/// Strips that [`window_sums`] sums in one pass over a filter's non-zeros (accumulators in
/// registers: 5 is one 5-wide row of a 5x5 filter each).
const PASS: usize = 5;

/// A window cut into strips of at most [`STRIP`] values along its rows: strip (c, fy, fx0)
/// holds window entries (c, fy, fx0..fx0 + STRIP) of the padded image.
#[derive(Clone, Debug, Default)]
pub(super) struct Strips {
    from: Vec<usize>, // where each strip starts, relative to the window's corner in the image
    to: Vec<usize>,   // where its first value goes in a row of dWc (C·FH·FW)
    len: Vec<usize>,  // its width, at most STRIP
    /// dy_i takes the sparse path with at most this fraction of non-zeros: the strips'
    /// lanes past a row's end are computed and dropped, so a narrow window needs more zeros
    /// to pay.
    /// NOTE: backward_params of 100 images, one thread, dy with a given fraction of random
    /// non-zeros, either path forced: 30 filters 1x5x5 on 28x28 (5 of 8 lanes used) broke even
    /// near 0.5 (0.25: 1.9 against 2.8 ms), 30 filters 16x3x3 on 14x14 (3 of 8) near 0.25
    /// (0.1: 2.2 against 3.1 ms; 0.3: 3.5 against 3.2). 0.6 of the lanes used stays below
    /// both.
    pub(super) density: f64,
}

impl Strips {
    /// The strips of `d`'s window (into the vectors it has: no allocation once they held as
    /// many).
    pub(super) fn set(&mut self, d: &PartDims) {
        self.from.clear();
        self.to.clear();
        self.len.clear();
        for c in 0..d.c {
            for fy in 0..d.win.fh {
                for fx in (0..d.win.fw).step_by(STRIP) {
                    self.from.push(window_offset(d, c, fy, fx));
                    self.to.push((c * d.win.fh + fy) * d.win.fw + fx);
                    self.len.push(STRIP.min(d.win.fw - fx));
                }
            }
        }
        let used = d.win.fw as f64 / d.win.fw.next_multiple_of(STRIP) as f64;
        self.density = 0.6 * used;
    }
}

/// Zeros past the end of a padded image: a strip of the last window, or the last row's
/// vectors in [`convolve_direct`], may read that far past its last value.
pub(super) const IMAGE_SLACK: usize = 3 * STRIP;

/// x_i (C, H, W) into `image` (C, H + 2P, W + 2P) with zeros around, and [`IMAGE_SLACK`]
/// zeros past its end.
pub(super) fn pad_image<T: Float>(x: &[T], d: &PartDims, image: &mut Vec<T>) {
    let p = d.win.pad;
    let (hp, wp) = (d.h + 2 * p, d.w + 2 * p);
    image.clear();
    image.resize(d.c * hp * wp + IMAGE_SLACK, T::zero());
    for (plane, padded) in x
        .chunks_exact(d.h * d.w)
        .zip(image.chunks_exact_mut(hp * wp))
    {
        for (row, dst) in plane
            .chunks_exact(d.w)
            .zip(padded[p * wp..].chunks_exact_mut(wp))
        {
            copy_short(row, &mut dst[p..p + d.w]);
        }
    }
}

/// For each output position q = (oy, ox), where its window starts in the padded image:
/// oy·S·(W + 2P) + ox·S.
pub(super) fn window_positions(d: &PartDims, at: &mut Vec<u32>) {
    let (oh, ow) = d.win.output(d.h, d.w);
    let wp = d.w + 2 * d.win.pad;
    at.clear();
    at.extend(
        (0..oh).flat_map(|oy| {
            (0..ow).map(move |ox| (oy * d.win.stride * wp + ox * d.win.stride) as u32)
        }),
    );
}

/// dWc[f] += Σ over the non-zeros (q, g) of dy_i[f]:  g · window_q
/// db[f]  += Σ over the same:                         g
/// The terms of dy_i·col_iᵀ and Σ_q dy_i that are not zero, window_q read from the padded
/// image (no col): a pass holds [`PASS`] strips of the window in registers, runs over the
/// filter's non-zeros, and adds its sums to dWc.
pub(super) fn window_sums<T: Float>(part: &mut Part<T>) {
    // the furthest read: the furthest window at its furthest strip (a max, which vectorises,
    // where a test of every window stopped at each one)
    let reach = part.strips.from.iter().max().copied().unwrap_or(0) + STRIP;
    let last = part.at.iter().max().map_or(0, |&a| a as usize);
    assert!(
        last + reach <= part.image.len(),
        "window_sums: a window reads past the image"
    );
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::avx2_fma() {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn sums_fma<T: Float>(part: &mut Part<T>) {
            sums::<T, true>(part)
        }
        // SAFETY: the CPU has the features the function is compiled for
        return unsafe { sums_fma(part) };
    }
    sums::<T, false>(part)
}

/// [`window_sums`]' loops (the reads checked by its assert).
#[inline(always)]
fn sums<T: Float, const FMA: bool>(part: &mut Part<T>) {
    let Part {
        dwc,
        db,
        starts,
        q: nz_q,
        g: nz_g,
        image,
        at,
        strips,
        ..
    } = part;
    let k = dwc.len() / db.len();
    let n = strips.from.len();
    for (f, (dw_f, db_f)) in dwc.chunks_exact_mut(k).zip(db.iter_mut()).enumerate() {
        let (cols, vals) = (
            &nz_q[starts[f]..starts[f + 1]],
            &nz_g[starts[f]..starts[f + 1]],
        );
        for s0 in (0..n).step_by(PASS) {
            // a last pass of fewer strips repeats its last one (summed, not stored, twice)
            let from: [usize; PASS] = std::array::from_fn(|r| strips.from[(s0 + r).min(n - 1)]);
            // the window of one non-zero (q, g), times g, onto `acc`; Σ g onto `sum`
            let term = |acc: &mut [[T; STRIP]; PASS], sum: &mut T, q: u32, g: T| {
                // SAFETY: q < Q = at.len() (compress_scattered's column in a row of Q);
                // every strip of the window at at[q] lies inside the image (the assert)
                let corner = unsafe { image.as_ptr().add(*at.get_unchecked(q as usize) as usize) };
                for r in 0..PASS {
                    let v: [T; STRIP] = unsafe { *corner.add(from[r]).cast() };
                    for t in 0..STRIP {
                        acc[r][t] = madd::<T, FMA>(acc[r][t], g, v[t]);
                    }
                }
                *sum = *sum + g;
            };
            // two sets of sums, even and odd non-zeros: one set waits on the latency of
            // each multiply-add (4 cycles), two keep both FMA units busy
            let (mut even, mut odd) = ([[T::zero(); STRIP]; PASS], [[T::zero(); STRIP]; PASS]);
            let (mut sum_even, mut sum_odd) = (T::zero(), T::zero());
            let mut pairs = cols.chunks_exact(2).zip(vals.chunks_exact(2));
            for (q, g) in &mut pairs {
                term(&mut even, &mut sum_even, q[0], g[0]);
                term(&mut odd, &mut sum_odd, q[1], g[1]);
            }
            if cols.len() % 2 == 1 {
                term(
                    &mut even,
                    &mut sum_even,
                    cols[cols.len() - 1],
                    vals[vals.len() - 1],
                );
            }
            if s0 == 0 {
                *db_f = *db_f + (sum_even + sum_odd);
            }
            let acc: [[T; STRIP]; PASS] =
                std::array::from_fn(|r| std::array::from_fn(|t| even[r][t] + odd[r][t]));
            for (r, acc) in acc.iter().enumerate().take(n - s0) {
                let (to, len) = (strips.to[s0 + r], strips.len[s0 + r]);
                for (d, &a) in dw_f[to..to + len].iter_mut().zip(acc) {
                    *d = *d + a;
                }
            }
        }
    }
}
