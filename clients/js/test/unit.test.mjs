// Pure parts: MD5, both signatures, the retry policy, the EAS protobuf codec.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, createHmac, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { canonicalQuery, easHeaders, liqiHeaders, md5Hex, retryDelayMs, TFRequest } from "../dist/index.js";
import { decodePredictResponse } from "../dist/eas.js";
import { descriptorSource } from "../scripts/gen-proto.mjs";
import { CLIENT_DIR, PYTHON, pythonEnv, REPO } from "./support/processes.mjs";

test("MD5: the RFC 1321 test suite", () => {
  const vectors = {
    "": "d41d8cd98f00b204e9800998ecf8427e",
    a: "0cc175b9c0f1b6a831c399e269772661",
    abc: "900150983cd24fb0d6963f7d28e17f72",
    "message digest": "f96b697d7cb7938d525a2f31aaf161d0",
    abcdefghijklmnopqrstuvwxyz: "c3fcd3d76192e4007dfb496cca67e13b",
    ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789: "d174ab98d277d9f5a5611c2c9f419d9f",
    "12345678901234567890123456789012345678901234567890123456789012345678901234567890": "57edf4a22be3c955ac49da2e2107b67a",
  };
  for (const [text, digest] of Object.entries(vectors)) assert.equal(md5Hex(text), digest, JSON.stringify(text));
});

test("MD5 agrees with node:crypto at every length around the 64-byte blocks and on 1 MiB", () => {
  for (let length = 0; length <= 200; length++) {
    const data = randomBytes(length);
    assert.equal(md5Hex(new Uint8Array(data)), createHash("md5").update(data).digest("hex"), `length ${length}`);
  }
  const big = randomBytes(1 << 20);
  assert.equal(md5Hex(big), createHash("md5").update(big).digest("hex"));
  assert.equal(md5Hex("héllo ✓"), createHash("md5").update("héllo ✓").digest("hex"));
});

test("EAS signature: base64 HMAC-SHA1 over METHOD, md5, content type, date and path", async () => {
  const body = new TextEncoder().encode("some body");
  const date = "Wed, 25 Nov 2026 12:00:00 GMT";
  const headers = await easHeaders("tok3n", { method: "POST", path: "/api/predict/mnist", body, contentType: "application/octet-stream", date });
  const md5 = createHash("md5").update(body).digest("hex");
  const expected = createHmac("sha1", "tok3n").update(`POST\n${md5}\napplication/octet-stream\n${date}\n/api/predict/mnist`).digest("base64");
  assert.deepEqual(headers, { "Content-MD5": md5, Date: date, "Content-Type": "application/octet-stream", Authorization: `EAS ${expected}` });
});

test("LIQI1 canonical query: the examples of docs/auth.md", () => {
  assert.equal(canonicalQuery("b=2&a=x y&a=1&c="), "a=1&a=x%20y&b=2&c=");
  assert.equal(canonicalQuery("q=a+b&z=%7E&k=%2F"), "k=%2F&q=a%20b&z=~");
  assert.equal(canonicalQuery(""), "");
  assert.equal(canonicalQuery("x=it's(*)!"), "x=it%27s%28%2A%29%21");
});

test("LIQI1 headers: HMAC-SHA256 of the seven-line string to sign", async () => {
  const now = new Date(Date.UTC(2026, 10, 25, 12, 0, 5));
  const body = new TextEncoder().encode('{"a":1}');
  const headers = await liqiHeaders({ accessId: "LQID", secret: "s3cret", method: "post", path: "/api/v1/jobs", rawQuery: "b=2&a=1", body, now, nonce: "n0nce" });
  const sha = createHash("sha256").update(body).digest("hex");
  const text = ["LIQI1-HMAC-SHA256", "20261125T120005Z", "n0nce", "POST", "/api/v1/jobs", "a=1&b=2", sha].join("\n");
  assert.deepEqual(headers, {
    authorization: `LIQI1-HMAC-SHA256 LQID:${createHmac("sha256", "s3cret").update(text).digest("hex")}`,
    "x-liqi-date": "20261125T120005Z",
    "x-liqi-nonce": "n0nce",
    "x-liqi-content-sha256": sha,
  });
  const fresh = await liqiHeaders({ accessId: "LQID", secret: "s", method: "GET", path: "/", rawQuery: "", body: new Uint8Array(), now });
  assert.match(fresh["x-liqi-nonce"], /^[0-9a-f]{24}$/);
  assert.equal(fresh["x-liqi-content-sha256"], "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
});

test("retry delays: bounded exponential backoff with jitter; Retry-After when longer", () => {
  const now = Date.UTC(2026, 0, 1);
  assert.equal(retryDelayMs(0, null, now, () => 1), 100);
  assert.equal(retryDelayMs(0, null, now, () => 0), 50);
  assert.equal(retryDelayMs(3, null, now, () => 1), 800);
  assert.equal(retryDelayMs(20, null, now, () => 1), 2000);
  assert.equal(retryDelayMs(0, "2", now, () => 1), 2000);
  assert.equal(retryDelayMs(0, "0", now, () => 1), 100);
  assert.equal(retryDelayMs(0, new Date(now + 5000).toUTCString(), now, () => 1), 5000);
  assert.equal(retryDelayMs(0, "3600", now, () => 1), 30_000);
  assert.equal(retryDelayMs(0, "soon", now, () => 1), 100);
});

test("the committed protobuf descriptor matches src/liqi/protocols/eas_predict.proto", () => {
  const proto = readFileSync(join(REPO, "src", "liqi", "protocols", "eas_predict.proto"), "utf8");
  assert.equal(readFileSync(join(CLIENT_DIR, "src", "eas_descriptor.ts"), "utf8"), descriptorSource(proto), "run npm run build");
});

test("TFRequest bytes parse in liqi's Python decoder with every carried dtype", () => {
  const request = new TFRequest("sig")
    .addFeed("f", [2], TFRequest.DT_FLOAT, new Float32Array([0.5, -1.25]))
    .addFeed("d", [1], "float64", [1e300])
    .addFeed("i8", [2], TFRequest.DT_INT8, [-128, 127])
    .addFeed("u8", [1], TFRequest.DT_UINT8, [255])
    .addFeed("i64", [2], TFRequest.DT_INT64, [2n ** 62n, -3n])
    .addFeed("b", [2], TFRequest.DT_BOOL, [true, false])
    .addFeed("s", [2, 1], TFRequest.DT_STRING, ["héllo", ""])
    .addFetch("out");
  const script = `
import json, sys
from liqi.protocols import eas
r = eas.decode_predict_request(sys.stdin.buffer.read())
print(json.dumps({"sig": r.signature_name, "filter": list(r.output_filter), "inputs": {
    n: [str(a.dtype), list(a.shape), [v.decode() if isinstance(v, bytes) else v for v in a.ravel().tolist()]]
    for n, a in r.inputs.items()}}))`;
  const result = spawnSync(PYTHON, ["-c", script], { input: request.toBytes(), env: pythonEnv(), encoding: "utf8", timeout: 60_000 });
  assert.equal(result.status, 0, result.stderr);
  assert.deepEqual(JSON.parse(result.stdout), {
    sig: "sig",
    filter: ["out"],
    inputs: {
      f: ["float32", [2], [0.5, -1.25]],
      d: ["float64", [1], [1e300]],
      i8: ["int8", [2], [-128, 127]],
      u8: ["uint8", [1], [255]],
      i64: ["int64", [2], [2 ** 62, -3]],
      b: ["bool", [2], [true, false]],
      s: ["object", [2, 1], ["héllo", ""]],
    },
  });
});

test("PredictResponse bytes from liqi's Python encoder decode to typed arrays", () => {
  const script = `
import sys, numpy as np
from liqi.protocols import eas
sys.stdout.buffer.write(eas.encode_predict_response({
    "f": np.array([[1.5, 2.5]], np.float32), "i64": np.array([2**62, -1], np.int64),
    "i16": np.array([-7], np.int16), "b": np.array([True, False]), "s": np.array([b"x", "é".encode()], object)}))`;
  const result = spawnSync(PYTHON, ["-c", script], { env: pythonEnv(), timeout: 60_000 });
  assert.equal(result.status, 0, String(result.stderr));
  const out = decodePredictResponse(new Uint8Array(result.stdout));
  assert.deepEqual(out.f, { dtype: "float32", shape: [1, 2], data: new Float32Array([1.5, 2.5]) });
  assert.deepEqual(out.i64, { dtype: "int64", shape: [2], data: new BigInt64Array([2n ** 62n, -1n]) });
  assert.deepEqual(out.i16, { dtype: "int16", shape: [1], data: new Int16Array([-7]) });
  assert.deepEqual(out.b, { dtype: "bool", shape: [2], data: new Uint8Array([1, 0]) });
  assert.deepEqual(out.s, { dtype: "string", shape: [2], data: ["x", "é"] });
});

test("V2 binary answers decode to typed arrays: FP32, INT64, BOOL, BYTES and JSON data", async () => {
  const { decodeInfer } = await import("../dist/v2.js");
  const header = Buffer.from(JSON.stringify({
    outputs: [
      { name: "f", datatype: "FP32", shape: [2], parameters: { binary_data_size: 8 } },
      { name: "i", datatype: "INT64", shape: [1], parameters: { binary_data_size: 8 } },
      { name: "b", datatype: "BOOL", shape: [2], parameters: { binary_data_size: 2 } },
      { name: "s", datatype: "BYTES", shape: [1], parameters: { binary_data_size: 6 } },
      { name: "j", datatype: "INT32", shape: [1, 2], data: [3, 4] },
    ],
  }));
  const blob = Buffer.alloc(24);
  blob.writeFloatLE(1.5, 0);
  blob.writeFloatLE(-2, 4);
  blob.writeBigInt64LE(-(2n ** 40n), 8);
  blob.writeUInt8(1, 16);
  blob.writeUInt32LE(2, 18);
  blob.write("ok", 22);
  const out = decodeInfer(new Uint8Array(Buffer.concat([header, blob])), header.length);
  assert.deepEqual(out.f, { dtype: "float32", shape: [2], data: new Float32Array([1.5, -2]) });
  assert.deepEqual(out.i, { dtype: "int64", shape: [1], data: new BigInt64Array([-(2n ** 40n)]) });
  assert.deepEqual(out.b, { dtype: "bool", shape: [2], data: new Uint8Array([1, 0]) });
  assert.deepEqual(out.s, { dtype: "string", shape: [1], data: ["ok"] });
  assert.deepEqual(out.j, { dtype: "int32", shape: [1, 2], data: new Int32Array([3, 4]) });
  assert.throws(() => decodeInfer(new Uint8Array(Buffer.concat([header, blob.subarray(0, 10)])), header.length), /truncated/);
});
