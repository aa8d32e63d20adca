//! The dispatch: the shim's [`Launcher`]. Create loads the bundle's spec, checks what every
//! kind must pass, mounts the rootfs, decides what the container is ([`classify`]) and hands
//! it to [`runc`] or [`runner`]; a failure unmounts what it mounted.

use std::path::Path;

use log::warn;
use oci_spec::runtime::Spec;

use super::{ContainerKind, ContainerProcess, CreateRequest, Launcher, runc, runner};
use crate::error::{TaskError, TaskResult};
use crate::image::ContainerdApi;
use crate::os::rootfs;

/// The CRI annotation saying whether a container is the pod sandbox.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";

/// Classifies by the CRI annotation, then by the entrypoint's first bytes.
pub fn classify(spec: &Spec, rootfs: &Path) -> ContainerKind {
    let annotation = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(CONTAINER_TYPE_ANNOTATION));
    if annotation.is_some_and(|t| t == "sandbox") {
        return ContainerKind::Sandbox;
    }
    let process = spec.process().as_ref();
    let args0 = process
        .and_then(|p| p.args().as_ref())
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_default();
    let cwd = process
        .map(|p| p.cwd().display().to_string())
        .unwrap_or_else(|| "/".into());
    let path_env = process
        .and_then(|p| p.env().as_ref())
        .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")))
        .map(str::to_owned);
    let found =
        wasmpod_runtime_core::locate::resolve_entrypoint(rootfs, &args0, &cwd, path_env.as_deref());
    let Ok(entry) = found else {
        // The runner reports a missing entrypoint with the full story.
        return ContainerKind::Wasm;
    };
    let mut head = [0u8; 4];
    let read = std::fs::File::open(&entry.host_path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head));
    match read {
        Ok(n) if n >= 4 && head == *b"\x7fELF" => ContainerKind::Linux,
        Ok(n) if n >= 2 && head[..2] == *b"#!" => ContainerKind::Linux,
        _ => ContainerKind::Wasm,
    }
}

/// The launcher of the real shim.
#[derive(Debug, Default)]
pub struct ShimLauncher {
    /// containerd's API, for runners whose payload is in an image layer.
    pub containerd: Option<ContainerdApi>,
}

impl Launcher for ShimLauncher {
    fn create(&self, request: &CreateRequest) -> TaskResult<Box<dyn ContainerProcess>> {
        let id = &request.id;
        let config = request.bundle.join("config.json");
        let spec = Spec::load(&config).map_err(|e| {
            TaskError::InvalidArgument(format!(
                "container {id}: invalid OCI spec {}: {e}",
                config.display()
            ))
        })?;
        // Before anything is mounted: an idmapped rootfs would fail to mount with a less
        // helpful error, and a Linux container's rootfs is mounted here too.
        runner::refuse_user_namespace(&spec)
            .map_err(|e| TaskError::InvalidArgument(format!("container {id}: {e}")))?;
        // Before anything else is made, for every kind (runc sidecars included).
        if let Some(path) = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
        {
            crate::os::cgroup::check_path(&path.display().to_string())
                .map_err(|e| TaskError::InvalidArgument(format!("container {id}: {e}")))?;
        }
        let rootfs = request.bundle.join("rootfs");
        let mounted = !request.rootfs_mounts.is_empty();
        if mounted {
            rootfs::mount(&request.rootfs_mounts, &rootfs)
                .map_err(|e| TaskError::internal(format!("container {id}: mounting rootfs"), e))?;
        }
        let unmount = || {
            if mounted && let Err(e) = rootfs::unmount(&rootfs) {
                warn!("container {id}: {e}");
            }
        };
        let kind = classify(&spec, &rootfs);
        log::info!("container {id}: {kind:?}");
        let created = match kind {
            ContainerKind::Linux => runc::create(request, mounted.then(|| rootfs.clone())),
            ContainerKind::Wasm | ContainerKind::Sandbox => runner::parent::create(
                request,
                &spec,
                kind,
                mounted.then(|| rootfs.clone()),
                self.containerd.clone(),
            ),
        };
        if created.is_err() {
            unmount();
        }
        created
    }
}
