/**
 * A service's signature, read from the metadata each protocol answers with, and the
 * client-side check of a call's inputs against it (so a wrong shape is refused before
 * anything is sent):
 *
 * - EAS: `GET /api/predict/<name>`: `{signature_name, inputs: [{name, shape, type: "DT_FLOAT"}], outputs}`
 *   (a custom processor answers something else: no signature, nothing checked).
 * - TF Serving: `GET /v1/models/<name>/metadata`: the SignatureDefMap.
 * - V2: `GET /v2/models/<name>`: `{inputs: [{name, datatype, shape}], outputs}`.
 */
import { TF_DTYPES, V2_DTYPES } from "./dtypes.js";
import { LiqiError } from "./errors.js";
import type { DType, Outputs, Tensor } from "./tensors.js";

/** One tensor of a signature: `null` dims (and a `null` shape) are "any". */
export interface TensorSpec {
  dtype: DType;
  shape: (number | null)[] | null;
}

export interface Signature {
  name: string;
  inputs: Map<string, TensorSpec>;
  outputs: Map<string, TensorSpec>;
}

export type Protocol = "eas" | "tfserving" | "v2";

interface Entry {
  name: string;
  dtype: DType | undefined;
  shape: unknown;
}

type Doc = Record<string, unknown>;

function shapeOf(dims: unknown): (number | null)[] | null {
  if (dims === null || dims === undefined) return null;
  if (!Array.isArray(dims)) throw new TypeError(`shape ${JSON.stringify(dims)} is not a list`);
  return dims.map((d) => {
    const n = Number(d);
    if (!Number.isInteger(n)) throw new TypeError(`dimension ${JSON.stringify(d)} is not an integer`);
    return n < 0 ? null : n;
  });
}

function specs(entries: Entry[]): Map<string, TensorSpec> {
  const found = new Map<string, TensorSpec>();
  for (const entry of entries) {
    if (entry.dtype === undefined) throw new TypeError(`no dtype for tensor '${entry.name}'`);
    found.set(entry.name, { dtype: entry.dtype, shape: shapeOf(entry.shape) });
  }
  return found;
}

function list(value: unknown, what: string): Doc[] {
  if (!Array.isArray(value)) throw new TypeError(`${what} is not a list`);
  return value as Doc[];
}

function easSignature(document: Doc): Signature | null {
  if (!("inputs" in document)) return null;
  const entries = (what: string) =>
    list(document[what], what).map((e) => ({ name: String(e.name), dtype: TF_DTYPES[String(e.type)], shape: e.shape }));
  return { name: String(document.signature_name ?? ""), inputs: specs(entries("inputs")), outputs: specs(entries("outputs")) };
}

function v2Signature(document: Doc): Signature {
  const entries = (what: string) =>
    list(document[what] ?? [], what).map((e) => ({ name: String(e.name), dtype: V2_DTYPES[String(e.datatype)], shape: e.shape }));
  return { name: "", inputs: specs(entries("inputs")), outputs: specs(entries("outputs")) };
}

function tfservingSignature(document: Doc, wanted: string | undefined): Signature | null {
  const defs = ((document.metadata as Doc | undefined)?.signature_def as Doc | undefined)?.signature_def as Doc | undefined;
  if (defs === undefined || typeof defs !== "object") throw new TypeError("no metadata.signature_def.signature_def");
  const names = Object.keys(defs).sort();
  const name = wanted || (names.includes("serving_default") ? "serving_default" : names[0]);
  const def = name === undefined ? undefined : (defs[name] as Doc | undefined);
  if (name === undefined || def === undefined) return null;
  const entries = (tensors: unknown): Entry[] =>
    Object.entries((tensors ?? {}) as Record<string, Doc>).map(([key, info]) => {
      const shape = (info.tensor_shape ?? {}) as { unknown_rank?: boolean; dim?: { size: unknown }[] };
      return { name: key, dtype: TF_DTYPES[String(info.dtype)], shape: shape.unknown_rank ? null : (shape.dim ?? []).map((d) => d.size) };
    });
  return { name, inputs: specs(entries(def.inputs)), outputs: specs(entries(def.outputs)) };
}

/** The signature a metadata document describes, or `null` when it describes no tensors.
 * Throws a LiqiError (`bad_response`) when the document is not in the protocol's format. */
export function readSignature(protocol: Protocol, document: unknown, signatureName?: string): Signature | null {
  if (document === null || typeof document !== "object" || Array.isArray(document)) {
    if (protocol === "eas") return null; // a custom processor's own answer
    throw new LiqiError(`The ${protocol} metadata is not a JSON object.`, { code: "bad_response" });
  }
  try {
    if (protocol === "eas") return easSignature(document as Doc);
    if (protocol === "v2") return v2Signature(document as Doc);
    return tfservingSignature(document as Doc, signatureName);
  } catch (error) {
    throw new LiqiError(`The ${protocol} metadata is not in the expected format: ${(error as Error).message}.`, {
      code: "bad_response",
      cause: error,
    });
  }
}

function shapeText(shape: (number | null)[] | null): string {
  return shape === null ? "any shape" : `[${shape.map((d) => (d === null ? -1 : d)).join(", ")}]`;
}

function fits(spec: TensorSpec, tensor: Tensor): boolean {
  if (spec.shape !== null) {
    if (spec.shape.length !== tensor.shape.length) return false;
    if (spec.shape.some((d, i) => d !== null && d !== tensor.shape[i])) return false;
  }
  // Numbers are cast by the server within their kind; strings and numbers never mix.
  return (spec.dtype === "string") === (tensor.dtype === "string");
}

/** Refuse inputs that the signature says the service will refuse: unknown or missing names,
 * wrong shapes, strings for numbers (or numbers for strings). */
export function checkInputs(signature: Signature, tensors: Outputs, service: string): void {
  const known = [...signature.inputs.keys()].sort().join(", ");
  const where = `(checked against the signature${signature.name ? ` '${signature.name}'` : ""} of service '${service}' before sending; nothing was sent)`;
  for (const name of Object.keys(tensors)) {
    if (!signature.inputs.has(name)) {
      throw new LiqiError(`Unknown input '${name}'. The model's inputs are: ${known}. ${where}`, { code: "invalid_input" });
    }
  }
  for (const [name, spec] of signature.inputs) {
    const tensor = tensors[name];
    if (tensor === undefined) {
      throw new LiqiError(`Missing input '${name}'. The model's inputs are: ${known}. ${where}`, { code: "invalid_input" });
    }
    if (!fits(spec, tensor)) {
      throw new LiqiError(
        `Input '${name}' expects shape/dtype ${shapeText(spec.shape)} ${spec.dtype}, received [${tensor.shape.join(", ")}] ${tensor.dtype}. ${where}`,
        { code: "invalid_input" },
      );
    }
  }
}
