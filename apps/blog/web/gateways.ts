// The blog's gateways as TypeScript: event maps for socket.io-client and a typed plain
// WebSocket client. Generated from the gateways' description by `cargo run -p blog -- types`
// (`scripts/types` writes this file); do not edit.

/** A comment on an entry. */
export interface Comment {
  /** Text of the comment. */
  body: string;
  /** When the comment was written. */
  createdAt: string;
  /** The entry it comments on. */
  entryId: number;
  /** The comment's id. */
  id: number;
  /** When the comment was last changed. */
  updatedAt: string;
  /** The author's id. */
  userId: number;
}

/** What `commentDeleted` carries: which comment of which entry is gone. */
export interface DeletedComment {
  /** The entry it was on. */
  entryId: number;
  /** The deleted comment's id. */
  id: number;
}

/** A blog entry. */
export interface Entry {
  /** Text of the entry. */
  content: string;
  /** When the entry was written. */
  createdAt: string;
  /** The entry's id. */
  id: number;
  /** Title. */
  title: string;
  /** When the entry was last changed. */
  updatedAt: string;
  /** The author's id. */
  userId: number;
}

/**
 * `showEntry {entryId}`, `indexComment {entryId}`, `showComment {entryId, commentId}`,
 * `subscribeEntry {entryId}`, `unsubscribeEntry {entryId}`.
 */
export interface EntryQuery {
  /** The comment's id (`showComment`). */
  commentId?: number | null;
  /** The entry's id. */
  entryId?: number | null;
}

/** `createComment {entryId, body}`. */
export interface NewComment {
  /** The comment's text, 1 to 10 000 characters. */
  body?: string;
  /** The entry to comment on. */
  entryId?: number | null;
}

/** A reader of an entry, as others see them: never the e-mail address. */
export interface Reader {
  /** Their given name. */
  firstName: string;
  /** The reader's user id. */
  userId: number;
}

/** The reply of `presenceEntry`. */
export interface Readers {
  /** The entry. */
  entryId: number;
  /** Who reads it now, on every instance, in user id order. */
  readers: Reader[];
}

/**
 * `presenceDiff`: who started and stopped reading an entry (a user with two tabs open is one
 * reader, who leaves with the last tab).
 */
export interface ReadersDiff {
  /** The entry. */
  entryId: number;
  /** New readers. */
  joins: Reader[];
  /** Readers gone. */
  leaves: Reader[];
}

/** The ack of `subscribeEntry` and `unsubscribeEntry`. */
export interface Subscription {
  /** The entry. */
  entryId: number;
  /** Whether the connection is now in the entry's room. */
  subscribed: boolean;
}

/**
 * `typing`, relayed to an entry's other readers: volatile (a slow client misses it, and
 * recovery never replays it).
 */
export interface Typing {
  /** The entry. */
  entryId: number;
  /** Their given name. */
  firstName: string;
  /** Who types. */
  userId: number;
}

/** A registered user. Never carries the password hash. */
export interface User {
  /** When the user registered. */
  createdAt: string;
  /** The e-mail address the user logs in with, lower case. */
  email: string;
  /** Given name. */
  firstName: string;
  /** The user's id. */
  id: number;
  /** Family name. */
  lastName: string;
}

/** `showUser {userId}`. */
export interface UserQuery {
  /** The user's id: your own (another user's is `Forbidden.`). */
  userId?: number | null;
}

/** What a handler's exception sends: Nest's `{status, message, cause}`. */
export interface WsExceptionBody {
  status: "error";
  /** What went wrong, for people; usually a string. */
  message: unknown;
  cause: {
    /** The event that failed. */
    pattern: string;
    /** The data the client sent. */
    data: unknown;
  };
}

/**
 * What clients send on the namespace `/`: socket.io-client's `ClientToServerEvents`.
 * A handler that answers with an ack takes the callback; one that replies with an event does not.
 */
export interface ClientToServerEvents {
  /** Creates a comment as the connection's user. The stored comment is the ack, and the entry's room receives `commentCreated`, as for a comment created over REST. */
  createComment: (data: NewComment, ack: (answer: Comment) => void) => void;
  /** The comments of an entry, oldest first (the chapter's `indexComment`). */
  indexComment: (data: EntryQuery) => void;
  /** Entries, newest first: `{limit?, offset?}` as over REST (20 by default, 100 at most). */
  indexEntry: (data: null | {
    /** How many items at most, 1 to 100. */
    limit?: number;
    /** How many items to skip, 0 or more. */
    offset?: number;
  }) => void;
  /** Who reads an entry now, on every instance (open to any signed-in user). */
  presenceEntry: (data: EntryQuery) => void;
  /** One comment of an entry (the chapter's `showComment`). */
  showComment: (data: EntryQuery) => void;
  /** One entry. */
  showEntry: (data: EntryQuery) => void;
  /** Your own user record (the chapter's `showUser`). */
  showUser: (data: UserQuery) => void;
  /** Joins the room `entry:{id}`: the connection then receives `commentCreated`, `commentUpdated` and `commentDeleted` for the entry, however they happened. */
  subscribeEntry: (data: EntryQuery, ack: (answer: Subscription) => void) => void;
  /** Tells the entry's other readers that you are typing (`typing {entryId, userId, firstName}`, volatile). Send it every few seconds while typing; it answers nothing. */
  typing: (data: EntryQuery) => void;
  /** Leaves the room `entry:{id}`. */
  unsubscribeEntry: (data: EntryQuery, ack: (answer: Subscription) => void) => void;
}

/** What the server sends on the namespace `/`: socket.io-client's `ServerToClientEvents`. */
export interface ServerToClientEvents {
  /** The reply to `indexComment`. */
  indexComment: (data: Comment[]) => void;
  /** The reply to `indexEntry`. */
  indexEntry: (data: Entry[]) => void;
  /** The reply to `presenceEntry`. */
  presenceEntry: (data: Readers) => void;
  /** The reply to `showComment`. */
  showComment: (data: Comment) => void;
  /** The reply to `showEntry`. */
  showEntry: (data: Entry) => void;
  /** The reply to `showUser`. */
  showUser: (data: User) => void;
  commentCreated: (data: Comment, offset?: string) => void;
  commentDeleted: (data: DeletedComment, offset?: string) => void;
  commentUpdated: (data: Comment, offset?: string) => void;
  presenceDiff: (data: ReadersDiff, offset?: string) => void;
  typing: (data: Typing, offset?: string) => void;
  /** A handler failed. */
  exception: (data: WsExceptionBody) => void;
}

/** The data an event of a `ClientToServerEvents` map takes. */
export type DataOf<F> = F extends (...args: infer A) => void ? A[0] : never;
/** The ack value an event of a `ClientToServerEvents` map answers with. */
export type AckOf<F> = F extends (...args: infer A) => void
  ? A extends [any, (answer: infer R) => void] ? R : never
  : never;
/** The events of a map that answer with an ack (their signature ends with the callback). */
export type AckEvents<M> = {
  [K in keyof M]: M[K] extends (...args: infer A) => void
    ? A extends [any, (answer: any) => void] ? K : never
    : never;
}[keyof M];

/** An exception the server answered a request with. */
export class GatewayException extends Error {
  readonly body: WsExceptionBody;

  constructor(body: WsExceptionBody) {
    super(typeof body.message === "string" ? body.message : JSON.stringify(body.message));
    this.name = "GatewayException";
    this.body = body;
  }
}

type Pending = { resolve: (value: any) => void; reject: (error: unknown) => void };

/**
 * A plain WebSocket client of the gateways, typed by the event maps:
 * `new GatewaySocket("ws://localhost:3000/ws?token=" + token)`, then `on`, `emit` and
 * `emitWithAck` as with socket.io-client. A frame out is `{event, data}` (with an `id` for an
 * ack); frames in are replies and pushes `{event, data}`, `{event: "ack", id, data}` and
 * `{event: "exception", id?, data}`. `WebSocketImpl` is for runtimes without a global
 * `WebSocket` (Node.js before 22: pass `ws`).
 */
export class GatewaySocket<Out = ClientToServerEvents, In = ServerToClientEvents> {
  readonly socket: WebSocket;
  /** Resolves when the socket is open; rejects if it closes first (e.g. a refused token). */
  readonly opened: Promise<void>;
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #listeners = new Map<string, Set<(...args: any[]) => void>>();

  constructor(url: string | URL, WebSocketImpl: new (url: string | URL) => WebSocket = WebSocket) {
    this.socket = new WebSocketImpl(url);
    this.opened = new Promise((resolve, reject) => {
      this.socket.addEventListener("open", () => resolve());
      this.socket.addEventListener("error", () => reject(new Error("the connection failed")));
      this.socket.addEventListener("close", (e) => reject(new Error(`closed (${e.code})`)));
    });
    // Whoever does not wait for `opened` learns of a failure from `close`, not from an
    // unhandled rejection.
    this.opened.catch(() => {});
    this.socket.addEventListener("message", (m) => this.#receive(String(m.data)));
    this.socket.addEventListener("close", () => {
      for (const p of this.#pending.values()) p.reject(new Error("the connection closed"));
      this.#pending.clear();
    });
  }

  /** Calls `listener` with the data of every `event` frame (and its offset, if any). */
  on<E extends keyof In & string>(event: E, listener: In[E]): this {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener as (...args: any[]) => void);
    return this;
  }

  /** Stops calling `listener`. */
  off<E extends keyof In & string>(event: E, listener: In[E]): this {
    this.#listeners.get(event)?.delete(listener as (...args: any[]) => void);
    return this;
  }

  /** Sends `event` with `data`; its reply, if any, arrives as an event. */
  emit<E extends keyof Out & string>(event: E, data: DataOf<Out[E]>): void {
    this.socket.send(JSON.stringify({ event, data }));
  }

  /** Sends `event` with `data` and resolves with its ack, or rejects with its exception. */
  emitWithAck<E extends AckEvents<Out> & string>(event: E, data: DataOf<Out[E]>): Promise<AckOf<Out[E]>> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.socket.send(JSON.stringify({ event, data, id }));
    });
  }

  /** Closes the connection (code 1000: a goodbye, its session is not kept for recovery). */
  close(): void {
    this.socket.close(1000);
  }

  #receive(text: string): void {
    let frame: { event?: string; id?: unknown; data?: unknown; offset?: string };
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    const pending = typeof frame.id === "number" ? this.#pending.get(frame.id) : undefined;
    if (pending && (frame.event === "ack" || frame.event === "exception")) {
      this.#pending.delete(frame.id as number);
      if (frame.event === "ack") pending.resolve(frame.data);
      else pending.reject(new GatewayException(frame.data as WsExceptionBody));
      return;
    }
    for (const listener of this.#listeners.get(frame.event ?? "") ?? []) {
      listener(frame.data, frame.offset);
    }
  }
}
