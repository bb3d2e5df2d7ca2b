/** When to retry and how long to wait (pure: the caller passes the clock and randomness). */

export const BASE_DELAY_MS = 100;
export const MAX_BACKOFF_MS = 2_000;
/** The longest a Retry-After header may make the client wait before one retry. */
export const MAX_RETRY_AFTER_MS = 30_000;

/** Statuses worth retrying: the server is overloaded or not ready yet. Never 4xx. */
export function isRetryableStatus(status: number): boolean {
  return status === 503;
}

/** Milliseconds a Retry-After value asks for (seconds or an HTTP date); undefined if absent
 * or unreadable. */
export function retryAfterMs(value: string | null, nowMs: number): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text) * 1000;
  const when = Date.parse(text);
  return Number.isNaN(when) ? undefined : Math.max(0, when - nowMs);
}

/**
 * Delay before retry number `attempt` (0 for the first retry): exponential backoff with
 * jitter (half to all of 100 ms x 2^attempt, at most 2 s), or the server's Retry-After when
 * that is longer (at most 30 s).
 */
export function retryDelayMs(attempt: number, retryAfter: string | null, nowMs: number, random: () => number): number {
  const backoff = Math.min(MAX_BACKOFF_MS, BASE_DELAY_MS * 2 ** attempt) * (0.5 + random() / 2);
  const asked = retryAfterMs(retryAfter, nowMs);
  return asked === undefined ? backoff : Math.min(MAX_RETRY_AFTER_MS, Math.max(backoff, asked));
}
