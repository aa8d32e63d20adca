//! A payload's bytes, its digest, and what kind of Wasm binary it is.
//!
//! The kind comes from the 8-byte header alone (`\0asm` + version/layer), so a container
//! whose entrypoint is a shell script or an ELF is refused before anything is compiled.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

const MAGIC: [u8; 4] = *b"\0asm";
const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
/// Component-model binaries: version 0x0d, layer 1.
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];

/// What a Wasm binary is, read from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// A core module (WASI preview 1 commands).
    CoreModule,
    /// A component (WASI preview 2 commands, wasi:http handlers).
    Component,
}

impl PayloadKind {
    /// Classifies `bytes` by their header; `name` is only used in the error.
    pub fn detect(name: &str, bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 8 || bytes[..4] != MAGIC {
            return Err(Error::NotWasm {
                name: name.to_owned(),
            });
        }
        let version: [u8; 4] = bytes[4..8].try_into().expect("slice of 4");
        match version {
            CORE_MODULE_VERSION => Ok(PayloadKind::CoreModule),
            COMPONENT_VERSION => Ok(PayloadKind::Component),
            _ => Err(Error::UnknownEncoding {
                name: name.to_owned(),
                version,
            }),
        }
    }

    /// True when `bytes` start with the Wasm magic, whatever the version.
    pub fn has_wasm_magic(bytes: &[u8]) -> bool {
        bytes.len() >= 4 && bytes[..4] == MAGIC
    }
}

/// The bytes of one payload with their sha256 and kind. Clones share the bytes.
#[derive(Clone)]
pub struct WasmSource {
    name: String,
    bytes: Arc<Vec<u8>>,
    digest: [u8; 32],
    kind: PayloadKind,
}

impl std::fmt::Debug for WasmSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmSource")
            .field("name", &self.name)
            .field("len", &self.bytes.len())
            .field("digest", &self.digest_hex())
            .field("kind", &self.kind)
            .finish()
    }
}

impl WasmSource {
    /// Wraps bytes from anywhere (an OCI layer, a test constant); `name` appears in errors.
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Result<Self> {
        let name = name.into();
        let kind = PayloadKind::detect(&name, &bytes)?;
        let digest = Sha256::digest(&bytes).into();
        Ok(WasmSource {
            name,
            bytes: Arc::new(bytes),
            digest,
            kind,
        })
    }

    /// Wraps bytes whose sha256 is already known and verified by whoever stored them (a layer
    /// read from containerd's content store, which checks every blob's digest on ingest), so
    /// a large layer is not hashed again: `sha256` keys the compile cache as is.
    pub fn from_verified_bytes(
        name: impl Into<String>,
        bytes: Vec<u8>,
        sha256: [u8; 32],
    ) -> Result<Self> {
        let name = name.into();
        let kind = PayloadKind::detect(&name, &bytes)?;
        Ok(WasmSource {
            name,
            bytes: Arc::new(bytes),
            digest: sha256,
            kind,
        })
    }

    /// Reads a payload file of at most [`crate::bounds::DEFAULT_MAX_PAYLOAD_BYTES`]; `name`
    /// is how errors refer to it (the path as the guest sees it).
    pub fn from_file(name: impl Into<String>, path: &Path) -> Result<Self> {
        Self::from_file_bounded(name, path, crate::bounds::DEFAULT_MAX_PAYLOAD_BYTES)
    }

    /// Reads a payload file of at most `max_bytes`: a larger one is refused from its size
    /// before it is read, and reading stops past the bound should the file grow meanwhile.
    pub fn from_file_bounded(name: impl Into<String>, path: &Path, max_bytes: u64) -> Result<Self> {
        let name = name.into();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let too_large = |size| Error::PayloadTooLarge {
            name: name.clone(),
            size,
            max: max_bytes,
        };
        if size > max_bytes {
            return Err(too_large(size));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
        if bytes.len() as u64 > max_bytes {
            return Err(too_large(bytes.len() as u64));
        }
        Self::from_bytes(name, bytes)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn kind(&self) -> PayloadKind {
        self.kind
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_module_and_component_headers() {
        assert_eq!(
            PayloadKind::detect("m", wasmpod_fixtures::wat::HELLO).unwrap(),
            PayloadKind::CoreModule
        );
        assert_eq!(
            PayloadKind::detect("c", wasmpod_fixtures::p2::HELLO).unwrap(),
            PayloadKind::Component
        );
    }

    #[test]
    fn refuses_scripts_and_short_files() {
        let err = PayloadKind::detect("/app.sh", wasmpod_fixtures::wat::NOT_WASM).unwrap_err();
        assert!(
            err.to_string()
                .contains("/app.sh is not a WebAssembly binary")
        );
        assert!(matches!(
            PayloadKind::detect("x", b"\0as"),
            Err(Error::NotWasm { .. })
        ));
    }

    #[test]
    fn refuses_unknown_versions() {
        let err = PayloadKind::detect("x", b"\0asm\x02\0\0\0").unwrap_err();
        assert!(matches!(err, Error::UnknownEncoding { .. }), "{err}");
    }

    #[test]
    fn payloads_above_the_bound_are_refused_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, wasmpod_fixtures::wat::HELLO).unwrap();
        let len = wasmpod_fixtures::wat::HELLO.len() as u64;
        assert!(WasmSource::from_file_bounded("/m.wasm", &path, len).is_ok());
        let err = WasmSource::from_file_bounded("/m.wasm", &path, len - 1).unwrap_err();
        assert!(
            matches!(err, Error::PayloadTooLarge { size, .. } if size == len),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("/m.wasm") && msg.contains("payload size bound"),
            "{msg}"
        );
    }

    #[test]
    fn a_verified_digest_is_kept_as_given() {
        let digest = [7u8; 32];
        let src =
            WasmSource::from_verified_bytes("m", wasmpod_fixtures::wat::HELLO.to_vec(), digest)
                .unwrap();
        assert_eq!(src.digest(), &digest);
        assert_eq!(src.kind(), PayloadKind::CoreModule);
        assert!(WasmSource::from_verified_bytes("x", b"#!/bin/sh".to_vec(), digest).is_err());
    }

    #[test]
    fn digest_is_sha256_of_bytes() {
        let src = WasmSource::from_bytes("m", wasmpod_fixtures::wat::HELLO.to_vec()).unwrap();
        assert_eq!(
            src.digest_hex(),
            hex::encode(Sha256::digest(wasmpod_fixtures::wat::HELLO))
        );
    }
}
