/*
 * wasmloop.h: writing a wasmloop guest in C without touching the canonical
 * ABI.
 *
 * The bindings that `wit-bindgen c` generates from wit/handler.wit (world
 * `minimal`) are exact but raw: every list and string the host hands in is
 * malloc'd by the guest's own `cabi_realloc` and must be freed by the callee,
 * results come back through out-pointers, and each call spells out the whole
 * interface path. This header (with wasmloop.c, which implements it) hides
 * that:
 *
 *   - You write plain handlers, `wl_on_data(conn, data, len)` and friends.
 *     Each one you leave out has a default (wasmloop.c defines them weak):
 *     ignore the event, and `wl_on_eof` answers WL_EOF_CLOSE.
 *   - Whatever the host passed in (bytes, strings, the listener list, the
 *     close reason) is valid until your handler returns and is freed for you
 *     afterwards. Copy what you keep.
 *   - The host functions take a pointer and a length (`wl_write` borrows your
 *     buffer: no copy) and return a wl_error, WL_OK (0) on success.
 *
 * Rules of the host that still apply (see wit/handler.wit):
 *   - One callback at a time, never nested: no locking needed.
 *   - `wl_write` may take fewer bytes than offered when the connection's
 *     output buffer is full. Keep the rest, call `wl_pause_reading` and
 *     `wl_notify_writable`, and write it in `wl_on_writable`.
 *   - A handle is dead after `wl_on_close`; using it gives
 *     WL_ERROR_INVALID_HANDLE, never another connection.
 */
#ifndef WASMLOOP_H
#define WASMLOOP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Handles and values ------------------------------------------------ */

/* Integer handles minted by the host, checked against this guest's table. */
typedef uint64_t wl_connection;
typedef uint64_t wl_listener;
typedef uint64_t wl_timer;
/* Nanoseconds. */
typedef uint64_t wl_duration;
/* Nanoseconds on the monotonic clock. */
typedef uint64_t wl_instant;

typedef enum wl_error {
  WL_OK = 0,
  /* Not one of this guest's live objects (never given, closed, cancelled). */
  WL_ERROR_INVALID_HANDLE,
  /* The connection is closing or its write side is shut. */
  WL_ERROR_CLOSED,
  /* An argument is out of range (for example a zero interval). */
  WL_ERROR_INVALID_ARGUMENT,
  /* A per-guest limit was reached (for example too many timers). */
  WL_ERROR_LIMIT_REACHED,
} wl_error;

/* "ok", "invalid-handle", ...: for log messages. */
const char *wl_error_name(wl_error error);

typedef enum wl_level {
  WL_LEVEL_TRACE,
  WL_LEVEL_DEBUG,
  WL_LEVEL_INFO,
  WL_LEVEL_WARN,
  WL_LEVEL_ERROR,
} wl_level;

/* A listener granted by the operator, as passed to `wl_init`. */
typedef struct wl_listener_info {
  wl_listener handle;
  /* The bound address, e.g. "127.0.0.1:7000" (NUL-terminated). */
  const char *address;
} wl_listener_info;

typedef enum wl_close_kind {
  /* The guest called wl_close or wl_abort. */
  WL_CLOSE_LOCAL,
  /* The peer closed and wl_on_eof returned WL_EOF_CLOSE. */
  WL_CLOSE_PEER_CLOSED,
  /* The peer reset the connection. */
  WL_CLOSE_RESET,
  /* Another socket error: see `message`. */
  WL_CLOSE_ERROR,
  /* The host is shutting down. */
  WL_CLOSE_HOST_SHUTDOWN,
} wl_close_kind;

typedef struct wl_close_reason {
  wl_close_kind kind;
  /* For WL_CLOSE_ERROR, the OS's description; NULL otherwise. */
  const char *message;
} wl_close_reason;

typedef enum wl_eof_action {
  /* Send what is buffered, then close. */
  WL_EOF_CLOSE,
  /* Keep the connection open for writing; close it yourself later. */
  WL_EOF_KEEP_OPEN,
} wl_eof_action;

/* ---- Your handlers: define the ones you need --------------------------- */

/*
 * Called once, first, with the operator's configuration string and the
 * granted listeners. Return NULL to start, or a message to refuse (the host
 * reports it; the string is copied, so a literal is fine).
 */
const char *wl_init(const char *config, const wl_listener_info *listeners, size_t listener_count);
/* A new connection on `listener`. */
void wl_on_accept(wl_listener listener, wl_connection conn);
/* Bytes from the peer, in order, at most 64 KiB per call. */
void wl_on_data(wl_connection conn, const uint8_t *data, size_t len);
/* The peer closed its sending side. */
wl_eof_action wl_on_eof(wl_connection conn);
/* The output buffer drained, after wl_notify_writable. */
void wl_on_writable(wl_connection conn);
/* The connection is gone; `conn` is dead from now on. */
void wl_on_close(wl_connection conn, const wl_close_reason *reason);
/* A timer fired. */
void wl_on_timer(wl_timer timer);
/* The host is stopping: write final messages, close what you like. */
void wl_on_shutdown(void);

/* ---- Host functions ---------------------------------------------------- */

/*
 * Offers `len` bytes of `data` (borrowed, not copied by this call) and stores
 * in `*taken` how many the host took. Fewer than `len` means the output
 * buffer is full: the rest is still yours to send later.
 */
wl_error wl_write(wl_connection conn, const void *data, size_t len, size_t *taken);
/* One wl_on_writable once the output buffer is empty. */
wl_error wl_notify_writable(wl_connection conn);
/* No wl_on_data until wl_resume_reading; TCP slows the peer down. */
wl_error wl_pause_reading(wl_connection conn);
wl_error wl_resume_reading(wl_connection conn);
/* Send FIN once the buffered output is sent; reading goes on. */
wl_error wl_shutdown_write(wl_connection conn);
/* Graceful close: buffered output is still sent. wl_on_close follows. */
wl_error wl_close(wl_connection conn);
/* Reset: buffered output is discarded. wl_on_close follows. */
wl_error wl_abort(wl_connection conn);
/* Bytes in the output buffer not yet handed to the kernel. */
wl_error wl_buffered(wl_connection conn, size_t *bytes);
/*
 * The peer's address ("127.0.0.1:51234") into `buf`, NUL-terminated and cut
 * to fit `size`.
 */
wl_error wl_peer_address(wl_connection conn, char *buf, size_t size);

wl_error wl_set_timeout(wl_duration delay, wl_timer *timer);
wl_error wl_set_interval(wl_duration interval, wl_timer *timer);
wl_error wl_cancel_timer(wl_timer timer);
wl_instant wl_now(void);

/*
 * printf-style, into the host's log tagged with this guest's name, cut at
 * 1 KiB. Only %d %i %u %x %s %c %% with the l, ll and z lengths: no widths,
 * precision or floats (the real printf family would pull in stdio, which
 * imports WASI; see README.md).
 */
void wl_log(wl_level level, const char *format, ...) __attribute__((format(printf, 2, 3)));
void wl_vlog(wl_level level, const char *format, va_list args);

#ifdef __cplusplus
}
#endif

#endif /* WASMLOOP_H */
