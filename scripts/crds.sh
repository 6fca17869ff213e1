#!/usr/bin/env bash
# Writes the CRDs generated from the Rust types into crds/ and charts/hookline/crds/, and the
# guide's reference pages generated from them into docs/src/reference/ (the schema tests fail
# when any is stale).
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
mkdir -p docs/src/reference
BLESS=1 cargo test --quiet --test crd the_guides_reference >/dev/null
