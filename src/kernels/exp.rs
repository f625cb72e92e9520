//! `eˣ` over a slice, four f32 at a time with AVX2 and FMA: glibc's `expf` (2.28 on, from
//! Arm's optimized-routines, MIT) written out on vectors, its operations in its order, so that
//! each result has the bits `f32::exp` gives on glibc's FMA path (the one it picks on such a
//! processor; checked against it on every f32, see the tests). One call cost 3 ns; the
//! softmax of W1's batch takes a thousand.
//!
//! ```text
//! x·N/ln 2 = k + r, |r| <= 1/2, N = 32          (in f64: k rounded to an integer)
//! eˣ = 2^(k/N) · 2^(r/N)
//!    ≈ s · (C0·r³ + C1·r² + C2·r + 1),  s = 2^(k/N) = T[k mod N] with k/N added to the exponent
//! ```
//! Then rounded once to f32. Outside (-103.97, 88.72) glibc returns 0 or +inf (NaN for NaN),
//! as here.

use std::any::TypeId;

use crate::Float;

/// `T[i]`: the bits of 2^(i/N), less `i << 47` (glibc's `__exp2f_data.tab`), so that adding
/// `k << 47` puts k/N into the exponent.
const TABLE: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];
/// N/ln 2 (`invln2_scaled`, 0x1.71547652b82fep+5).
const INV_LN2_N: u64 = 0x40471547652b82fe;
/// 1.5·2^52: adding it rounds to an integer, which then sits in the low bits (`shift`).
const SHIFT: u64 = 0x4338000000000000;
/// The polynomial's C0, C1, C2 (`poly_scaled`).
const C: [u64; 3] = [0x3ebc6af84b912394, 0x3f2ebfce50fac4f3, 0x3f962e42ff0c52d6];
/// Above this, eˣ overflows f32 (0x1.62e42ep6); below the next, it is below half the least
/// subnormal (-0x1.9fe368p6).
const OVERFLOW: f32 = f32::from_bits(0x42b17217);
const UNDERFLOW: f32 = f32::from_bits(0xc2cff1b4);

/// Each `v[i] ← e^v[i]`: for f32, as `f32::exp` (glibc) gives it, four at a time where the
/// processor has AVX2 and FMA; for f64, `f64::exp` one by one.
pub fn exp_in_place<T: Float>(v: &mut [T]) {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32 (same TypeId): the same layout
        exp_f32(unsafe { &mut *(v as *mut [T] as *mut [f32]) });
    } else {
        v.iter_mut().for_each(|x| *x = x.exp());
    }
}

/// [`exp_in_place`] for f32.
fn exp_f32(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::avx2_fma() {
        // SAFETY: the processor has AVX2 and FMA, checked just above
        return unsafe { exp_avx2_fma(v) };
    }
    v.iter_mut().for_each(|x| *x = x.exp());
}

/// Four lanes at a time in f64; the last 1-3 through a padded copy.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_avx2_fma(v: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut quads = v.chunks_exact_mut(4);
    for q in &mut quads {
        // SAFETY: q holds 4 f32 (16 bytes, read and written unaligned)
        unsafe {
            let x = _mm_loadu_ps(q.as_ptr());
            _mm_storeu_ps(q.as_mut_ptr(), exp4(x));
        }
    }
    let rest = quads.into_remainder();
    if !rest.is_empty() {
        let mut four = [0f32; 4];
        four[..rest.len()].copy_from_slice(rest);
        // SAFETY: `four` holds 4 f32
        unsafe { _mm_storeu_ps(four.as_mut_ptr(), exp4(_mm_loadu_ps(four.as_ptr()))) };
        let n = rest.len();
        rest.copy_from_slice(&four[..n]);
    }
}

/// e^x for four f32, glibc's `__expf` (FMA build) lane by lane:
/// ```text
/// xd = (double) x
/// kd = fma(InvLn2N, xd, SHIFT)        z + SHIFT, z = InvLn2N·xd unrounded (GCC contracts)
/// ki = bits(kd); kd -= SHIFT
/// r  = fma(InvLn2N, xd, -kd)          z - kd
/// s  = bits(T[ki % N] + (ki << 47))
/// y  = fma(fma(C0, r, C1), r·r, fma(r, C2, 1)) · s
/// return (float) y
/// ```
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp4(x: std::arch::x86_64::__m128) -> std::arch::x86_64::__m128 {
    use std::arch::x86_64::*;
    let f = |bits: u64| _mm256_set1_pd(f64::from_bits(bits));
    let xd = _mm256_cvtps_pd(x);
    let shift = f(SHIFT);
    let inv_ln2_n = f(INV_LN2_N);
    let kd = _mm256_fmadd_pd(inv_ln2_n, xd, shift);
    let ki = _mm256_castpd_si256(kd);
    let kd = _mm256_sub_pd(kd, shift);
    let r = _mm256_fmsub_pd(inv_ln2_n, xd, kd);
    let index = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
    // SAFETY: each index is below 32, inside TABLE
    let t = unsafe { _mm256_i64gather_epi64::<8>(TABLE.as_ptr().cast(), index) };
    let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
    let z = _mm256_fmadd_pd(f(C[0]), r, f(C[1]));
    let r2 = _mm256_mul_pd(r, r);
    let y = _mm256_fmadd_pd(r, f(C[2]), _mm256_set1_pd(1.0));
    let y = _mm256_fmadd_pd(z, r2, y);
    let y = _mm256_cvtpd_ps(_mm256_mul_pd(y, s));
    // glibc's special cases: NaN stays NaN (x + x), +inf and -inf, and overflow and underflow
    let over = _mm_cmp_ps::<_CMP_GT_OQ>(x, _mm_set1_ps(OVERFLOW));
    let under = _mm_cmp_ps::<_CMP_LT_OQ>(x, _mm_set1_ps(UNDERFLOW));
    let nan = _mm_cmp_ps::<_CMP_UNORD_Q>(x, x);
    let y = _mm_blendv_ps(y, _mm_set1_ps(f32::INFINITY), over);
    let y = _mm_andnot_ps(under, y);
    _mm_blendv_ps(y, _mm_add_ps(x, x), nan)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 values spread over every exponent and sign, the edges of the special cases, and
    /// what a softmax gives (x - max, at most 0).
    fn samples() -> Vec<f32> {
        let mut v: Vec<f32> = (0..2_000_000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
            .collect();
        v.extend((0..1_000_000).map(|i| -(i as f32) * 1.1e-4));
        v.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            OVERFLOW,
            f32::from_bits(OVERFLOW.to_bits() + 1),
            UNDERFLOW,
            f32::from_bits(UNDERFLOW.to_bits() + 1),
            -87.33654,
            -88.0,
            88.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
        ]);
        v
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))] // glibc's expf; other libms differ
    fn each_result_has_the_bits_of_f32_exp() {
        let x = samples();
        let mut y = x.clone();
        exp_in_place(&mut y);
        for (&x, &y) in x.iter().zip(&y) {
            let e = x.exp();
            assert!(
                y.to_bits() == e.to_bits() || (y.is_nan() && e.is_nan()),
                "exp({x:e}) ({:#x}): {y:e} against f32::exp's {e:e}",
                x.to_bits()
            );
        }
    }

    #[test]
    fn any_length_is_covered() {
        for n in 0..13 {
            let x: Vec<f32> = (0..n).map(|i| -0.37 * i as f32).collect();
            let mut y = x.clone();
            exp_in_place(&mut y);
            assert_eq!(y, x.iter().map(|v| v.exp()).collect::<Vec<_>>(), "{n}");
        }
    }
}
