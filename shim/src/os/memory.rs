//! Returning the memory a container process no longer uses to the kernel.
//!
//! A runner allocates much while it prepares (the spec, the payload, the compile on its
//! own thread, libseccomp's filter building) and little afterwards. glibc keeps freed
//! memory mapped for reuse: the compile thread's arena and the holes in the main heap stay
//! resident and count in every idle container's PSS. [`release_free_memory`] hands the
//! free pages of every arena back once preparation is over.

/// Gives the free pages of the C allocator's arenas back to the kernel (glibc's
/// `malloc_trim(0)`: `madvise(MADV_DONTNEED)` on whole free pages, `brk` at the top).
/// Returns whether anything was released. Other C libraries return free memory on
/// their own; there it does nothing.
pub fn release_free_memory() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists under its locks;
        // it takes no pointers from us.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_arena_memory_goes_back_to_the_kernel() {
        // Allocate and free a few MiB in small blocks, as a compile does, on a thread of
        // its own (its own arena), then trim: the call must succeed and report a release.
        std::thread::spawn(|| {
            let blocks: Vec<Vec<u8>> = (0..2048).map(|i| vec![i as u8; 2048]).collect();
            drop(blocks);
        })
        .join()
        .unwrap();
        if cfg!(target_env = "gnu") {
            assert!(release_free_memory(), "malloc_trim released nothing");
        }
    }
}
