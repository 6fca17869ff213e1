#!/usr/bin/env bash
# Builds the guide (docs/, an mdBook) into target/book and checks every link: each page or file
# a link names exists, and each #anchor is an id on its page. The README's links are checked
# the same way against the repository. A broken link or page fails.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$(scripts/tools.sh)"
out="$(scripts/target-dir.sh)/book"
"$tools/bin/mdbook" build docs --dest-dir "$out" >&2
python3 - "$out" <<'PY'
import html.parser, os, re, sys, urllib.parse
out = sys.argv[1]

class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key):
                self.links.append(a[key])

pages = {}
for root, _, files in os.walk(out):
    for f in files:
        if f.endswith(".html"):
            p = Page()
            p.feed(open(os.path.join(root, f), encoding="utf-8").read())
            pages[os.path.normpath(os.path.join(root, f))] = p

def check(source, link, base, ids_of):
    parts = urllib.parse.urlsplit(link)
    if parts.scheme or link.startswith("//") or link.startswith("mailto:"):
        return None
    target = os.path.normpath(os.path.join(base, urllib.parse.unquote(parts.path))) if parts.path else source
    if not os.path.exists(target):
        return f"{source}: {link}: no such file"
    if parts.fragment:
        ids = ids_of(target)
        if ids is not None and parts.fragment not in ids:
            return f"{source}: {link}: no #{parts.fragment} there"
    return None

broken = []
for path, page in pages.items():
    for link in page.links:
        problem = check(path, link, os.path.dirname(path), lambda t: pages[t].ids if t in pages else None)
        if problem:
            broken.append(problem)

def md_ids(path):
    # GitHub's anchors: lower case, punctuation dropped, spaces as dashes.
    ids = set()
    for line in open(path, encoding="utf-8"):
        m = re.match(r"#+ (.*)", line)
        if m:
            ids.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    return ids

for link in re.findall(r"\]\(([^)\s]+)\)", open("README.md", encoding="utf-8").read()):
    problem = check("README.md", link, ".", lambda t: md_ids(t) if t.endswith(".md") else None)
    if problem:
        broken.append(problem)
if broken:
    print("broken links:\n  " + "\n  ".join(sorted(set(broken))), file=sys.stderr)
    sys.exit(1)
print(f"docs: {len(pages)} pages, every link resolves", file=sys.stderr)
PY
