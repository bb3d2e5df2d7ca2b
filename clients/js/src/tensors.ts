/** Tensors as the client takes and returns them: flat row-major data, a shape and a dtype. */
import { LiqiError } from "./errors.js";

export type DType =
  | "float32"
  | "float64"
  | "int8"
  | "int16"
  | "int32"
  | "int64"
  | "uint8"
  | "uint16"
  | "uint32"
  | "uint64"
  | "bool"
  | "string";

export type TypedArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array;

/** What `predict` takes for one input. `dtype` defaults to the typed array's, else float32
 * for numbers, int64 for bigints, bool for booleans and string for strings. */
export interface TensorInput {
  data: TypedArray | number[] | bigint[] | boolean[] | string[];
  shape: number[];
  dtype?: DType;
}

/** What `predict` returns for one output. Booleans come as a Uint8Array of 0/1 (dtype
 * "bool"), strings decoded as UTF-8. */
export interface Tensor {
  dtype: DType;
  shape: number[];
  data: TypedArray | string[];
}

export type Inputs = Record<string, TensorInput>;
export type Outputs = Record<string, Tensor>;

type NumericDType = Exclude<DType, "string">;

const CONSTRUCTORS = {
  float32: Float32Array,
  float64: Float64Array,
  int8: Int8Array,
  int16: Int16Array,
  int32: Int32Array,
  int64: BigInt64Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
  uint64: BigUint64Array,
  bool: Uint8Array,
} as const;

export const DTYPES: readonly DType[] = [...Object.keys(CONSTRUCTORS), "string"] as DType[];

/** The typed array class that holds `dtype` (bool: Uint8Array of 0/1). */
export function typedArrayClass(dtype: Exclude<DType, "string">): (typeof CONSTRUCTORS)[keyof typeof CONSTRUCTORS] {
  return CONSTRUCTORS[dtype];
}

export function isTypedArray(value: unknown): value is TypedArray {
  return ArrayBuffer.isView(value) && !(value instanceof DataView);
}

function dtypeOfTypedArray(data: TypedArray): NumericDType {
  for (const [dtype, ctor] of Object.entries(CONSTRUCTORS)) {
    if (dtype !== "bool" && data instanceof ctor) return dtype as NumericDType;
  }
  throw new LiqiError(`Unsupported typed array ${data.constructor.name}.`, { code: "invalid_input" });
}

function inferDType(data: TensorInput["data"]): DType {
  if (isTypedArray(data)) return dtypeOfTypedArray(data);
  const first = data[0];
  if (typeof first === "string") return "string";
  if (typeof first === "boolean") return "bool";
  if (typeof first === "bigint") return "int64";
  return "float32";
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((product, dim) => product * dim, 1);
}

/** Typed data of `dtype` built from `values` (numbers, bigints or booleans). */
export function typedArrayOf(dtype: NumericDType, values: ArrayLike<unknown>): TypedArray {
  const ctor = CONSTRUCTORS[dtype];
  if (dtype === "int64" || dtype === "uint64") {
    const big = ctor as BigInt64ArrayConstructor;
    return big.from(Array.from(values, (v) => BigInt(v as number | bigint | string)));
  }
  return (ctor as Float64ArrayConstructor).from(Array.from(values, (v) => Number(v)));
}

/** Check one input and give it a dtype and data of that dtype (numbers in a typed array). */
export function normalizeInput(name: string, input: TensorInput): Tensor {
  const { data, shape } = input;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new LiqiError(`Input '${name}' needs a shape of non-negative integers, received ${JSON.stringify(shape)}.`, {
      code: "invalid_input",
    });
  }
  if (!isTypedArray(data) && !Array.isArray(data)) {
    throw new LiqiError(`Input '${name}' data must be a typed array or an array, received ${typeof data}.`, {
      code: "invalid_input",
    });
  }
  const count = elementCount(shape);
  if (data.length !== count) {
    throw new LiqiError(
      `Input '${name}' has shape [${shape.join(", ")}] (${count} elements) but its data holds ${data.length}.`,
      { code: "invalid_input" },
    );
  }
  const dtype = input.dtype ?? inferDType(data);
  if (!DTYPES.includes(dtype)) {
    throw new LiqiError(`Input '${name}' has unknown dtype '${dtype}'; use one of ${DTYPES.join(", ")}.`, {
      code: "invalid_input",
    });
  }
  if (dtype === "string") {
    if (isTypedArray(data) || !data.every((v) => typeof v === "string")) {
      throw new LiqiError(`Input '${name}' has dtype string but its data is not an array of strings.`, {
        code: "invalid_input",
      });
    }
    return { dtype, shape: [...shape], data: data as string[] };
  }
  if (!isTypedArray(data) && data.some((v) => typeof v === "string")) {
    throw new LiqiError(`Input '${name}' has dtype ${dtype} but its data holds strings.`, { code: "invalid_input" });
  }
  const ctor = CONSTRUCTORS[dtype];
  const typed = data instanceof ctor && dtype !== "bool" ? (data as TypedArray) : typedArrayOf(dtype, data);
  return { dtype, shape: [...shape], data: typed };
}

export function normalizeInputs(inputs: Inputs): Outputs {
  if (inputs === null || typeof inputs !== "object" || Object.keys(inputs).length === 0) {
    throw new LiqiError("predict needs at least one input: {name: {data, shape, dtype?}}.", { code: "invalid_input" });
  }
  return Object.fromEntries(Object.entries(inputs).map(([name, input]) => [name, normalizeInput(name, input)]));
}

/** The elements of a tensor's data as JSON-ready text pieces (numbers, bigints, booleans,
 * strings). NaN and infinities are refused: JSON has no spelling for them. */
export function jsonElement(tensor: Tensor, value: unknown, name: string): string {
  if (tensor.dtype === "string") return JSON.stringify(value);
  if (tensor.dtype === "bool") return value ? "true" : "false";
  if (typeof value === "bigint") return value.toString();
  const number = value as number;
  if (!Number.isFinite(number)) {
    throw new LiqiError(`Input '${name}' holds ${number}, which JSON cannot carry.`, { code: "invalid_input" });
  }
  return String(number);
}
