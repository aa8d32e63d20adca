//! Test support for wasmpod: builds OCI image tarballs around `.wasm` payloads
//! ([`image`]) and runs a private containerd for integration tests ([`containerd`]).
//!
//! Nothing here is used by the shim at run time.

pub mod containerd;
pub mod image;
