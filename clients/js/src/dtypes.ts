/** Dtype names of the wire formats: TensorFlow's (EAS, TF Serving metadata) and V2's. */
import type { DType } from "./tensors.js";

export const TF_DTYPES: Record<string, DType> = {
  DT_FLOAT: "float32",
  DT_DOUBLE: "float64",
  DT_INT8: "int8",
  DT_INT16: "int16",
  DT_INT32: "int32",
  DT_INT64: "int64",
  DT_UINT8: "uint8",
  DT_UINT16: "uint16",
  DT_UINT32: "uint32",
  DT_UINT64: "uint64",
  DT_BOOL: "bool",
  DT_STRING: "string",
};

export const V2_DTYPES: Record<string, DType> = {
  BOOL: "bool",
  UINT8: "uint8",
  UINT16: "uint16",
  UINT32: "uint32",
  UINT64: "uint64",
  INT8: "int8",
  INT16: "int16",
  INT32: "int32",
  INT64: "int64",
  FP32: "float32",
  FP64: "float64",
  BYTES: "string",
};
