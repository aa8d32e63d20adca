//! Labelling the node `wasmpod.dev/installed=true`, the RuntimeClass's node selector.
//!
//! The label is the contract with the scheduler: wasm pods land only on nodes where the
//! install finished and containerd came back with the runtime, so it is set last and
//! removed first (on uninstall, or when a later install fails its probe).
//!
//! [`NodeLabeler`] has two real sides: [`KubeApi`], a JSON merge patch of the Node sent to
//! the API server from inside the pod with the service-account token (through `curl`, which
//! the installer image carries, so the binary needs no TLS stack; the token goes to curl on
//! stdin, never on its command line), and [`Kubectl`] where `kubectl` is configured.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Labelling failures.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// The client could not be started or fed.
    #[error("running {command}: {source}")]
    Spawn {
        /// The program.
        command: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The API call failed.
    #[error("labelling node {node}: {command} failed ({status}): {output}")]
    Failed {
        /// The node.
        node: String,
        /// The program.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// The service-account token could not be read.
    #[error("reading the service-account token {}: {source}", path.display())]
    Token {
        /// Its path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Sets or removes one label on a node.
pub trait NodeLabeler {
    /// Set `key=value`, or remove `key` when `value` is `None`.
    fn set_label(&self, node: &str, key: &str, value: Option<&str>) -> Result<(), LabelError>;
}

/// The merge patch for one label.
pub fn label_patch(key: &str, value: Option<&str>) -> String {
    serde_json::json!({ "metadata": { "labels": { key: value } } }).to_string()
}

/// Talks to the API server with the pod's service account.
#[derive(Debug, Clone)]
pub struct KubeApi {
    /// `https://host:port`.
    pub server: String,
    /// The token file.
    pub token: PathBuf,
    /// The cluster CA bundle.
    pub ca: PathBuf,
}

/// Where a pod's service-account credentials are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl KubeApi {
    /// From `KUBERNETES_SERVICE_HOST`/`_PORT` and the mounted service account, when in a pod.
    pub fn in_cluster() -> Option<Self> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let dir = PathBuf::from(SERVICE_ACCOUNT_DIR);
        Some(Self {
            server: format!("https://{host}:{port}"),
            token: dir.join("token"),
            ca: dir.join("ca.crt"),
        })
    }
}

impl NodeLabeler for KubeApi {
    fn set_label(&self, node: &str, key: &str, value: Option<&str>) -> Result<(), LabelError> {
        let token = std::fs::read_to_string(&self.token).map_err(|source| LabelError::Token {
            path: self.token.clone(),
            source,
        })?;
        let url = format!("{}/api/v1/nodes/{node}", self.server);
        // curl reads its options from stdin (`--config -`): the token stays off argv.
        let config = format!("header = \"Authorization: Bearer {}\"\n", token.trim());
        let args = [
            "--silent".to_owned(),
            "--show-error".to_owned(),
            "--fail-with-body".to_owned(),
            "--config".to_owned(),
            "-".to_owned(),
            "--cacert".to_owned(),
            self.ca.display().to_string(),
            "--request".to_owned(),
            "PATCH".to_owned(),
            "--header".to_owned(),
            "Content-Type: application/merge-patch+json".to_owned(),
            "--data-raw".to_owned(),
            label_patch(key, value),
            url,
        ];
        run(node, "curl", &args, Some(config.as_bytes()))
    }
}

/// Runs `kubectl label node`.
#[derive(Debug, Clone)]
pub struct Kubectl {
    /// The `kubectl` binary.
    pub bin: PathBuf,
}

impl NodeLabeler for Kubectl {
    fn set_label(&self, node: &str, key: &str, value: Option<&str>) -> Result<(), LabelError> {
        let label = match value {
            Some(v) => format!("{key}={v}"),
            None => format!("{key}-"),
        };
        let args = [
            "label".to_owned(),
            "--overwrite".to_owned(),
            "node".to_owned(),
            node.to_owned(),
            label,
        ];
        run(node, &self.bin.display().to_string(), &args, None)
    }
}

fn run(node: &str, program: &str, args: &[String], stdin: Option<&[u8]>) -> Result<(), LabelError> {
    let spawn_err = |source| LabelError::Spawn {
        command: program.to_owned(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(LabelError::Failed {
            node: node.to_owned(),
            command: program.to_owned(),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_sets_and_removes() {
        assert_eq!(
            label_patch("wasmpod.dev/installed", Some("true")),
            r#"{"metadata":{"labels":{"wasmpod.dev/installed":"true"}}}"#
        );
        assert_eq!(
            label_patch("wasmpod.dev/installed", None),
            r#"{"metadata":{"labels":{"wasmpod.dev/installed":null}}}"#
        );
    }
}
