// Against a real `liqi serve` on the MNIST SavedModel exported by the seed's TF1 example.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";

import { LiqiError, PredictClient, TFRequest } from "../dist/index.js";
import { argmaxRows, testImages } from "./support/mnist.mjs";
import { exportMnist, REPO, removeDir, startServe, stop, tempDir } from "./support/processes.mjs";

const TOKEN = "js-test-token";
const COUNT = 50;
let workDir;
let server;

before(async () => {
  workDir = tempDir("liqi-js-serve-");
  server = await startServe(exportMnist(join(workDir, "export")), { token: TOKEN });
}, { timeout: 300_000 });

after(async () => {
  await stop(server?.proc);
  removeDir(workDir);
});

const client = (options = {}) => new PredictClient({ endpoint: server.endpoint, service: "mnist", token: TOKEN, ...options });

function accuracy(scores, labels) {
  const predicted = argmaxRows(scores);
  return predicted.filter((digit, i) => digit === labels[i]).length / labels.length;
}

describe("predictions for real MNIST test images", () => {
  const { data, shape, labels } = testImages(COUNT);

  for (const protocol of ["eas", "tfserving", "v2"]) {
    test(`${protocol}: typed outputs and accuracy >= 0.85`, async () => {
      const outputs = await client({ protocol }).predict({ images: { data, shape } });
      assert.deepEqual(Object.keys(outputs), ["scores"]);
      const { scores } = outputs;
      assert.equal(scores.dtype, "float32");
      assert.ok(scores.data instanceof Float32Array);
      assert.deepEqual(scores.shape, [COUNT, 10]);
      assert.ok(accuracy(scores, labels) >= 0.85, `accuracy ${accuracy(scores, labels)}`);
    });
  }

  test("the three protocols give the same scores", async () => {
    const few = { images: { data: data.subarray(0, 3 * 784), shape: [3, 784] } };
    const [eas, tf, v2] = await Promise.all(["eas", "tfserving", "v2"].map((protocol) => client({ protocol }).predict(few)));
    for (const other of [tf, v2]) {
      other.scores.data.forEach((value, i) => assert.ok(Math.abs(value - eas.scores.data[i]) < 1e-6));
    }
  });

  test("number[] inputs default to float32", async () => {
    const { scores } = await client({ protocol: "v2" }).predict({ images: { data: Array.from(data.subarray(0, 784)), shape: [1, 784] } });
    assert.deepEqual(argmaxRows(scores), [labels[0]]);
  });

  test("EAS SDK style: TFRequest with a named signature and a fetch gives a TFResponse", async () => {
    const request = new TFRequest("predict_images").addFeed("images", [2, 784], TFRequest.DT_FLOAT, data.subarray(0, 2 * 784)).addFetch("scores");
    const response = await client().predict(request);
    assert.deepEqual(response.getTensorShape("scores"), [2, 10]);
    assert.deepEqual(argmaxRows({ shape: [2, 10], data: response.getValues("scores") }), labels.slice(0, 2));
  });

  test("signature(): the GET signature JSON", async () => {
    const signature = await client().signature();
    assert.equal(signature.inputs[0].name, "images");
    assert.deepEqual(signature.outputs[0].shape, [-1, 10]);
  });
});

describe("token auth", () => {
  const input = () => ({ images: { data: testImages(1).data, shape: [1, 784] } });

  for (const signing of ["raw", "bearer", "eas"]) {
    for (const protocol of ["eas", "v2"]) {
      test(`${signing} token over ${protocol}`, async () => {
        const { scores } = await client({ signing, protocol }).predict(input());
        assert.deepEqual(scores.shape, [1, 10]);
      });
    }
  }

  for (const signing of ["raw", "eas"]) {
    test(`wrong token (${signing}): 401 naming the service and URL`, async () => {
      const error = await client({ token: "wrong", signing }).predict(input()).catch((e) => e);
      assert.ok(error instanceof LiqiError);
      assert.equal(error.status, 401);
      assert.equal(error.code, "unauthenticated");
      assert.match(error.message, /Service 'mnist'/);
      assert.ok(error.message.includes(`${server.endpoint}/api/predict/mnist`));
    });
  }

  test("no token: 401", async () => {
    const error = await client({ token: undefined }).predict(input()).catch((e) => e);
    assert.equal(error.status, 401);
  });
});

describe("inputs checked against the signature before sending", () => {
  /** A fetch that records the methods it sent. */
  function recording() {
    const sent = [];
    const fetch = (url, init) => {
      sent.push(init?.method ?? "GET");
      return globalThis.fetch(url, init);
    };
    return { sent, fetch };
  }

  for (const protocol of ["eas", "tfserving", "v2"]) {
    test(`${protocol}: a wrong shape or name is refused, only the metadata was read`, async () => {
      const { sent, fetch } = recording();
      const checked = client({ protocol, fetch });
      const error = await checked.predict({ images: { data: new Float32Array(2 * 28), shape: [2, 28] } }).catch((e) => e);
      assert.ok(error instanceof LiqiError);
      assert.equal(error.code, "invalid_input");
      assert.equal(error.status, 0);
      assert.match(error.message, /^Input 'images' expects shape\/dtype \[-1, 784\] float32, received \[2, 28\] float32\. \(checked against the signature/);
      assert.match(error.message, /of service 'mnist' before sending; nothing was sent\)$/);
      const unknown = await checked.predict({ pixels: { data: new Float32Array(784), shape: [1, 784] } }).catch((e) => e);
      assert.match(unknown.message, /^Unknown input 'pixels'\. The model's inputs are: images\./);
      assert.deepEqual(sent, ["GET"]); // the signature, once; no POST
      const { scores } = await checked.predict({ images: { data: testImages(2).data, shape: [2, 784] } });
      assert.deepEqual(scores.shape, [2, 10]);
      assert.deepEqual(sent, ["GET", "POST"]);
    });
  }

  test("checkInputs: false sends it and the server refuses it", async () => {
    const { sent, fetch } = recording();
    const error = await client({ checkInputs: false, fetch }).predict({ images: { data: [1, 2], shape: [1, 2] } }).catch((e) => e);
    assert.equal(error.status, 400);
    assert.deepEqual(sent, ["POST"]);
  });
});

describe("errors from the server", () => {
  test("wrong shape: 400 with the server's reason", async () => {
    const error = await client({ checkInputs: false }).predict({ images: { data: [1, 2], shape: [1, 2] } }).catch((e) => e);
    assert.ok(error instanceof LiqiError);
    assert.equal(error.status, 400);
    assert.equal(error.code, "invalid_request");
    assert.match(error.message, /Input 'images' expects shape\/dtype \[-1, 784\]/);
  });

  for (const protocol of ["eas", "tfserving", "v2"]) {
    test(`unknown service over ${protocol}: 404`, async () => {
      const other = new PredictClient({ endpoint: server.endpoint, service: "nope", token: TOKEN, protocol });
      const error = await other.predict({ images: { data: new Float32Array(784), shape: [1, 784] } }).catch((e) => e);
      assert.equal(error.status, 404);
      assert.match(error.message, /Service 'nope'/);
    });
  }
});

test("examples/mnist/clients/node_predict.mjs prints digits next to labels", async () => {
  const script = join(REPO, "examples", "mnist", "clients", "node_predict.mjs");
  const { stdout } = await promisify(execFile)(process.execPath, [script, "--count", "5", "--protocol", "v2"], {
    env: { ...process.env, LIQI_ENDPOINT: server.endpoint, LIQI_SERVICE: "mnist", LIQI_TOKEN: TOKEN },
    timeout: 60_000,
  });
  const lines = stdout.trim().split("\n");
  assert.equal(lines.length, 5);
  const labels = testImages(5).labels;
  let correct = 0;
  lines.forEach((line, i) => {
    const match = /^image (\d): predicted (\d), label (\d)$/.exec(line);
    assert.ok(match, line);
    assert.equal(Number(match[3]), labels[i]);
    if (match[2] === match[3]) correct++;
  });
  assert.ok(correct >= 4, stdout);
});
