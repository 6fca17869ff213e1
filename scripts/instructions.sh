#!/usr/bin/env bash
# Instructions per event, counted by callgrind (stable on a noisy machine, unlike time):
# `hookline run` under valgrind ingests N events through /v1/batch (100 a request), once with a
# subscription that filters every event out (ingest + queue + read + filter), once delivering
# each to an endpoint one request per event. Prints both per event, and their difference: the
# cost of delivering an event; for a small event and for a Segment-sized one (analytics.js
# context, products). Usage: scripts/instructions.sh [REQUESTS=100]
# With KEEP=DIR, callgrind's output files stay in DIR for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-100}
command -v valgrind >/dev/null || { echo "valgrind is needed (Debian: valgrind)" >&2; exit 1; }
cargo build --release --locked --bin hookline >&2
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
endpoint_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
listen_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# A minimal keep-alive endpoint: 200 {} to every request.
python3 - "$endpoint_port" <<'PY' &
import asyncio, sys
class P(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf = t, b""
    def data_received(self, d):
        self.buf += d
        while (i := self.buf.find(b"\r\n\r\n")) >= 0:
            n = next((int(l.split(b":")[1]) for l in self.buf[:i].lower().split(b"\r\n") if l.startswith(b"content-length:")), 0)
            if len(self.buf) < i + 4 + n: return
            self.buf = self.buf[i + 4 + n:]
            self.t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
async def main():
    await (await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]))).serve_forever()
asyncio.run(main())
PY
python3 - "$work" <<'PY'
import json, sys
context = {"library": {"name": "analytics.js", "version": "4.1.0"},
           "page": {"path": "/checkout", "referrer": "https://example.com/cart", "search": "", "title": "Checkout", "url": "https://example.com/checkout"},
           "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
           "ip": "203.0.113.7", "locale": "en-US", "timezone": "Europe/Berlin",
           "campaign": {"name": "winter", "source": "newsletter", "medium": "email"},
           "traits": {"email": "a@example.com", "plan": "pro", "company": {"name": "Acme", "size": 50}}}
def event(i, full):
    e = {"type": "track", "userId": f"user-{i}", "event": "Order Completed", "properties": {"order_id": f"o-{i}", "total": 10.5}}
    if full:
        e["context"] = context
        e["properties"].update({"currency": "EUR", "coupon": "WINTER", "products": [{"id": "p1", "price": 5.25, "quantity": 1}, {"id": "p2", "price": 5.25, "quantity": 1}]})
    return e
for name, full in [("small", False), ("segment", True)]:
    json.dump({"batch": [event(i, full) for i in range(100)]}, open(f"{sys.argv[1]}/{name}.json", "w"))
PY
manifest() {
    cat <<YAML
apiVersion: hookline.dev/v1alpha1
kind: WebhookDestination
metadata: {name: bench}
spec:
  endpoint: {url: 'http://127.0.0.1:$endpoint_port/events'}
  subscription: 'type = "$1"'
  mapping:
    user: {"@path": "\$.userId"}
    event: {"@path": "\$.event"}
    order_id: {"@path": "\$.properties.order_id"}
    total: {"@path": "\$.properties.total"}
  delivery: {concurrency: 8}
YAML
}
# Instructions of one run: ingest, wait until every event is delivered or filtered, stop.
count() {
    manifest "$1" > "$work/$1.yaml"
    rm -rf "$work/data-$1"
    valgrind --tool=callgrind --callgrind-out-file="$work/$1.out" "$(scripts/target-dir.sh)/release/hookline" run \
        --listen "127.0.0.1:$listen_port" --data-dir "$work/data-$1" -f "$work/$1.yaml" 2>/dev/null &
    local pid=$!
    until curl -sf "http://127.0.0.1:$listen_port/readyz" >/dev/null; do sleep 0.2; done
    for _ in $(seq "$requests"); do
        curl -sf -XPOST -H 'content-type: application/json' --data-binary @"$work/$2.json" \
            "http://127.0.0.1:$listen_port/v1/batch" >/dev/null
    done
    until curl -sf "http://127.0.0.1:$listen_port/metrics" | awk -v want=$((requests * 100)) \
        '/^hookline_events_(delivered|filtered)_total/ {s += $2} END {exit !(s >= want)}'; do sleep 0.5; done
    kill -TERM "$pid"; wait "$pid" || true
    awk '/^summary:/ {print $2}' "$work/$1.out"
    if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$work/$1.out" "$KEEP/$2-$1.out"; fi
}
events=$((requests * 100))
for payload in small segment; do
    filtered=$(count identify "$payload")
    delivered=$(count track "$payload")
    echo "$payload events: ingested and filtered $((filtered / events)), delivering one on top $(((delivered - filtered) / events)) instructions per event"
done
