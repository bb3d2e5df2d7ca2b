// Against a real control plane (`liqi server run`) with LIQI_HOME in a temp dir.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";

import { ControlClient, LiqiError } from "../dist/index.js";
import { PYTHON, removeDir, startControlPlane, stop, tempDir } from "./support/processes.mjs";

let home;
let plane;
let profile;

/** The admin profile the server writes to LIQI_HOME/config.toml. */
function adminProfile(path) {
  const text = readFileSync(path, "utf8");
  const value = (key) => new RegExp(`^${key} = "([^"]*)"$`, "m").exec(text)?.[1];
  return { accessId: value("access_id"), accessKey: value("access_key"), project: value("project") };
}

before(async () => {
  home = tempDir("liqi-js-control-");
  plane = await startControlPlane(home);
  profile = adminProfile(join(home, "config.toml"));
  assert.ok(profile.accessId && profile.accessKey, "no admin profile in config.toml");
}, { timeout: 120_000 });

after(async () => {
  await stop(plane?.proc);
  removeDir(home);
});

const client = (options = {}) => new ControlClient({ endpoint: plane.endpoint, ...profile, ...options });

test("listModels: signed GET, an empty registry on a new server", async () => {
  assert.deepEqual(await client().listModels(), []);
  assert.deepEqual(await client().listModels("default"), []);
});

test("getModel of a missing model: 404 with the server's code and message", async () => {
  const error = await client().getModel("nope").catch((e) => e);
  assert.ok(error instanceof LiqiError);
  assert.equal(error.status, 404);
  assert.equal(error.code, "not_found");
  assert.match(error.message, /The control plane at GET .*\/api\/v1\/projects\/default\/models\/nope answered 404: Model 'nope' does not exist/);
});

test("a project the key cannot see: 404 project_not_found", async () => {
  const error = await client().listModels("elsewhere").catch((e) => e);
  assert.equal(error.code, "project_not_found");
});

test("a wrong secret: 401 signature_mismatch, not retried", async () => {
  const error = await client({ accessKey: "not-the-secret" }).listModels().catch((e) => e);
  assert.equal(error.status, 401);
  assert.equal(error.code, "signature_mismatch");
});

test("getJob and jobLog follow a job submitted with the CLI", async () => {
  const script = join(home, "hello_job.py");
  writeFileSync(script, 'print("hello from a liqi job")\n');
  const { stdout } = await promisify(execFile)(PYTHON, ["-m", "liqi", "job", "submit", script, "--no-wait", "-o", "json"], {
    env: plane.env,
    timeout: 60_000,
  });
  const { id } = JSON.parse(stdout);
  const deadline = Date.now() + 60_000;
  let job = await client().getJob(id);
  while (!["SUCCEEDED", "FAILED", "KILLED"].includes(job.state) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    job = await client().getJob(id);
  }
  assert.equal(job.state, "SUCCEEDED");
  assert.equal(job.exit_code, 0);
  assert.equal(job.project, "default");
  const log = await client().jobLog(id);
  assert.equal(log.data, "hello from a liqi job\n");
  assert.equal(log.final, true);
  const rest = await client().jobLog(id, { offset: 6 });
  assert.equal(rest.data, "from a liqi job\n");
  const missing = await client().getJob("j-nope").catch((e) => e);
  assert.equal(missing.status, 404);
});
