/** The stream's route. */
export const STREAM_PATH = "/crm-events";
/** The session route (browsers' cookie sign-in). */
export const SESSION_PATH = "/crm-events/session";
// ---------------------------------------------------------------------------------
// Errors
/** A refusal from the service (its JSON error body), or a failure to reach it. */
export class CrmEventsError extends Error {
    /** The HTTP status, or null when no answer came (network, abort). */
    status;
    /** The service's `error` code (`invalid_token`, `forbidden`, …), or `network`. */
    code;
    /** What `Retry-After` asked for, ms. */
    retryAfterMs;
    /** The whole JSON error body, when there was one. */
    body;
    constructor(message, init) {
        super(message);
        this.name = "CrmEventsError";
        this.status = init.status ?? null;
        this.code = init.code;
        this.retryAfterMs = init.retryAfterMs ?? null;
        this.body = init.body ?? null;
    }
}
/** The error a refused response carries, read from its JSON body. */
async function errorFrom(response) {
    let body = null;
    try {
        const parsed = await response.json();
        if (parsed && typeof parsed === "object" && !Array.isArray(parsed))
            body = parsed;
    }
    catch {
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
function networkError(cause) {
    const message = cause instanceof Error ? cause.message : String(cause);
    return new CrmEventsError(`the service could not be reached: ${message}`, { code: "network" });
}
/** `Retry-After` in ms: delay-seconds or an HTTP date; null when absent or unreadable. */
export function retryAfterMs(header) {
    if (header === null)
        return null;
    const value = header.trim();
    if (/^[0-9]{1,9}$/.test(value))
        return Number(value) * 1000;
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
function backoffMs(attempt, minMs, maxMs, retryAfter) {
    const max = Math.max(minMs, maxMs ?? DEFAULT_MAX_RETRY_MS);
    const base = Math.min(max, minMs * 2 ** Math.max(0, attempt - 1));
    return Math.max(retryAfter ?? 0, Math.round(base / 2 + (Math.random() * base) / 2));
}
/** Statuses worth trying again: the service is busy, limiting, or briefly away. */
function isTransient(status) {
    return status === null || status === 408 || status === 429 || status === 502 || status === 503 || status === 504;
}
/**
 * Splits a byte stream into SSE frames, as the HTML standard's event-stream parser
 * does: CR, LF or CRLF end lines, `:` lines are comments, a blank line dispatches.
 * A block with an `id:` but no data is still reported (it moves the position).
 */
export class SseParser {
    decoder = new TextDecoder("utf-8");
    pending = "";
    sawCR = false;
    frame = SseParser.empty();
    static empty() {
        return { event: "", data: [], id: undefined, retry: undefined, fields: 0 };
    }
    /** Feeds bytes; returns the frames they complete. */
    push(chunk) {
        return this.lines(this.decoder.decode(chunk, { stream: true }));
    }
    lines(text) {
        const out = [];
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
            if (c !== 10 && c !== 13)
                continue;
            this.sawCR = c === 13;
            const line = this.pending + text.slice(start, i);
            this.pending = "";
            start = i + 1;
            const frame = this.line(line);
            if (frame)
                out.push(frame);
        }
        this.pending += text.slice(start);
        return out;
    }
    line(line) {
        if (line === "")
            return this.dispatch();
        if (line.startsWith(":"))
            return null;
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" "))
            value = value.slice(1);
        const f = this.frame;
        if (name === "event")
            f.event = value;
        else if (name === "data")
            f.data.push(value);
        else if (name === "id" && !value.includes("\0"))
            f.id = value;
        else if (name === "retry" && /^[0-9]+$/.test(value))
            f.retry = Number(value);
        else
            return null;
        f.fields += 1;
        return null;
    }
    dispatch() {
        const f = this.frame;
        this.frame = SseParser.empty();
        if (f.fields === 0)
            return null;
        return { event: f.event || "message", data: f.data.join("\n"), id: f.id, retry: f.retry };
    }
}
/**
 * Opens the stream. Nothing is sent until it is iterated; errors that retrying cannot
 * fix (`400`, `403`, a refused token that cannot be renewed) end the iteration by
 * throwing a {@link CrmEventsError}.
 */
export function connect(options = {}) {
    return new Subscription(options);
}
class Subscription {
    options;
    position;
    serverRetryMs = null;
    abort = new AbortController();
    base;
    fetcher;
    started = false;
    constructor(options) {
        this.options = options;
        this.position = options.lastEventId || null;
        this.base = baseUrl(options.url);
        this.fetcher = fetcherOf(options.fetch);
        if (options.token !== undefined && options.signIn !== undefined) {
            throw new TypeError("connect: give `token` or `signIn`, not both");
        }
        options.signal?.addEventListener("abort", () => this.close(), { once: true });
    }
    get lastEventId() {
        return this.position;
    }
    close() {
        this.abort.abort();
    }
    [Symbol.asyncIterator]() {
        if (this.started)
            throw new TypeError("connect: a stream can be iterated once");
        this.started = true;
        return this.run();
    }
    status(s) {
        this.options.onStatus?.(s);
    }
    async *run() {
        let error = null;
        try {
            yield* this.loop();
        }
        catch (e) {
            if (!this.abort.signal.aborted) {
                error = e instanceof CrmEventsError ? e : networkError(e);
                throw error;
            }
        }
        finally {
            this.abort.abort();
            this.status({ state: "closed", error });
        }
    }
    /** Opens, reads, and reopens the stream until it is closed or refused for good. */
    async *loop() {
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
            }
            else if (opened.status === 401) {
                // A refused token or session: renew it at once; refused again, back off first
                // (a token function that keeps returning refused tokens gives up).
                refusals += 1;
                if (!this.canRenew() || (refusals > 2 && typeof this.options.token === "function"))
                    throw opened;
                if (refusals > 1)
                    await this.wait(++attempt, opened);
                credentials = await this.renew(opened);
            }
            else if (isTransient(opened.status)) {
                await this.wait(++attempt, opened);
            }
            else {
                throw opened;
            }
        }
    }
    /** Requests the stream; returns the response when it is one, else the refusal. */
    async open(credentials) {
        let response;
        try {
            response = await this.fetcher(this.streamUrl(), {
                headers: { accept: "text/event-stream", ...credentials.headers },
                credentials: credentials.cookie ? "include" : "same-origin",
                cache: "no-store",
                signal: this.abort.signal,
            });
        }
        catch (e) {
            return networkError(e);
        }
        const type = response.headers.get("content-type") ?? "";
        if (response.status === 200 && type.startsWith("text/event-stream") && response.body)
            return response;
        if (response.status === 200) {
            await response.body?.cancel();
            return new CrmEventsError(`not an event stream (${type || "no content type"})`, { status: 200, code: "not_event_stream" });
        }
        return errorFrom(response);
    }
    /** The stream's URL: the filters, and where to start. */
    streamUrl() {
        const url = new URL(STREAM_PATH, this.base);
        const o = this.options;
        if (o.tenant)
            url.searchParams.set("tenant", o.tenant);
        if (o.types?.length)
            url.searchParams.set("type", o.types.join(","));
        // A query parameter rather than a Last-Event-ID header: no CORS preflight.
        if (this.position)
            url.searchParams.set("last_event_id", this.position);
        else if (o.since !== undefined)
            url.searchParams.set("since", sinceParameter(o.since));
        else if (o.tail !== undefined)
            url.searchParams.set("tail", String(o.tail));
        return url;
    }
    /** Reads one response's frames; says how the stream ended. */
    async *read(response) {
        const ending = { live: false, expired: null, error: null };
        const reader = response.body.getReader();
        const parser = new SseParser();
        try {
            for (;;) {
                const { done, value } = await reader.read();
                if (done)
                    break;
                for (const frame of parser.push(value)) {
                    const event = this.interpret(frame);
                    if (!event)
                        continue;
                    if (event.type === "connected") {
                        ending.live = true;
                        this.status({ state: "live", epoch: event.data.epoch });
                    }
                    if (event.type === "auth_expired")
                        ending.expired = new CrmEventsError(event.data.message, { status: 401, code: "auth_expired" });
                    yield event;
                }
            }
        }
        catch (e) {
            if (this.abort.signal.aborted)
                return ending;
            ending.error = networkError(e);
        }
        finally {
            reader.releaseLock();
            await response.body?.cancel().catch(() => undefined);
        }
        return ending;
    }
    /** A frame as a typed event (null: nothing to hand on), moving the position. */
    interpret(frame) {
        if (frame.retry !== undefined)
            this.serverRetryMs = frame.retry;
        if (frame.id)
            this.position = frame.id;
        if (frame.data === "")
            return null;
        let data;
        try {
            data = JSON.parse(frame.data);
        }
        catch {
            return null;
        }
        const id = frame.id ?? null;
        if (frame.event === "reset")
            return { type: "reset", id, data: data };
        if (frame.event === "auth_expired") {
            const expired = data;
            if (expired.resume_from)
                this.position = expired.resume_from;
            return { type: "auth_expired", data: expired };
        }
        if (frame.event !== "message")
            return null;
        if (data.kind === "connected" && id)
            return { type: "connected", id, data: data };
        if (data.kind === "domain_event" && id)
            return { type: "event", id, data: data };
        if (data.kind === "gap")
            return { type: "gap", data: data };
        return null;
    }
    /** Waits before the next attempt: exponential with jitter, never less than Retry-After. */
    async wait(attempt, error) {
        const min = Math.max(this.options.minRetryMs ?? DEFAULT_MIN_RETRY_MS, this.serverRetryMs ?? 0);
        const delayMs = backoffMs(attempt, min, this.options.maxRetryMs, error.retryAfterMs);
        this.status({ state: "retrying", attempt, delayMs, error });
        await sleep(delayMs, this.abort.signal);
    }
    canRenew() {
        return typeof this.options.token === "function" || this.options.signIn !== undefined;
    }
    async initialCredentials() {
        const o = this.options;
        if (o.token !== undefined)
            return { headers: bearer(await tokenFrom(o.token)), cookie: false };
        // Cookie sign-in: first try the session the page may already have.
        if (o.signIn && inBrowser())
            return { headers: {}, cookie: true };
        if (o.signIn)
            return { headers: bearer(await o.signIn(null)), cookie: false };
        return { headers: {}, cookie: false };
    }
    /** New credentials after `refusal` (a refused or expired token), or the refusal itself. */
    async renew(refusal) {
        const o = this.options;
        if (typeof o.token === "function")
            return { headers: bearer(await o.token()), cookie: false };
        if (!o.signIn)
            throw refusal;
        this.status({ state: "signing_in", error: refusal });
        let reason = refusal;
        for (;;) {
            const token = await o.signIn(reason);
            if (!inBrowser())
                return { headers: bearer(token), cookie: false };
            const session = await this.createSession(token);
            if (!(session instanceof CrmEventsError)) {
                o.onSession?.(session);
                return { headers: {}, cookie: true };
            }
            // A refused token: ask again, saying why; anything else ends the stream.
            if (session.status !== 401 && session.status !== 403)
                throw session;
            reason = session;
        }
    }
    /** Trades `token` for the session cookie, retrying while the service is busy or away. */
    async createSession(token) {
        for (let attempt = 1;; attempt++) {
            const session = await signIn({ url: this.base, token, fetch: this.fetcher, signal: this.abort.signal }).catch((e) => (e instanceof CrmEventsError ? e : networkError(e)));
            if (!(session instanceof CrmEventsError) || !isTransient(session.status) || this.abort.signal.aborted) {
                return session;
            }
            await this.wait(attempt, session);
        }
    }
}
function sinceParameter(since) {
    if (since instanceof Date)
        return String(since.getTime());
    return String(since);
}
/** `POST /crm-events/session`: trades a token for the HttpOnly session cookie. */
export async function signIn(options) {
    const response = await sessionRequest(options, "POST", bearer(options.token));
    if (!response.ok)
        throw await errorFrom(response);
    return (await response.json());
}
/** `GET /crm-events/session`: who is signed in, or null when nobody is. */
export async function getSession(options = {}) {
    const response = await sessionRequest(options, "GET", {});
    if (response.status === 401)
        return null;
    if (!response.ok)
        throw await errorFrom(response);
    return (await response.json());
}
/** `DELETE /crm-events/session`: signs out (the cookie is cleared). */
export async function signOut(options = {}) {
    const response = await sessionRequest(options, "DELETE", {});
    if (!response.ok)
        throw await errorFrom(response);
}
async function sessionRequest(options, method, headers) {
    const fetcher = fetcherOf(options.fetch);
    try {
        return await fetcher(new URL(SESSION_PATH, baseUrl(options.url)), {
            method,
            headers,
            credentials: "include",
            cache: "no-store",
            signal: options.signal ?? null,
        });
    }
    catch (e) {
        throw networkError(e);
    }
}
const IDEMPOTENCY_KEY = /^[\x21\x23-\x5b\x5d-\x7e]{1,200}$/;
/** Publishes one event, retrying safely under one idempotency key. */
export async function publish(event, options) {
    const key = options.idempotencyKey ?? globalThis.crypto.randomUUID();
    if (!IDEMPOTENCY_KEY.test(key)) {
        throw new TypeError('publish: an idempotency key is 1-200 printable ASCII characters, without `"` or `\\`');
    }
    const body = JSON.stringify(event);
    const retries = options.retries ?? 3;
    let token = await tokenFrom(options.token);
    let renewed = false;
    for (let attempt = 0;; attempt++) {
        const outcome = await publishOnce(options, body, key, token);
        if (!(outcome instanceof CrmEventsError))
            return outcome;
        if (outcome.status === 401 && typeof options.token === "function" && !renewed) {
            token = await options.token();
            renewed = true;
            continue;
        }
        const retryable = isTransient(outcome.status) || outcome.status === 409;
        if (!retryable || attempt >= retries)
            throw outcome;
        const min = options.minRetryMs ?? DEFAULT_MIN_RETRY_MS;
        await sleep(backoffMs(attempt + 1, min, options.maxRetryMs, outcome.retryAfterMs), options.signal);
    }
}
async function publishOnce(options, body, key, token) {
    const fetcher = fetcherOf(options.fetch);
    let response;
    try {
        response = await fetcher(new URL(STREAM_PATH, baseUrl(options.url)), {
            method: "POST",
            headers: { ...bearer(token), "content-type": "application/json", "idempotency-key": `"${key}"` },
            body,
            credentials: "omit",
            signal: options.signal ?? null,
        });
    }
    catch (e) {
        if (options.signal?.aborted)
            throw e;
        return networkError(e);
    }
    if (!response.ok)
        return errorFrom(response);
    const receipt = (await response.json());
    return { id: receipt.id, status: receipt.status, replayed: response.headers.get("idempotent-replayed") === "true" };
}
// ---------------------------------------------------------------------------------
// Small things
function fetcherOf(given) {
    return given ?? globalThis.fetch.bind(globalThis);
}
function bearer(token) {
    return { authorization: `Bearer ${token}` };
}
async function tokenFrom(source) {
    return typeof source === "function" ? source() : source;
}
function inBrowser() {
    return typeof document !== "undefined";
}
function baseUrl(url) {
    if (url !== undefined && url !== "")
        return new URL(url, globalThis.location?.href);
    if (globalThis.location)
        return new URL(globalThis.location.href);
    throw new TypeError("crm-events: `url` is required outside a browser");
}
/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms, signal) {
    return new Promise((resolve) => {
        if (signal?.aborted)
            return resolve();
        const timer = setTimeout(done, ms);
        function done() {
            clearTimeout(timer);
            signal?.removeEventListener("abort", done);
            resolve();
        }
        signal?.addEventListener("abort", done, { once: true });
    });
}
