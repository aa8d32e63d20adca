//! Placeholder library of the `wasmpod-kind` package, which exists for its test
//! (`tests/manifests.rs`: every YAML in `manifests/` and the rendered Helm chart parses as the
//! Kubernetes type it claims) and sits beside the kind end-to-end script (`run.sh`).
