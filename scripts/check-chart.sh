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
check "traces and JSON logs" --set logFormat=json \
    --set opentelemetry.env.OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318
check "JetStream mode" --set nats.url=nats://nats.nats.svc:4222 --set nats.auth.secretName=nats-auth \
    --set nats.auth.credsKey=hookline.creds --set nats.tls.caSecretName=nats-ca
check "JetStream mode, identities per role" --set nats.url=nats://nats.nats.svc:4222 \
    --set nats.auth.secretName=nats-auth --set nats.auth.credsKey=operator.creds \
    --set nats.tls.caSecretName=nats-ca --set nats.identities.signingKeySecretName=hookline-signing
check "JetStream mode, identities per role, namespaced" --set nats.url=nats://nats.nats.svc:4222 \
    --set nats.auth.secretName=nats-auth --set nats.auth.credsKey=operator.creds \
    --set nats.identities.signingKeySecretName=hookline-signing --set watchNamespace=analytics \
    --set rbac.dlqViewer.aggregateTo[0]=admin
check "egress guard settings" --set 'egress.allowedCIDRs={10.96.0.0/12,fd00:10:96::/112}' \
    --set 'egress.clusterCIDRs={100.64.0.0/16}' --set egress.proxy=http://smokescreen.egress:4750 \
    --set egress.noProxy=.svc --set egress.workers.allowLinkLocal=true \
    --set egress.workers.denyPrivate=true
"$helm" template hookline "$chart" --set 'egress.allowedCIDRs={10.96.0.0/12}' |
    grep -q 'value: "10.96.0.0/12"'
check "JetStream mode, NATS installed with the chart" --set nats.install=true
check "JetStream mode, NATS installed with the chart, namespaced" --set nats.install=true \
    --set watchNamespace=analytics
# nats.install alone runs NATS (three servers, JetStream, PVCs) and points Hookline at it; without
# it, nothing of NATS is rendered.
installed="$("$helm" template hookline "$chart" --namespace hookline-system --set nats.install=true)"
grep -q '^kind: StatefulSet$' <<<"$installed"
grep -q 'value: "nats://hookline-nats.hookline-system.svc:4222"' <<<"$installed"
grep -q 'args: \["gateway"' <<<"$installed"
# ... with identities per role and nothing else set: the operator keeps the NATS keys, the
# gateway mounts its own identity, and no shared credentials are given to anyone.
grep -q 'name: HOOKLINE_NATS_KEYS_SECRET' <<<"$installed"
grep -q 'value: "hookline-nats-server"' <<<"$installed"
grep -q 'secretName: hookline-gateway-nats' <<<"$installed"
! grep -q 'HOOKLINE_NATS_TOKEN\|HOOKLINE_NATS_PASSWORD' <<<"$installed"
! "$helm" template hookline "$chart" | grep -q '^kind: StatefulSet$'
check "JetStream mode, gateway Ingress" --set nats.url=nats://nats.nats.svc:4222 \
    --set gateway.ingress.enabled=true --set gateway.ingress.className=nginx \
    --set 'gateway.ingress.hosts[0]=events.example.com' \
    --set 'gateway.ingress.tls[0].hosts[0]=events.example.com' \
    --set 'gateway.ingress.tls[0].secretName=events-tls'
"$helm" template hookline "$chart" --set nats.url=nats://nats:4222 --set gateway.ingress.enabled=true \
    --set 'gateway.ingress.hosts[0]=events.example.com' | grep -q '^kind: Ingress$' 
"$helm" template hookline "$chart" --set nats.url=nats://nats:4222 | grep -q 'args: \["gateway"'
# The ServiceMonitor's kind is not in the Kubernetes schemas: render it, check it is there.
"$helm" template hookline "$chart" --set metrics.serviceMonitor.enabled=true |
    grep -q '^kind: ServiceMonitor$'
# The alerts, as the PrometheusRule renders them, pass promtool; every dashboard query parses
# (as a recording rule, with Grafana's $destination as a match-all), and the dashboard is a
# Grafana dashboard JSON of the schema version it states.
work="$(mktemp -d)"
"$helm" template hookline "$chart" --set prometheusRule.enabled=true \
    --set grafana.dashboards.enabled=true --set metrics.podMonitor.enabled=true > "$work/all.yaml"
"$tools/venv/bin/python" - "$work" <<'PY'
import json, sys, yaml
work = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(f"{work}/all.yaml")) if d]
kinds = {d["kind"] for d in docs}
assert {"PrometheusRule", "PodMonitor"} <= kinds, kinds
rule = next(d for d in docs if d["kind"] == "PrometheusRule")
yaml.safe_dump(rule["spec"], open(f"{work}/rules.yaml", "w"))
for group in rule["spec"]["groups"]:
    for r in group["rules"]:
        a = r["annotations"]
        assert a.get("summary") and "{{ $labels.destination }}" in a["description"] or r["alert"] == "HooklineReconcileErrors", r["alert"]
        assert "runbook" in a["description"], r["alert"]
board_map = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
assert board_map["metadata"]["labels"]["grafana_dashboard"] == "1"
board = json.loads(board_map["data"]["hookline.json"])
assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36, board["schemaVersion"]
assert board["uid"] and board["title"]
names = {v["name"] for v in board["templating"]["list"]}
assert {"datasource", "destination"} <= names, names
ids = [p["id"] for p in board["panels"]]
assert len(ids) == len(set(ids)), "panel ids must be unique"
for p in board["panels"]:
    g = p["gridPos"]
    assert p["type"] in {"row", "timeseries"} and p["title"], p
    assert all(isinstance(g[k], int) for k in "hwxy") and g["x"] + g["w"] <= 24, p["title"]
    if p["type"] != "row":
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
assert exprs, "no queries"
recording = {"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:query_{i}", "expr": e.replace("$destination", ".*")} for i, e in enumerate(exprs)]}]}
yaml.safe_dump(recording, open(f"{work}/dashboard-rules.yaml", "w"))
PY
promtool check rules "$work/rules.yaml" "$work/dashboard-rules.yaml" >&2
# The bundled NATS gets what Hookline uses: its configuration, as the chart renders it, with
# the operator-mode configuration `hookline nats setup` makes (what the operator writes into
# <release>-nats-server), run by a real nats-server (on loopback ports, its routes unused), is
# in operator mode with Hookline's keys and has memory storage for the progress bucket.
"$helm" template hookline "$chart" --namespace hookline-system --set nats.install=true \
    --show-only charts/nats/templates/config-map.yaml > "$work/nats.yaml"
# The binary `cargo test` built (scripts/test.sh runs it first); built here when run alone.
hookline="$(scripts/target-dir.sh)/debug/hookline"
[ -x "$hookline" ] || cargo build --quiet --locked --bin hookline
"$hookline" nats setup > "$work/setup.yaml"
read -r client_port monitor_port route_port system_account < <("$tools/venv/bin/python" - "$work" <<'PY'
import os, socket, sys, yaml
work = sys.argv[1]
setup = [d for d in yaml.safe_load_all(open(f"{work}/setup.yaml")) if d]
auth = next(d for d in setup if "auth.conf" in d["stringData"])["stringData"]["auth.conf"]
os.makedirs(f"{work}/nats-hookline")
open(f"{work}/nats-hookline/auth.conf", "w").write(auth)
system_account = next(l for l in auth.splitlines() if l.startswith("system_account:")).split()[1]
os.makedirs(f"{work}/nats-config")
conf = yaml.safe_load(open(f"{work}/nats.yaml"))["data"]["nats.conf"]
ports = []
for _ in range(3):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ports.append(s.getsockname()[1]); s.close()
for old, new in [('"/data"', f'"{work}/data"'), ('"/var/run/nats/nats.pid"', f'"{work}/nats.pid"'),
                 ('"port": 4222', f'"port": {ports[0]}'), ('"http_port": 8222', f'"http_port": {ports[1]}'),
                 ('"port": 6222', f'"port": {ports[2]}')]:
    assert old in conf, old
    conf = conf.replace(old, new)
assert "include ../nats-hookline/auth.conf" in conf, "the chart does not include the operator-mode configuration"
open(f"{work}/nats-config/nats.conf", "w").write(conf)
print(*ports, system_account)
PY
)
SERVER_NAME=chart-check "$tools/venv/bin/nats-server" -a 127.0.0.1 -c "$work/nats-config/nats.conf" \
    > "$work/nats.log" 2>&1 &
nats_pid=$!
"$tools/venv/bin/python" - "$monitor_port" "$system_account" <<'PY'
import json, sys, time, urllib.request
deadline = time.time() + 30
while True:
    try:
        varz = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/varz", timeout=2))
        break
    except OSError:
        assert time.time() < deadline, "the bundled NATS configuration did not start"
        time.sleep(0.1)
memory = varz["jetstream"]["config"]["max_memory"]
assert memory >= 256 * 1024 * 1024, f"the bundled NATS has {memory} bytes of memory storage"
assert varz.get("system_account") == sys.argv[2], "the bundled NATS is not in operator mode with Hookline's keys"
assert varz.get("trusted_operators_claim") or varz.get("trusted_operators_jwt"), "no trusted operator"
PY
kill "$nats_pid"
wait "$nats_pid" || true
rm -rf "$work"
echo "chart: ok" >&2
