// A web page of its own origin, in a real headless Chromium, sending with Segment's
// analytics.js 2.0 (the npm bundle, unmodified) to a hookline pointed at by `cdnURL` only.
//
//   node analytics.cjs HOOKLINE_URL WRITE_KEY PAGE_PORT EVENTS deliver|refused
//
// Serves the page on 127.0.0.1:PAGE_PORT, loads analytics.js there and sends EVENTS events
// (track, page, identify, in turn). `deliver`: waits for analytics.js to have dispatched each.
// `refused` (an origin hookline must refuse): the settings are given inline, so the library
// does send, and the script waits until each event's request has failed. Prints one JSON
// line: {"sent": n, "delivered": n, "consoleErrors": [...], "requests": [...]} where `requests`
// are the page's requests to hookline with their answer (status, or the error that failed
// them: a CORS refusal shows here).
"use strict";
const http = require("node:http");
const fs = require("node:fs");
const path = require("node:path");
const puppeteer = require("puppeteer-core");

const [hookline, writeKey, pagePort, count, mode] = process.argv.slice(2);
/// How long the page may take; a deadline for the test to fail by, not a wait.
const DEADLINE_MS = 30000;
const bundle = require.resolve("@segment/analytics-next/dist/umd/standalone.js");
const umd = path.dirname(bundle);

const page = `<!doctype html><html><head><meta charset="utf-8"><title>shop</title>
<link rel="icon" href="data:,"><script src="/analytics/index.js"></script></head><body>
<script>
window.sendAll = async (writeKey, cdnURL, count, cdnSettings) => {
  const [analytics] = await AnalyticsNext.AnalyticsBrowser.load(
    cdnSettings ? { writeKey, cdnSettings } : { writeKey, cdnURL });
  let delivered = 0;
  for (let i = 0; i < count; i++) {
    const kind = ["track", "page", "identify"][i % 3];
    const ctx = kind === "track"
      ? await analytics.track("Product Viewed", { n: i })
      : kind === "page"
        ? await analytics.page("Shop", "Home", { n: i })
        : await analytics.identify("user-" + i, { n: i });
    if (!ctx.failedDelivery()) delivered++;
  }
  return delivered;
};
</script></body></html>`;

const server = http.createServer((req, res) => {
  if (req.url === "/") {
    res.writeHead(200, { "content-type": "text/html" });
    return res.end(page);
  }
  const file = req.url.startsWith("/analytics/")
    ? path.join(umd, path.basename(req.url))
    : null;
  if (file && fs.existsSync(file)) {
    res.writeHead(200, { "content-type": "text/javascript" });
    return fs.createReadStream(file).pipe(res);
  }
  res.writeHead(404);
  res.end();
});

async function main() {
  await new Promise((ok) => server.listen(Number(pagePort), "127.0.0.1", ok));
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const consoleErrors = [];
  const requests = [];
  try {
    const tab = await browser.newPage();
    tab.on("console", (m) => {
      if (m.type() === "error") consoleErrors.push(m.text());
    });
    tab.on("pageerror", (e) => consoleErrors.push(String(e)));
    tab.on("response", (r) => {
      if (r.status() >= 400 && !r.url().startsWith(hookline)) {
        consoleErrors.push(`${r.status()} from ${r.url()}`);
      }
      if (r.url().startsWith(hookline)) {
        requests.push({ method: r.request().method(), url: r.url(), status: r.status() });
      }
    });
    tab.on("requestfailed", (r) => {
      if (r.url().startsWith(hookline)) {
        requests.push({ method: r.method(), url: r.url(), failed: r.failure()?.errorText });
      }
    });
    await tab.goto(`http://127.0.0.1:${pagePort}/`, { waitUntil: "load" });
    const deadline = Date.now() + DEADLINE_MS;
    let delivered = 0;
    if (mode === "refused") {
      const host = new URL(hookline).host;
      const settings = {
        integrations: { "Segment.io": { apiKey: writeKey, apiHost: `${host}/v1`, protocol: "http" } },
      };
      tab.evaluate((k, u, n, s) => { window.sendAll(k, u, n, s); }, writeKey, hookline, Number(count), settings);
      // analytics.js retries a refused event with a backoff: each event's first refusal is
      // what is waited for.
      const refused = () => requests.filter((r) => r.method === "POST" && (r.failed || r.status >= 400)).length;
      while (refused() < Number(count) && Date.now() < deadline) {
        await new Promise((ok) => setTimeout(ok, 50));
      }
    } else {
      let timer;
      delivered = await Promise.race([
        tab.evaluate((k, u, n) => window.sendAll(k, u, n), writeKey, hookline, Number(count)),
        new Promise((ok) => { timer = setTimeout(() => ok(-1), DEADLINE_MS); }),
      ]);
      clearTimeout(timer);
    }
    console.log(JSON.stringify({ sent: Number(count), delivered, consoleErrors, requests }));
  } finally {
    await browser.close();
    server.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
