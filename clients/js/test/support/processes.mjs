// Real servers for the tests: liqi serve, liqi server run, and the python that runs them.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const CLIENT_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const REPO = resolve(CLIENT_DIR, "..", "..");
export const PYTHON = process.env.LIQI_PYTHON ?? resolve(CLIENT_DIR, "..", "..", ".venv", "bin", "python");

/** Environment for python children: this checkout's src first on PYTHONPATH. */
export function pythonEnv(extra = {}) {
  const path = [join(REPO, "src"), process.env.PYTHONPATH].filter(Boolean).join(":");
  return { ...process.env, PYTHONPATH: path, ...extra };
}

export function tempDir(prefix) {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeDir(path) {
  if (path) rmSync(path, { recursive: true, force: true });
}

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** Export the seed's MNIST SavedModel with the real TF1 example into `dir`; returns dir/1. */
export function exportMnist(dir) {
  const builtin = join(REPO, "src", "liqi", "datasets", "mnist");
  const result = spawnSync(
    PYTHON,
    ["-m", "liqi.training.launcher", "--tf1", join(REPO, "examples", "mnist", "mnist_softmax.py"),
      `--volumes=${join(builtin, "train")},${join(builtin, "test")}`, `--buckets=${dir}/`],
    { env: pythonEnv(), encoding: "utf8", timeout: 240_000 },
  );
  if (result.status !== 0) throw new Error(`exporting MNIST failed (${result.status}): ${result.stderr?.slice(-2000)}`);
  return join(dir, "1");
}

/** A child process whose output is kept for failure messages. */
export function start(args, env) {
  const child = spawn(PYTHON, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const keep = (chunk) => {
    output = (output + chunk).slice(-8000);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const exited = new Promise((done) => child.on("exit", (code, signal) => done({ code, signal })));
  // If the test process dies before its after hook, take the server with it.
  const reap = () => child.kill("SIGKILL");
  process.on("exit", reap);
  exited.then(() => process.off("exit", reap));
  return { child, exited, output: () => output };
}

/** Poll `url` until it answers 200; fail with the child's output after `deadlineMs`. */
export async function waitReady(url, proc, deadlineMs = 120_000) {
  const until = Date.now() + deadlineMs;
  let exitedEarly = false;
  proc.exited.then(() => (exitedEarly = true));
  while (Date.now() < until) {
    if (exitedEarly) throw new Error(`server exited before ${url} was ready:\n${proc.output()}`);
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} not ready within ${deadlineMs} ms:\n${proc.output()}`);
}

/** SIGTERM, then SIGKILL if it has not exited within 15 s. */
export async function stop(proc) {
  if (!proc || proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  proc.child.kill("SIGTERM");
  const timer = setTimeout(() => proc.child.kill("SIGKILL"), 15_000);
  await proc.exited;
  clearTimeout(timer);
}

/** `liqi serve <model> --name mnist` on a free port; resolves once /readyz answers 200. */
export async function startServe(modelDir, { token, corsOrigins = [] } = {}) {
  const port = await freePort();
  const args = ["-m", "liqi", "serve", modelDir, "--name", "mnist", "--port", String(port), "--poll-interval-s", "0"];
  if (token) args.push("--token", token);
  for (const origin of corsOrigins) args.push("--cors-origin", origin);
  const proc = start(args, pythonEnv({ LIQI_SERVE_TOKEN: "", LIQI_CORS_ORIGINS: "" }));
  const endpoint = `http://127.0.0.1:${port}`;
  try {
    await waitReady(`${endpoint}/readyz`, proc);
  } catch (error) {
    await stop(proc);
    throw error;
  }
  return { endpoint, proc };
}

/** `liqi server run` on a free port with LIQI_HOME in `home`; resolves once /healthz answers. */
export async function startControlPlane(home) {
  const port = await freePort();
  const env = pythonEnv({ LIQI_HOME: home, LIQI_CONFIG: join(home, "config.toml") });
  const proc = start(["-m", "liqi", "server", "run", "--host", "127.0.0.1", "--port", String(port)], env);
  const endpoint = `http://127.0.0.1:${port}`;
  try {
    await waitReady(`${endpoint}/healthz`, proc, 60_000);
  } catch (error) {
    await stop(proc);
    throw error;
  }
  return { endpoint, proc, env };
}
