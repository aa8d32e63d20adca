//! Security-context settings kubelet may add to a container (capabilities, seccomp
//! profile) or a pod (a user namespace, `hostUsers: false`), applied to the CRI messages
//! that [`ContainerConfig`](super::ContainerConfig) and [`PodConfig`](super::PodConfig)
//! build; send them with [`CriClient::create_container_with`](super::CriClient::create_container_with)
//! and [`CriClient::run_pod_with`](super::CriClient::run_pod_with).

use k8s_cri::v1 as cri;

/// `securityContext.seccompProfile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompProfile {
    /// `RuntimeDefault`: containerd's default profile.
    RuntimeDefault,
    /// `Unconfined`.
    Unconfined,
    /// `Localhost`: a profile file on the node (its absolute path).
    Localhost(String),
}

/// Capabilities and seccomp of one container's `securityContext`.
#[derive(Debug, Clone, Default)]
pub struct ContainerSecurity {
    /// `capabilities.add` (e.g. `NET_ADMIN`, or `ALL`).
    pub add: Vec<String>,
    /// `capabilities.drop` (e.g. `ALL`).
    pub drop: Vec<String>,
    /// `seccompProfile`; `None` sends none (containerd runs the container unconfined).
    pub seccomp: Option<SeccompProfile>,
}

impl ContainerSecurity {
    /// `capabilities.drop: [ALL]`.
    pub fn drop_all() -> Self {
        ContainerSecurity {
            drop: vec!["ALL".into()],
            ..Default::default()
        }
    }

    /// Sets `seccompProfile`.
    pub fn seccomp(mut self, profile: SeccompProfile) -> Self {
        self.seccomp = Some(profile);
        self
    }

    /// Writes these settings into `config`'s Linux security context.
    pub fn apply(&self, config: &mut cri::ContainerConfig) {
        let linux = config.linux.get_or_insert_with(Default::default);
        let context = linux.security_context.get_or_insert_with(Default::default);
        if !self.add.is_empty() || !self.drop.is_empty() {
            context.capabilities = Some(cri::Capability {
                add_capabilities: self.add.clone(),
                drop_capabilities: self.drop.clone(),
                ..Default::default()
            });
        }
        if let Some(profile) = &self.seccomp {
            use cri::security_profile::ProfileType;
            let (profile_type, localhost_ref) = match profile {
                SeccompProfile::RuntimeDefault => (ProfileType::RuntimeDefault, String::new()),
                SeccompProfile::Unconfined => (ProfileType::Unconfined, String::new()),
                SeccompProfile::Localhost(path) => (ProfileType::Localhost, path.clone()),
            };
            context.seccomp = Some(cri::SecurityProfile {
                profile_type: profile_type as i32,
                localhost_ref,
            });
        }
    }
}

/// Gives the pod a user namespace mapping uid/gid 0..`length` to `host_id`.. (what kubelet
/// sends for `hostUsers: false`).
pub fn with_user_namespace(config: &mut cri::PodSandboxConfig, host_id: u32, length: u32) {
    let mapping = cri::IdMapping {
        host_id,
        container_id: 0,
        length,
    };
    let linux = config.linux.get_or_insert_with(Default::default);
    let context = linux.security_context.get_or_insert_with(Default::default);
    let namespaces = context
        .namespace_options
        .get_or_insert_with(Default::default);
    namespaces.userns_options = Some(cri::UserNamespace {
        mode: cri::NamespaceMode::Pod as i32,
        uids: vec![mapping],
        gids: vec![mapping],
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_and_seccomp_reach_the_security_context() {
        let mut config = cri::ContainerConfig::default();
        ContainerSecurity::drop_all()
            .seccomp(SeccompProfile::RuntimeDefault)
            .apply(&mut config);
        let context = config.linux.unwrap().security_context.unwrap();
        assert_eq!(context.capabilities.unwrap().drop_capabilities, ["ALL"]);
        let seccomp = context.seccomp.unwrap();
        assert_eq!(
            seccomp.profile_type,
            cri::security_profile::ProfileType::RuntimeDefault as i32
        );
    }

    #[test]
    fn a_user_namespace_maps_uids_and_gids() {
        let mut pod = cri::PodSandboxConfig::default();
        with_user_namespace(&mut pod, 100_000, 65_536);
        let options = pod
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap()
            .userns_options
            .unwrap();
        assert_eq!(options.uids[0].host_id, 100_000);
        assert_eq!(options.gids[0].length, 65_536);
    }
}
