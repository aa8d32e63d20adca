//! The static (musl) build's Rust allocator: mimalloc where wasmtime runs, musl's malloc in
//! the shim daemon.
//!
//! musl's malloc takes one lock for every allocation, and wasmtime allocates much from many
//! threads (Cranelift's compile, instantiation, wasi:http requests): runners and the
//! self-check switch to mimalloc ([`ByRole::use_mimalloc`]) before they do anything else.
//! The shim daemon stays on musl's malloc. It allocates little and rarely, but from many
//! threads (ttrpc-rust's server keeps six to eight per containerd connection, one
//! connection per container), and mimalloc gives each thread pages of its own for every
//! size it allocates: a daemon serving five containers held 3.5 MiB of anonymous memory
//! under mimalloc against 1.7 MiB with glibc's malloc (`make bench-static`,
//! docs/performance.md).
//!
//! Whoever allocated a block frees it: mimalloc's page map (`mi_is_in_heap_region`, a table
//! lookup that reads nothing at the address) tells its blocks apart, so what a runner
//! allocated before the switch (its arguments, the standard library's start-up) goes back
//! to musl. The map is exact for every block mimalloc makes but one kind: an alignment
//! above its 64 KiB slice, for which it also registers the slice past the end of the block,
//! where musl may have mapped one of its own (found in review, reproduced against the
//! vendored sources). Those rare layouts always come from musl ([`MIMALLOC_MAX_ALIGN`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

use mimalloc::MiMalloc;

unsafe extern "C" {
    /// Whether `p` lies in a slice of mimalloc's page map (false for any address before
    /// mimalloc registered a block).
    fn mi_is_in_heap_region(p: *const std::ffi::c_void) -> bool;
}

/// The largest alignment asked of mimalloc: its arena slice (`MI_ARENA_SLICE_SIZE`, 64 KiB
/// on 64-bit). Above it the page map would claim a slice beyond the block (see the module
/// documentation).
pub const MIMALLOC_MAX_ALIGN: usize = 64 * 1024;

/// musl's malloc until [`ByRole::use_mimalloc`], mimalloc after; frees go to the owner.
pub struct ByRole {
    mimalloc: AtomicBool,
}

impl ByRole {
    /// Starts on the C library's malloc.
    pub const fn new() -> Self {
        ByRole {
            mimalloc: AtomicBool::new(false),
        }
    }

    /// New allocations come from mimalloc from now on (a runner's or the self-check's first
    /// step, while it has one thread).
    pub fn use_mimalloc(&self) {
        self.mimalloc.store(true, Ordering::Relaxed);
    }

    /// The allocator a new block of `layout` comes from.
    fn for_new_block(&self, layout: Layout) -> &'static dyn GlobalAlloc {
        if layout.align() <= MIMALLOC_MAX_ALIGN && self.mimalloc.load(Ordering::Relaxed) {
            &MiMalloc
        } else {
            &System
        }
    }
}

impl Default for ByRole {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether mimalloc allocated `ptr`.
fn owned_by_mimalloc(ptr: *mut u8) -> bool {
    // SAFETY: a lookup in mimalloc's page map; it reads no memory at `ptr`.
    unsafe { mi_is_in_heap_region(ptr.cast()) }
}

/// The allocator that made the block at `ptr`.
fn owner_of(ptr: *mut u8) -> &'static dyn GlobalAlloc {
    if owned_by_mimalloc(ptr) {
        &MiMalloc
    } else {
        &System
    }
}

// SAFETY: every block is allocated by one of two allocators that uphold GlobalAlloc's
// contract, and resized and freed by the one that allocated it.
unsafe impl GlobalAlloc for ByRole {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract (non-zero size) passes through.
        unsafe { self.for_new_block(layout).alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { self.for_new_block(layout).alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout`, so from the one that owns it.
        unsafe { owner_of(ptr).dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; the block stays with its owner.
        unsafe { owner_of(ptr).realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(ptr: *mut u8, len: usize, byte: u8) {
        // SAFETY: `ptr` is a live block of at least `len` bytes.
        unsafe { std::ptr::write_bytes(ptr, byte, len) }
    }

    #[test]
    fn blocks_from_before_the_switch_are_resized_and_freed_by_the_c_library() {
        let allocator = ByRole::new();
        let small = Layout::from_size_align(48, 8).unwrap();
        let big = Layout::from_size_align(1 << 20, 64).unwrap();
        // SAFETY: non-zero layouts; every block is freed with its layout below.
        unsafe {
            let before = allocator.alloc(small);
            let before_big = allocator.alloc_zeroed(big);
            assert!(!owned_by_mimalloc(before) && !owned_by_mimalloc(before_big));
            assert!((0..big.size()).all(|i| *before_big.add(i) == 0));
            fill(before, small.size(), 1);

            allocator.use_mimalloc();
            let after = allocator.alloc(small);
            let after_big = allocator.alloc_zeroed(big);
            assert!(owned_by_mimalloc(after) && owned_by_mimalloc(after_big));
            assert_eq!(after_big as usize % big.align(), 0);
            assert!((0..big.size()).all(|i| *after_big.add(i) == 0));

            // A pre-switch block grows where it is, its contents kept.
            let grown = allocator.realloc(before, small, 4096);
            assert!(!owned_by_mimalloc(grown));
            assert!((0..small.size()).all(|i| *grown.add(i) == 1));
            let grown_layout = Layout::from_size_align(4096, 8).unwrap();
            let after_grown = allocator.realloc(after, small, 4096);
            assert!(owned_by_mimalloc(after_grown));

            allocator.dealloc(grown, grown_layout);
            allocator.dealloc(before_big, big);
            allocator.dealloc(after_grown, grown_layout);
            allocator.dealloc(after_big, big);
        }
    }

    #[test]
    fn alignments_above_a_mimalloc_slice_come_from_the_c_library() {
        let allocator = ByRole::new();
        allocator.use_mimalloc();
        let at_limit = Layout::from_size_align(100 * 1024, MIMALLOC_MAX_ALIGN).unwrap();
        let above = Layout::from_size_align(100 * 1024, 2 * MIMALLOC_MAX_ALIGN).unwrap();
        // SAFETY: non-zero layouts, each block freed with its layout.
        unsafe {
            let mimalloc_block = allocator.alloc(at_limit);
            assert!(owned_by_mimalloc(mimalloc_block));
            let c_block = allocator.alloc_zeroed(above);
            assert!(!owned_by_mimalloc(c_block));
            assert_eq!(c_block as usize % above.align(), 0);
            let grown = allocator.realloc(c_block, above, 300 * 1024);
            assert!(!owned_by_mimalloc(grown));
            assert_eq!(grown as usize % above.align(), 0);
            allocator.dealloc(
                grown,
                Layout::from_size_align(300 * 1024, above.align()).unwrap(),
            );
            allocator.dealloc(mimalloc_block, at_limit);
        }
    }

    #[test]
    fn no_address_outside_mimalloc_is_taken_for_its_own() {
        let on_stack = 0u64;
        assert!(!owned_by_mimalloc(std::ptr::null_mut()));
        assert!(!owned_by_mimalloc((&raw const on_stack).cast_mut().cast()));
        assert!(!owned_by_mimalloc(usize::MAX as *mut u8));
    }
}
