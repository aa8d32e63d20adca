//! Deterministic tar entries: [`TarWriter`] writes every entry with mtime 0, uid/gid 0 and
//! no user or group names, so the same entries always give the same bytes.

use super::ImageError;

/// Writes deterministic tar entries: mtime 0, uid/gid 0, no user or group names.
pub(super) struct TarWriter(tar::Builder<Vec<u8>>);

impl TarWriter {
    pub(super) fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    pub(super) fn file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<(), ImageError> {
        let mut header = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.0
            .append_data(&mut header, path, data)
            .map_err(|e| ImageError::io(format!("adding {path} to tar"), e))
    }

    pub(super) fn dir(&mut self, path: &str, mode: u32) -> Result<(), ImageError> {
        let mut header = Self::header(tar::EntryType::Directory, mode, 0);
        self.0
            .append_data(&mut header, path, std::io::empty())
            .map_err(|e| ImageError::io(format!("adding {path} to tar"), e))
    }

    pub(super) fn symlink(&mut self, path: &str, target: &str) -> Result<(), ImageError> {
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.0
            .append_link(&mut header, path, target)
            .map_err(|e| ImageError::io(format!("adding {path} to tar"), e))
    }

    pub(super) fn finish(self) -> Result<Vec<u8>, ImageError> {
        self.0
            .into_inner()
            .map_err(|e| ImageError::io("finishing tar", e))
    }
}
