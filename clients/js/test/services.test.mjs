// Services against a real control plane whose reconciler starts a real `liqi serve` instance of
// the seed's exported MNIST model (uploaded to a bucket with the CLI, as tests/services does).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";

import { ControlClient, isSettled, LiqiError, PredictClient } from "../dist/index.js";
import { argmaxRows, testImages } from "./support/mnist.mjs";
import { exportMnist, PYTHON, removeDir, startControlPlane, stop, tempDir } from "./support/processes.mjs";
import { killInstances } from "./support/services.mjs";

const PROJECT = "js_tests";
const BUCKET = "js-models";
const NAME = "js_mnist";

let home;
let plane;
let control;
let created;

function adminProfile(path) {
  const text = readFileSync(path, "utf8");
  const value = (key) => new RegExp(`^${key} = "([^"]*)"$`, "m").exec(text)?.[1];
  return { accessId: value("access_id"), accessKey: value("access_key") };
}

/** `python -m liqi <args>` against the plane, as its admin; parsed JSON with `-o json`. */
async function liqi(...args) {
  const { stdout } = await promisify(execFile)(PYTHON, ["-m", "liqi", ...args], { env: plane.env, timeout: 120_000 });
  return args.includes("json") ? JSON.parse(stdout) : stdout;
}

/** The seed's eas_mnist.json, bucket filled in (tests/services/conftest.py seed_spec). */
const seedSpec = (name, extra = {}) => ({
  name,
  generate_token: "true",
  model_path: `oss://${BUCKET}/models/`,
  processor: "tensorflow_cpu",
  metadata: { region: "shanghai", instance: 1, cpu: 1, memory: 2000 },
  ...extra,
});

before(async () => {
  home = tempDir("liqi-js-services-");
  const model = exportMnist(join(home, "export"));
  plane = await startControlPlane(join(home, "plane"));
  control = new ControlClient({ endpoint: plane.endpoint, ...adminProfile(join(home, "plane", "config.toml")), project: PROJECT });
  await liqi("project", "create", PROJECT);
  await liqi("oss", "mb", `oss://${BUCKET}`, "--project", PROJECT);
  await liqi("oss", "cp", "-r", model, `oss://${BUCKET}/models/1/`);
  created = await control.createService(seedSpec(NAME));
  await control.waitService(NAME, { timeoutMs: 240_000 });
}, { timeout: 600_000 });

after(async () => {
  try {
    if (control) {
      for (const service of await control.listServices(null).catch(() => [])) {
        await control.deleteService(service.name).catch(() => undefined);
      }
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline && (await control.listServices(null).catch(() => [])).length > 0) {
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  } finally {
    await stop(plane?.proc);
    if (home) killInstances(join(home, "plane"));
    removeDir(home);
  }
}, { timeout: 120_000 });

describe("describe a service", () => {
  test("createService answered CREATING (or later) with the token and the gateway endpoint", () => {
    assert.equal(created.name, NAME);
    assert.equal(created.project, PROJECT);
    assert.equal(created.latest_version, 1);
    assert.equal(created.token_required, true);
    assert.match(created.token, /^\S{16,}$/);
    assert.equal(created.endpoint, `${plane.endpoint}/api/predict/${NAME}`);
    assert.deepEqual(created.warnings, []);
  });

  test("getService: RUNNING with its ready instance and events, as `liqi eas desc` says", async () => {
    const service = await control.getService(NAME);
    assert.equal(service.state, "RUNNING");
    assert.match(service.reason, /^Total: 1, Pending: 0, Running: 1$/);
    assert.ok(isSettled(service));
    assert.equal(service.instances_wanted, 1);
    assert.equal(service.instances_ready, 1);
    assert.equal(service.instances.length, 1);
    const [instance] = service.instances;
    assert.equal(instance.state, "READY");
    assert.equal(instance.version, 1);
    assert.deepEqual(service.direct_endpoints, [`${instance.url}/api/predict/${NAME}`]);
    assert.equal(service.model_path, `oss://${BUCKET}/models/`);
    assert.equal(service.processor, "tensorflow_cpu");
    assert.equal(service.config.name, NAME);
    assert.equal(service.token, null);
    assert.ok(service.events.length > 0);
    const cli = await liqi("eas", "desc", NAME, "-o", "json");
    for (const key of ["name", "project", "state", "endpoint", "instances_ready", "current_version", "token_required", "direct_endpoints"]) {
      assert.deepEqual(service[key], cli[key], key);
    }
    assert.deepEqual(service.instances.map((i) => i.id), cli.instances.map((i) => i.id));
  });

  test("listServices: the project's services without instances, as `liqi eas list` says", async () => {
    const listed = await control.listServices();
    assert.deepEqual(listed.map((s) => s.name), [NAME]);
    assert.equal(listed[0].state, "RUNNING");
    assert.deepEqual(listed[0].instances, []);
    assert.deepEqual((await control.listServices(null)).map((s) => s.name), [NAME]);
    assert.deepEqual(await control.listServices("default"), []);
    const cli = await liqi("eas", "list", "-o", "json");
    assert.deepEqual(cli.map((s) => [s.name, s.endpoint, s.state]), listed.map((s) => [s.name, s.endpoint, s.state]));
  });

  test("serviceToken: the token create answered, as `liqi eas token` says", async () => {
    const token = await control.serviceToken(NAME);
    assert.deepEqual(token, { service: NAME, token_required: true, token: created.token });
    const cli = await liqi("eas", "token", NAME, "-o", "json");
    assert.equal(cli.token, created.token);
  });

  test("serviceEvents, serviceVersions and serviceLogs", async () => {
    const events = await control.serviceEvents(NAME);
    assert.ok(events.length > 0);
    assert.ok(events.every((e) => typeof e.at === "string" && typeof e.level === "string" && typeof e.message === "string"));
    assert.deepEqual(await control.serviceEvents(NAME, { limit: 1 }), events.slice(-1));
    const versions = await control.serviceVersions(NAME);
    assert.deepEqual(versions.map((v) => [v.version, v.current]), [[1, true]]);
    assert.equal(versions[0].config.model_path, `oss://${BUCKET}/models/`);
    const [instance] = (await control.getService(NAME)).instances;
    const log = await control.serviceLogs(NAME);
    assert.equal(log.instance, instance.id);
    assert.ok(log.data.length > 0 && log.offset >= log.data.length);
    assert.equal(log.final, false);
    const rest = await control.serviceLogs(NAME, { instance: instance.id, offset: 5 });
    assert.equal(rest.data, log.data.slice(5, 5 + rest.data.length));

    // followServiceLogs: everything so far with follow: false; following stops when told.
    const chunks = [];
    for await (const chunk of control.followServiceLogs(NAME, { follow: false })) chunks.push(chunk);
    assert.ok(chunks.length > 0 && chunks.every((c) => c.instance === instance.id && c.data.length > 0));
    assert.ok(chunks.map((c) => c.data).join("").startsWith(log.data));
    const stop = new AbortController();
    const followed = [];
    for await (const chunk of control.followServiceLogs(NAME, { pollMs: 20, signal: stop.signal })) {
      followed.push(chunk);
      stop.abort();
    }
    assert.equal(followed.length, 1);
  });

  test("an unknown service: 404 not_found from every call", async () => {
    for (const call of [
      () => control.getService("nope"),
      () => control.serviceToken("nope"),
      () => control.serviceEvents("nope"),
      () => control.serviceLogs("nope"),
      () => control.serviceVersions("nope"),
      () => control.deleteService("nope"),
    ]) {
      const error = await call().catch((e) => e);
      assert.ok(error instanceof LiqiError, String(error));
      assert.equal(error.status, 404);
      assert.equal(error.code, "not_found");
      assert.match(error.message, /nope/);
    }
  });

  test("createService with a model path that holds nothing: 404 with the server's reason, nothing created", async () => {
    const error = await control.createService(seedSpec("js_empty", { model_path: `oss://${BUCKET}/empty/` })).catch((e) => e);
    assert.equal(error.status, 404);
    assert.match(error.message, /holds no objects/);
    assert.deepEqual((await control.listServices()).map((s) => s.name), [NAME]);
  });
});

describe("predict through the gateway endpoint the service reports", () => {
  const { data, shape, labels } = testImages(8);
  const predictor = (options) =>
    new PredictClient({ endpoint: created.endpoint, service: NAME, token: created.token, ...options });

  for (const protocol of ["eas", "tfserving", "v2"]) {
    test(`${protocol}: the gateway URL as endpoint`, async () => {
      const { scores } = await predictor({ protocol }).predict({ images: { data, shape } });
      assert.deepEqual(scores.shape, [8, 10]);
      assert.ok(argmaxRows(scores).filter((d, i) => d === labels[i]).length >= 6);
    });
  }

  test("eas with the EAS SDK signature and bearer, and the server root as endpoint", async () => {
    const one = { images: { data: data.subarray(0, 784), shape: [1, 784] } };
    for (const client of [
      predictor({ signing: "eas" }),
      predictor({ signing: "bearer", protocol: "v2" }),
      new PredictClient({ endpoint: plane.endpoint, service: NAME, token: created.token }),
    ]) {
      assert.deepEqual(argmaxRows((await client.predict(one)).scores), [labels[0]]);
    }
  });

  test("signature() through the gateway", async () => {
    const signature = await predictor({}).signature();
    assert.equal(signature.inputs[0].name, "images");
  });

  test("a wrong token: 401 from the gateway, naming the service's URL", async () => {
    const error = await predictor({ token: "wrong", protocol: "tfserving" }).predict({ images: { data, shape } }).catch((e) => e);
    assert.equal(error.status, 401);
    assert.ok(error.message.includes(`${created.endpoint}/v1/models/${NAME}`), error.message);
  });
});

test("deleteService: DELETING, then 404 once the instance has stopped", async () => {
  const [instance] = (await control.getService(NAME)).instances;
  const deleting = await control.deleteService(NAME);
  assert.equal(deleting.state, "DELETING");
  const deadline = Date.now() + 60_000;
  let error;
  while (Date.now() < deadline && error === undefined) {
    error = await control.getService(NAME).then(() => undefined, (e) => e);
    if (error === undefined) await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(error?.code, "not_found");
  assert.deepEqual(await control.listServices(null), []);
  const gone = await fetch(`${instance.url}/readyz`).then((r) => r.status, () => "refused");
  assert.equal(gone, "refused");
});
