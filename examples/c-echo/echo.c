/*
 * Echo in C: sends every byte back, in order, without dropping any under
 * backpressure (the same behaviour as guests/echo, the Rust echo).
 *
 * When the host's output buffer for a connection is full, wl_write takes only
 * part of the data. The rest waits here, reading is paused (so TCP flow
 * control slows the peer down instead of our memory growing), and
 * wl_on_writable sends it once the buffer drains.
 */
#include <stdlib.h>
#include <string.h>

#include "wasmloop.h"

/*
 * Bytes of one connection the host has not taken yet. Only connections under
 * backpressure have one, so the list is short and a linear search is cheap.
 */
struct pending {
  wl_connection conn;
  uint8_t *bytes;
  /* bytes[sent..len] are still to be written. */
  size_t sent;
  size_t len;
  /* The peer has sent EOF: close once every byte is written. */
  bool close_when_done;
  struct pending *next;
};

static struct pending *pending_list;

static struct pending **find_pending(wl_connection conn) {
  struct pending **link = &pending_list;
  while (*link != NULL && (*link)->conn != conn) {
    link = &(*link)->next;
  }
  return link;
}

static void drop_pending(struct pending **link) {
  struct pending *p = *link;
  *link = p->next;
  free(p->bytes);
  free(p);
}

/*
 * Writes to `conn` and stores how many bytes the host took. A write error
 * means echoing can no longer be complete, so the connection is aborted
 * rather than left with a gap, and false is returned.
 */
static bool write_or_abort(wl_connection conn, const uint8_t *data, size_t len, size_t *taken) {
  wl_error error = wl_write(conn, data, len, taken);
  if (error != WL_OK) {
    wl_log(WL_LEVEL_WARN, "connection %llu: write failed (%s); aborting", (unsigned long long)conn,
           wl_error_name(error));
    wl_abort(conn);
    return false;
  }
  return true;
}

/* Keeps `data[0..len]` for later; false if out of memory. */
static bool append(struct pending *p, const uint8_t *data, size_t len) {
  uint8_t *bytes = realloc(p->bytes, p->len + len);
  if (bytes == NULL) {
    return false;
  }
  memcpy(bytes + p->len, data, len);
  p->bytes = bytes;
  p->len += len;
  return true;
}

void wl_on_data(wl_connection conn, const uint8_t *data, size_t len) {
  struct pending **link = find_pending(conn);
  if (*link != NULL) {
    /* Reading is paused while bytes are pending, so the host should not get
     * here; if it does, keep the order anyway. */
    if (!append(*link, data, len)) {
      wl_abort(conn);
    }
    return;
  }
  size_t taken;
  if (!write_or_abort(conn, data, len, &taken) || taken == len) {
    return;
  }
  struct pending *p = calloc(1, sizeof *p);
  if (p == NULL || !append(p, data + taken, len - taken)) {
    free(p);
    wl_log(WL_LEVEL_ERROR, "out of memory; aborting a connection");
    wl_abort(conn);
    return;
  }
  p->conn = conn;
  p->next = pending_list;
  pending_list = p;
  /* These only fail for a connection that is closing, where there is
   * nothing left to do anyway. */
  wl_pause_reading(conn);
  wl_notify_writable(conn);
}

void wl_on_writable(wl_connection conn) {
  struct pending **link = find_pending(conn);
  struct pending *p = *link;
  if (p == NULL) {
    return;
  }
  size_t taken;
  if (!write_or_abort(conn, p->bytes + p->sent, p->len - p->sent, &taken)) {
    return; /* wl_on_close frees it */
  }
  p->sent += taken;
  if (p->sent < p->len) {
    /* The buffer filled up again: wait for the next drain. */
    wl_notify_writable(conn);
    return;
  }
  bool close_when_done = p->close_when_done;
  drop_pending(link);
  if (close_when_done) {
    /* Graceful close: the host still sends what it buffered. */
    wl_close(conn);
  } else {
    wl_resume_reading(conn);
  }
}

wl_eof_action wl_on_eof(wl_connection conn) {
  struct pending *p = *find_pending(conn);
  if (p == NULL) {
    /* Everything was handed to the host, which sends it before closing. */
    return WL_EOF_CLOSE;
  }
  /* Bytes still wait here: close ourselves once they are written, so a
   * half-closed client still gets all of its bytes back. */
  p->close_when_done = true;
  return WL_EOF_KEEP_OPEN;
}

void wl_on_close(wl_connection conn, const wl_close_reason *reason) {
  (void)reason;
  struct pending **link = find_pending(conn);
  if (*link != NULL) {
    drop_pending(link);
  }
}
