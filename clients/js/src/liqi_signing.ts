/**
 * LIQI1-HMAC-SHA256, the control plane's request signature (docs/auth.md,
 * src/liqi/core/signing.py). The string to sign is seven lines: algorithm, date
 * (YYYYMMDDTHHMMSSZ, UTC), nonce, METHOD, path as sent, canonical query, hex SHA-256 of the body.
 */
import { hmacSha256Hex, sha256Hex } from "./digest.js";
import { toHex } from "./md5.js";

export const ALGORITHM = "LIQI1-HMAC-SHA256";

/** RFC 3986 encoding: only A-Z a-z 0-9 - _ . ~ stay as they are. */
function rfc3986(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** The query parsed as form data, every key and value RFC 3986 encoded, pairs sorted. */
export function canonicalQuery(rawQuery: string): string {
  const pairs = [...new URLSearchParams(rawQuery)].map(([k, v]) => [rfc3986(k), rfc3986(v)] as const);
  pairs.sort(([ka, va], [kb, vb]) => (ka < kb ? -1 : ka > kb ? 1 : va < vb ? -1 : va > vb ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join("&");
}

export function formatDate(when: Date): string {
  return when.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

export function newNonce(): string {
  return toHex(globalThis.crypto.getRandomValues(new Uint8Array(12)));
}

export interface LiqiSignInput {
  accessId: string;
  secret: string;
  method: string;
  /** Path as sent, still percent-encoded, without the query. */
  path: string;
  rawQuery: string;
  body: Uint8Array;
  now: Date;
  nonce?: string;
}

export function liqiStringToSign(fields: { date: string; nonce: string; method: string; path: string; rawQuery: string; contentSha256: string }): string {
  return [ALGORITHM, fields.date, fields.nonce, fields.method.toUpperCase(), fields.path, canonicalQuery(fields.rawQuery), fields.contentSha256].join("\n");
}

/** Authorization, x-liqi-date, x-liqi-nonce and x-liqi-content-sha256 for one request. */
export async function liqiHeaders(input: LiqiSignInput): Promise<Record<string, string>> {
  const date = formatDate(input.now);
  const nonce = input.nonce ?? newNonce();
  const contentSha256 = await sha256Hex(input.body);
  const text = liqiStringToSign({ date, nonce, method: input.method, path: input.path, rawQuery: input.rawQuery, contentSha256 });
  return {
    authorization: `${ALGORITHM} ${input.accessId}:${await hmacSha256Hex(input.secret, text)}`,
    "x-liqi-date": date,
    "x-liqi-nonce": nonce,
    "x-liqi-content-sha256": contentSha256,
  };
}
