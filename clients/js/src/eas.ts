/**
 * EAS TensorFlow protocol: `tensorflow.eas.PredictRequest` / `PredictResponse` protobuf
 * bodies (the schema of src/liqi/protocols/eas_predict.proto, loaded from the descriptor the
 * build generates) and the EAS SDKs' `TFRequest` / `TFResponse`.
 */
import protobuf from "protobufjs";

import { EAS_DESCRIPTOR } from "./eas_descriptor.js";
import { concat, delimited, packedFixed, type Parts, stringField } from "./eas_wire.js";
import { LiqiError } from "./errors.js";
import { type DType, type Inputs, normalizeInput, type Outputs, type Tensor, typedArrayClass, typedArrayOf } from "./tensors.js";

const root = protobuf.Root.fromJSON(EAS_DESCRIPTOR as protobuf.INamespace);
const PredictResponse = root.lookupType("tensorflow.eas.PredictResponse");
const ArrayProtoType = root.lookupType("tensorflow.eas.ArrayProto");

/** ArrayDataType numbers (TensorFlow's DataType numbers) of the dtypes an ArrayProto carries. */
export const ArrayDataType = {
  DT_FLOAT: 1,
  DT_DOUBLE: 2,
  DT_INT32: 3,
  DT_UINT8: 4,
  DT_INT16: 5,
  DT_INT8: 6,
  DT_STRING: 7,
  DT_INT64: 9,
  DT_BOOL: 10,
} as const;

type Field = "float_val" | "double_val" | "int_val" | "string_val" | "int64_val" | "bool_val";

const CARRIED: Record<number, [DType, Field]> = {
  1: ["float32", "float_val"],
  2: ["float64", "double_val"],
  3: ["int32", "int_val"],
  4: ["uint8", "int_val"],
  5: ["int16", "int_val"],
  6: ["int8", "int_val"],
  7: ["string", "string_val"],
  9: ["int64", "int64_val"],
  10: ["bool", "bool_val"],
};
const BY_DTYPE = new Map(Object.entries(CARRIED).map(([number, [dtype, field]]) => [dtype, [Number(number), field] as const]));

interface ArrayProto {
  dtype?: number;
  array_shape?: { dim?: (string | number)[] };
  float_val?: number[];
  double_val?: number[];
  int_val?: number[];
  string_val?: Uint8Array[];
  int64_val?: (string | number)[];
  bool_val?: boolean[];
}

function toArrayProto(name: string, tensor: Tensor): ArrayProto {
  const carried = BY_DTYPE.get(tensor.dtype);
  if (carried === undefined) {
    throw new LiqiError(
      `Input '${name}' has dtype ${tensor.dtype}, which the EAS protocol cannot carry; use one of ${[...BY_DTYPE.keys()].join(", ")}.`,
      { code: "invalid_input" },
    );
  }
  const [dtype, field] = carried;
  const proto: ArrayProto = { dtype, array_shape: { dim: tensor.shape } };
  const data = tensor.data;
  if (field === "string_val") {
    const encoder = new TextEncoder();
    proto.string_val = (data as string[]).map((s) => encoder.encode(s));
  } else if (field === "int64_val") {
    proto.int64_val = Array.from(data as BigInt64Array, (v) => v.toString());
  } else if (field === "bool_val") {
    proto.bool_val = Array.from(data as Uint8Array, (v) => v !== 0);
  } else {
    proto[field] = data as unknown as number[];
  }
  return proto;
}

function fromArrayProto(name: string, proto: ArrayProto): Tensor {
  const carried = CARRIED[proto.dtype ?? 0];
  if (carried === undefined) {
    throw new LiqiError(`Output '${name}' has ArrayDataType ${proto.dtype ?? 0}, which has no value field in ArrayProto.`, {
      code: "bad_response",
    });
  }
  const [dtype, field] = carried;
  const shape = (proto.array_shape?.dim ?? []).map(Number);
  const values = proto[field] ?? [];
  if (dtype === "string") {
    const decoder = new TextDecoder();
    return { dtype, shape, data: (values as Uint8Array[]).map((b) => decoder.decode(b)) };
  }
  if (field === "float_val" || field === "double_val" || field === "int_val") {
    // numbers already: one copy into the typed array (int_val wraps as the typed array does)
    const ctor = typedArrayClass(dtype as Exclude<DType, "string">) as Float64ArrayConstructor;
    return { dtype, shape, data: new ctor(values as number[]) };
  }
  return { dtype, shape, data: typedArrayOf(dtype, values as ArrayLike<unknown>) };
}

/** Serialize a PredictRequest (fields 1 signature_name, 2 inputs: map entries of key 1 and
 * ArrayProto 2, 3 output_filter). Float and double values are copied into the body at once;
 * protobufjs writes the rest of each ArrayProto. */
export function encodePredictRequest(signatureName: string, tensors: Outputs, outputFilter: string[] = []): Uint8Array {
  const parts: Parts = signatureName ? stringField(1, signatureName) : [];
  for (const [name, tensor] of Object.entries(tensors)) {
    parts.push(...delimited(2, [...stringField(1, name), ...delimited(2, arrayProtoParts(name, tensor))]));
  }
  for (const output of outputFilter) parts.push(...stringField(3, output));
  return concat(parts);
}

function arrayProtoParts(name: string, tensor: Tensor): Parts {
  const proto = toArrayProto(name, tensor);
  const field = proto.float_val !== undefined ? "float_val" : proto.double_val !== undefined ? "double_val" : undefined;
  const packed = field === undefined ? undefined : packedFixed(field === "float_val" ? 3 : 4, tensor.data);
  if (field === undefined || packed === undefined) return [ArrayProtoType.encode(proto).finish()];
  delete proto[field];
  return [ArrayProtoType.encode(proto).finish(), ...packed];
}

/** Parse a PredictResponse into tensors. */
export function decodePredictResponse(body: Uint8Array): Outputs {
  let message: protobuf.Message;
  try {
    message = PredictResponse.decode(body);
  } catch (error) {
    throw new LiqiError(`The answer is not a tensorflow.eas.PredictResponse: ${(error as Error).message}.`, {
      code: "bad_response",
      cause: error,
    });
  }
  const object = PredictResponse.toObject(message, { longs: String, arrays: true, enums: Number }) as {
    outputs?: Record<string, ArrayProto>;
  };
  return Object.fromEntries(Object.entries(object.outputs ?? {}).map(([name, p]) => [name, fromArrayProto(name, p)]));
}

/** The EAS SDKs' request builder: `new TFRequest("predict_images").addFeed("images", [1, 784],
 * TFRequest.DT_FLOAT, values).addFetch("scores")`. */
export class TFRequest {
  static readonly DT_FLOAT = ArrayDataType.DT_FLOAT;
  static readonly DT_DOUBLE = ArrayDataType.DT_DOUBLE;
  static readonly DT_INT32 = ArrayDataType.DT_INT32;
  static readonly DT_UINT8 = ArrayDataType.DT_UINT8;
  static readonly DT_INT16 = ArrayDataType.DT_INT16;
  static readonly DT_INT8 = ArrayDataType.DT_INT8;
  static readonly DT_STRING = ArrayDataType.DT_STRING;
  static readonly DT_INT64 = ArrayDataType.DT_INT64;
  static readonly DT_BOOL = ArrayDataType.DT_BOOL;

  readonly inputs: Inputs = {};
  readonly fetches: string[] = [];

  constructor(readonly signatureName = "") {}

  /** Add an input; `dtype` is an ArrayDataType number (TFRequest.DT_FLOAT) or a dtype name. */
  addFeed(name: string, shape: number[], dtype: number | DType, values: Inputs[string]["data"]): this {
    const named = typeof dtype === "number" ? CARRIED[dtype]?.[0] : dtype;
    if (named === undefined) {
      throw new LiqiError(`Feed '${name}': ArrayDataType ${dtype} cannot be carried by an ArrayProto.`, {
        code: "invalid_input",
      });
    }
    normalizeInput(name, { data: values, shape, dtype: named });
    this.inputs[name] = { data: values, shape, dtype: named };
    return this;
  }

  /** Ask for one output (all of the signature's outputs when none is asked for). */
  addFetch(name: string): this {
    this.fetches.push(name);
    return this;
  }

  /** The serialized PredictRequest, as the SDKs' `to_string()`. */
  toBytes(): Uint8Array {
    const tensors = Object.fromEntries(Object.entries(this.inputs).map(([n, i]) => [n, normalizeInput(n, i)]));
    return encodePredictRequest(this.signatureName, tensors, this.fetches);
  }
}

/** What `predict(TFRequest)` answers, as the SDKs' TFResponse. */
export class TFResponse {
  constructor(readonly outputs: Outputs) {}

  getTensorShape(name: string): number[] {
    return this.get(name).shape;
  }

  getValues(name: string): Tensor["data"] {
    return this.get(name).data;
  }

  private get(name: string): Tensor {
    const tensor = this.outputs[name];
    if (tensor === undefined) {
      throw new LiqiError(`No output '${name}' in the response; it has ${Object.keys(this.outputs).join(", ") || "none"}.`, {
        code: "invalid_input",
      });
    }
    return tensor;
  }
}
