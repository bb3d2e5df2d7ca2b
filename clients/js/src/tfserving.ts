/** TF Serving REST v1 `:predict`, columnar format: `{"signature_name", "inputs": {...}}` in,
 * `{"outputs": ...}` out (one output unwrapped). Output dtypes and names come from the
 * model's `/metadata`, which the client reads once per signature. */
import { TF_DTYPES } from "./dtypes.js";
import { LiqiError } from "./errors.js";
import { flatten, nestedJson } from "./nested.js";
import { type DType, type Outputs, typedArrayOf } from "./tensors.js";

/** Output name -> dtype, in the signature's order. */
export type OutputSpecs = Map<string, DType>;

export function encodePredict(signatureName: string | undefined, tensors: Outputs): string {
  const inputs = Object.entries(tensors).map(([name, t]) => `${JSON.stringify(name)}:${nestedJson(name, t)}`);
  const signature = signatureName ? `"signature_name":${JSON.stringify(signatureName)},` : "";
  return `{${signature}"inputs":{${inputs.join(",")}}}`;
}

/** The output specs of `signature` (default `serving_default`) from a `/metadata` body. */
export function outputSpecs(metadata: unknown, signature: string | undefined): OutputSpecs {
  const defs = (metadata as { metadata?: { signature_def?: { signature_def?: Record<string, unknown> } } })?.metadata
    ?.signature_def?.signature_def;
  const name = signature || "serving_default";
  const def = defs?.[name] as { outputs?: Record<string, { dtype?: string }> } | undefined;
  if (def?.outputs === undefined) {
    throw new LiqiError(
      `The model's metadata has no signature '${name}'; it has ${Object.keys(defs ?? {}).join(", ") || "none"}.`,
      { code: "bad_response" },
    );
  }
  return new Map(Object.entries(def.outputs).map(([alias, spec]) => [alias, TF_DTYPES[spec.dtype ?? ""] ?? "float64"]));
}

export function decodePredict(body: Uint8Array, specs: OutputSpecs): Outputs {
  let document: { outputs?: unknown };
  try {
    document = JSON.parse(new TextDecoder().decode(body)) as { outputs?: unknown };
  } catch (error) {
    throw new LiqiError(`The answer is not TF Serving JSON: ${(error as Error).message}.`, {
      code: "bad_response",
      cause: error,
    });
  }
  if (document === null || typeof document !== "object" || !("outputs" in document)) {
    throw new LiqiError('The answer is not a TF Serving columnar response: it has no "outputs".', { code: "bad_response" });
  }
  const [only] = specs.keys();
  const columns: Record<string, unknown> =
    specs.size === 1 && only !== undefined ? { [only]: document.outputs } : (document.outputs as Record<string, unknown>);
  const outputs: Outputs = {};
  for (const [name, value] of Object.entries(columns)) {
    const dtype = specs.get(name) ?? "float64";
    const { values, shape } = flatten(value, `Output '${name}'`);
    outputs[name] =
      dtype === "string"
        ? { dtype, shape, data: values.map((v) => (typeof v === "object" && v !== null ? atob(String((v as { b64?: unknown }).b64)) : String(v))) }
        : { dtype, shape, data: typedArrayOf(dtype, values) };
  }
  return outputs;
}
