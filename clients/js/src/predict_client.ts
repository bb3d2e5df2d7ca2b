/** PredictClient: one model service, called over EAS protobuf, TF Serving JSON or V2. */
import { decodePredictResponse, encodePredictRequest, TFRequest, TFResponse } from "./eas.js";
import { authHeaders, type Signing } from "./eas_signing.js";
import { LiqiError } from "./errors.js";
import { checkInputs, type Protocol, readSignature, type Signature } from "./signature.js";
import { type Inputs, normalizeInputs, type Outputs } from "./tensors.js";
import { decodePredict, encodePredict, type OutputSpecs, outputSpecs } from "./tfserving.js";
import { type Answer, baseUrl, type Fetch, send } from "./transport.js";
import { decodeInfer, encodeInfer } from "./v2.js";

export type { Protocol } from "./signature.js";

export interface PredictClientOptions {
  /** Base URL of the server, e.g. "http://127.0.0.1:8080" (a path prefix is kept: the
   * protocols' paths go after it), or a service's gateway endpoint as the control plane
   * reports it, "<control plane>/api/predict/<service>": EAS posts to that URL itself, TF
   * Serving and V2 add their paths to it (`.../api/predict/<service>/v1/models/...`). */
  endpoint: string;
  /** Service (model) name in the URLs. */
  service: string;
  token?: string;
  /** Default "eas". */
  protocol?: Protocol;
  /** Per attempt; default 5000. */
  timeoutMs?: number;
  /** Extra attempts after a 503, a network error or a timeout; default 3. */
  retries?: number;
  /** How the token is sent; default "raw" (works in browsers; "eas" needs a Date header). */
  signing?: Signing;
  /** Signature to run; default the model's default signature. */
  signatureName?: string;
  /** Read the service's signature once and refuse wrong shapes, unknown or missing inputs
   * before sending; default true. */
  checkInputs?: boolean;
  /** A fetch to use instead of globalThis.fetch. */
  fetch?: Fetch;
}

export interface PredictOptions {
  /** Outputs to return (default all). */
  outputs?: string[];
  signatureName?: string;
}

const OCTET = "application/octet-stream";
const JSON_TYPE = "application/json";

export class PredictClient {
  readonly endpoint: string;
  readonly service: string;
  readonly protocol: Protocol;
  private readonly token: string | undefined;
  private readonly signing: Signing;
  private readonly signatureName: string | undefined;
  private readonly transport: { timeoutMs: number; retries: number; fetch: Fetch };
  private readonly checkInputs: boolean;
  private readonly specs = new Map<string, OutputSpecs>();
  private readonly signatures = new Map<string, Signature | null>();
  private metadata: Promise<unknown> | undefined;
  /** The EAS path after the endpoint: "" when the endpoint is the service's gateway URL. */
  private readonly easPath: string;

  constructor(options: PredictClientOptions) {
    if (!options.service) throw new LiqiError("service is required: the model's name in the URLs.", { code: "invalid_input" });
    const protocol = options.protocol ?? "eas";
    if (!["eas", "tfserving", "v2"].includes(protocol)) {
      throw new LiqiError(`protocol must be "eas", "tfserving" or "v2", received '${protocol}'.`, { code: "invalid_input" });
    }
    const signing = options.signing ?? "raw";
    if (!["eas", "raw", "bearer"].includes(signing)) {
      throw new LiqiError(`signing must be "eas", "raw" or "bearer", received '${signing}'.`, { code: "invalid_input" });
    }
    if (signing === "eas" && options.token && inBrowser()) {
      throw new LiqiError(
        'signing "eas" signs the Date header, which browsers do not let a page set: use signing "raw" or "bearer" in a browser.',
        { code: "invalid_input" },
      );
    }
    this.endpoint = baseUrl(options.endpoint);
    this.service = options.service;
    const easPath = `/api/predict/${encodeURIComponent(options.service)}`;
    this.easPath = new URL(this.endpoint).pathname.endsWith(easPath) ? "" : easPath;
    this.protocol = protocol;
    this.token = options.token;
    this.signing = signing;
    this.signatureName = options.signatureName;
    this.checkInputs = options.checkInputs ?? true;
    const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.transport = { timeoutMs: options.timeoutMs ?? 5000, retries: Math.max(0, options.retries ?? 3), fetch: fetchImpl };
  }

  /** Run the model. Inputs `{name: {data, shape, dtype?}}` give outputs `{name: {data,
   * shape, dtype}}`; a TFRequest gives a TFResponse, as the EAS SDKs do. */
  predict(inputs: Inputs, options?: PredictOptions): Promise<Outputs>;
  predict(request: TFRequest): Promise<TFResponse>;
  async predict(inputs: Inputs | TFRequest, options: PredictOptions = {}): Promise<Outputs | TFResponse> {
    if (inputs instanceof TFRequest) {
      const outputs = await this.run(inputs.inputs, { outputs: inputs.fetches, signatureName: inputs.signatureName || undefined });
      return new TFResponse(outputs);
    }
    return this.run(inputs, options);
  }

  /** The signature JSON of `GET /api/predict/<service>`: `{signature_name, inputs, outputs}`. */
  async signature(): Promise<unknown> {
    const answer = await this.call("GET", this.easPath, undefined, JSON_TYPE);
    return parseJson(answer);
  }

  private async run(inputs: Inputs, options: PredictOptions): Promise<Outputs> {
    const tensors = normalizeInputs(inputs);
    const signatureName = options.signatureName ?? this.signatureName;
    if (this.checkInputs) {
      const signature = await this.readSignature(signatureName);
      // EAS and V2 describe one signature: check only when it is the one asked for.
      if (signature !== null && (!signatureName || !signature.name || signature.name === signatureName)) {
        checkInputs(signature, tensors, this.service);
      }
    }
    const name = encodeURIComponent(this.service);
    if (this.protocol === "eas") {
      const body = encodePredictRequest(signatureName ?? "", tensors, options.outputs ?? []);
      return decodePredictResponse((await this.call("POST", this.easPath, body, OCTET)).body);
    }
    if (this.protocol === "tfserving") {
      const specs = await this.outputSpecs(signatureName);
      const body = new TextEncoder().encode(encodePredict(signatureName, tensors));
      const outputs = decodePredict((await this.call("POST", `/v1/models/${name}:predict`, body, JSON_TYPE)).body, specs);
      return pick(outputs, options.outputs);
    }
    const encoded = encodeInfer(tensors, options.outputs ?? []);
    const extra = { "Inference-Header-Content-Length": String(encoded.headerLength) };
    const answer = await this.call("POST", `/v2/models/${name}/infer`, encoded.body, OCTET, extra);
    const header = answer.headers.get("inference-header-content-length");
    return decodeInfer(answer.body, header === null ? null : Number(header));
  }

  private async outputSpecs(signatureName: string | undefined): Promise<OutputSpecs> {
    const key = signatureName ?? "";
    let specs = this.specs.get(key);
    if (specs === undefined) {
      specs = outputSpecs(await this.fetchMetadata(), signatureName);
      this.specs.set(key, specs);
    }
    return specs;
  }

  /** The protocol's metadata document, fetched once (again after a failure). */
  private fetchMetadata(): Promise<unknown> {
    if (this.metadata === undefined) {
      const name = encodeURIComponent(this.service);
      const path = { eas: this.easPath, tfserving: `/v1/models/${name}/metadata`, v2: `/v2/models/${name}` }[this.protocol];
      const fetched = this.call("GET", path, undefined, JSON_TYPE).then(parseJson);
      fetched.catch(() => {
        this.metadata = undefined;
      });
      this.metadata = fetched;
    }
    return this.metadata;
  }

  /** The signature to check inputs against, read once; null when the service does not
   * describe one (a custom processor) or its metadata cannot be read for another reason than
   * a wrong token or an unknown service, which are thrown. */
  private async readSignature(signatureName: string | undefined): Promise<Signature | null> {
    const key = signatureName ?? "";
    if (this.signatures.has(key)) return this.signatures.get(key) ?? null;
    let signature: Signature | null = null;
    try {
      signature = readSignature(this.protocol, await this.fetchMetadata(), signatureName);
    } catch (error) {
      if (error instanceof LiqiError && [401, 403, 404].includes(error.status)) throw error;
    }
    this.signatures.set(key, signature);
    return signature;
  }

  private call(method: string, path: string, body: Uint8Array | undefined, contentType: string, extra: Record<string, string> = {}): Promise<Answer> {
    const url = this.endpoint + path;
    const signed = new URL(url).pathname;
    return send(
      {
        method,
        url,
        body,
        peer: `Service '${this.service}'`,
        headers: async () => ({
          ...(await authHeaders(this.token, this.signing, {
            method,
            path: signed,
            body: body ?? new Uint8Array(),
            contentType,
            date: new Date().toUTCString(),
          })),
          ...extra,
        }),
      },
      this.transport,
    );
  }
}

/** A page's script (fetch there drops a Date header silently). */
function inBrowser(): boolean {
  return typeof (globalThis as { document?: unknown }).document !== "undefined";
}

function parseJson(answer: Answer): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(answer.body));
  } catch (error) {
    throw new LiqiError(`${answer.url} did not answer JSON: ${(error as Error).message}.`, { status: answer.status, code: "bad_response", url: answer.url });
  }
}

function pick(outputs: Outputs, names: string[] | undefined): Outputs {
  if (!names || names.length === 0) return outputs;
  const picked: Outputs = {};
  for (const name of names) {
    const tensor = outputs[name];
    if (tensor === undefined) throw new LiqiError(`No output '${name}'; the model has ${Object.keys(outputs).join(", ")}.`, { code: "invalid_input" });
    picked[name] = tensor;
  }
  return picked;
}
