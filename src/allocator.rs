//! How the process's allocator is set up: glibc's malloc gives what a flush frees back to the system.
//!
//! A flush allocates by the megabyte and frees it within the interval: the taken interval (48 bytes per series),
//! the output series (40 bytes each) and the sinks' bodies. glibc serves an allocation of at least its mmap
//! threshold with a mapping of its own, unmapped when freed, but the threshold is dynamic: each such block freed
//! raises it to that block's size (up to 32 MiB), and the heaps' trim threshold to twice that, so from the second
//! flush on these buffers come from the heaps, whose memory is kept. At 300,000 series the RSS then stayed at the
//! flush's peak for good (101–120 MB between flushes, against 69.5–69.7 MB with the thresholds set here; see the README's
//! figures for issue 26).
//!
//! [`return_freed_memory`] fixes the mmap threshold at [`MMAP_THRESHOLD`] and the trim threshold at
//! [`TRIM_THRESHOLD`] (which also stops glibc from moving them), unless the operator set either
//! (`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…`, `…trim_threshold=…`, `MALLOC_MMAP_THRESHOLD_`,
//! `MALLOC_TRIM_THRESHOLD_`). Other allocators and C libraries are left as they are.

/// Allocations of at least this many bytes get a mapping of their own, returned to the system when freed: glibc's
/// own starting value. (What is allocated that large on every flush and freed soon after is faulted in again each
/// time: the sinks' encoders reuse their buffers instead, see `sink::datadog::v2`.)
pub const MMAP_THRESHOLD: usize = 256 * 1024;

/// Free memory at the top of a heap beyond this is given back: twice [`MMAP_THRESHOLD`], glibc's own ratio.
pub const TRIM_THRESHOLD: usize = 2 * MMAP_THRESHOLD;

/// Whether the environment already sets glibc's thresholds (then they are left as the operator set them).
fn set_by_environment(tunables: Option<&str>, legacy_mmap: Option<&str>, legacy_trim: Option<&str>) -> bool {
    legacy_mmap.is_some()
        || legacy_trim.is_some()
        || tunables
            .is_some_and(|t| t.contains("glibc.malloc.mmap_threshold") || t.contains("glibc.malloc.trim_threshold"))
}

/// Fixes glibc's thresholds (see the module documentation). Returns whether it did: not when the environment sets
/// them, nor off glibc. Call it first thing in `main`, before other threads start.
pub fn return_freed_memory() -> bool {
    let var = |name| std::env::var(name).ok();
    let (tunables, mmap, trim) = (
        var("GLIBC_TUNABLES"),
        var("MALLOC_MMAP_THRESHOLD_"),
        var("MALLOC_TRIM_THRESHOLD_"),
    );
    if set_by_environment(tunables.as_deref(), mmap.as_deref(), trim.as_deref()) {
        return false;
    }
    set_thresholds(MMAP_THRESHOLD, TRIM_THRESHOLD)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds(mmap: usize, trim: usize) -> bool {
    let (Ok(mmap), Ok(trim)) = (libc::c_int::try_from(mmap), libc::c_int::try_from(trim)) else {
        return false;
    };
    // SAFETY: mallopt only sets parameters of glibc's allocator (under the allocator's own lock); it reads no
    // memory of ours, and any value is either taken (1) or refused (0).
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds(_mmap: usize, _trim: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_the_operator_set_are_left_alone() {
        assert!(!set_by_environment(None, None, None));
        assert!(!set_by_environment(Some("glibc.malloc.arena_max=2"), None, None));
        assert!(set_by_environment(
            Some("glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=65536"),
            None,
            None
        ));
        assert!(set_by_environment(Some("glibc.malloc.trim_threshold=0"), None, None));
        assert!(set_by_environment(None, Some("131072"), None));
        assert!(set_by_environment(None, None, Some("131072")));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_fixed_thresholds() {
        assert!(set_thresholds(MMAP_THRESHOLD, TRIM_THRESHOLD));
    }
}
