// Retries, timeouts and failures, against a tiny Node HTTP server that answers as told.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, beforeEach, test } from "node:test";

import { LiqiError, PredictClient } from "../dist/index.js";
import { freePort } from "./support/processes.mjs";

const V2_ANSWER = JSON.stringify({ model_name: "m", outputs: [{ name: "y", datatype: "FP32", shape: [2], data: [1.5, 2.5] }] });
let server;
let endpoint;
let requests;
let plan; // (requestNumber, request, response) => void

before(async () => {
  server = createServer((request, response) => {
    request.resume();
    request.on("end", () => plan(++requests, request, response));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  endpoint = `http://127.0.0.1:${server.address().port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  requests = 0;
});

const input = { x: { data: [1, 2], shape: [2] } };
// The transport's own behaviour: no signature read first, unless a test asks for it.
const client = (options = {}) =>
  new PredictClient({ endpoint, service: "m", protocol: "v2", retries: 3, timeoutMs: 2000, checkInputs: false, ...options });

function answer(response, status, body, headers = {}) {
  response.writeHead(status, { "content-type": "application/json", ...headers });
  response.end(body);
}

test("503 twice, then 200: the third attempt's outputs", async () => {
  plan = (n, _, response) => (n <= 2 ? answer(response, 503, '{"error": "queue full"}', { "retry-after": "0" }) : answer(response, 200, V2_ANSWER));
  const { y } = await client().predict(input);
  assert.equal(requests, 3);
  assert.deepEqual(Array.from(y.data), [1.5, 2.5]);
  assert.ok(y.data instanceof Float32Array);
});

test("503 every time: a LiqiError after retries + 1 attempts naming service, URL and status", async () => {
  plan = (_, __, response) => answer(response, 503, '{"error": "queue full"}', { "retry-after": "0" });
  const error = await client({ retries: 2 }).predict(input).catch((e) => e);
  assert.equal(requests, 3);
  assert.ok(error instanceof LiqiError);
  assert.equal(error.status, 503);
  assert.equal(error.code, "unavailable");
  assert.match(error.message, /Service 'm' at POST http:\/\/127\.0\.0\.1:\d+\/v2\/models\/m\/infer answered 503 after 3 attempts: queue full/);
});

test("Retry-After is honoured", async () => {
  plan = (n, _, response) => (n === 1 ? answer(response, 503, "busy", { "retry-after": "1" }) : answer(response, 200, V2_ANSWER));
  const started = Date.now();
  await client().predict(input);
  assert.equal(requests, 2);
  assert.ok(Date.now() - started >= 950, "waited less than the 1 s asked for");
});

for (const status of [400, 401, 404, 413]) {
  test(`${status} is not retried`, async () => {
    plan = (_, __, response) => answer(response, status, JSON.stringify({ error: `nope ${status}` }));
    const error = await client().predict(input).catch((e) => e);
    assert.equal(requests, 1);
    assert.equal(error.status, status);
    assert.match(error.message, new RegExp(`answered ${status}: nope ${status}`));
  });
}

test("a server that does not answer: timeout, retried, then a timeout error", async () => {
  plan = () => {}; // never answers
  const error = await client({ timeoutMs: 150, retries: 1 }).predict(input).catch((e) => e);
  assert.equal(requests, 2);
  assert.ok(error instanceof LiqiError);
  assert.equal(error.code, "timeout");
  assert.equal(error.status, 0);
  assert.match(error.message, /did not answer within 150 ms/);
});

test("wrong endpoint (nothing listening): network_error naming the URL", async () => {
  const port = await freePort();
  const wrong = new PredictClient({ endpoint: `http://127.0.0.1:${port}`, service: "m", retries: 1 });
  const error = await wrong.predict(input).catch((e) => e);
  assert.ok(error instanceof LiqiError);
  assert.equal(error.code, "network_error");
  assert.ok(error.message.includes(`http://127.0.0.1:${port}/api/predict/m`), error.message);
  assert.match(error.message, /ECONNREFUSED/);
});

test("an endpoint that is not a URL is refused at once", () => {
  assert.throws(() => new PredictClient({ endpoint: "localhost:8080x y", service: "m" }), (e) => e instanceof LiqiError && e.code === "invalid_input");
});

test("an answer in another protocol: bad_response", async () => {
  plan = (_, __, response) => answer(response, 200, "<html>proxy login</html>");
  for (const protocol of ["v2", "tfserving"]) {
    const error = await client({ protocol }).predict(input).catch((e) => e);
    assert.equal(error.code, "bad_response", `${protocol}: ${error.message}`);
  }
});

test("the caller's data and shape disagree: refused before any request", async () => {
  plan = (_, __, response) => answer(response, 200, V2_ANSWER);
  const error = await client().predict({ x: { data: [1, 2, 3], shape: [2, 2] } }).catch((e) => e);
  assert.equal(error.code, "invalid_input");
  assert.match(error.message, /shape \[2, 2\] \(4 elements\) but its data holds 3/);
  assert.equal(requests, 0);
});

test("metadata that cannot be read (500) leaves the inputs unchecked; a 404 on it is thrown", async () => {
  const methods = [];
  plan = (n, request, response) => {
    methods.push(request.method);
    if (request.method === "GET") return response.writeHead(500).end("metadata broke");
    response.writeHead(200, { "Content-Type": "application/json" }).end(V2_ANSWER);
  };
  const outputs = await client({ checkInputs: true, retries: 0 }).predict(input);
  assert.deepEqual(Array.from(outputs.y.data), [1.5, 2.5]);
  assert.deepEqual(methods, ["GET", "POST"]);

  plan = (n, request, response) => response.writeHead(404, { "Content-Type": "application/json" }).end('{"error": "no model m"}');
  const error = await client({ checkInputs: true }).predict(input).catch((e) => e);
  assert.equal(error.status, 404);
  assert.match(error.message, /no model m/);
});

test('signing "eas" in a browser is refused at once: browsers drop the Date header it signs', () => {
  globalThis.document = {};
  try {
    assert.throws(() => client({ token: "t", signing: "eas" }), { code: "invalid_input", message: /use signing "raw" or "bearer" in a browser/ });
    client({ token: "t", signing: "raw" });
    client({ signing: "eas" }); // no token: nothing is signed
  } finally {
    delete globalThis.document;
  }
  client({ token: "t", signing: "eas" });
});

test("V2 request body: JSON header of Inference-Header-Content-Length bytes, then little-endian tensors", async () => {
  let seen;
  server.removeAllListeners("request");
  server.on("request", (request, response) => {
    const chunks = [];
    request.on("data", (c) => chunks.push(c));
    request.on("end", () => {
      seen = { headers: request.headers, body: Buffer.concat(chunks) };
      answer(response, 200, V2_ANSWER);
    });
  });
  await client().predict({ x: { data: new Int32Array([1, -2]), shape: [1, 2] }, s: { data: ["hé"], shape: [1] } });
  const length = Number(seen.headers["inference-header-content-length"]);
  const header = JSON.parse(seen.body.subarray(0, length).toString());
  assert.deepEqual(header.inputs, [
    { name: "x", datatype: "INT32", shape: [1, 2], parameters: { binary_data_size: 8 } },
    { name: "s", datatype: "BYTES", shape: [1], parameters: { binary_data_size: 7 } },
  ]);
  const blob = seen.body.subarray(length);
  assert.deepEqual([blob.readInt32LE(0), blob.readInt32LE(4), blob.readUInt32LE(8)], [1, -2, 3]);
  assert.equal(blob.subarray(12).toString(), "hé");
});
