// Signatures from the three protocols' metadata, and the client-side input check.
import assert from "node:assert/strict";
import { test } from "node:test";

import { checkInputs, readSignature } from "../dist/signature.js";

const EAS = {
  signature_name: "serving_default",
  inputs: [{ name: "images", shape: [-1, 784], type: "DT_FLOAT" }],
  outputs: [{ name: "scores", shape: [-1, 10], type: "DT_FLOAT" }],
};
const V2 = {
  name: "mnist",
  inputs: [{ name: "images", datatype: "FP32", shape: [-1, 784] }],
  outputs: [{ name: "scores", datatype: "FP32", shape: [-1, 10] }],
};
const TFS = {
  metadata: {
    signature_def: {
      signature_def: {
        other: { inputs: {}, outputs: {} },
        serving_default: {
          inputs: { images: { dtype: "DT_FLOAT", tensor_shape: { dim: [{ size: "-1" }, { size: "784" }] } } },
          outputs: { scores: { dtype: "DT_FLOAT", tensor_shape: { unknown_rank: true } } },
        },
      },
    },
  },
};

const images = (rows, width = 784, dtype = "float32") => ({ images: { dtype, shape: [rows, width], data: new Float32Array(rows * width) } });

test("the three protocols' metadata give the same signature", () => {
  for (const [protocol, document] of [["eas", EAS], ["v2", V2], ["tfserving", TFS]]) {
    const signature = readSignature(protocol, document);
    assert.deepEqual(signature.inputs.get("images"), { dtype: "float32", shape: [null, 784] }, protocol);
    assert.equal(signature.outputs.get("scores").dtype, "float32");
  }
  assert.equal(readSignature("tfserving", TFS).outputs.get("scores").shape, null);
  assert.equal(readSignature("tfserving", TFS).name, "serving_default");
  assert.equal(readSignature("tfserving", TFS, "other").name, "other");
  assert.equal(readSignature("tfserving", TFS, "missing"), null);
});

test("a custom processor's answer has no signature; a broken document is a bad_response", () => {
  assert.equal(readSignature("eas", "a processor's own text"), null);
  assert.equal(readSignature("eas", { status: "ok" }), null);
  assert.throws(() => readSignature("v2", [1, 2]), { code: "bad_response" });
  assert.throws(() => readSignature("tfserving", { metadata: {} }), { code: "bad_response", message: /not in the expected format/ });
  assert.throws(() => readSignature("eas", { inputs: [{ name: "x", shape: [1], type: "DT_NOPE" }], outputs: [] }), {
    code: "bad_response",
    message: /no dtype for tensor 'x'/,
  });
});

test("inputs that fit pass; wrong shapes, names and kinds are refused before sending", () => {
  const signature = readSignature("eas", EAS);
  checkInputs(signature, images(3), "mnist");
  checkInputs(signature, images(1, 784, "float64"), "mnist"); // cast within its kind by the server
  assert.throws(() => checkInputs(signature, images(2, 28), "mnist"), {
    code: "invalid_input",
    message:
      "Input 'images' expects shape/dtype [-1, 784] float32, received [2, 28] float32. (checked against the signature 'serving_default' of service 'mnist' before sending; nothing was sent)",
  });
  const flat = { images: { dtype: "float32", shape: [784], data: new Float32Array(784) } };
  assert.throws(() => checkInputs(signature, flat, "mnist"), /expects shape\/dtype \[-1, 784\]/);
  const strings = { images: { dtype: "string", shape: [1, 784], data: Array(784).fill("x") } };
  assert.throws(() => checkInputs(signature, strings, "mnist"), /received \[1, 784\] string/);
  assert.throws(() => checkInputs(signature, { ...images(1), extra: images(1).images }, "mnist"), /Unknown input 'extra'. The model's inputs are: images/);
  assert.throws(() => checkInputs(signature, {}, "mnist"), /Missing input 'images'/);
  const anyShape = readSignature("v2", { inputs: [{ name: "images", datatype: "FP32", shape: null }], outputs: [] });
  checkInputs(anyShape, images(5, 3), "mnist");
});
