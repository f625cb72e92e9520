//! What the processor can do, asked in one place. Every kernel that has a vector version
//! picks it through these; the answers are cached by the standard library, so asking costs a
//! load and a compare.
//!
//! A kernel compiled for a feature (`#[target_feature]`) may only be called where the
//! function of the same name here returns true.

/// AVX2 (8 f32 lanes).
#[inline]
pub fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Fused multiply-add (one rounding for `a·b + c`).
#[inline]
pub fn fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX2 and FMA together: what the 8-lane kernels are compiled with.
#[inline]
pub fn avx2_fma() -> bool {
    avx2() && fma()
}

/// AVX-512F with AVX2 and FMA: what the 16-lane kernels are compiled with.
#[inline]
pub fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && avx2_fma()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
