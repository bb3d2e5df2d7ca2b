/** Hashes and HMACs through WebCrypto (`globalThis.crypto.subtle`): Node >= 18 and browsers. */
import { toHex } from "./md5.js";

const encoder = new TextEncoder();

function subtle(): SubtleCrypto {
  const crypto = (globalThis as { crypto?: Crypto }).crypto;
  if (!crypto?.subtle) {
    throw new Error(
      "WebCrypto (globalThis.crypto.subtle) is not available: use Node >= 18, or a browser page served over https or localhost.",
    );
  }
  return crypto.subtle;
}

function bytes(data: Uint8Array | string): Uint8Array<ArrayBuffer> {
  return typeof data === "string" ? encoder.encode(data) : new Uint8Array(data);
}

async function hmac(hash: "SHA-1" | "SHA-256", key: string, message: Uint8Array | string): Promise<Uint8Array> {
  const cryptoKey = await subtle().importKey("raw", encoder.encode(key), { name: "HMAC", hash }, false, ["sign"]);
  return new Uint8Array(await subtle().sign("HMAC", cryptoKey, bytes(message)));
}

export async function hmacSha1Base64(key: string, message: string): Promise<string> {
  return toBase64(await hmac("SHA-1", key, message));
}

export async function hmacSha256Hex(key: string, message: string): Promise<string> {
  return toHex(await hmac("SHA-256", key, message));
}

export async function sha256Hex(data: Uint8Array | string): Promise<string> {
  return toHex(new Uint8Array(await subtle().digest("SHA-256", bytes(data))));
}

export function toBase64(data: Uint8Array): string {
  let binary = "";
  for (const byte of data) binary += String.fromCharCode(byte);
  return btoa(binary);
}
