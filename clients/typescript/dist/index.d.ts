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
import type { AuthExpired, Connected, DomainEvent, EventId, Gap, Reset, TenantDomainEvent } from "./events.js";
export type { AuthExpired, Connected, DomainEvent, EventId, Gap, Reset, TenantDomainEvent };
/** The stream's route. */
export declare const STREAM_PATH = "/crm-events";
/** The session route (browsers' cookie sign-in). */
export declare const SESSION_PATH = "/crm-events/session";
/** A refusal from the service (its JSON error body), or a failure to reach it. */
export declare class CrmEventsError extends Error {
    /** The HTTP status, or null when no answer came (network, abort). */
    readonly status: number | null;
    /** The service's `error` code (`invalid_token`, `forbidden`, …), or `network`. */
    readonly code: string;
    /** What `Retry-After` asked for, ms. */
    readonly retryAfterMs: number | null;
    /** The whole JSON error body, when there was one. */
    readonly body: Record<string, unknown> | null;
    constructor(message: string, init: {
        status?: number | null;
        code: string;
        retryAfterMs?: number | null;
        body?: Record<string, unknown> | null;
    });
}
/** `Retry-After` in ms: delay-seconds or an HTTP date; null when absent or unreadable. */
export declare function retryAfterMs(header: string | null): number | null;
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
export declare class SseParser {
    private decoder;
    private pending;
    private sawCR;
    private frame;
    private static empty;
    /** Feeds bytes; returns the frames they complete. */
    push(chunk: Uint8Array): SseFrame[];
    private lines;
    private line;
    private dispatch;
}
/** What {@link connect} yields. */
export type StreamEvent = 
/** The stream (re)started: `id` is where it starts, `data.epoch` the stream's epoch. */
{
    type: "connected";
    id: EventId;
    data: Connected;
}
/** A CRM event. A tenant's stream carries {@link TenantDomainEvent}s. */
 | {
    type: "event";
    id: EventId;
    data: DomainEvent | TenantDomainEvent;
}
/** History the position needed is gone; the stream goes on from `data.oldest`. */
 | {
    type: "gap";
    data: Gap;
}
/** The stream starts over in a new epoch: events already seen may come again. */
 | {
    type: "reset";
    id: EventId | null;
    data: Reset;
}
/** The token expired; the client gets a new one (when it can) and resumes. */
 | {
    type: "auth_expired";
    data: AuthExpired;
};
/** Where the connection stands, for a status line. */
export type ConnectionStatus = {
    state: "connecting";
    attempt: number;
} | {
    state: "live";
    epoch: string | null;
} | {
    state: "retrying";
    attempt: number;
    delayMs: number;
    error: CrmEventsError;
} | {
    state: "signing_in";
    error: CrmEventsError | null;
} | {
    state: "closed";
    error: CrmEventsError | null;
};
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
export declare function connect(options?: ConnectOptions): EventStream;
export interface SessionOptions {
    url?: string | URL;
    fetch?: typeof fetch;
    signal?: AbortSignal;
}
/** `POST /crm-events/session`: trades a token for the HttpOnly session cookie. */
export declare function signIn(options: SessionOptions & {
    token: string;
}): Promise<Session>;
/** `GET /crm-events/session`: who is signed in, or null when nobody is. */
export declare function getSession(options?: SessionOptions): Promise<Session | null>;
/** `DELETE /crm-events/session`: signs out (the cookie is cleared). */
export declare function signOut(options?: SessionOptions): Promise<void>;
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
/** Publishes one event, retrying safely under one idempotency key. */
export declare function publish(event: PublishEvent, options: PublishOptions): Promise<PublishReceipt>;
