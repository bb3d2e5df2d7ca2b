/** Flat row-major data to nested JSON text and nested JSON values back to flat data. */
import { LiqiError } from "./errors.js";
import { isTypedArray, jsonElement, type Tensor } from "./tensors.js";

/** Nested JSON text of a tensor (a scalar for shape []). */
export function nestedJson(name: string, tensor: Tensor): string {
  const numeric = numericJson(name, tensor);
  if (numeric !== undefined) return numeric;
  const data = tensor.data as ArrayLike<unknown>;
  let index = 0;
  const write = (depth: number): string => {
    if (depth === tensor.shape.length) return jsonElement(tensor, data[index++], name);
    const parts: string[] = [];
    for (let i = 0; i < tensor.shape[depth]!; i++) parts.push(write(depth + 1));
    return `[${parts.join(",")}]`;
  };
  return write(0);
}

/** The same text for numbers in a typed array, each innermost row written by the array's
 * `join` (which spells elements as String does) instead of element by element; undefined
 * for other tensors. NaN and infinities are refused, as jsonElement does. */
function numericJson(name: string, tensor: Tensor): string | undefined {
  const { data, shape } = tensor;
  if (tensor.dtype === "bool" || !isTypedArray(data) || shape.length === 0) return undefined;
  const inner = shape[shape.length - 1]!;
  let index = 0;
  const write = (depth: number): string => {
    if (depth === shape.length - 1) {
      index += inner;
      return `[${data.subarray(index - inner, index).join(",")}]`;
    }
    const parts: string[] = [];
    for (let i = 0; i < shape[depth]!; i++) parts.push(write(depth + 1));
    return `[${parts.join(",")}]`;
  };
  const text = write(0);
  if (/[NI]/.test(text)) {
    // "NaN" or "Infinity" somewhere (numbers are otherwise digits, ".", "-", "e", "+")
    for (let i = 0; i < data.length; i++) jsonElement(tensor, data[i], name);
  }
  return text;
}

/** Flatten a rectangular nested list; returns its values and shape. */
export function flatten(value: unknown, what: string): { values: unknown[]; shape: number[] } {
  const shape: number[] = [];
  for (let level: unknown = value; Array.isArray(level); level = level[0]) shape.push(level.length);
  const values: unknown[] = [];
  const walk = (node: unknown, depth: number): void => {
    if (depth === shape.length) {
      if (Array.isArray(node)) throw ragged(what);
      values.push(node);
      return;
    }
    if (!Array.isArray(node) || node.length !== shape[depth]) throw ragged(what);
    for (const child of node) walk(child, depth + 1);
  };
  walk(value, 0);
  return { values, shape };
}

function ragged(what: string): LiqiError {
  return new LiqiError(`${what} is not a rectangular nested list.`, { code: "bad_response" });
}
