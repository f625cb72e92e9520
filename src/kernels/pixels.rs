//! A batch's pixels from MNIST's bytes: the u8 to float conversion, and cache hints for the
//! images a batch will read.
//!
//! Reference: the table of `p / 255` rounded once (`data::mnist::pixel_table`), whose values
//! the vector division gives (`kernels::reference_tests`).

use std::any::TypeId;

use crate::Float;

/// Appends an image's ink entries to a batch's: each pixel's index, and its byte scaled as
/// `data::mnist::pixel_table` has it. For f32 where the CPU has AVX2, 8 at a time: the byte converted and
/// divided by 255, rounded once as the table's entry was (the same values); the table's
/// lookups went one by one.
pub(crate) fn extend_entries<T: Float>(
    col: &mut Vec<u32>,
    val: &mut Vec<T>,
    pixel: &[u16],
    value: &[u8],
    scale: &[T; 256],
) {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() && crate::kernels::cpu::avx2() {
        #[target_feature(enable = "avx2")]
        fn divided(col: &mut Vec<u32>, val: &mut Vec<f32>, pixel: &[u16], value: &[u8]) {
            col.extend(pixel.iter().map(|&j| j as u32));
            val.extend(value.iter().map(|&p| p as f32 / 255.0));
        }
        // SAFETY: T is f32 (same TypeId); the CPU has AVX2, checked just above
        return unsafe {
            divided(
                col,
                &mut *(val as *mut Vec<T> as *mut Vec<f32>),
                pixel,
                value,
            )
        };
    }
    col.extend(pixel.iter().map(|&j| j as u32));
    val.extend(value.iter().map(|&p| scale[p as usize]));
}

/// Writes `bytes` scaled as `data::mnist::pixel_table` has them into `out` (a dense batch's
/// row): for f32 where the CPU has AVX2, 8 at a time by the same rounded division as
/// [`extend_entries`]; else by the table.
pub(crate) fn scale_into<T: Float>(out: &mut [T], bytes: &[u8], scale: &[T; 256]) {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() && crate::kernels::cpu::avx2() {
        #[target_feature(enable = "avx2")]
        fn divided(out: &mut [f32], bytes: &[u8]) {
            out.iter_mut()
                .zip(bytes)
                .for_each(|(o, &p)| *o = p as f32 / 255.0);
        }
        // SAFETY: T is f32 (same TypeId); the CPU has AVX2, checked just above
        return unsafe { divided(&mut *(out as *mut [T] as *mut [f32]), bytes) };
    }
    out.iter_mut()
        .zip(bytes)
        .for_each(|(o, &p)| *o = scale[p as usize]);
}

/// Asks the processor to start loading `items` into the cache (a hint; no effect elsewhere
/// than on x86-64).
#[inline(always)]
pub(crate) fn prefetch<E>(items: &[E]) {
    #[cfg(target_arch = "x86_64")]
    for offset in (0..std::mem::size_of_val(items)).step_by(64) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch only hints; the address lies inside `items`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((items.as_ptr() as *const i8).add(offset)) };
    }
}
