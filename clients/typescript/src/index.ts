/**
 * @crm-events/client: the crm-events stream and publishing API, for browsers and
 * Node 20+, with no runtime dependencies.
 *
 * - {@link connect} opens `GET /crm-events` and yields typed events. It resumes
 *   exactly after every disconnect (each request carries the last event id), backs
 *   off as the server asks (`retry:`, `Retry-After`), surfaces `gap`, `reset` and
 *   `auth_expired`, and on an expired token asks for a new one and resumes where the
 *   old one stopped.
 * - {@link publish} sends one event to `POST /crm-events` with an idempotency key, and
 *   retries with the same key, so a retry never makes a second event.
 *
 * The protocol is docs/src/stream.md; the event shapes come from the AsyncAPI
 * document's JSON Schemas (src/events.ts is generated from them).
 */
import type {
  AuthExpired,
  Connected,
  DomainEvent,
  EventId,
  Gap,
  Reset,
  TenantDomainEvent,
} from "./events.js";

export type { AuthExpired, Connected, DomainEvent, EventId, Gap, Reset, TenantDomainEvent };

/** The stream's route. */
export const STREAM_PATH = "/crm-events";
/** The session route (browsers' cookie sign-in). */
export const SESSION_PATH = "/crm-events/session";

// ---------------------------------------------------------------------------------
// Errors

/** A refusal from the service (its JSON error body), or a failure to reach it. */
export class CrmEventsError extends Error {
  /** The HTTP status, or null when no answer came (network, abort). */
  readonly status: number | null;
  /** The service's `error` code (`invalid_token`, `forbidden`, …), or `network`. */
  readonly code: string;
  /** What `Retry-After` asked for, ms. */
  readonly retryAfterMs: number | null;
  /** The whole JSON error body, when there was one. */
  readonly body: Record<string, unknown> | null;

  constructor(
    message: string,
    init: { status?: number | null; code: string; retryAfterMs?: number | null; body?: Record<string, unknown> | null },
  ) {
    super(message);
    this.name = "CrmEventsError";
    this.status = init.status ?? null;
    this.code = init.code;
    this.retryAfterMs = init.retryAfterMs ?? null;
    this.body = init.body ?? null;
  }
}

/** The error a refused response carries, read from its JSON body. */
async function errorFrom(response: Response): Promise<CrmEventsError> {
  let body: Record<string, unknown> | null = null;
  try {
    const parsed: unknown = await response.json();
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
  } catch {
    // Not JSON (a proxy's page, say): the status says enough.
  }
  const code = typeof body?.error === "string" ? body.error : `http_${response.status}`;
  const message = typeof body?.message === "string" ? body.message : `${response.status} ${response.statusText}`;
  return new CrmEventsError(message, {
    status: response.status,
    code,
    retryAfterMs: retryAfterMs(response.headers.get("retry-after")),
    body,
  });
}

function networkError(cause: unknown): CrmEventsError {
  const message = cause instanceof Error ? cause.message : String(cause);
  return new CrmEventsError(`the service could not be reached: ${message}`, { code: "network" });
}

/** `Retry-After` in ms: delay-seconds or an HTTP date; null when absent or unreadable. */
export function retryAfterMs(header: string | null): number | null {
  if (header === null) return null;
  const value = header.trim();
  if (/^[0-9]{1,9}$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, at - Date.now());
}

/** The first wait before a new attempt, and the longest, ms (unless given). */
const DEFAULT_MIN_RETRY_MS = 500;
const DEFAULT_MAX_RETRY_MS = 30_000;

/**
 * The wait before attempt `attempt` (1: the first retry): doubling from `minMs` up to
 * `maxMs`, with jitter over its upper half, and never sooner than `Retry-After`.
 */
function backoffMs(attempt: number, minMs: number, maxMs: number | undefined, retryAfter: number | null): number {
  const max = Math.max(minMs, maxMs ?? DEFAULT_MAX_RETRY_MS);
  const base = Math.min(max, minMs * 2 ** Math.max(0, attempt - 1));
  return Math.max(retryAfter ?? 0, Math.round(base / 2 + (Math.random() * base) / 2));
}

/** Statuses worth trying again: the service is busy, limiting, or briefly away. */
function isTransient(status: number | null): boolean {
  return status === null || status === 408 || status === 429 || status === 502 || status === 503 || status === 504;
}

// ---------------------------------------------------------------------------------
// Server-sent events framing (the WHATWG "event stream" format)

/** One dispatched block of `field: value` lines. */
export interface SseFrame {
  /** `event:` (absent: `message`). */
  event: string;
  /** The `data:` lines, joined with LF. */
  data: string;
  /** `id:` when the block had one. */
  id: string | undefined;
  /** `retry:` when the block had a valid one, ms. */
  retry: number | undefined;
}

/**
 * Splits a byte stream into SSE frames, as the HTML standard's event-stream parser
 * does: CR, LF or CRLF end lines, `:` lines are comments, a blank line dispatches.
 * A block with an `id:` but no data is still reported (it moves the position).
 */
export class SseParser {
  private decoder = new TextDecoder("utf-8");
  private pending = "";
  private sawCR = false;
  private frame = SseParser.empty();

  private static empty() {
    return { event: "", data: [] as string[], id: undefined as string | undefined, retry: undefined as number | undefined, fields: 0 };
  }

  /** Feeds bytes; returns the frames they complete. */
  push(chunk: Uint8Array): SseFrame[] {
    return this.lines(this.decoder.decode(chunk, { stream: true }));
  }

  private lines(text: string): SseFrame[] {
    const out: SseFrame[] = [];
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 10 && this.sawCR) {
        // The LF of a CRLF whose CR already ended the line.
        this.sawCR = false;
        start = i + 1;
        continue;
      }
      this.sawCR = false;
      if (c !== 10 && c !== 13) continue;
      this.sawCR = c === 13;
      const line = this.pending + text.slice(start, i);
      this.pending = "";
      start = i + 1;
      const frame = this.line(line);
      if (frame) out.push(frame);
    }
    this.pending += text.slice(start);
    return out;
  }

  private line(line: string): SseFrame | null {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    const f = this.frame;
    if (name === "event") f.event = value;
    else if (name === "data") f.data.push(value);
    else if (name === "id" && !value.includes("\0")) f.id = value;
    else if (name === "retry" && /^[0-9]+$/.test(value)) f.retry = Number(value);
    else return null;
    f.fields += 1;
    return null;
  }

  private dispatch(): SseFrame | null {
    const f = this.frame;
    this.frame = SseParser.empty();
    if (f.fields === 0) return null;
    return { event: f.event || "message", data: f.data.join("\n"), id: f.id, retry: f.retry };
  }
}

// ---------------------------------------------------------------------------------
// The stream

/** What {@link connect} yields. */
export type StreamEvent =
  /** The stream (re)started: `id` is where it starts, `data.epoch` the stream's epoch. */
  | { type: "connected"; id: EventId; data: Connected }
  /** A CRM event. A tenant's stream carries {@link TenantDomainEvent}s. */
  | { type: "event"; id: EventId; data: DomainEvent | TenantDomainEvent }
  /** History the position needed is gone; the stream goes on from `data.oldest`. */
  | { type: "gap"; data: Gap }
  /** The stream starts over in a new epoch: events already seen may come again. */
  | { type: "reset"; id: EventId | null; data: Reset }
  /** The token expired; the client gets a new one (when it can) and resumes. */
  | { type: "auth_expired"; data: AuthExpired };

/** Where the connection stands, for a status line. */
export type ConnectionStatus =
  | { state: "connecting"; attempt: number }
  | { state: "live"; epoch: string | null }
  | { state: "retrying"; attempt: number; delayMs: number; error: CrmEventsError }
  | { state: "signing_in"; error: CrmEventsError | null }
  | { state: "closed"; error: CrmEventsError | null };

/** A token, or a function that returns a fresh one each time it is called. */
export type TokenSource = string | (() => string | Promise<string>);

/** The session route's answer (who is signed in). */
export interface Session {
  ok: true;
  subject: string | null;
  tenants: string[];
  types: string[] | null;
  permissions?: string[];
  expires_at: number | null;
  auth_mode: "jwt" | "none";
  [field: string]: unknown;
}

export interface ConnectOptions {
  /** The service's base URL (`https://crm.example.com`); in a page, its own origin by default. */
  url?: string | URL;
  /**
   * A bearer token, sent as `Authorization` on every request (Node, workers, any
   * page that holds its token). A function is called again when the token expires.
   */
  token?: TokenSource;
  /**
   * Browsers: signs in with the session cookie instead of a header. The stream is
   * first opened with the cookie the page may already have; when the service refuses
   * it (no session, or an expired one), `signIn` is asked for a token, which goes to
   * `POST /crm-events/session` once and is not kept. It gets the refusal that made it
   * necessary; throw from it to give up. Outside a browser the token is sent as a header.
   */
  signIn?: (refusal: CrmEventsError | null) => string | Promise<string>;
  /** Called with the session after each cookie sign-in. */
  onSession?: (session: Session) => void;
  /** `?tenant=`: the tenant to stream (required for a token of several tenants). */
  tenant?: string;
  /** `?type=`: only these event types. */
  types?: string[];
  /** Resume after this id (a previous stream's {@link EventStream.lastEventId}). */
  lastEventId?: string;
  /** With no `lastEventId`: start this many entries back (1–10,000). */
  tail?: number;
  /** With no `lastEventId`: replay from this time. */
  since?: Date | string | number;
  /** Backoff between attempts, ms: doubles from `minRetryMs` (or the server's `retry:`) up to `maxRetryMs`. */
  minRetryMs?: number;
  maxRetryMs?: number;
  /** Ends the stream (as {@link EventStream.close} does). */
  signal?: AbortSignal;
  /** Status changes: connecting, live, retrying, signing in, closed. */
  onStatus?: (status: ConnectionStatus) => void;
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
}

/** An open stream: iterate it with `for await`; `close()` ends it. */
export interface EventStream extends AsyncIterable<StreamEvent> {
  /** The last position received: pass it as `lastEventId` to continue elsewhere. */
  readonly lastEventId: EventId | null;
  close(): void;
}

/**
 * Opens the stream. Nothing is sent until it is iterated; errors that retrying cannot
 * fix (`400`, `403`, a refused token that cannot be renewed) end the iteration by
 * throwing a {@link CrmEventsError}.
 */
export function connect(options: ConnectOptions = {}): EventStream {
  return new Subscription(options);
}

/** How requests are authenticated: a header, the session cookie, or nothing. */
interface Credentials {
  headers: Record<string, string>;
  cookie: boolean;
}

class Subscription implements EventStream {
  private position: EventId | null;
  private serverRetryMs: number | null = null;
  private readonly abort = new AbortController();
  private readonly base: URL;
  private readonly fetcher: typeof fetch;
  private started = false;

  constructor(private readonly options: ConnectOptions) {
    this.position = options.lastEventId || null;
    this.base = baseUrl(options.url);
    this.fetcher = fetcherOf(options.fetch);
    if (options.token !== undefined && options.signIn !== undefined) {
      throw new TypeError("connect: give `token` or `signIn`, not both");
    }
    options.signal?.addEventListener("abort", () => this.close(), { once: true });
  }

  get lastEventId(): EventId | null {
    return this.position;
  }

  close(): void {
    this.abort.abort();
  }

  [Symbol.asyncIterator](): AsyncIterator<StreamEvent> {
    if (this.started) throw new TypeError("connect: a stream can be iterated once");
    this.started = true;
    return this.run();
  }

  private status(s: ConnectionStatus): void {
    this.options.onStatus?.(s);
  }

  private async *run(): AsyncGenerator<StreamEvent> {
    let error: CrmEventsError | null = null;
    try {
      yield* this.loop();
    } catch (e) {
      if (!this.abort.signal.aborted) {
        error = e instanceof CrmEventsError ? e : networkError(e);
        throw error;
      }
    } finally {
      this.abort.abort();
      this.status({ state: "closed", error });
    }
  }

  /** Opens, reads, and reopens the stream until it is closed or refused for good. */
  private async *loop(): AsyncGenerator<StreamEvent> {
    let credentials = await this.initialCredentials();
    let attempt = 0;
    let refusals = 0;
    while (!this.abort.signal.aborted) {
      this.status({ state: "connecting", attempt });
      const opened = await this.open(credentials);
      if (opened instanceof Response) {
        refusals = 0;
        const ending = yield* this.read(opened);
        if (ending.expired) {
          credentials = await this.renew(ending.expired);
          attempt = 0;
          continue;
        }
        attempt = ending.live ? 1 : attempt + 1;
        await this.wait(attempt, ending.error ?? new CrmEventsError("the stream ended", { code: "stream_ended" }));
      } else if (opened.status === 401) {
        // A refused token or session: renew it at once; refused again, back off first
        // (a token function that keeps returning refused tokens gives up).
        refusals += 1;
        if (!this.canRenew() || (refusals > 2 && typeof this.options.token === "function")) throw opened;
        if (refusals > 1) await this.wait(++attempt, opened);
        credentials = await this.renew(opened);
      } else if (isTransient(opened.status)) {
        await this.wait(++attempt, opened);
      } else {
        throw opened;
      }
    }
  }

  /** Requests the stream; returns the response when it is one, else the refusal. */
  private async open(credentials: Credentials): Promise<Response | CrmEventsError> {
    let response: Response;
    try {
      response = await this.fetcher(this.streamUrl(), {
        headers: { accept: "text/event-stream", ...credentials.headers },
        credentials: credentials.cookie ? "include" : "same-origin",
        cache: "no-store",
        signal: this.abort.signal,
      });
    } catch (e) {
      return networkError(e);
    }
    const type = response.headers.get("content-type") ?? "";
    if (response.status === 200 && type.startsWith("text/event-stream") && response.body) return response;
    if (response.status === 200) {
      await response.body?.cancel();
      return new CrmEventsError(`not an event stream (${type || "no content type"})`, { status: 200, code: "not_event_stream" });
    }
    return errorFrom(response);
  }

  /** The stream's URL: the filters, and where to start. */
  private streamUrl(): URL {
    const url = new URL(STREAM_PATH, this.base);
    const o = this.options;
    if (o.tenant) url.searchParams.set("tenant", o.tenant);
    if (o.types?.length) url.searchParams.set("type", o.types.join(","));
    // A query parameter rather than a Last-Event-ID header: no CORS preflight.
    if (this.position) url.searchParams.set("last_event_id", this.position);
    else if (o.since !== undefined) url.searchParams.set("since", sinceParameter(o.since));
    else if (o.tail !== undefined) url.searchParams.set("tail", String(o.tail));
    return url;
  }

  /** Reads one response's frames; says how the stream ended. */
  private async *read(response: Response): AsyncGenerator<StreamEvent, StreamEnding> {
    const ending: StreamEnding = { live: false, expired: null, error: null };
    const reader = response.body!.getReader();
    const parser = new SseParser();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        for (const frame of parser.push(value)) {
          const event = this.interpret(frame);
          if (!event) continue;
          if (event.type === "connected") {
            ending.live = true;
            this.status({ state: "live", epoch: event.data.epoch });
          }
          if (event.type === "auth_expired") ending.expired = new CrmEventsError(event.data.message, { status: 401, code: "auth_expired" });
          yield event;
        }
      }
    } catch (e) {
      if (this.abort.signal.aborted) return ending;
      ending.error = networkError(e);
    } finally {
      reader.releaseLock();
      await response.body?.cancel().catch(() => undefined);
    }
    return ending;
  }

  /** A frame as a typed event (null: nothing to hand on), moving the position. */
  private interpret(frame: SseFrame): StreamEvent | null {
    if (frame.retry !== undefined) this.serverRetryMs = frame.retry;
    if (frame.id) this.position = frame.id;
    if (frame.data === "") return null;
    let data: { kind?: unknown };
    try {
      data = JSON.parse(frame.data);
    } catch {
      return null;
    }
    const id = frame.id ?? null;
    if (frame.event === "reset") return { type: "reset", id, data: data as Reset };
    if (frame.event === "auth_expired") {
      const expired = data as AuthExpired;
      if (expired.resume_from) this.position = expired.resume_from;
      return { type: "auth_expired", data: expired };
    }
    if (frame.event !== "message") return null;
    if (data.kind === "connected" && id) return { type: "connected", id, data: data as Connected };
    if (data.kind === "domain_event" && id) return { type: "event", id, data: data as DomainEvent };
    if (data.kind === "gap") return { type: "gap", data: data as Gap };
    return null;
  }

  /** Waits before the next attempt: exponential with jitter, never less than Retry-After. */
  private async wait(attempt: number, error: CrmEventsError): Promise<void> {
    const min = Math.max(this.options.minRetryMs ?? DEFAULT_MIN_RETRY_MS, this.serverRetryMs ?? 0);
    const delayMs = backoffMs(attempt, min, this.options.maxRetryMs, error.retryAfterMs);
    this.status({ state: "retrying", attempt, delayMs, error });
    await sleep(delayMs, this.abort.signal);
  }

  private canRenew(): boolean {
    return typeof this.options.token === "function" || this.options.signIn !== undefined;
  }

  private async initialCredentials(): Promise<Credentials> {
    const o = this.options;
    if (o.token !== undefined) return { headers: bearer(await tokenFrom(o.token)), cookie: false };
    // Cookie sign-in: first try the session the page may already have.
    if (o.signIn && inBrowser()) return { headers: {}, cookie: true };
    if (o.signIn) return { headers: bearer(await o.signIn(null)), cookie: false };
    return { headers: {}, cookie: false };
  }

  /** New credentials after `refusal` (a refused or expired token), or the refusal itself. */
  private async renew(refusal: CrmEventsError): Promise<Credentials> {
    const o = this.options;
    if (typeof o.token === "function") return { headers: bearer(await o.token()), cookie: false };
    if (!o.signIn) throw refusal;
    this.status({ state: "signing_in", error: refusal });
    let reason: CrmEventsError | null = refusal;
    for (;;) {
      const token = await o.signIn(reason);
      if (!inBrowser()) return { headers: bearer(token), cookie: false };
      const session = await this.createSession(token);
      if (!(session instanceof CrmEventsError)) {
        o.onSession?.(session);
        return { headers: {}, cookie: true };
      }
      // A refused token: ask again, saying why; anything else ends the stream.
      if (session.status !== 401 && session.status !== 403) throw session;
      reason = session;
    }
  }

  /** Trades `token` for the session cookie, retrying while the service is busy or away. */
  private async createSession(token: string): Promise<Session | CrmEventsError> {
    for (let attempt = 1; ; attempt++) {
      const session = await signIn({ url: this.base, token, fetch: this.fetcher, signal: this.abort.signal }).catch(
        (e: unknown) => (e instanceof CrmEventsError ? e : networkError(e)),
      );
      if (!(session instanceof CrmEventsError) || !isTransient(session.status) || this.abort.signal.aborted) {
        return session;
      }
      await this.wait(attempt, session);
    }
  }
}

interface StreamEnding {
  /** The stream got as far as `connected`. */
  live: boolean;
  /** It ended on `auth_expired`. */
  expired: CrmEventsError | null;
  /** It broke off (the connection dropped). */
  error: CrmEventsError | null;
}

function sinceParameter(since: Date | string | number): string {
  if (since instanceof Date) return String(since.getTime());
  return String(since);
}

// ---------------------------------------------------------------------------------
// Sessions (browsers' cookie sign-in)

export interface SessionOptions {
  url?: string | URL;
  fetch?: typeof fetch;
  signal?: AbortSignal;
}

/** `POST /crm-events/session`: trades a token for the HttpOnly session cookie. */
export async function signIn(options: SessionOptions & { token: string }): Promise<Session> {
  const response = await sessionRequest(options, "POST", bearer(options.token));
  if (!response.ok) throw await errorFrom(response);
  return (await response.json()) as Session;
}

/** `GET /crm-events/session`: who is signed in, or null when nobody is. */
export async function getSession(options: SessionOptions = {}): Promise<Session | null> {
  const response = await sessionRequest(options, "GET", {});
  if (response.status === 401) return null;
  if (!response.ok) throw await errorFrom(response);
  return (await response.json()) as Session;
}

/** `DELETE /crm-events/session`: signs out (the cookie is cleared). */
export async function signOut(options: SessionOptions = {}): Promise<void> {
  const response = await sessionRequest(options, "DELETE", {});
  if (!response.ok) throw await errorFrom(response);
}

async function sessionRequest(options: SessionOptions, method: string, headers: Record<string, string>): Promise<Response> {
  const fetcher = fetcherOf(options.fetch);
  try {
    return await fetcher(new URL(SESSION_PATH, baseUrl(options.url)), {
      method,
      headers,
      credentials: "include",
      cache: "no-store",
      signal: options.signal ?? null,
    });
  } catch (e) {
    throw networkError(e);
  }
}

// ---------------------------------------------------------------------------------
// Publishing

/** The body of `POST /crm-events`. */
export interface PublishEvent {
  /** The event type (1–200 of `A-Z a-z 0-9 _ . : -`). */
  type: string;
  /** The tenant (a UUID). */
  tenant_id: string;
  /** Any JSON; an object's fields become the event's. */
  payload: unknown;
  /** When it happened (RFC 3339); default: the commit time. */
  occurred_at?: string;
}

export interface PublishOptions {
  url?: string | URL;
  /** A token with the `publish` permission; a function is called again after a `401`. */
  token: TokenSource;
  /** Names this request: a retry with the same key never makes a second event. Default: a random UUID. */
  idempotencyKey?: string;
  /** Attempts after the first, for network errors, `408`, `409` (key in use), `429` and `5xx` busy answers. Default 3. */
  retries?: number;
  minRetryMs?: number;
  maxRetryMs?: number;
  signal?: AbortSignal;
  fetch?: typeof fetch;
}

/** The service's receipt for a published event. */
export interface PublishReceipt {
  /** A receipt id (a UUID): the same for every replay of one key. */
  id: string;
  status: string;
  /** True when the answer is the stored one of an earlier attempt with this key. */
  replayed: boolean;
}

const IDEMPOTENCY_KEY = /^[\x21\x23-\x5b\x5d-\x7e]{1,200}$/;

/** Publishes one event, retrying safely under one idempotency key. */
export async function publish(event: PublishEvent, options: PublishOptions): Promise<PublishReceipt> {
  const key = options.idempotencyKey ?? globalThis.crypto.randomUUID();
  if (!IDEMPOTENCY_KEY.test(key)) {
    throw new TypeError('publish: an idempotency key is 1-200 printable ASCII characters, without `"` or `\\`');
  }
  const body = JSON.stringify(event);
  const retries = options.retries ?? 3;
  let token = await tokenFrom(options.token);
  let renewed = false;
  for (let attempt = 0; ; attempt++) {
    const outcome = await publishOnce(options, body, key, token);
    if (!(outcome instanceof CrmEventsError)) return outcome;
    if (outcome.status === 401 && typeof options.token === "function" && !renewed) {
      token = await options.token();
      renewed = true;
      continue;
    }
    const retryable = isTransient(outcome.status) || outcome.status === 409;
    if (!retryable || attempt >= retries) throw outcome;
    const min = options.minRetryMs ?? DEFAULT_MIN_RETRY_MS;
    await sleep(backoffMs(attempt + 1, min, options.maxRetryMs, outcome.retryAfterMs), options.signal);
  }
}

async function publishOnce(options: PublishOptions, body: string, key: string, token: string): Promise<PublishReceipt | CrmEventsError> {
  const fetcher = fetcherOf(options.fetch);
  let response: Response;
  try {
    response = await fetcher(new URL(STREAM_PATH, baseUrl(options.url)), {
      method: "POST",
      headers: { ...bearer(token), "content-type": "application/json", "idempotency-key": `"${key}"` },
      body,
      credentials: "omit",
      signal: options.signal ?? null,
    });
  } catch (e) {
    if (options.signal?.aborted) throw e;
    return networkError(e);
  }
  if (!response.ok) return errorFrom(response);
  const receipt = (await response.json()) as { id: string; status: string };
  return { id: receipt.id, status: receipt.status, replayed: response.headers.get("idempotent-replayed") === "true" };
}

// ---------------------------------------------------------------------------------
// Small things

function fetcherOf(given: typeof fetch | undefined): typeof fetch {
  return given ?? globalThis.fetch.bind(globalThis);
}

function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

async function tokenFrom(source: TokenSource): Promise<string> {
  return typeof source === "function" ? source() : source;
}

function inBrowser(): boolean {
  return typeof document !== "undefined";
}

function baseUrl(url: string | URL | undefined): URL {
  if (url !== undefined && url !== "") return new URL(url, globalThis.location?.href);
  if (globalThis.location) return new URL(globalThis.location.href);
  throw new TypeError("crm-events: `url` is required outside a browser");
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
