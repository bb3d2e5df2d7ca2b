/** The one error class of the client: HTTP failures, timeouts, network and format errors. */
export class LiqiError extends Error {
  /** HTTP status of the answer; 0 when there was none (timeout, network, bad input). */
  readonly status: number;
  /** Stable code: the server's `code` when it sent one, else one of the client's codes
   * (`timeout`, `network_error`, `bad_response`, `invalid_input`, `http_<status>`). */
  readonly code: string;
  /** The URL of the request that failed, when there was one. */
  readonly url: string | undefined;

  constructor(message: string, options: { status?: number; code: string; url?: string; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "LiqiError";
    this.status = options.status ?? 0;
    this.code = options.code;
    this.url = options.url;
  }
}

/** A code for an HTTP status when the body carries none. */
export function codeForStatus(status: number): string {
  const known: Record<number, string> = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
    504: "timeout",
  };
  return known[status] ?? `http_${status}`;
}
