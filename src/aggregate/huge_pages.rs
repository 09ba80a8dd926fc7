//! Memory for the tables a worker touches on every line (the text index, the per-series hot state), backed by
//! transparent huge pages where the kernel offers them.
//!
//! At production cardinality each line touches a few random cache lines of tables tens of megabytes large. With 4
//! KiB pages every such touch also misses the TLB, and in a virtual machine a page walk costs several more memory
//! loads than the data itself: `perf annotate` put most of the hot path's stalls on the prefetches of these
//! tables, that is on their page walks. A 2 MiB page maps 512 times as much, so the tables' translations stay in
//! the TLB. The global allocator cannot be asked for that: glibc's heaps and its mmapped chunks are neither 2 MiB
//! aligned nor advised for huge pages. So [`HugePages`], an allocator for the vectors that hold these tables, maps
//! a block of [`HUGE_FROM`] bytes or more itself: 2 MiB aligned, advised `MADV_HUGEPAGE`, so that its first touch
//! faults in a huge page (with `transparent_hugepage` at `madvise` or `always`; at `never`, this changes nothing but
//! the alignment). Smaller blocks, and every block on other systems, come from the global allocator.

use std::alloc::Layout;
use std::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator, Global};

/// A huge page: the alignment and granularity of the blocks mapped here.
pub const HUGE_PAGE: usize = 2 * 1024 * 1024;
/// Blocks from this size on are mapped in huge pages (a smaller table stays in the cache, or fits few pages; and
/// rounding it up would waste up to a huge page of memory per table).
pub const HUGE_FROM: usize = HUGE_PAGE / 2;

/// The allocator of the hot tables (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct HugePages;

/// A vector whose buffer is mapped by [`HugePages`] once it is large.
pub type HugeVec<T> = allocator_api2::vec::Vec<T, HugePages>;

/// An empty [`HugeVec`].
pub fn huge_vec<T>() -> HugeVec<T> {
    HugeVec::new_in(HugePages)
}

/// A [`HugeVec`] that starts empty by default, for the fields of types that derive `Default`.
#[derive(Debug)]
pub struct HugeTable<T>(pub HugeVec<T>);

impl<T> Default for HugeTable<T> {
    fn default() -> Self {
        HugeTable(huge_vec())
    }
}

impl<T> std::ops::Deref for HugeTable<T> {
    type Target = HugeVec<T>;
    fn deref(&self) -> &HugeVec<T> {
        &self.0
    }
}

impl<T> std::ops::DerefMut for HugeTable<T> {
    fn deref_mut(&mut self) -> &mut HugeVec<T> {
        &mut self.0
    }
}

/// `size` rounded up to whole huge pages.
fn mapped_len(size: usize) -> usize {
    size.div_ceil(HUGE_PAGE) * HUGE_PAGE
}

/// Whether a block of this layout is mapped here (the same answer for its allocation and its deallocation).
fn is_huge(layout: &Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= HUGE_FROM && layout.align() <= HUGE_PAGE
}

// SAFETY: a block is either the global allocator's, allocated and freed with the caller's layout, or a private
// anonymous mapping of its own, readable and writable, at least `layout.size()` bytes, aligned to HUGE_PAGE (so to
// any alignment `is_huge` accepts), and unmapped only by `deallocate`. `is_huge` depends only on the layout, which
// the caller passes unchanged (or fitting the block, which gives the same mapped length) to `deallocate`. Blocks
// are independent of the allocator value (a unit), so copies of it may free each other's blocks.
unsafe impl Allocator for HugePages {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if !is_huge(&layout) {
            return Global.allocate(layout);
        }
        let ptr = map_aligned(mapped_len(layout.size())).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if !is_huge(&layout) {
            // SAFETY: the caller guarantees `ptr` was allocated here with this layout: by Global, as `is_huge` is
            // false for it.
            unsafe { Global.deallocate(ptr, layout) };
            return;
        }
        unmap(ptr, mapped_len(layout.size()));
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if is_huge(&old_layout) && is_huge(&new_layout) {
            let (old_len, new_len) = (mapped_len(old_layout.size()), mapped_len(new_layout.size()));
            if new_len == old_len {
                return Ok(NonNull::slice_from_raw_parts(ptr, new_layout.size()));
            }
            if let Some(moved) = remap(ptr, old_len, new_len) {
                return Ok(NonNull::slice_from_raw_parts(moved, new_layout.size()));
            }
        }
        let new = self.allocate(new_layout)?;
        // SAFETY: the caller guarantees `ptr` holds `old_layout.size()` initialised-or-not bytes allocated here and
        // that `new_layout.size() >= old_layout.size()`; `new` is a distinct, fresh block at least that large.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr().cast::<u8>(), old_layout.size());
            self.deallocate(ptr, old_layout);
        }
        Ok(new)
    }
}

/// Moves a mapped block of `old_len` bytes to a new huge-page-aligned place of `new_len` bytes (larger), keeping
/// its pages: the kernel moves the page tables and copies nothing, and only the added part is new (zero) memory.
/// A vector growing to a million series used to copy its whole buffer at each doubling, into pages that each had to
/// be faulted in and zeroed first. `None` if the kernel refused (the caller copies instead; the block is intact).
#[cfg(target_os = "linux")]
fn remap(ptr: NonNull<u8>, old_len: usize, new_len: usize) -> Option<NonNull<u8>> {
    // An aligned place of the new size, reserved so that the block can be moved onto it.
    let target = map_aligned(new_len)?;
    // SAFETY: `ptr`/`old_len` are a live mapping of `map_aligned` (the allocator's contract); `target`/`new_len` a
    // mapping just made, which MREMAP_FIXED replaces. On success the old range is unmapped by the kernel and the
    // block lives at `target`; on failure nothing was changed, and the reserved target is unmapped again.
    let moved = unsafe {
        libc::mremap(
            ptr.as_ptr().cast(),
            old_len,
            new_len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            target.as_ptr().cast::<libc::c_void>(),
        )
    };
    if moved == libc::MAP_FAILED {
        unmap(target, new_len);
        return None;
    }
    NonNull::new(moved.cast())
}

#[cfg(not(target_os = "linux"))]
fn remap(_ptr: NonNull<u8>, _old_len: usize, _new_len: usize) -> Option<NonNull<u8>> {
    None
}

/// Maps `len` bytes (a multiple of [`HUGE_PAGE`]) aligned to a huge page, advised for huge pages.
#[cfg(target_os = "linux")]
fn map_aligned(len: usize) -> Option<NonNull<u8>> {
    // Map one huge page more than asked, then give back the unaligned head and the tail beyond `len`.
    let span = len.checked_add(HUGE_PAGE)?;
    // SAFETY: a new private anonymous mapping at an address the kernel chooses; no existing memory is affected.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    let base = base as usize;
    let start = base.next_multiple_of(HUGE_PAGE);
    let head = start - base;
    let tail = span - head - len;
    // SAFETY: both ranges lie inside the mapping made above and outside [start, start + len), which is kept; they
    // are page aligned (the mapping is, and HUGE_PAGE and len are multiples of the page size).
    unsafe {
        if head > 0 {
            libc::munmap(base as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
        // A hint: if refused (no THP in this kernel), the block stays in small pages.
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    NonNull::new(start as *mut u8)
}

#[cfg(not(target_os = "linux"))]
fn map_aligned(_len: usize) -> Option<NonNull<u8>> {
    None
}

/// Unmaps a block of [`map_aligned`].
fn unmap(ptr: NonNull<u8>, len: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: `ptr` and `len` are those of a mapping made by `map_aligned` and not yet unmapped (the allocator's
    // contract: each block is deallocated once); nothing refers to it any more.
    unsafe {
        libc::munmap(ptr.as_ptr().cast(), len);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn a_large_vector_is_aligned_to_a_huge_page_and_keeps_its_contents_as_it_grows_and_shrinks() {
        let mut v: HugeVec<u64> = huge_vec();
        for i in 0..1_000_000u64 {
            v.push(i);
        }
        assert!(v.capacity() * 8 >= HUGE_FROM);
        if cfg!(target_os = "linux") {
            assert_eq!(v.as_ptr() as usize % HUGE_PAGE, 0);
        }
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
        v.truncate(1000);
        v.shrink_to_fit();
        assert!(v.capacity() * 8 < HUGE_FROM);
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
        v.resize(300_000, 7);
        assert_eq!(v[299_999], 7);
        assert_eq!(v[999], 999);
    }

    #[test]
    fn every_element_of_a_huge_vector_is_dropped_exactly_once() {
        let marker = Rc::new(());
        let mut v: HugeVec<Rc<()>> = huge_vec();
        for _ in 0..200_000 {
            v.push(marker.clone());
        }
        assert_eq!(Rc::strong_count(&marker), 200_001);
        v.swap_remove(5);
        assert_eq!(Rc::strong_count(&marker), 200_000);
        drop(v);
        assert_eq!(Rc::strong_count(&marker), 1);
    }
}
