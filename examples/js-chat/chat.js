// Chat: every line a client sends (`\n`-terminated) goes to every other
// connected client, never back to its sender. The JavaScript twin of
// guests/chat (Rust).
//
// Slow readers get every line, in order, as long as their backlog fits in the
// host's per-connection output buffer. A client that falls further behind is
// aborted: keeping its lines here would let one slow reader grow our memory
// without bound, and dropping lines silently would corrupt its stream.
//
// The lines completed by one read go out together, one write per client:
// JavaScript pays for every host call, and a read of 64 KiB can hold a
// thousand short lines.

import { LineSplitter, abort, broadcast, findLongLine, guest, log } from './wasmloop.js';

/** The longest line accepted, not counting its `\n`. */
const MAX_LINE = 64 * 1024;

/** Every connected client → the splitter holding the line it has not finished. */
const clients = new Map();

/** Aborts `conn` and forgets it at once, so no more lines go to it before its `onClose`. */
function dropClient(conn, why) {
  log.warn(`connection ${conn} ${why}; aborting it`);
  abort(conn);
  clients.delete(conn);
}

export const callbacks = guest({
  onAccept(_listener, conn) {
    clients.set(conn, new LineSplitter());
  },

  onData(conn, data) {
    const splitter = clients.get(conn);
    if (splitter === undefined) {
      return;
    }
    let lines = splitter.push(data);
    // The lines before an over-long one still go out; then its sender goes.
    const tooLong = findLongLine(lines, MAX_LINE);
    if (tooLong >= 0) {
      lines = lines.subarray(0, tooLong);
    }
    if (lines.length > 0) {
      for (const behind of broadcast(clients.keys(), lines, conn)) {
        dropClient(behind, 'cannot keep up');
      }
    }
    if (tooLong >= 0 || splitter.pending > MAX_LINE) {
      dropClient(conn, 'sent a line over 64 KiB');
    }
  },

  onClose(conn) {
    clients.delete(conn);
  },
});
