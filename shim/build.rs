//! Links the shim as a position-dependent executable (`-no-pie`).
//!
//! Every container runs in a re-executed copy of this binary. In a PIE, the dynamic loader
//! writes relocated pointers into the read-only-after-relocation data pages at each start,
//! so each runner carries its own private copy of them (measured: 884 kB per process, the
//! largest part of an idle runner's private memory). Without PIE the linker resolves them
//! and the pages stay clean and shared by every runner on the node. The cost is a fixed
//! load address for the shim's code (no ASLR of the executable; libraries, heap and stacks
//! are still randomised), the same as Go-built runc and containerd.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
