// wasmloop.js — a small helper for writing wasmloop guests in JavaScript.
//
// componentize-js turns the WIT contract (wit/handler.wit) into built-in
// modules named after its interfaces: `wasmloop:handler/connections@0.1.0`
// and so on. Their conventions, which this file smooths over:
//
// - Handles (`connection`, `listener`, `timer`) are u64, so they arrive and
//   must be passed as BigInt (`1n`). They work as Map keys and compare by
//   value (`a === b`).
// - `list<u8>` is a Uint8Array (arriving data is a fresh copy, yours to keep).
// - A function returning `result<T, error-code>` returns T or throws an Error
//   whose `payload` is the error code string ('invalid-handle', 'closed', ...).
// - Enums are strings ('close', 'keep-open'); variants are `{ tag, val }`
//   objects (`close-reason`: `{ tag: 'local' }`, `{ tag: 'error', val: msg }`).
// - The exported interface `callbacks` must be an object with *every*
//   callback (camelCase: `onAccept`, `onData`, ...). `guest()` fills in the
//   ones you leave out.
//
// A guest then reads:
//
//   import { guest, send } from './wasmloop.js';
//   export const callbacks = guest({
//     onData(conn, data) { send(conn, data); },
//   });

import * as connections from 'wasmloop:handler/connections@0.1.0';
import * as timerImports from 'wasmloop:handler/timers@0.1.0';
import { log as hostLog } from 'wasmloop:handler/log@0.1.0';
import { now as hostNow } from 'wasmloop:handler/clock@0.1.0';

// ---- Callbacks ------------------------------------------------------------

const DEFAULTS = {
  /** (config: string, listeners: {handle, address}[]) → nothing. */
  init() {},
  /** (listener, conn) */
  onAccept() {},
  /** (conn, data: Uint8Array) */
  onData() {},
  /** (conn) → 'close' | 'keep-open' */
  onEof() {
    return 'close';
  },
  /** (conn) after `notifyWritable(conn)` */
  onWritable() {},
  /** (conn, reason: { tag, val? }) */
  onClose() {},
  /** (timer) */
  onTimer() {},
  /** () */
  onShutdown() {},
};

/**
 * The `callbacks` export from a partial set of handlers: missing callbacks
 * do nothing (`onEof` answers 'close'). An exception thrown by `init`
 * becomes its error result (the host then refuses to start the guest, with
 * the message); thrown anywhere else it traps, and the host tears the guest
 * down (and restarts it, by default).
 */
export function guest(handlers) {
  for (const name of Object.keys(handlers)) {
    if (!(name in DEFAULTS)) {
      throw new Error(`guest(): unknown callback ${JSON.stringify(name)}; known: ${Object.keys(DEFAULTS).join(', ')}`);
    }
  }
  const callbacks = { ...DEFAULTS, ...handlers };
  const init = callbacks.init;
  callbacks.init = (config, listeners) => {
    try {
      init(config, listeners);
    } catch (e) {
      return { tag: 'err', val: e instanceof Error ? e.message : String(e) };
    }
    return undefined;
  };
  return callbacks;
}

// ---- Bytes and text --------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** UTF-8 bytes of a string; a Uint8Array is returned as it is. */
export function toBytes(data) {
  return typeof data === 'string' ? encoder.encode(data) : data;
}

/** The text of UTF-8 bytes (invalid sequences become U+FFFD). */
export function toText(bytes) {
  return decoder.decode(bytes);
}

// ---- Writing ---------------------------------------------------------------

/**
 * Queues `data` (a string or Uint8Array) on `conn` and returns how many bytes
 * the host took: fewer than all means its output buffer is full and the rest
 * is still yours (see `notifyWritable`). Throws for a dead or closed
 * connection (`error.payload` is the code).
 */
export function write(conn, data) {
  return connections.write(conn, toBytes(data));
}

/**
 * Writes all of `data` or reports that it could not: true if the host took
 * every byte, false on a short write or an error (connection closed or gone).
 */
export function send(conn, data) {
  const bytes = toBytes(data);
  try {
    return connections.write(conn, bytes) === bytes.length;
  } catch {
    return false;
  }
}

/**
 * Sends `data` whole to every connection in `conns` (any iterable) except
 * `except`, and returns those that could not take all of it (their output
 * buffer is full or they are closing): a stream that lost part of a message
 * is broken, so the caller usually aborts them.
 */
export function broadcast(conns, data, except = undefined) {
  const bytes = toBytes(data);
  const behind = [];
  for (const conn of conns) {
    if (conn !== except && !send(conn, bytes)) {
      behind.push(conn);
    }
  }
  return behind;
}

// ---- Connections -----------------------------------------------------------

/** Calls `fn(conn)`; returns false instead of throwing if the handle is dead or closing. */
function quietly(fn) {
  return (conn) => {
    try {
      fn(conn);
      return true;
    } catch {
      return false;
    }
  };
}

/** Graceful close (buffered output is still sent). Returns false if already gone. */
export const close = quietly(connections.close);
/** Immediate close with a reset; buffered output is dropped. Returns false if already gone. */
export const abort = quietly(connections.abort);

// Everything else, with the bindings' own conventions (they throw on error):
// notifyWritable, pauseReading, resumeReading, shutdownWrite, buffered,
// peerAddress, localAddress, listenerAddress.
export const { notifyWritable, pauseReading, resumeReading, shutdownWrite, buffered, peerAddress, localAddress, listenerAddress } =
  connections;

// ---- Lines -------------------------------------------------------------------

const NEWLINE = 10;

/** Joins Uint8Arrays into one. */
function concat(chunks, length) {
  if (chunks.length === 1) {
    return chunks[0];
  }
  const out = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

const EMPTY = new Uint8Array(0);

/**
 * Cuts a byte stream at `\n`s. `push(data)` returns, as one Uint8Array, all
 * the complete lines that `data` finishes (each with its `\n`; empty if
 * none), so they can be passed on with one host call instead of one per
 * line; `splitLines` cuts them apart when each needs handling. The
 * unfinished rest waits for the next push; its size is `pending`. Only new
 * data is searched, and an unfinished line is kept as a list of pieces, so a
 * long line arriving in many small reads costs linear time.
 */
export class LineSplitter {
  #pieces = [];
  #pending = 0;

  /** Bytes of the unfinished line. */
  get pending() {
    return this.#pending;
  }

  push(data) {
    const last = data.lastIndexOf(NEWLINE);
    if (last < 0) {
      if (data.length > 0) {
        this.#pieces.push(data);
        this.#pending += data.length;
      }
      return EMPTY;
    }
    const head = data.subarray(0, last + 1);
    let lines = head;
    if (this.#pending > 0) {
      this.#pieces.push(head);
      lines = concat(this.#pieces, this.#pending + head.length);
    }
    this.#pieces = last + 1 < data.length ? [data.subarray(last + 1)] : [];
    this.#pending = data.length - last - 1;
    return lines;
  }
}

/** The lines of `block` (complete lines, as `LineSplitter.push` returns), as views ending in `\n`. */
export function splitLines(block) {
  const lines = [];
  let start = 0;
  while (start < block.length) {
    let end = block.indexOf(NEWLINE, start) + 1;
    if (end === 0) {
      end = block.length;
    }
    lines.push(block.subarray(start, end));
    start = end;
  }
  return lines;
}

/**
 * Where the first line of `block` longer than `max` bytes (not counting its
 * `\n`) starts, or -1 if there is none. Jumps from window to window, so it
 * makes about `block.length / max` calls, not one per line.
 */
export function findLongLine(block, max) {
  let start = 0;
  // A line over `max` needs max + 1 bytes plus its `\n`.
  while (block.length - start >= max + 2) {
    const newline = block.lastIndexOf(NEWLINE, start + max);
    if (newline < start) {
      return start;
    }
    start = newline + 1;
  }
  return -1;
}

// ---- Timers, clock, log ------------------------------------------------------

/** Fires `onTimer(handle)` once after `ms` milliseconds; returns the handle. */
export function setTimeout(ms) {
  return timerImports.setTimeout(BigInt(Math.max(0, Math.round(ms * 1e6))));
}

/** Fires `onTimer(handle)` every `ms` milliseconds (at least 1); returns the handle. */
export function setInterval(ms) {
  return timerImports.setInterval(BigInt(Math.max(1e6, Math.round(ms * 1e6))));
}

/** Stops a timer; returns false if it was already dead. */
export const cancelTimer = quietly(timerImports.cancel);

/** Nanoseconds on the host's monotonic clock, as a BigInt. */
export const now = hostNow;

/** The host's log, tagged with the guest's name: `log.info('...')`. */
export const log = {
  trace: (message) => hostLog('trace', String(message)),
  debug: (message) => hostLog('debug', String(message)),
  info: (message) => hostLog('info', String(message)),
  warn: (message) => hostLog('warn', String(message)),
  error: (message) => hostLog('error', String(message)),
};
