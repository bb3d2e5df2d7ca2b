#!/usr/bin/env node
// Predict digits for a few MNIST test images with the liqi JavaScript client and print them
// next to their labels.
//
//   node examples/mnist/clients/node_predict.mjs --endpoint http://127.0.0.1:8080 --service mnist \
//       [--token T] [--protocol eas|tfserving|v2] [--count 5]
//
// Each flag can come from the environment instead: LIQI_ENDPOINT, LIQI_SERVICE, LIQI_TOKEN,
// LIQI_PROTOCOL, LIQI_COUNT. Images are read from the built-in test set of this repository
// (src/liqi/datasets/mnist/test) or from --data DIR holding t10k-*-idx*-ubyte.gz.
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { gunzipSync } from "node:zlib";

// The installed package, else this repository's build (npm run build in clients/js).
const here = dirname(fileURLToPath(import.meta.url));
const { PredictClient } = await import("@liqi/client").catch(() =>
  import(new URL("../../../clients/js/dist/index.js", import.meta.url).href),
);

const { values: args } = parseArgs({
  options: {
    endpoint: { type: "string", default: process.env.LIQI_ENDPOINT ?? "http://127.0.0.1:8080" },
    service: { type: "string", default: process.env.LIQI_SERVICE ?? "mnist" },
    token: { type: "string", default: process.env.LIQI_TOKEN },
    protocol: { type: "string", default: process.env.LIQI_PROTOCOL ?? "eas" },
    count: { type: "string", default: process.env.LIQI_COUNT ?? "5" },
    data: { type: "string", default: resolve(here, "../../../src/liqi/datasets/mnist/test") },
  },
});

function readIdx(path) {
  const bytes = gunzipSync(readFileSync(path));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims = view.getUint8(3);
  const shape = Array.from({ length: dims }, (_, i) => view.getUint32(4 + 4 * i));
  return { shape, data: bytes.subarray(4 + 4 * dims) };
}

const count = Number(args.count);
const images = readIdx(join(args.data, "t10k-images-idx3-ubyte.gz"));
const labels = readIdx(join(args.data, "t10k-labels-idx1-ubyte.gz")).data;
const pixels = images.shape[1] * images.shape[2];
const data = Float32Array.from(images.data.subarray(0, count * pixels), (v) => v / 255);

const client = new PredictClient({
  endpoint: args.endpoint,
  service: args.service,
  token: args.token,
  protocol: args.protocol,
});
const { scores } = await client.predict({ images: { data, shape: [count, pixels] } });

const classes = scores.shape[1];
for (let i = 0; i < count; i++) {
  const row = scores.data.subarray(i * classes, (i + 1) * classes);
  const predicted = row.indexOf(Math.max(...row));
  console.log(`image ${i}: predicted ${predicted}, label ${labels[i]}`);
}
