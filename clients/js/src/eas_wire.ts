/** Protobuf wire format written by hand where protobufjs is slow: packed float and double
 * values, which it writes one element at a time, are copied as bytes from the typed array
 * (protobuf's fixed32/fixed64 are little-endian, as typed arrays are on every host we know;
 * a big-endian host gets undefined and the caller lets protobufjs write them). */

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const LENGTH_DELIMITED = 2;
const encoder = new TextEncoder();

/** Bytes of a message, as parts to concatenate once at the end. */
export type Parts = Uint8Array[];

export function varint(value: number): Uint8Array {
  const out: number[] = [];
  let rest = value;
  while (rest > 0x7f) {
    out.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  out.push(rest);
  return Uint8Array.from(out);
}

function byteLength(parts: Parts): number {
  let length = 0;
  for (const part of parts) length += part.byteLength;
  return length;
}

/** Field `field` holding `payload` (a message, a string, packed values): tag, length, bytes. */
export function delimited(field: number, payload: Parts): Parts {
  return [varint(field * 8 + LENGTH_DELIMITED), varint(byteLength(payload)), ...payload];
}

export function stringField(field: number, text: string): Parts {
  return delimited(field, [encoder.encode(text)]);
}

/** The packed field of `data`'s elements as they lie in memory; undefined when that is not
 * the wire's byte order (or `data` is not float32/float64). Empty data writes nothing, as
 * protobuf does. */
export function packedFixed(field: number, data: unknown): Parts | undefined {
  if (!LITTLE_ENDIAN || !(data instanceof Float32Array || data instanceof Float64Array)) return undefined;
  if (data.length === 0) return [];
  return delimited(field, [new Uint8Array(data.buffer, data.byteOffset, data.byteLength)]);
}

export function concat(parts: Parts): Uint8Array {
  const out = new Uint8Array(byteLength(parts));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}
