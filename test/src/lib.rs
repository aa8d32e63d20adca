//! Test support for wasmpod: builds OCI image tarballs around `.wasm` payloads
//! ([`image`]), runs a private containerd for integration tests ([`containerd`]) and
//! drives its CRI plugin the way kubelet does ([`cri`]), and serves images from a private
//! registry ([`registry`]); [`poll::wait_until`] is how every test waits for something.
//!
//! Nothing here is used by the shim at run time.

pub mod containerd;
pub mod cri;
pub mod image;
pub mod poll;
pub mod registry;
