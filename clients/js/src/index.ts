export { ArrayDataType, decodePredictResponse, encodePredictRequest, TFRequest, TFResponse } from "./eas.js";
export { authHeaders, easHeaders, easStringToSign, type Signing } from "./eas_signing.js";
export { LiqiError } from "./errors.js";
export { md5, md5Hex } from "./md5.js";
export { PredictClient, type PredictClientOptions, type PredictOptions, type Protocol } from "./predict_client.js";
export { retryDelayMs } from "./retry.js";
export type { DType, Inputs, Outputs, Tensor, TensorInput, TypedArray } from "./tensors.js";
export { ControlClient, type ControlClientOptions, type Job, type LogChunk, type Model, type ModelVersion } from "./control_client.js";
export { canonicalQuery, liqiHeaders, liqiStringToSign } from "./liqi_signing.js";
export {
  isSettled,
  type Service,
  type ServiceEvent,
  type ServiceInstance,
  type ServiceLogChunk,
  type ServiceSpec,
  type ServiceToken,
  type ServiceVersion,
} from "./services.js";
export { checkInputs, readSignature, type Signature, type TensorSpec } from "./signature.js";
