#!/usr/bin/env bash
# End-to-end on a kind cluster: builds the installer image and the example wasm images,
# creates a cluster, loads the images, `helm install`s charts/wasmpod, waits for every node
# to be labelled wasmpod.dev/installed=true, applies manifests/ and asserts on Job
# completion, `kubectl logs` and pod status, then `helm uninstall`s and checks the nodes
# were reverted. Deletes the cluster at the end (KEEP_CLUSTER=1 keeps it).
#
#   test/kind/run.sh            (or: make test-kind)
#
# Needs Docker, kind, kubectl and helm; exits 2 with a message when one is missing. Not run
# by .ci/run (the CI machine has no Docker).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

missing=()
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})) || ! docker info >/dev/null 2>&1; then
  echo "test/kind/run.sh needs Docker and kind (and kubectl, helm); not run by .ci/run." >&2
  ((${#missing[@]})) && echo "missing: ${missing[*]}" >&2 || echo "docker is installed but its daemon does not answer" >&2
  exit 2
fi

cluster=${KIND_CLUSTER:-wasmpod}
ns=wasmpod-system
tag=e2e
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/wasmpod/target}
work=$(mktemp -d /tmp/wasmpod-kind.XXXXXX)
cleanup() {
  local status=$?
  if ((status != 0)); then
    echo "--- failed; cluster state:" >&2
    kubectl get nodes --show-labels >&2 || true
    kubectl get pods -A -o wide >&2 || true
    kubectl -n "$ns" logs -l app.kubernetes.io/instance=wasmpod --prefix --tail=50 >&2 || true
  fi
  [[ ${KEEP_CLUSTER:-0} == 1 ]] || kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

step() { echo "=== $*"; }

step "building images"
docker build -f installer/Dockerfile -t "localhost/wasmpod/installer:$tag" .
cargo build -p wasmpod-fixtures -p wasmpod-test --bin wasmpod-image
image=("$CARGO_TARGET_DIR/debug/wasmpod-image")
# The example guests are the test fixtures (test/fixtures/build.rs builds them into its
# OUT_DIR): hello (wasip1) for the Job, sleep (a long-running loop) for the worker, and
# the wasi:http hello component. Images: OCI tarballs, wasm in a tar layer.
guest() { # NAME PATH-PART -> newest matching .wasm under the fixtures' OUT_DIRs
  find "$CARGO_TARGET_DIR"/debug/build/wasmpod-fixtures-*/out -name "$1.wasm" -path "*$2*" \
    -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n1 | cut -d' ' -f2-
}
hello=$(guest hello wasm32-wasip1) worker=$(guest sleep wasm32-wasip1) http=$(guest hello guests-http)
[[ -n $hello && -n $worker ]] || { echo "guest wasm files not found under $CARGO_TARGET_DIR" >&2; exit 1; }
"${image[@]}" wasm --name localhost/wasmpod/hello:latest --wasm "$hello" --out "$work/hello.tar"
"${image[@]}" wasm --name localhost/wasmpod/worker:latest --wasm "$worker" --out "$work/worker.tar" --arg 3600
if [[ -n $http ]]; then
  "${image[@]}" wasm --name localhost/wasmpod/http-hello:latest --wasm "$http" --out "$work/http-hello.tar"
fi

step "creating kind cluster $cluster"
kind create cluster --name "$cluster" --config test/kind/kind-config.yaml --wait 120s
kind load docker-image --name "$cluster" "localhost/wasmpod/installer:$tag"
for tar in "$work"/*.tar; do
  # platform wasip1/wasm needs --all-platforms on import.
  for node in $(kind get nodes --name "$cluster"); do
    docker exec -i "$node" ctr -n k8s.io images import --all-platforms - <"$tar"
  done
done

step "helm install"
helm install wasmpod charts/wasmpod --namespace "$ns" --create-namespace \
  --set image.repository=localhost/wasmpod/installer --set image.tag="$tag" \
  --set image.pullPolicy=Never --wait --timeout 5m
kubectl -n "$ns" rollout status daemonset/wasmpod-installer --timeout=5m
nodes=$(kubectl get nodes -o name | wc -l)
for _ in $(seq 60); do
  labelled=$(kubectl get nodes -l wasmpod.dev/installed=true -o name | wc -l)
  ((labelled == nodes)) && break
  sleep 2
done
((labelled == nodes)) || { echo "only $labelled of $nodes nodes labelled" >&2; exit 1; }
kubectl get runtimeclass wasmpod -o jsonpath='{.handler}' | grep -qx wasmpod
# Idempotence: a restarted installer pod must not restart containerd again.
kubectl -n "$ns" delete pod -l app.kubernetes.io/name=wasmpod --wait
kubectl -n "$ns" rollout status daemonset/wasmpod-installer --timeout=2m
sleep 5
kubectl -n "$ns" logs -l app.kubernetes.io/name=wasmpod --tail=-1 | grep -q "containerd not restarted"

step "hello Job"
kubectl apply -f manifests/hello-job.yaml
kubectl wait --for=condition=complete job/wasmpod-hello --timeout=2m
kubectl logs job/wasmpod-hello | tee "$work/hello.log"
grep -q "Hello" "$work/hello.log"

step "worker Deployment"
kubectl apply -f manifests/worker-deployment.yaml
kubectl rollout status deployment/wasmpod-worker --timeout=2m
sleep 6
pod=$(kubectl get pod -l app.kubernetes.io/name=wasmpod-worker -o jsonpath='{.items[0].metadata.name}')
[[ $(kubectl get pod "$pod" -o jsonpath='{.status.phase}') == Running ]]
[[ $(kubectl get pod "$pod" -o jsonpath='{.status.containerStatuses[0].restartCount}') == 0 ]]
# (the sleep guest prints nothing; Running with no restarts is the check)
kubectl delete -f manifests/worker-deployment.yaml --wait --timeout=60s

if [[ -f $work/http-hello.tar ]]; then
  step "wasi:http Deployment + Service"
  kubectl apply -f manifests/http-deployment.yaml
  kubectl rollout status deployment/wasmpod-http-hello --timeout=2m
  kubectl run curl --image=curlimages/curl --restart=Never --rm -i --quiet -- \
    curl -sf http://wasmpod-http-hello/ | tee "$work/http.log"
  grep -qi hello "$work/http.log"
else
  echo "(no http-hello.wasm built yet: wasi:http example skipped)"
fi

step "helm uninstall"
kubectl delete -f manifests/hello-job.yaml --ignore-not-found
helm uninstall wasmpod --namespace "$ns" --wait --timeout 5m
[[ $(kubectl get nodes -l wasmpod.dev/installed=true -o name | wc -l) == 0 ]]
for node in $(kind get nodes --name "$cluster"); do
  ! docker exec "$node" containerd config dump | grep -q 'runtimes.wasmpod'
  ! docker exec "$node" test -e /usr/local/bin/containerd-shim-wasmpod-v1
done
echo "kind e2e: all checks passed"
