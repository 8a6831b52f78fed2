/*
 * wasmloop.c: implements wasmloop.h over the bindings `wit-bindgen c`
 * generates for world `minimal` (minimal.h / minimal.c).
 *
 * The generated export functions pass every list and string to the callee,
 * which owns it: the host wrote it into memory it got from our cabi_realloc
 * (malloc). Each export below converts the arguments, calls the guest's
 * handler, and frees them. Imports only borrow their arguments, so wl_write
 * hands the guest's own buffer to the host without a copy.
 */
#include "wasmloop.h"

#include <stdlib.h>
#include <string.h>

#include "minimal.h"

/* ---- Defaults for the handlers the guest leaves out -------------------- */

__attribute__((weak)) const char *wl_init(const char *config, const wl_listener_info *listeners,
                                          size_t listener_count) {
  (void)config;
  (void)listeners;
  (void)listener_count;
  return NULL;
}

__attribute__((weak)) void wl_on_accept(wl_listener listener, wl_connection conn) {
  (void)listener;
  (void)conn;
}

__attribute__((weak)) void wl_on_data(wl_connection conn, const uint8_t *data, size_t len) {
  (void)conn;
  (void)data;
  (void)len;
}

__attribute__((weak)) wl_eof_action wl_on_eof(wl_connection conn) {
  (void)conn;
  return WL_EOF_CLOSE;
}

__attribute__((weak)) void wl_on_writable(wl_connection conn) { (void)conn; }

__attribute__((weak)) void wl_on_close(wl_connection conn, const wl_close_reason *reason) {
  (void)conn;
  (void)reason;
}

__attribute__((weak)) void wl_on_timer(wl_timer timer) { (void)timer; }

__attribute__((weak)) void wl_on_shutdown(void) {}

/* ---- Exports: the generated bindings call these ------------------------ */

/* A NUL-terminated copy of a WIT string (which has none), or NULL. */
static char *copy_string(const minimal_string_t *s) {
  char *copy = malloc(s->len + 1);
  if (copy != NULL) {
    memcpy(copy, s->ptr, s->len);
    copy[s->len] = '\0';
  }
  return copy;
}

bool exports_wasmloop_handler_callbacks_init(minimal_string_t *config,
                                             exports_wasmloop_handler_callbacks_list_listener_info_t *listeners,
                                             minimal_string_t *err) {
  const char *error = "out of memory";
  char *config_copy = copy_string(config);
  wl_listener_info *infos = calloc(listeners->len + 1, sizeof *infos);
  size_t copied = 0;
  if (config_copy != NULL && infos != NULL) {
    for (; copied < listeners->len; copied++) {
      infos[copied].handle = listeners->ptr[copied].handle;
      infos[copied].address = copy_string(&listeners->ptr[copied].address);
      if (infos[copied].address == NULL) {
        break;
      }
    }
    if (copied == listeners->len) {
      error = wl_init(config_copy, infos, listeners->len);
    }
  }
  for (size_t i = 0; i < copied; i++) {
    free((char *)infos[i].address);
  }
  free(infos);
  free(config_copy);
  minimal_string_free(config);
  exports_wasmloop_handler_callbacks_list_listener_info_free(listeners);
  if (error != NULL) {
    /* The host frees it after the call (the bindings' post-return). */
    minimal_string_dup(err, error);
    return false;
  }
  return true;
}

void exports_wasmloop_handler_callbacks_on_accept(exports_wasmloop_handler_callbacks_listener_t listener,
                                                  exports_wasmloop_handler_callbacks_connection_t conn) {
  wl_on_accept(listener, conn);
}

void exports_wasmloop_handler_callbacks_on_data(exports_wasmloop_handler_callbacks_connection_t conn,
                                                minimal_list_u8_t *data) {
  wl_on_data(conn, data->ptr, data->len);
  minimal_list_u8_free(data);
}

exports_wasmloop_handler_callbacks_eof_action_t exports_wasmloop_handler_callbacks_on_eof(
    exports_wasmloop_handler_callbacks_connection_t conn) {
  return wl_on_eof(conn) == WL_EOF_KEEP_OPEN ? WASMLOOP_HANDLER_TYPES_EOF_ACTION_KEEP_OPEN
                                             : WASMLOOP_HANDLER_TYPES_EOF_ACTION_CLOSE;
}

void exports_wasmloop_handler_callbacks_on_writable(exports_wasmloop_handler_callbacks_connection_t conn) {
  wl_on_writable(conn);
}

void exports_wasmloop_handler_callbacks_on_close(exports_wasmloop_handler_callbacks_connection_t conn,
                                                 exports_wasmloop_handler_callbacks_close_reason_t *raw) {
  wl_close_reason reason = {.kind = WL_CLOSE_HOST_SHUTDOWN, .message = NULL};
  char *message = NULL;
  switch (raw->tag) {
    case WASMLOOP_HANDLER_TYPES_CLOSE_REASON_LOCAL:
      reason.kind = WL_CLOSE_LOCAL;
      break;
    case WASMLOOP_HANDLER_TYPES_CLOSE_REASON_PEER_CLOSED:
      reason.kind = WL_CLOSE_PEER_CLOSED;
      break;
    case WASMLOOP_HANDLER_TYPES_CLOSE_REASON_RESET:
      reason.kind = WL_CLOSE_RESET;
      break;
    case WASMLOOP_HANDLER_TYPES_CLOSE_REASON_ERROR:
      reason.kind = WL_CLOSE_ERROR;
      message = copy_string(&raw->val.error);
      reason.message = message != NULL ? message : "(out of memory)";
      break;
    default:
      break;
  }
  wl_on_close(conn, &reason);
  free(message);
  exports_wasmloop_handler_callbacks_close_reason_free(raw);
}

void exports_wasmloop_handler_callbacks_on_timer(exports_wasmloop_handler_callbacks_timer_t t) { wl_on_timer(t); }

void exports_wasmloop_handler_callbacks_on_shutdown(void) { wl_on_shutdown(); }

/* ---- Imports ----------------------------------------------------------- */

static wl_error from_code(wasmloop_handler_types_error_code_t code) {
  switch (code) {
    case WASMLOOP_HANDLER_TYPES_ERROR_CODE_INVALID_HANDLE:
      return WL_ERROR_INVALID_HANDLE;
    case WASMLOOP_HANDLER_TYPES_ERROR_CODE_CLOSED:
      return WL_ERROR_CLOSED;
    case WASMLOOP_HANDLER_TYPES_ERROR_CODE_INVALID_ARGUMENT:
      return WL_ERROR_INVALID_ARGUMENT;
    default:
      return WL_ERROR_LIMIT_REACHED;
  }
}

const char *wl_error_name(wl_error error) {
  switch (error) {
    case WL_OK:
      return "ok";
    case WL_ERROR_INVALID_HANDLE:
      return "invalid-handle";
    case WL_ERROR_CLOSED:
      return "closed";
    case WL_ERROR_INVALID_ARGUMENT:
      return "invalid-argument";
    case WL_ERROR_LIMIT_REACHED:
      return "limit-reached";
  }
  return "unknown error";
}

wl_error wl_write(wl_connection conn, const void *data, size_t len, size_t *taken) {
  /* Borrowed: the import copies the bytes out before it returns. */
  minimal_list_u8_t list = {.ptr = (uint8_t *)data, .len = len};
  uint32_t ret = 0;
  wasmloop_handler_types_error_code_t code;
  if (!wasmloop_handler_connections_write(conn, &list, &ret, &code)) {
    *taken = 0;
    return from_code(code);
  }
  *taken = ret;
  return WL_OK;
}

/* The host functions that take a connection and return result<_, error-code>. */
#define CONNECTION_CALL(name)                                  \
  wl_error wl_##name(wl_connection conn) {                     \
    wasmloop_handler_types_error_code_t code;                  \
    if (!wasmloop_handler_connections_##name(conn, &code)) {   \
      return from_code(code);                                  \
    }                                                          \
    return WL_OK;                                              \
  }

CONNECTION_CALL(notify_writable)
CONNECTION_CALL(pause_reading)
CONNECTION_CALL(resume_reading)
CONNECTION_CALL(shutdown_write)
CONNECTION_CALL(close)
CONNECTION_CALL(abort)

wl_error wl_buffered(wl_connection conn, size_t *bytes) {
  uint32_t ret = 0;
  wasmloop_handler_types_error_code_t code;
  if (!wasmloop_handler_connections_buffered(conn, &ret, &code)) {
    return from_code(code);
  }
  *bytes = ret;
  return WL_OK;
}

wl_error wl_peer_address(wl_connection conn, char *buf, size_t size) {
  minimal_string_t address;
  wasmloop_handler_types_error_code_t code;
  if (!wasmloop_handler_connections_peer_address(conn, &address, &code)) {
    return from_code(code);
  }
  if (size > 0) {
    size_t n = address.len < size - 1 ? address.len : size - 1;
    memcpy(buf, address.ptr, n);
    buf[n] = '\0';
  }
  /* A returned string is ours to free. */
  minimal_string_free(&address);
  return WL_OK;
}

wl_error wl_set_timeout(wl_duration delay, wl_timer *timer) {
  wasmloop_handler_types_error_code_t code;
  return wasmloop_handler_timers_set_timeout(delay, timer, &code) ? WL_OK : from_code(code);
}

wl_error wl_set_interval(wl_duration interval, wl_timer *timer) {
  wasmloop_handler_types_error_code_t code;
  return wasmloop_handler_timers_set_interval(interval, timer, &code) ? WL_OK : from_code(code);
}

wl_error wl_cancel_timer(wl_timer timer) {
  wasmloop_handler_types_error_code_t code;
  return wasmloop_handler_timers_cancel(timer, &code) ? WL_OK : from_code(code);
}

wl_instant wl_now(void) { return wasmloop_handler_clock_now(); }

/*
 * A printf subset, because the real vsnprintf drags in wasi-libc's stdio
 * (stderr's FILE with fd_write, fd_seek, fd_close), and a module importing
 * wasi_snapshot_preview1 needs the preview1 adapter to become a component.
 */
struct text {
  char *buf;
  size_t len;
  size_t cap;
};

static void put_char(struct text *t, char c) {
  if (t->len + 1 < t->cap) {
    t->buf[t->len++] = c;
  }
}

static void put_string(struct text *t, const char *s) {
  if (s == NULL) {
    s = "(null)";
  }
  for (; *s != '\0'; s++) {
    put_char(t, *s);
  }
}

static void put_unsigned(struct text *t, unsigned long long n, unsigned base) {
  char digits[24];
  size_t i = 0;
  do {
    digits[i++] = "0123456789abcdef"[n % base];
    n /= base;
  } while (n != 0);
  while (i > 0) {
    put_char(t, digits[--i]);
  }
}

static void put_signed(struct text *t, long long n) {
  if (n < 0) {
    put_char(t, '-');
    put_unsigned(t, 0 - (unsigned long long)n, 10);
  } else {
    put_unsigned(t, (unsigned long long)n, 10);
  }
}

void wl_vlog(wl_level level, const char *format, va_list args) {
  char buffer[1024];
  struct text t = {.buf = buffer, .len = 0, .cap = sizeof buffer};
  for (const char *f = format; *f != '\0'; f++) {
    if (*f != '%') {
      put_char(&t, *f);
      continue;
    }
    f++;
    /* Length: none (int), l, ll or z. */
    int longs = 0;
    bool size = false;
    for (; *f == 'l' || *f == 'z'; f++) {
      if (*f == 'z') {
        size = true;
      } else {
        longs++;
      }
    }
    switch (*f) {
      case 'd':
      case 'i':
        put_signed(&t, size        ? (long long)va_arg(args, ptrdiff_t)
                       : longs == 0 ? va_arg(args, int)
                       : longs == 1 ? va_arg(args, long)
                                    : va_arg(args, long long));
        break;
      case 'u':
      case 'x':
        put_unsigned(&t,
                     size        ? va_arg(args, size_t)
                     : longs == 0 ? va_arg(args, unsigned)
                     : longs == 1 ? va_arg(args, unsigned long)
                                  : va_arg(args, unsigned long long),
                     *f == 'x' ? 16 : 10);
        break;
      case 's':
        put_string(&t, va_arg(args, const char *));
        break;
      case 'c':
        put_char(&t, (char)va_arg(args, int));
        break;
      case '%':
        put_char(&t, '%');
        break;
      case '\0':
        f--; /* a lone % at the end */
        break;
      default:
        put_char(&t, '%');
        put_char(&t, *f);
        break;
    }
  }
  minimal_string_t message = {.ptr = (uint8_t *)buffer, .len = t.len};
  /* wl_level lists the WIT levels in the same order. */
  wasmloop_handler_log_log((wasmloop_handler_types_level_t)level, &message);
}

void wl_log(wl_level level, const char *format, ...) {
  va_list args;
  va_start(args, format);
  wl_vlog(level, format, args);
  va_end(args);
}
