//! Keeping freed memory in the process.
//!
//! A training step allocates the same few large arrays (a convolution's output, ReLU's
//! gradient: megabytes each) and frees them again. glibc hands blocks this large back to the
//! system (`munmap`, or trimming the top of the heap), and the next step faults every page
//! back in: 11% of SimpleConvNet's step went to the kernel's page faults (`perf record`).
//! [`keep_freed_memory`] raises both thresholds so that the blocks are reused instead.

/// Asks the C allocator to keep freed blocks of up to 32 MiB for reuse (glibc on Linux;
/// elsewhere it does nothing). Process-wide: the command line calls it once at start, and so
/// may a program that trains.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only sets two of glibc's tuning numbers; both values are in range
        // (32 MiB is glibc's largest mmap threshold on 64-bit systems).
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 256 << 20);
        }
    }
}
