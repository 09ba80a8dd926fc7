//! How the process's allocator is set up: glibc's malloc gives what a flush frees back to the system.
//!
//! A flush allocates by the megabyte and frees it within the interval: the taken interval (48 bytes per series),
//! the output series (40 bytes each) and the sinks' bodies. glibc serves an allocation of at least its mmap
//! threshold with its own mapping, unmapped when freed, but the threshold is dynamic: each such block freed raises
//! it to that block's size (up to 32 MiB), so from the second flush on these buffers come from the heaps, whose
//! memory is kept, not returned. At 300,000 series the RSS then stayed at the flush's peak for good (101–120 MB
//! between flushes, against 67 with the threshold fixed; see the README's figures for issue 26).
//!
//! [`return_freed_memory`] fixes the threshold at [`MMAP_THRESHOLD`], which also stops the dynamic one, unless
//! the operator set it (`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…` or `MALLOC_MMAP_THRESHOLD_`). Other
//! allocators and C libraries are left as they are.

/// Allocations of at least this many bytes get their own mapping, returned to the system when freed: large enough
/// that the allocations of a new series, and a flush's small ones, stay in the heaps.
pub const MMAP_THRESHOLD: usize = 256 * 1024;

/// Whether the environment already sets glibc's mmap threshold (then it is left as the operator set it).
fn set_by_environment(tunables: Option<&str>, legacy: Option<&str>) -> bool {
    legacy.is_some() || tunables.is_some_and(|t| t.contains("glibc.malloc.mmap_threshold"))
}

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`] (see the module documentation). Returns whether it did: not
/// when the environment sets it, nor off glibc. Call it first thing in `main`, before other threads start.
pub fn return_freed_memory() -> bool {
    let tunables = std::env::var("GLIBC_TUNABLES").ok();
    let legacy = std::env::var("MALLOC_MMAP_THRESHOLD_").ok();
    if set_by_environment(tunables.as_deref(), legacy.as_deref()) {
        return false;
    }
    set_mmap_threshold(MMAP_THRESHOLD)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_mmap_threshold(bytes: usize) -> bool {
    let Ok(value) = libc::c_int::try_from(bytes) else {
        return false;
    };
    // SAFETY: mallopt only sets a parameter of glibc's allocator (it takes the allocator's own lock); it reads no
    // memory of ours, and any value is accepted or refused (returning 0).
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, value) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_bytes: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_the_operator_set_is_left_alone() {
        assert!(!set_by_environment(None, None));
        assert!(!set_by_environment(Some("glibc.malloc.arena_max=2"), None));
        assert!(set_by_environment(
            Some("glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=65536"),
            None
        ));
        assert!(set_by_environment(None, Some("131072")));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_fixed_threshold() {
        assert!(set_mmap_threshold(MMAP_THRESHOLD));
    }
}
