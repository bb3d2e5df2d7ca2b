// Request encodings written for speed against the plain ones: the PredictRequest with float and
// double values copied as bytes against protobufjs writing every field (same bytes), and TF
// Serving JSON from typed arrays against JSON.stringify of nested lists (same text).
import assert from "node:assert/strict";
import { test } from "node:test";

import protobuf from "protobufjs";

import { EAS_DESCRIPTOR } from "../dist/eas_descriptor.js";
import { encodePredictRequest, LiqiError, TFRequest } from "../dist/index.js";
import { nestedJson } from "../dist/nested.js";
import { normalizeInputs } from "../dist/tensors.js";

const root = protobuf.Root.fromJSON(EAS_DESCRIPTOR);
const PredictRequest = root.lookupType("tensorflow.eas.PredictRequest");
const read = (bytes) => PredictRequest.toObject(PredictRequest.decode(bytes), { longs: String, arrays: true, bytes: String });

const floats = Float32Array.from({ length: 2 * 784 }, (_, i) => (i % 7) / 7 - 0.5);

const cases = {
  "float32 [2, 784]": { images: { data: floats, shape: [2, 784] } },
  "a float32 view at an offset": { images: { data: floats.subarray(3, 3 + 784), shape: [1, 784] } },
  "float64, int32, int64, bool, string": {
    d: { data: new Float64Array([1.5, -2.25, 1e-300]), shape: [3] },
    i: { data: new Int32Array([1, -2, 2 ** 31 - 1]), shape: [1, 3] },
    l: { data: [1n, -(2n ** 63n)], shape: [2] },
    b: { data: [true, false], shape: [2] },
    s: { data: ["a", "é"], shape: [2, 1] },
  },
  "empty and scalar": { e: { data: new Float32Array(0), shape: [0, 4] }, x: { data: [3], shape: [] } },
};

/** The ArrayProto object protobufjs is given for a tensor (what the client sent before). */
const FIELDS = { float32: [1, "float_val"], float64: [2, "double_val"], int32: [3, "int_val"], int64: [9, "int64_val"], bool: [10, "bool_val"], string: [7, "string_val"] };
function arrayProto({ dtype, shape, data }) {
  const [number, field] = FIELDS[dtype];
  const values =
    dtype === "int64" ? Array.from(data, String) : dtype === "bool" ? Array.from(data, (v) => v !== 0) : dtype === "string" ? data.map((s) => Buffer.from(s)) : Array.from(data);
  return { dtype: number, array_shape: { dim: shape }, [field]: values };
}

for (const [name, inputs] of Object.entries(cases)) {
  test(`${name}: the bytes protobufjs writes`, () => {
    const tensors = normalizeInputs(inputs);
    const ours = encodePredictRequest("predict_images", tensors, ["scores", "x"]);
    const expected = PredictRequest.encode({
      signature_name: "predict_images",
      inputs: Object.fromEntries(Object.entries(tensors).map(([key, tensor]) => [key, arrayProto(tensor)])),
      output_filter: ["scores", "x"],
    }).finish();
    assert.deepEqual(Buffer.from(ours), Buffer.from(expected));
  });
}

test("float values arrive as written; an empty signature name is left out", () => {
  const bytes = encodePredictRequest("", normalizeInputs(cases["float32 [2, 784]"]));
  const message = read(bytes);
  assert.equal(message.signature_name, undefined);
  assert.deepEqual(message.inputs.images.array_shape.dim, ["2", "784"]);
  assert.deepEqual(Float32Array.from(message.inputs.images.float_val), floats);
  assert.deepEqual(read(new TFRequest().addFeed("x", [2], TFRequest.DT_DOUBLE, [0.1, 0.2]).toBytes()).inputs.x.double_val, [0.1, 0.2]);
});

function nested(data, shape) {
  if (shape.length === 0) return data[0];
  const size = data.length / shape[0];
  return Array.from({ length: shape[0] }, (_, i) => nested(data.slice(i * size, (i + 1) * size), shape.slice(1)));
}

test("TF Serving JSON of typed arrays: the text of JSON.stringify", () => {
  const cases = [
    { data: floats.subarray(5, 11), shape: [2, 3] },
    { data: new Float64Array([0.1, -1e-7, 1e21, 5e-324]), shape: [2, 1, 2] },
    { data: new Int32Array([1, -2, 3]), shape: [3] },
    { data: new BigInt64Array([2n ** 40n, -3n]), shape: [1, 2] },
    { data: new Uint8Array([0, 255]), shape: [2] },
    { data: new Float32Array(0), shape: [0, 4] },
    { data: new Float32Array(0), shape: [2, 0] },
    { data: new Float32Array([2.5]), shape: [] },
  ];
  for (const { data, shape } of cases) {
    const dtype = normalizeInputs({ t: { data, shape } }).t.dtype;
    const values = Array.from(data, (v) => (typeof v === "bigint" ? Number(v) : v));
    const expected = JSON.stringify(nested(values, shape));
    assert.equal(nestedJson("t", { dtype, shape, data }), expected, `${dtype} ${JSON.stringify(shape)}`);
  }
  assert.equal(nestedJson("b", { dtype: "bool", shape: [2], data: new Uint8Array([1, 0]) }), "[true,false]");
  assert.equal(nestedJson("l", { dtype: "int64", shape: [1], data: new BigInt64Array([2n ** 62n + 1n]) }), "[4611686018427387905]");
});

test("TF Serving JSON refuses NaN and infinities, naming the input", () => {
  for (const bad of [NaN, Infinity, -Infinity]) {
    const data = new Float32Array([1, 2, bad, 4]);
    assert.throws(() => nestedJson("images", { dtype: "float32", shape: [2, 2], data }), (error) => {
      assert.ok(error instanceof LiqiError);
      assert.equal(error.code, "invalid_input");
      assert.equal(error.message, `Input 'images' holds ${bad}, which JSON cannot carry.`);
      return true;
    });
  }
});
