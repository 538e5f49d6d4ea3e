//! Cache hints for [`super::Detector::observe_batch`].
//!
//! Each event reads a few states scattered over tens of megabytes (its source's, its wide
//! record): cache misses, one after the other, are most of an event's cost. Asking for the
//! states of the events a few places ahead lets those misses overlap with the work on the
//! current one.

/// Asks the CPU to bring every cache line of `value` into its caches. Only a hint: it reads
/// nothing and changes nothing, and on targets without a stable prefetch it does nothing.
pub(super) fn value<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = std::ptr::from_ref(value).cast::<i8>();
        for offset in (0..std::mem::size_of::<T>()).step_by(64) {
            // SAFETY: a prefetch neither reads memory nor faults, whatever the address; the
            // SSE it needs is part of every x86_64 CPU.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
