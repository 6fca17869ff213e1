#!/usr/bin/env bash
# Writes the CRDs generated from the Rust types into crds/ and charts/hookline/crds/ (the schema
# tests fail when either is stale).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --bin hookline -- crd > target/crds.yaml
python3 - <<'PY'
import re
text = open("target/crds.yaml").read()
for doc in text.split("---\n"):
    name = re.search(r"^  name: (\S+)$", doc, re.M).group(1)
    for dir in ("crds", "charts/hookline/crds"):
        open(f"{dir}/{name}.yaml", "w").write(doc)
PY
