//! The WASI surface a guest sees, built from plain values (no OCI or containerd types).
//!
//! The shim maps the OCI process and mounts into a [`WasiConfig`]: args, env, cwd,
//! preopened directories (the rootfs at `/`, each bind mount at its destination) and the
//! stdio files containerd handed over.

use std::fs::File;
use std::path::PathBuf;

use wasmtime_wasi::cli::{InputFile, OutputFile};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::{Error, Result};

/// A host directory the guest sees at `guest_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    pub host_path: PathBuf,
    pub guest_path: String,
    pub read_only: bool,
}

/// Everything that shapes a guest's WASI context.
#[derive(Debug, Default)]
pub struct WasiConfig {
    /// `argv`, including `argv[0]`.
    pub args: Vec<String>,
    /// Environment as `KEY=VALUE` pairs.
    pub env: Vec<(String, String)>,
    /// Initial working directory (guest path).
    pub cwd: Option<String>,
    pub preopens: Vec<Preopen>,
    /// `None` means an empty stdin / discarded output.
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    /// Cap on each linear memory and table growth, in bytes (the container's memory limit).
    pub memory_limit: Option<usize>,
    /// The memory limit in force now, when it can change while the guest runs (a growth
    /// past `memory_limit` that it allows goes through).
    pub memory_limit_now: Option<crate::limits::MemoryLimitNow>,
    /// Let the guest open sockets in the container's network namespace.
    pub allow_network: bool,
}

impl WasiConfig {
    /// Splits `KEY=VALUE` strings as found in an OCI `process.env`. Entries without `=`
    /// become variables with an empty value, as in a Linux container.
    pub fn parse_env<'a>(entries: impl IntoIterator<Item = &'a str>) -> Vec<(String, String)> {
        entries
            .into_iter()
            .map(|entry| match entry.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (entry.to_owned(), String::new()),
            })
            .collect()
    }

    /// Fills a wasmtime-wasi builder from this config, consuming the stdio files.
    pub(crate) fn builder(&mut self) -> Result<WasiCtxBuilder> {
        let mut builder = self.builder_without_stdio()?;
        if let Some(stdin) = self.stdin.take() {
            builder.stdin(InputFile::new(stdin));
        }
        if let Some(stdout) = self.stdout.take() {
            builder.stdout(OutputFile::new(stdout));
        }
        if let Some(stderr) = self.stderr.take() {
            builder.stderr(OutputFile::new(stderr));
        }
        Ok(builder)
    }

    /// A builder with everything but stdio: args, env, cwd, preopens, network. Callable
    /// any number of times (an HTTP server builds one per request).
    pub(crate) fn builder_without_stdio(&self) -> Result<WasiCtxBuilder> {
        let mut builder = WasiCtxBuilder::new();
        builder.args(&self.args).envs(&self.env);
        if let Some(cwd) = &self.cwd {
            builder.initial_cwd(cwd);
        }
        for preopen in &self.preopens {
            let perms = if preopen.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            builder
                .preopened_dir(&preopen.host_path, &preopen.guest_path, perms)
                .map_err(|e| Error::Wasi {
                    what: format!(
                        "preopen {} at {}",
                        preopen.host_path.display(),
                        preopen.guest_path
                    ),
                    message: format!("{e:#}"),
                })?;
        }
        if self.allow_network {
            // wasmtime-wasi denies TCP and UDP unless asked: the guest gets the container's
            // network namespace, whatever address it names.
            builder
                .inherit_network()
                .allow_tcp(true)
                .allow_udp(true)
                .allow_ip_name_lookup(true);
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_entries_split_at_the_first_equals() {
        assert_eq!(
            WasiConfig::parse_env(["A=1", "B=x=y", "EMPTY"]),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x=y".into()),
                ("EMPTY".into(), String::new())
            ]
        );
    }
}
