/** One HTTP exchange with timeouts and bounded retries, over `fetch`; failures as LiqiError. */
import { codeForStatus, LiqiError } from "./errors.js";
import { isRetryableStatus, retryDelayMs } from "./retry.js";

export type Fetch = typeof globalThis.fetch;

export interface Exchange {
  method: string;
  url: string;
  body?: Uint8Array | undefined;
  /** Called before every attempt: signatures carry a date and a nonce, so each attempt is
   * signed anew. */
  headers: () => Promise<Record<string, string>>;
  /** Names the other side in messages: "Service 'mnist'", "The control plane". */
  peer: string;
}

export interface TransportOptions {
  timeoutMs: number;
  retries: number;
  fetch: Fetch;
}

export interface Answer {
  status: number;
  headers: Headers;
  body: Uint8Array;
  url: string;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Send `exchange`; a 2xx answer resolves, anything else rejects with a LiqiError. Retries
 * 503 answers, network errors and timeouts up to `retries` times; never 4xx. */
export async function send(exchange: Exchange, options: TransportOptions): Promise<Answer> {
  for (let attempt = 0; ; attempt++) {
    const last = attempt >= options.retries;
    let answer: Answer;
    try {
      answer = await attemptOnce(exchange, options);
    } catch (error) {
      if (!(error instanceof LiqiError) || last) throw error;
      await sleep(retryDelayMs(attempt, null, Date.now(), Math.random));
      continue;
    }
    if (answer.status >= 200 && answer.status < 300) return answer;
    if (last || !isRetryableStatus(answer.status)) throw errorFromAnswer(exchange, answer, attempt);
    await sleep(retryDelayMs(attempt, answer.headers.get("retry-after"), Date.now(), Math.random));
  }
}

async function attemptOnce(exchange: Exchange, options: TransportOptions): Promise<Answer> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), options.timeoutMs);
  try {
    const response = await options.fetch(exchange.url, {
      method: exchange.method,
      headers: await exchange.headers(),
      body: exchange.body as BodyInit | undefined,
      signal: controller.signal,
    });
    const body = new Uint8Array(await response.arrayBuffer());
    return { status: response.status, headers: response.headers, body, url: exchange.url };
  } catch (error) {
    if (controller.signal.aborted) {
      throw new LiqiError(
        `${exchange.peer} at ${exchange.url} did not answer within ${options.timeoutMs} ms (timeoutMs).`,
        { code: "timeout", url: exchange.url, cause: error },
      );
    }
    const cause = (error as { cause?: { message?: string; code?: string } }).cause;
    const reason = cause?.code ?? cause?.message ?? (error as Error).message;
    throw new LiqiError(`${exchange.peer} at ${exchange.url} could not be reached: ${reason}.`, {
      code: "network_error",
      url: exchange.url,
      cause: error,
    });
  } finally {
    clearTimeout(timer);
  }
}

/** The LiqiError for a non-2xx answer: `{code, message}` (control plane), `{error}` (TF
 * Serving, V2) or a text body (EAS). */
export function errorFromAnswer(exchange: Exchange, answer: Answer, retries = 0): LiqiError {
  const text = new TextDecoder().decode(answer.body).trim();
  let code = codeForStatus(answer.status);
  let detail = text.length > 500 ? `${text.slice(0, 500)}...` : text;
  try {
    const parsed = JSON.parse(text) as { code?: unknown; message?: unknown; error?: unknown };
    if (typeof parsed.code === "string") code = parsed.code;
    if (typeof parsed.message === "string") detail = parsed.message;
    else if (typeof parsed.error === "string") detail = parsed.error;
  } catch {
    // a text body: EAS errors, proxies
  }
  const tries = retries > 0 ? ` after ${retries + 1} attempts` : "";
  return new LiqiError(
    `${exchange.peer} at ${exchange.method} ${exchange.url} answered ${answer.status}${tries}: ${detail || "(empty body)"}`,
    { status: answer.status, code, url: exchange.url },
  );
}

/** The endpoint as a base URL without a trailing slash; only http(s) URLs are accepted. */
export function baseUrl(endpoint: string): string {
  let url: URL | undefined;
  try {
    url = new URL(endpoint);
  } catch {
    url = undefined;
  }
  if (url === undefined || (url.protocol !== "http:" && url.protocol !== "https:")) {
    throw new LiqiError(`endpoint must be an http(s) URL such as http://127.0.0.1:8080, received '${endpoint}'.`, { code: "invalid_input" });
  }
  return url.href.replace(/\/+$/, "");
}
