/** ControlClient: the control plane's API (`/api/v1`), signed with an access key. */
import { LiqiError } from "./errors.js";
import { liqiHeaders } from "./liqi_signing.js";
import {
  isSettled,
  type Service,
  type ServiceEvent,
  type ServiceLogChunk,
  type ServiceSpec,
  type ServiceToken,
  type ServiceVersion,
} from "./services.js";
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
  /** Where it ran: `local` or a Ray resource group of the server. */
  resource_group: string;
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

  /** Services visible to the key, in `project` when given (else the client's; null: all);
   * without their instances and events (getService has those). */
  listServices(project: string | null | undefined = this.project): Promise<Service[]> {
    return this.get(`/api/v1/services${project ? `?project=${encodeURIComponent(project)}` : ""}`) as Promise<Service[]>;
  }

  /** The service with its instances and latest events; 404 `not_found` if unknown. */
  getService(name: string): Promise<Service> {
    return this.get(servicePath(name)) as Promise<Service>;
  }

  /** Deploy an EAS service JSON in `project` (default the client's, else "default"). The
   * answer carries the `token` and `warnings`; the service starts CREATING (see waitService). */
  createService(spec: ServiceSpec, project: string = this.project ?? "default"): Promise<Service> {
    return this.request("POST", `/api/v1/services?project=${encodeURIComponent(project)}`, spec) as Promise<Service>;
  }

  /** Stop the instances and remove the service: DELETING, then 404 once it is gone. */
  deleteService(name: string): Promise<Service> {
    return this.request("DELETE", servicePath(name)) as Promise<Service>;
  }

  /** The token requests to the service need (the member role); `token` null without one. */
  serviceToken(name: string): Promise<ServiceToken> {
    return this.get(servicePath(name, "token")) as Promise<ServiceToken>;
  }

  /** The newest `limit` events (1 to 1000, default 100), oldest first. */
  serviceEvents(name: string, options: { limit?: number } = {}): Promise<ServiceEvent[]> {
    return this.get(`${servicePath(name, "events")}?limit=${options.limit ?? 100}`) as Promise<ServiceEvent[]>;
  }

  /** Log of one instance (default the newest) from byte `offset`. */
  serviceLogs(name: string, options: { instance?: string; offset?: number } = {}): Promise<ServiceLogChunk> {
    const query = new URLSearchParams({ offset: String(options.offset ?? 0) });
    if (options.instance) query.set("instance", options.instance);
    return this.get(`${servicePath(name, "logs")}?${query}`) as Promise<ServiceLogChunk>;
  }

  /** An instance's log as it is written (default the newest instance), in non-empty chunks;
   * ends when that instance has ended, or once everything written so far is read with
   * `follow: false`. `signal` stops it early. */
  async *followServiceLogs(
    name: string,
    options: { instance?: string; follow?: boolean; pollMs?: number; signal?: AbortSignal } = {},
  ): AsyncGenerator<ServiceLogChunk> {
    let { instance } = options;
    let offset = 0;
    while (!options.signal?.aborted) {
      const chunk = await this.serviceLogs(name, { instance, offset });
      instance ||= chunk.instance || undefined;
      if (chunk.data) yield chunk;
      offset = chunk.offset;
      if (chunk.final || (options.follow === false && !chunk.data)) return;
      if (!chunk.data) await new Promise((resolve) => setTimeout(resolve, Math.max(options.pollMs ?? 500, 10)));
    }
  }

  /** Every version (each create and modify makes one), oldest first. */
  serviceVersions(name: string): Promise<ServiceVersion[]> {
    return this.get(servicePath(name, "versions")) as Promise<ServiceVersion[]>;
  }

  /** Poll getService until the service has settled (isSettled) in one of `until` (default
   * RUNNING, STOPPED, FAILED); rejects with code `timeout` after `timeoutMs` (default 300 s). */
  async waitService(name: string, options: { timeoutMs?: number; pollMs?: number; until?: string[] } = {}): Promise<Service> {
    const timeoutMs = options.timeoutMs ?? 300_000;
    const until = options.until ?? ["RUNNING", "STOPPED", "FAILED"];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const service = await this.getService(name);
      if (until.includes(service.state) && isSettled(service)) return service;
      if (Date.now() > deadline) {
        const reason = service.reason ? ` (${service.reason})` : "";
        throw new LiqiError(
          `Service '${name}' is still ${service.state} after ${timeoutMs / 1000} s${reason}, waiting for ${until.join(" or ")}. ` +
            `See \`liqi eas desc ${name}\` and \`liqi eas logs ${name}\`.`,
          { code: "timeout" },
        );
      }
      await new Promise((resolve) => setTimeout(resolve, Math.max(options.pollMs ?? 200, 10)));
    }
  }

  private get(pathAndQuery: string): Promise<unknown> {
    return this.request("GET", pathAndQuery);
  }

  /** One signed request; a JSON `body` for changes. Reads are retried (503, network errors,
   * timeouts); changes are sent once, so a retry never deploys or deletes twice. */
  private async request(method: string, pathAndQuery: string, json?: unknown): Promise<unknown> {
    const url = this.endpoint + pathAndQuery;
    const parsed = new URL(url);
    const body = json === undefined ? new Uint8Array() : new TextEncoder().encode(JSON.stringify(json));
    const answer = await send(
      {
        method,
        url,
        body: method === "GET" ? undefined : body,
        peer: "The control plane",
        headers: async () => ({
          ...(json === undefined ? {} : { "content-type": "application/json" }),
          ...(await liqiHeaders({
            accessId: this.accessId,
            secret: this.accessKey,
            method,
            path: parsed.pathname,
            rawQuery: parsed.search.slice(1),
            body,
            now: new Date(),
          })),
        }),
      },
      method === "GET" ? this.transport : { ...this.transport, retries: 0 },
    );
    return parseJson(answer);
  }
}

function servicePath(name: string, ...rest: string[]): string {
  return ["/api/v1/services", encodeURIComponent(name), ...rest].join("/");
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
