// The browser bundle in a real headless Chromium: examples/mnist/clients/browser.html, served
// by a static server on one origin, calls `liqi serve` on another, which allows it with
// --cors-origin. A page from an origin the server does not allow is blocked by the browser.
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { createReadStream, statSync } from "node:fs";
import { createServer } from "node:http";
import { extname, join, normalize, sep } from "node:path";
import { after, before, test } from "node:test";

import { PredictClient } from "../dist/index.js";
import { argmaxRows, testImages } from "./support/mnist.mjs";
import { exportMnist, REPO, removeDir, startServe, stop, tempDir } from "./support/processes.mjs";

const CHROMIUM = "chromium";
const TOKEN = "js-browser-token";
const COUNT = 8;
const PAGE = "/examples/mnist/clients/browser.html";
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json", ".gz": "application/gzip" };

let workDir;
let server;
let allowed; // a static server on the origin liqi serve allows
let other; // the same files on an origin it does not

/** A static file server rooted at the repository, on a free port of 127.0.0.1. */
function startStatic() {
  const http = createServer((request, response) => {
    const path = normalize(join(REPO, decodeURIComponent(new URL(request.url, "http://x").pathname)));
    let isFile = false;
    try {
      isFile = path.startsWith(REPO + sep) && statSync(path).isFile();
    } catch {
      // missing: 404 below
    }
    if (!isFile) return response.writeHead(404).end("not found");
    response.writeHead(200, { "Content-Type": TYPES[extname(path)] ?? "application/octet-stream" });
    createReadStream(path).pipe(response);
  });
  return new Promise((resolve) => {
    http.listen(0, "127.0.0.1", () => resolve({ http, origin: `http://127.0.0.1:${http.address().port}` }));
  });
}

/** Open the example page in headless Chromium; the outcome line of its <pre id="result">. */
async function openPage(origin, protocol = "eas") {
  const query = new URLSearchParams({ endpoint: server.endpoint, service: "mnist", token: TOKEN, protocol, count: String(COUNT) });
  const profile = join(workDir, `chromium-${Date.now()}`);
  const args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    `--user-data-dir=${profile}`, "--virtual-time-budget=60000", "--dump-dom", `${origin}${PAGE}?${query}`];
  const dom = await new Promise((resolve, reject) => {
    execFile(CHROMIUM, args, { timeout: 120_000, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${CHROMIUM} failed (${error.code ?? error.signal}): ${stderr.slice(-2000)}`));
      else resolve(stdout);
    });
  });
  removeDir(profile);
  const line = /<pre id="result">([^<]*)<\/pre>/.exec(dom)?.[1];
  assert.ok(line, `no <pre id="result"> in the page:\n${dom.slice(0, 3000)}`);
  const text = line.replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&amp;", "&");
  return { text, figures: dom.match(/<figure>/g)?.length ?? 0 };
}

before(async () => {
  if (spawnSync(CHROMIUM, ["--version"]).error) {
    throw new Error(`'${CHROMIUM}' not found: the browser test needs Chromium; run scripts/setup-test-env (as root) to install it.`);
  }
  workDir = tempDir("liqi-js-browser-");
  [allowed, other] = await Promise.all([startStatic(), startStatic()]);
  server = await startServe(exportMnist(join(workDir, "export")), { token: TOKEN, corsOrigins: [allowed.origin] });
}, { timeout: 300_000 });

after(async () => {
  await stop(server?.proc);
  allowed?.http.close();
  other?.http.close();
  removeDir(workDir);
});

for (const protocol of ["eas", "tfserving", "v2"]) {
  test(`${protocol}: the page predicts what the Node client gets from the same server`, async () => {
    const { text, figures } = await openPage(allowed.origin, protocol);
    assert.match(text, /^RESULT /, text);
    const result = JSON.parse(text.slice("RESULT ".length));

    const { data, shape, labels } = testImages(COUNT);
    const node = new PredictClient({ endpoint: server.endpoint, service: "mnist", token: TOKEN, protocol });
    const { scores } = await node.predict({ images: { data, shape } });
    assert.deepEqual(result.labels, labels);
    assert.deepEqual(result.predicted, argmaxRows(scores));
    assert.equal(figures, COUNT);
  });
}

test("a page from an origin not in --cors-origin is blocked by the browser", async () => {
  const { text, figures } = await openPage(other.origin);
  assert.match(text, /^ERROR Service 'mnist' at .*\/api\/predict\/mnist could not be reached/, text);
  assert.equal(figures, 0);
});
