#!/usr/bin/env bash
# Checks charts/hookline offline: `helm lint --strict`, and `helm template` for the default
# values and for a namespaced install piped into `kubernetes-validate --strict`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$(scripts/tools.sh)"
helm="$tools/helm"
validate="$tools/venv/bin/kubernetes-validate"
chart=charts/hookline
k8s_version=1.33.0

check() {
    local name="$1"; shift
    echo "chart: $name" >&2
    "$helm" lint --strict "$chart" "$@" >&2
    local out
    out="$(mktemp -d)"
    "$helm" template hookline "$chart" --namespace hookline-system --include-crds "$@" \
        --output-dir "$out" >&2
    find "$out" -name '*.yaml' -print0 | sort -z |
        xargs -0 "$validate" --strict --kubernetes-version "$k8s_version" >&2
    rm -rf "$out"
}

check "default values"
check "namespaced install" --set watchNamespace=analytics --set replicaCount=2
check "JetStream mode" --set nats.url=nats://nats.nats.svc:4222 --set nats.auth.secretName=nats-auth \
    --set nats.auth.credsKey=hookline.creds --set nats.tls.caSecretName=nats-ca
"$helm" template hookline "$chart" --set nats.url=nats://nats:4222 | grep -q 'args: \["gateway"'
# The ServiceMonitor's kind is not in the Kubernetes schemas: render it, check it is there.
"$helm" template hookline "$chart" --set metrics.serviceMonitor.enabled=true |
    grep -q '^kind: ServiceMonitor$'
echo "chart: ok" >&2
