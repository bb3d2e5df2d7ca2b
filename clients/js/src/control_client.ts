/** ControlClient: the control plane's API (`/api/v1`), signed with an access key. */
import { LiqiError } from "./errors.js";
import { liqiHeaders } from "./liqi_signing.js";
import { type Answer, baseUrl, type Fetch, send } from "./transport.js";

export interface ControlClientOptions {
  /** The control plane's URL, e.g. "http://127.0.0.1:8080". */
  endpoint: string;
  accessId: string;
  accessKey: string;
  /** Default project for calls that take one. */
  project?: string;
  timeoutMs?: number;
  retries?: number;
  fetch?: Fetch;
}

export interface ModelVersion {
  version: number;
  uri: string;
  job_id: string | null;
  created_at: string;
}

export interface Model {
  project: string;
  name: string;
  created_at: string;
  latest_version: number | null;
  versions: ModelVersion[];
}

export interface Job {
  id: string;
  project: string;
  name: string;
  state: string;
  reason: string;
  exit_code: number | null;
  peak_rss_mb: number | null;
  created_at: string;
  started_at: string | null;
  ended_at: string | null;
  submitted_by: string;
  script: string;
}

/** A piece of a job's log: read on from `offset` until `final`. */
export interface LogChunk {
  task: string;
  data: string;
  offset: number;
  final: boolean;
}

export class ControlClient {
  readonly endpoint: string;
  readonly project: string | undefined;
  private readonly accessId: string;
  private readonly accessKey: string;
  private readonly transport: { timeoutMs: number; retries: number; fetch: Fetch };

  constructor(options: ControlClientOptions) {
    this.endpoint = baseUrl(options.endpoint);
    if (!options.accessId || !options.accessKey) {
      throw new LiqiError("accessId and accessKey are required (see `liqi config show --show-secrets`).", { code: "invalid_input" });
    }
    this.accessId = options.accessId;
    this.accessKey = options.accessKey;
    this.project = options.project;
    const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.transport = { timeoutMs: options.timeoutMs ?? 30_000, retries: Math.max(0, options.retries ?? 3), fetch: fetchImpl };
  }

  /** Models visible to the key, in `project` when given (else the client's, else all). */
  listModels(project: string | undefined = this.project): Promise<Model[]> {
    return this.get(`/api/v1/models${project ? `?project=${encodeURIComponent(project)}` : ""}`) as Promise<Model[]>;
  }

  getModel(name: string, project: string | undefined = this.project): Promise<Model> {
    if (!project) throw new LiqiError(`getModel('${name}') needs a project: pass one or set ControlClient's project.`, { code: "invalid_input" });
    return this.get(`/api/v1/projects/${encodeURIComponent(project)}/models/${encodeURIComponent(name)}`) as Promise<Model>;
  }

  getJob(jobId: string): Promise<Job> {
    return this.get(`/api/v1/jobs/${encodeURIComponent(jobId)}`) as Promise<Job>;
  }

  /** Log of one task (default the chief) from byte `offset`. */
  jobLog(jobId: string, options: { task?: string; offset?: number } = {}): Promise<LogChunk> {
    const query = new URLSearchParams({ task: options.task ?? "chief", offset: String(options.offset ?? 0) });
    return this.get(`/api/v1/jobs/${encodeURIComponent(jobId)}/logs?${query}`) as Promise<LogChunk>;
  }

  private async get(pathAndQuery: string): Promise<unknown> {
    const url = this.endpoint + pathAndQuery;
    const parsed = new URL(url);
    const answer = await send(
      {
        method: "GET",
        url,
        peer: "The control plane",
        headers: () =>
          liqiHeaders({
            accessId: this.accessId,
            secret: this.accessKey,
            method: "GET",
            path: parsed.pathname,
            rawQuery: parsed.search.slice(1),
            body: new Uint8Array(),
            now: new Date(),
          }),
      },
      this.transport,
    );
    return parseJson(answer);
  }
}

function parseJson(answer: Answer): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(answer.body));
  } catch (error) {
    throw new LiqiError(`The control plane at ${answer.url} did not answer JSON: ${(error as Error).message}.`, {
      status: answer.status,
      code: "bad_response",
      url: answer.url,
    });
  }
}
