//! Returning the memory a container process no longer uses to the kernel.
//!
//! A runner allocates much while it prepares (the spec, the payload, the compile on its
//! own thread, libseccomp's filter building) and little afterwards. glibc keeps freed
//! memory mapped for reuse: the compile thread's arena and the holes in the main heap stay
//! resident and count in every idle container's PSS. [`release_free_memory`] hands the
//! free pages of every arena back once preparation is over.
//!
//! The same holds for the binary's own code: preparation runs code a runner never runs
//! again (spec parsing, the compile, libseccomp, mounts), and the kernel maps file pages
//! 64 KiB around each fault, so a prepared runner maps about 9 MiB of the shim's text.
//! [`drop_code_mappings`] unmaps the read-only segments of the executable from this
//! process (the pages stay in the page cache, shared); the run phase faults back only what
//! it executes.

/// For the preparation phase: every thread allocates from the main arena (glibc's
/// `M_ARENA_MAX=1`), so the compile thread's garbage lands where [`release_free_memory`]
/// can give it back (a thread arena's top is never trimmed). [`release_free_memory`] lifts
/// the limit again for the run phase's threads.
pub fn one_arena_while_preparing() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes an allocator parameter; no pointers are involved.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Gives the free pages of the C allocator's arenas back to the kernel (glibc's
/// `malloc_trim(0)`: `madvise(MADV_DONTNEED)` on whole free pages, `brk` at the top).
/// Returns whether anything was released. On musl (the static build, whose runners
/// allocate from mimalloc, see `os::allocator`) it is `mi_collect(true)`, which says
/// nothing back (true); elsewhere it does nothing (false).
pub fn release_free_memory() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // glibc's default arena limit (8 per CPU on 64-bit), for the run phase's threads.
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let arenas = libc::c_int::try_from(8 * cpus).unwrap_or(libc::c_int::MAX);
        // SAFETY: malloc_trim only walks the allocator's own free lists under its locks and
        // mallopt changes a parameter; neither takes pointers from us.
        unsafe {
            let released = libc::malloc_trim(0) == 1;
            libc::mallopt(libc::M_ARENA_MAX, arenas);
            released
        }
    }
    #[cfg(target_env = "musl")]
    {
        // The runners' allocator in the static build (mimalloc, see `os::allocator`) keeps
        // freed pages committed for reuse until told otherwise.
        unsafe extern "C" {
            /// mimalloc's collection: with `force`, frees and decommits every free page.
            fn mi_collect(force: bool);
        }
        // SAFETY: mi_collect takes no pointers and only touches mimalloc's own state.
        unsafe { mi_collect(true) };
        true
    }
    #[cfg(not(any(target_env = "gnu", target_env = "musl")))]
    {
        false
    }
}

/// Drops this process's page mappings of the executable's read-only segments (code and
/// constants), so that only what runs from now on is mapped again, on demand. Nothing is
/// lost: the pages are clean copies of the file, still in the page cache. Writable
/// segments are never touched. Returns the bytes unmapped.
pub fn drop_code_mappings() -> usize {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    // SAFETY: the callback only reads the program headers the loader hands it, for the
    // duration of the call, and writes to the Vec passed as `data`.
    unsafe {
        libc::dl_iterate_phdr(Some(read_only_segments), (&raw mut ranges).cast());
    }
    let page = page_size();
    let mut dropped = 0;
    for (start, end) in ranges {
        // Whole pages inside the segment only: a page shared with a writable segment
        // (possible at the edges) keeps its mapping.
        let first = start.div_ceil(page) * page;
        let last = end / page * page;
        if last <= first {
            continue;
        }
        // SAFETY: the range lies inside a read-only, file-backed segment of this executable:
        // unmapping its pages only makes the next access fault them back in from the page
        // cache; no memory this program wrote is in it.
        let rc = unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            dropped += last - first;
        }
    }
    dropped
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// `dl_iterate_phdr` callback: records the executable's read-only `PT_LOAD` segments and
/// stops after the first object (the executable itself comes first).
unsafe extern "C" fn read_only_segments(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: the loader passes a valid info for the duration of the call; `data` is the
    // Vec given to dl_iterate_phdr by drop_code_mappings, which outlives the call.
    let (info, ranges) = unsafe { (&*info, &mut *data.cast::<Vec<(usize, usize)>>()) };
    if info.dlpi_phdr.is_null() {
        return 1;
    }
    // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
    let headers =
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    for header in headers {
        if header.p_type == libc::PT_LOAD && header.p_flags & libc::PF_W == 0 {
            let start = info.dlpi_addr as usize + header.p_vaddr as usize;
            ranges.push((start, start + header.p_memsz as usize));
        }
    }
    1
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

    #[test]
    fn code_mappings_drop_and_code_still_runs() {
        let dropped = drop_code_mappings();
        assert!(dropped > 1 << 20, "only {dropped} bytes of code unmapped");
        // The code faults back in: run something non-trivial after the drop.
        let sum: u64 = (1..=1000u64).map(|n| n * n).sum();
        assert_eq!(sum, 333_833_500);
        assert_eq!(format!("{:?}", vec![1, 2]), "[1, 2]");
    }
}
