/**
 * Open Inference Protocol (KServe V2) `/infer` with Triton's binary tensor extension: the
 * body is a JSON header (`Inference-Header-Content-Length` bytes long) followed by each
 * tensor's raw little-endian bytes; a BYTES element is a 4-byte little-endian length and its
 * bytes. Requests send every input in binary and ask for every output in binary.
 */
import { V2_DTYPES } from "./dtypes.js";
import { LiqiError } from "./errors.js";
import { flatten } from "./nested.js";
import { type DType, elementCount, type Outputs, type Tensor, type TypedArray, typedArrayClass, typedArrayOf } from "./tensors.js";

const DATATYPES = V2_DTYPES;
const NAMES = new Map(Object.entries(DATATYPES).map(([name, dtype]) => [dtype, name]));
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export interface EncodedInfer {
  body: Uint8Array;
  headerLength: number;
}

function littleEndianBytes(data: TypedArray): Uint8Array {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (LITTLE_ENDIAN || data.BYTES_PER_ELEMENT === 1) return bytes;
  const swapped = new Uint8Array(bytes);
  for (let i = 0; i < swapped.length; i += data.BYTES_PER_ELEMENT) swapped.subarray(i, i + data.BYTES_PER_ELEMENT).reverse();
  return swapped;
}

function stringBytes(values: string[]): Uint8Array {
  const encoder = new TextEncoder();
  const encoded = values.map((s) => encoder.encode(s));
  const out = new Uint8Array(encoded.reduce((n, b) => n + 4 + b.length, 0));
  const view = new DataView(out.buffer);
  let offset = 0;
  for (const bytes of encoded) {
    view.setUint32(offset, bytes.length, true);
    out.set(bytes, offset + 4);
    offset += 4 + bytes.length;
  }
  return out;
}

export function encodeInfer(tensors: Outputs, outputs: string[] = []): EncodedInfer {
  const chunks: Uint8Array[] = [];
  const inputs = Object.entries(tensors).map(([name, tensor]) => {
    const datatype = NAMES.get(tensor.dtype);
    if (datatype === undefined) throw new LiqiError(`Input '${name}' has dtype ${tensor.dtype}, which V2 cannot carry.`, { code: "invalid_input" });
    const chunk = tensor.dtype === "string" ? stringBytes(tensor.data as string[]) : littleEndianBytes(tensor.data as TypedArray);
    chunks.push(chunk);
    return { name, datatype, shape: tensor.shape, parameters: { binary_data_size: chunk.length } };
  });
  const document: Record<string, unknown> = { inputs, parameters: { binary_data_output: true } };
  if (outputs.length > 0) document.outputs = outputs.map((name) => ({ name, parameters: { binary_data: true } }));
  const header = new TextEncoder().encode(JSON.stringify(document));
  const body = new Uint8Array(header.length + chunks.reduce((n, c) => n + c.length, 0));
  body.set(header);
  let offset = header.length;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.length;
  }
  return { body, headerLength: header.length };
}

interface OutputEntry {
  name?: unknown;
  datatype?: unknown;
  shape?: unknown;
  data?: unknown;
  parameters?: { binary_data_size?: unknown };
}

/** Decode an `/infer` answer; `headerLength` is its Inference-Header-Content-Length (null
 * for a plain JSON answer). */
export function decodeInfer(body: Uint8Array, headerLength: number | null): Outputs {
  const end = headerLength ?? body.length;
  if (end > body.length || end <= 0) {
    throw new LiqiError(`Inference-Header-Content-Length is ${end} but the body has ${body.length} bytes.`, { code: "bad_response" });
  }
  let document: { outputs?: unknown };
  try {
    document = JSON.parse(new TextDecoder().decode(body.subarray(0, end))) as { outputs?: unknown };
  } catch (error) {
    throw new LiqiError(`The answer is not a V2 inference response: ${(error as Error).message}.`, { code: "bad_response", cause: error });
  }
  if (!Array.isArray(document?.outputs)) {
    throw new LiqiError('The answer is not a V2 inference response: it has no "outputs" list.', { code: "bad_response" });
  }
  const outputs: Outputs = {};
  let offset = end;
  for (const entry of document.outputs as OutputEntry[]) {
    const name = String(entry.name);
    const dtype = DATATYPES[String(entry.datatype)];
    const shape = entry.shape;
    if (dtype === undefined || !Array.isArray(shape)) {
      throw new LiqiError(`Output '${name}' has datatype ${String(entry.datatype)} or shape ${JSON.stringify(shape)} the client cannot read.`, {
        code: "bad_response",
      });
    }
    const size = entry.parameters?.binary_data_size;
    if (typeof size === "number") {
      if (offset + size > body.length) throw new LiqiError(`Output '${name}' is truncated: ${size} bytes declared.`, { code: "bad_response" });
      outputs[name] = fromBinary(dtype, shape as number[], body.slice(offset, offset + size));
      offset += size;
    } else {
      const { values } = flatten(entry.data, `Output '${name}'`);
      outputs[name] = dtype === "string" ? { dtype, shape, data: values.map(String) } : { dtype, shape, data: typedArrayOf(dtype, values) };
    }
  }
  return outputs;
}

function fromBinary(dtype: DType, shape: number[], bytes: Uint8Array): Tensor {
  if (dtype === "string") {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const decoder = new TextDecoder();
    const data: string[] = [];
    for (let offset = 0; offset < bytes.length; ) {
      const length = view.getUint32(offset, true);
      data.push(decoder.decode(bytes.subarray(offset + 4, offset + 4 + length)));
      offset += 4 + length;
    }
    return { dtype, shape, data };
  }
  const ctor = typedArrayClass(dtype);
  const width = ctor.BYTES_PER_ELEMENT;
  if (bytes.length !== elementCount(shape) * width) {
    throw new LiqiError(`Binary output of shape [${shape.join(", ")}] ${dtype} has ${bytes.length} bytes.`, { code: "bad_response" });
  }
  if (!LITTLE_ENDIAN && width > 1) for (let i = 0; i < bytes.length; i += width) bytes.subarray(i, i + width).reverse();
  return { dtype, shape, data: new ctor(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.length / width) };
}
