// The built-in MNIST test set, read from its gzipped IDX files.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";

import { REPO } from "./processes.mjs";

const DIR = join(REPO, "src", "liqi", "datasets", "mnist", "test");

function idx(file) {
  const bytes = gunzipSync(readFileSync(join(DIR, file)));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims = view.getUint8(3);
  const shape = Array.from({ length: dims }, (_, i) => view.getUint32(4 + 4 * i, false));
  return { shape, data: bytes.subarray(4 + 4 * dims) };
}

/** The first `count` test images as a Float32Array [count, 784] in [0, 1], and their labels. */
export function testImages(count) {
  const images = idx("t10k-images-idx3-ubyte.gz");
  const labels = idx("t10k-labels-idx1-ubyte.gz");
  const pixels = images.shape[1] * images.shape[2];
  const data = Float32Array.from(images.data.subarray(0, count * pixels), (v) => v / 255);
  return { data, shape: [count, pixels], labels: Array.from(labels.data.subarray(0, count)) };
}

/** Index of the largest score in each row of a [rows, classes] tensor. */
export function argmaxRows(tensor) {
  const [rows, classes] = tensor.shape;
  return Array.from({ length: rows }, (_, r) => {
    let best = 0;
    for (let c = 1; c < classes; c++) if (tensor.data[r * classes + c] > tensor.data[r * classes + best]) best = c;
    return best;
  });
}
