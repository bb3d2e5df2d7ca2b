/** Authorization headers for the model server: raw token, Bearer, or the EAS SDKs'
 * `EAS <base64 HMAC-SHA1(token, "METHOD\n<md5 hex>\n<content-type>\n<date>\n<path>")>`. */
import { hmacSha1Base64 } from "./digest.js";
import { md5Hex } from "./md5.js";

export type Signing = "eas" | "raw" | "bearer";

export interface SignInput {
  method: string;
  path: string;
  body: Uint8Array;
  contentType: string;
  /** RFC 1123 date, e.g. "Wed, 25 Nov 2026 12:00:00 GMT". */
  date: string;
}

export function easStringToSign(input: SignInput & { contentMd5: string }): string {
  return [input.method.toUpperCase(), input.contentMd5, input.contentType, input.date, input.path].join("\n");
}

/** The EAS SDK headers: Content-MD5, Date, Content-Type and Authorization. */
export async function easHeaders(token: string, input: SignInput): Promise<Record<string, string>> {
  const contentMd5 = md5Hex(input.body);
  const signature = await hmacSha1Base64(token, easStringToSign({ ...input, contentMd5 }));
  return {
    "Content-MD5": contentMd5,
    Date: input.date,
    "Content-Type": input.contentType,
    Authorization: `EAS ${signature}`,
  };
}

/** Headers for `signing` (none without a token). Browsers refuse to set `Date`, so use
 * "raw" or "bearer" there. */
export async function authHeaders(token: string | undefined, signing: Signing, input: SignInput): Promise<Record<string, string>> {
  if (!token) return { "Content-Type": input.contentType };
  if (signing === "eas") return easHeaders(token, input);
  const authorization = signing === "bearer" ? `Bearer ${token}` : token;
  return { "Content-Type": input.contentType, Authorization: authorization };
}
