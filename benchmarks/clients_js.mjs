// JS client overhead: requests/s of `PredictClient.predict` (clients/js, built) in a sequential
// loop against a raw `fetch` POST of the same pre-encoded body, against the same `liqi serve`.
//
// Target (issue 8, as for the Python client): PredictClient / raw fetch >= 0.9, for EAS protobuf
// and TF Serving JSON, 1 and 32 rows. The client's loop includes what it does for the caller:
// checking and encoding the arrays, headers, decoding the answer into typed arrays. The raw loop
// posts bytes encoded once and reads the answer's bytes. Both use Node's global fetch (undici,
// one kept-alive connection in a sequential loop). Rounds alternate between the two and the
// medians are compared. The benchmark process's CPU time per call is reported too: the
// client's own cost, steadier than the rate when other work shares the machine.
//
// Run against a `liqi serve` of the MNIST model named mnist (benchmarks/clients_js.py starts
// one): cd clients/js && npm run build; cd ../..
//        node benchmarks/clients_js.mjs --endpoint http://127.0.0.1:8080 [--seconds 2]
//        [--rounds 5] [--out FILE]   (appends the Markdown section to FILE)
import { appendFileSync } from "node:fs";
import { loadavg } from "node:os";
import { parseArgs } from "node:util";

import { encodePredictRequest, PredictClient } from "../clients/js/dist/index.js";
import { testImages } from "../clients/js/test/support/mnist.mjs";

const CASES = [
  ["eas", "EAS protobuf"],
  ["tfserving", "TF Serving JSON"],
];

const { values: args } = parseArgs({
  options: {
    endpoint: { type: "string" },
    service: { type: "string", default: "mnist" },
    seconds: { type: "string", default: "2" },
    rounds: { type: "string", default: "5" },
    out: { type: "string" },
  },
});
if (!args.endpoint) {
  console.error("--endpoint is required: the URL of a `liqi serve` of the MNIST model, e.g. http://127.0.0.1:8080");
  process.exit(2);
}
const endpoint = args.endpoint.replace(/\/+$/, "");
const seconds = Number(args.seconds);
// Node's fetch (undici) and the client take a few thousand calls to be compiled and settled.
const WARM_UP_S = 2;
const rounds = Number(args.rounds);

/** Calls per second of `call` over `durationS` (after 20 warm-up calls), and this process's
 * CPU time per call in µs (user + system: the client's own cost, which the server's load
 * does not blur as much as the rate). */
async function callsPerS(call, durationS) {
  for (let i = 0; i < 20; i++) await call();
  let calls = 0;
  const cpu = process.cpuUsage();
  const start = performance.now();
  const deadline = start + durationS * 1000;
  for (;;) {
    await call();
    calls++;
    const now = performance.now();
    if (now >= deadline) {
      const used = process.cpuUsage(cpu);
      return { rate: (calls * 1000) / (now - start), cpuUs: (used.user + used.system) / calls };
    }
  }
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** The raw request: URL, content type and body of the same call, encoded once. */
function rawRequest(protocol, data, shape) {
  const name = encodeURIComponent(args.service);
  if (protocol === "eas") {
    const body = encodePredictRequest("", { images: { dtype: "float32", shape, data } });
    return { url: `${endpoint}/api/predict/${name}`, contentType: "application/octet-stream", body };
  }
  const rows = Array.from({ length: shape[0] }, (_, r) => Array.from(data.subarray(r * shape[1], (r + 1) * shape[1])));
  const body = new TextEncoder().encode(JSON.stringify({ inputs: { images: rows } }));
  return { url: `${endpoint}/v1/models/${name}:predict`, contentType: "application/json", body };
}

async function measure(protocol, data, shape) {
  const raw = rawRequest(protocol, data, shape);
  const headers = { "Content-Type": raw.contentType };
  const rawCall = async () => {
    const response = await fetch(raw.url, { method: "POST", headers, body: raw.body });
    const answer = await response.arrayBuffer();
    if (response.status !== 200) throw new Error(`${raw.url} answered ${response.status}: ${new TextDecoder().decode(answer)}`);
    return answer;
  };
  const client = new PredictClient({ endpoint, service: args.service, protocol, timeoutMs: 30_000 });
  const inputs = { images: { data, shape } };
  const clientCall = () => client.predict(inputs);
  for (const warm of [rawCall, clientCall]) await callsPerS(warm, WARM_UP_S);
  const raws = [];
  const clients = [];
  for (let round = 0; round < rounds; round++) {
    raws.push(await callsPerS(rawCall, seconds));
    clients.push(await callsPerS(clientCall, seconds));
  }
  const medians = (results) => ({ rate: median(results.map((r) => r.rate)), cpuUs: median(results.map((r) => r.cpuUs)) });
  return [medians(raws), medians(clients)];
}

const loadBefore = loadavg()[0];
const lines = [];
for (const count of [1, 32]) {
  const { data, shape } = testImages(count);
  for (const [protocol, label] of CASES) {
    const [raw, client] = await measure(protocol, data, shape);
    lines.push(
      `| ${label}, ${count} row(s) | ${raw.rate.toFixed(0)} | ${client.rate.toFixed(0)} | ${(client.rate / raw.rate).toFixed(2)} ` +
        `| ${raw.cpuUs.toFixed(0)} | ${client.cpuUs.toFixed(0)} | +${(client.cpuUs - raw.cpuUs).toFixed(0)} |`,
    );
    console.error(lines.at(-1));
  }
}
const loadAfter = loadavg()[0];

const section = [
  `\n## JS client overhead (\`benchmarks/clients_js.mjs\`), ${new Date().toISOString().slice(0, 10)}`,
  "",
  "Target (issue 8): requests/s of the JS `PredictClient.predict` in a loop >= 0.9 of a raw",
  "`fetch` POST of the same pre-encoded body (Node's undici, one kept-alive connection), against",
  `the same \`liqi serve\` subprocess (medians of ${rounds} alternating rounds of ${seconds} s).`,
  `Node ${process.version}; load average (1 min) ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after.`,
  "CPU µs/call: the benchmark process's user + system time per call (median of the rounds).",
  "",
  "| case | raw fetch req/s | PredictClient req/s | client / raw | raw CPU µs/call | client CPU µs/call | client adds µs |",
  "|---|---|---|---|---|---|---|",
  ...lines,
  "",
].join("\n");
console.log(section);
if (args.out) appendFileSync(args.out, section);
