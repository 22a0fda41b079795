//! RoomKit: run-time selection of wider vector code for the hot loops.
//!
//! The loops are written over fixed groups of eight or sixteen lanes, which
//! the compiler turns into packed arithmetic. A baseline x86_64 build may
//! only use 4-lane SSE2; [`wide!`] compiles a second copy of a function with
//! AVX2 enabled (8 lanes) and picks it when the processor has AVX2. FMA is
//! not enabled, so both copies round every operation the same way and give
//! bit-identical results.

/// Whether the AVX2 copies may run on this processor (the answer is cached
/// by the standard library).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Defines `fn $name` that runs `$body` (a function marked
/// `#[inline(always)]`) compiled for AVX2 when the processor has it, and
/// compiled for the build's baseline otherwise.
macro_rules! wide {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn with_avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if crate::simd::avx2() {
                    // SAFETY: `with_avx2` only needs AVX2, and the processor
                    // was just found to have it.
                    return unsafe { with_avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use wide;
