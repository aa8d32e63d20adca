//! The dispatch: the shim's [`Launcher`]. Create loads the bundle's spec (the only place
//! that does), checks what every kind must pass, mounts the rootfs, computes the guest's view
//! and resolves the entrypoint once ([`resolve_entrypoint`]), decides what the container is
//! ([`classify`]) and hands all of it to [`runc`] or [`runner`]; a failure unmounts what it
//! mounted.

use std::path::{Path, PathBuf};

use log::warn;
use oci_spec::runtime::Spec;
use wasmpod_runtime_core::Error as CoreError;
use wasmpod_runtime_core::locate;

use super::runner::parent::{Resolved, RunnerSettings};
use super::runner::protocol::{Entrypoint, FailureKind};
use super::runner::spec::GuestSpec;
use super::{ContainerKind, ContainerProcess, CreateRequest, Launcher, runc, runner};
use crate::error::{TaskError, TaskResult};
use crate::os::rootfs;

/// The CRI annotation saying whether a container is the pod sandbox.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";

/// Resolves `process.args[0]` in the rootfs as the guest will see it, once for the shim
/// (which decides the kind from it) and the runner (which reads the payload it names). Not
/// there is not an error yet: the payload may be the image's wasm layer.
pub fn resolve_entrypoint(guest: &GuestSpec, rootfs: &Path) -> Result<Entrypoint, CoreError> {
    let args0 = guest.args.first().map(String::as_str).unwrap_or_default();
    match locate::resolve_entrypoint(rootfs, args0, &guest.cwd, guest.path_env()) {
        Ok(found) => Ok(Entrypoint::Rootfs {
            guest_path: found.guest_path,
            host_path: found.host_path,
        }),
        Err(e @ (CoreError::EntrypointNotFound { .. } | CoreError::NoEntrypoint)) => {
            Ok(Entrypoint::NotInRootfs {
                reason: e.to_string(),
            })
        }
        Err(e) => Err(e),
    }
}

/// Whether the spec is the CRI pod sandbox's.
pub fn is_sandbox(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(CONTAINER_TYPE_ANNOTATION))
        .is_some_and(|t| t == "sandbox")
}

/// A Linux container when the entrypoint file starts like an ELF binary or a script, else
/// a wasm container (whose runner says what is wrong with a payload that is not wasm).
pub fn classify(entrypoint: &Entrypoint) -> ContainerKind {
    let Entrypoint::Rootfs { host_path, .. } = entrypoint else {
        return ContainerKind::Wasm;
    };
    let mut head = [0u8; 4];
    let read =
        std::fs::File::open(host_path).and_then(|mut f| std::io::Read::read(&mut f, &mut head));
    match read {
        Ok(n) if n >= 4 && head == *b"\x7fELF" => ContainerKind::Linux,
        Ok(n) if n >= 2 && head[..2] == *b"#!" => ContainerKind::Linux,
        _ => ContainerKind::Wasm,
    }
}

/// The launcher of the real shim.
#[derive(Debug)]
pub struct ShimLauncher {
    runner: RunnerSettings,
    /// runc's `--root` for this shim's Linux containers ([`runc::root_for`]).
    runc_root: PathBuf,
}

impl ShimLauncher {
    /// Starts runners and pause processes as `runner` says, Linux containers with runc
    /// under `runc_root`.
    pub fn new(runner: RunnerSettings, runc_root: PathBuf) -> Self {
        ShimLauncher { runner, runc_root }
    }

    /// Spec, guest view and entrypoint of a container whose rootfs is mounted.
    fn resolve(
        &self,
        id: &str,
        spec: Spec,
        rootfs: &Path,
        mounted_rootfs: Option<PathBuf>,
    ) -> TaskResult<Resolved> {
        let guest = GuestSpec::from_spec(&spec, rootfs);
        let (kind, entrypoint) = if is_sandbox(&spec) {
            (ContainerKind::Sandbox, Entrypoint::None)
        } else {
            let entrypoint = resolve_entrypoint(&guest, rootfs).map_err(|e| {
                let kind = FailureKind::of_core_error(&e);
                TaskError::runner_failed(kind, format!("container {id}: {e}"))
            })?;
            (classify(&entrypoint), entrypoint)
        };
        Ok(Resolved {
            kind,
            spec,
            guest,
            entrypoint,
            mounted_rootfs,
        })
    }
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
        let mounted_rootfs = mounted.then(|| rootfs.clone());
        let created = self
            .resolve(id, spec, &rootfs, mounted_rootfs)
            .and_then(|resolved| {
                log::info!("container {id}: {:?}", resolved.kind);
                match resolved.kind {
                    ContainerKind::Linux => runc::create(
                        request,
                        &resolved.spec,
                        resolved.mounted_rootfs,
                        &self.runc_root,
                    ),
                    ContainerKind::Wasm | ContainerKind::Sandbox => {
                        runner::parent::create(request, resolved, &self.runner)
                    }
                }
            });
        if created.is_err()
            && mounted
            && let Err(e) = rootfs::unmount(&rootfs)
        {
            warn!("container {id}: {e}");
        }
        created
    }
}
