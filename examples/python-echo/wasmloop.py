"""A small helper for writing wasmloop guests in Python.

componentize-py generates the raw bindings of `wit/handler.wit` (the
`wit_world` package) while it builds the component. This module sits on top
of them so a guest author writes only the callbacks they need:

    from wasmloop import Guest, export, write

    class Echo(Guest):
        def on_data(self, conn, data):
            write(conn, data)

    Callbacks = export(Echo)

- `Guest` has a default for every callback (do nothing; `on_eof` closes).
- `export(cls)` returns the `Callbacks` class componentize-py looks for in
  the app module. The host's `init` creates the one `cls()` instance (keep
  your state on it) and calls its `init(config, listeners)`; an exception
  there becomes the error the host reports, and the guest does not start.
- Functions for the imports, in Python shapes: `write` returns how many bytes
  the host took and raises `HostError` on a dead or closed connection; the
  others (`close`, `pause_reading`, ...) return `False` instead of raising,
  since the only failure is "that connection is already closing or gone";
  timers take seconds; logging has one function per level.

An exception escaping any callback is logged (with its traceback) through
the host's log, then re-raised: the callback traps and the host applies the
guest's fault policy (by default: reset its connections and restart it).
"""

import sys
from typing import Callable, List, Optional, Type, TypeVar

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import clock as _clock
from wit_world.imports import connections as _conn
from wit_world.imports import log as _log
from wit_world.imports import timers as _timers
from wit_world.imports.types import (
    CloseReason,
    CloseReason_Error,
    CloseReason_HostShutdown,
    CloseReason_Local,
    CloseReason_PeerClosed,
    CloseReason_Reset,
    EofAction,
    ErrorCode,
    Level,
    ListenerInfo,
)

__all__ = [
    "Guest", "export", "HostError",
    "write", "notify_writable", "pause_reading", "resume_reading", "shutdown_write",
    "close", "abort", "buffered", "peer_address", "local_address",
    "set_timeout", "set_interval", "cancel", "monotonic", "monotonic_ns",
    "trace", "debug", "info", "warn", "error",
    "CloseReason", "CloseReason_Local", "CloseReason_PeerClosed", "CloseReason_Reset",
    "CloseReason_Error", "CloseReason_HostShutdown", "EofAction", "ErrorCode", "Level",
    "ListenerInfo",
]


class HostError(Exception):
    """A host function refused a call: `code` is the WIT `error-code`."""

    def __init__(self, what: str, handle: Optional[int], code: ErrorCode):
        self.what = what
        self.handle = handle
        self.code = code
        on = "" if handle is None else f" on {handle}"
        super().__init__(f"{what}{on}: {code.name.lower().replace('_', '-')}")


# ---- The callbacks -----------------------------------------------------------


class Guest:
    """Every callback of the `callbacks` interface, each doing nothing.

    Subclass it and override what you need. Connections, listeners and timers
    are plain integers; `data` is `bytes` (at most 64 KiB per call).
    """

    def init(self, config: str, listeners: List[ListenerInfo]) -> None:
        """Called once, first, with `--guest-config` and the granted
        listeners. Raise to refuse to start; the message reaches the
        operator."""

    def on_accept(self, listener: int, conn: int) -> None:
        """A new connection on `listener`."""

    def on_data(self, conn: int, data: bytes) -> None:
        """Bytes from the peer, in order."""

    def on_eof(self, conn: int) -> EofAction:
        """The peer finished sending. By default the host sends what is
        buffered and closes (`EofAction.CLOSE`); return
        `EofAction.KEEP_OPEN` to keep writing and close later yourself."""
        return EofAction.CLOSE

    def on_writable(self, conn: int) -> None:
        """The output buffer drained, after `notify_writable(conn)`."""

    def on_close(self, conn: int, reason: CloseReason) -> None:
        """The connection is gone: forget `conn`, it is dead from now on."""

    def on_timer(self, timer: int) -> None:
        """A timer from `set_timeout` or `set_interval` fired."""

    def on_shutdown(self) -> None:
        """The host is stopping; write goodbyes and close if you like."""


G = TypeVar("G", bound=Guest)


def _describe(e: BaseException) -> str:
    """A traceback without source lines: the `traceback` module would read
    the source files, and with WASI stubbed out that traps."""
    lines = ["Traceback (most recent call last):"]
    tb = e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}')
        tb = tb.tb_next
    lines.append(f"{type(e).__name__}: {e}")
    return "\n".join(lines)


def _fault(callback: str) -> None:
    """Logs the exception being handled, with its traceback, before the
    callback traps."""
    _log.log(Level.ERROR, f"{callback} raised:\n{_describe(sys.exception())}")


def export(cls: Type[G]) -> type:
    """The `Callbacks` class for componentize-py: bind it in the app module
    as `Callbacks = export(MyGuest)`.

    componentize-py may create a new instance of that class for every call,
    so the guest's state cannot live on it. Instead the host's `init`
    creates the one `cls()` instance, calls its `init(config, listeners)`
    (an exception there becomes the error the host reports, and the guest
    does not start), and every later callback is forwarded to it. An
    exception escaping a callback is logged with its traceback, then
    re-raised: the callback traps.
    """
    guest: Optional[G] = None

    class Callbacks(exports.Callbacks):
        def init(self, config: str, listeners: List[ListenerInfo]) -> None:
            nonlocal guest
            try:
                created = cls()
                created.init(config, listeners)
            except Err:
                raise
            except Exception as e:
                _fault("init")
                raise Err(f"{type(e).__name__}: {e}") from None
            guest = created

        def on_accept(self, listener: int, conn: int) -> None:
            try:
                guest.on_accept(listener, conn)
            except BaseException:
                _fault("on_accept")
                raise

        def on_data(self, conn: int, data: bytes) -> None:
            try:
                guest.on_data(conn, data)
            except BaseException:
                _fault("on_data")
                raise

        def on_eof(self, conn: int) -> EofAction:
            try:
                return guest.on_eof(conn)
            except BaseException:
                _fault("on_eof")
                raise

        def on_writable(self, conn: int) -> None:
            try:
                guest.on_writable(conn)
            except BaseException:
                _fault("on_writable")
                raise

        def on_close(self, conn: int, reason: CloseReason) -> None:
            try:
                guest.on_close(conn, reason)
            except BaseException:
                _fault("on_close")
                raise

        def on_timer(self, t: int) -> None:
            try:
                guest.on_timer(t)
            except BaseException:
                _fault("on_timer")
                raise

        def on_shutdown(self) -> None:
            try:
                guest.on_shutdown()
            except BaseException:
                _fault("on_shutdown")
                raise

    return Callbacks


# ---- Connections ---------------------------------------------------------------


def write(conn: int, data: bytes) -> int:
    """Queues `data` (bytes, or any bytes-like object) for sending; returns
    how many bytes the host took.

    Fewer than `len(data)` means the connection's output buffer is full: the
    rest was *not* taken. Keep it, `pause_reading(conn)`, `notify_writable(conn)`
    and write it from `on_writable`. Raises `HostError` if the connection is
    closed (`ErrorCode.CLOSED`) or not a live handle (`INVALID_HANDLE`).
    """
    if type(data) is not bytes:
        # componentize-py lowers only `bytes` to `list<u8>`: a bytearray or
        # memoryview would trap.
        data = bytes(data)
    try:
        return _conn.write(conn, data)
    except Err as e:
        raise HostError("write", conn, e.value) from None


def _quiet(function: Callable[[int], None], conn: int) -> bool:
    try:
        function(conn)
        return True
    except Err:
        return False


def notify_writable(conn: int) -> bool:
    """Asks for one `on_writable` once the output buffer has drained."""
    return _quiet(_conn.notify_writable, conn)


def pause_reading(conn: int) -> bool:
    """No `on_data` for `conn` until `resume_reading`; TCP slows the peer."""
    return _quiet(_conn.pause_reading, conn)


def resume_reading(conn: int) -> bool:
    """Undoes `pause_reading`; waiting bytes arrive after this callback."""
    return _quiet(_conn.resume_reading, conn)


def shutdown_write(conn: int) -> bool:
    """Sends FIN once buffered output is sent; reading goes on."""
    return _quiet(_conn.shutdown_write, conn)


def close(conn: int) -> bool:
    """Graceful close: buffered output is still sent, then `on_close`."""
    return _quiet(_conn.close, conn)


def abort(conn: int) -> bool:
    """Immediate close: buffered output is dropped, the peer gets a reset."""
    return _quiet(_conn.abort, conn)


def buffered(conn: int) -> int:
    """Bytes in the output buffer not yet handed to the kernel (0 for a
    dead handle)."""
    try:
        return _conn.buffered(conn)
    except Err:
        return 0


def peer_address(conn: int) -> Optional[str]:
    """The peer's `IP:port`, or `None` for a dead handle."""
    try:
        return _conn.peer_address(conn)
    except Err:
        return None


def local_address(conn: int) -> Optional[str]:
    """Our side's `IP:port`, or `None` for a dead handle."""
    try:
        return _conn.local_address(conn)
    except Err:
        return None


# ---- Timers and the clock ------------------------------------------------------


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1_000_000_000))


def set_timeout(seconds: float) -> int:
    """`on_timer(timer)` once, `seconds` from now. Raises `HostError` at the
    guest's timer limit."""
    try:
        return _timers.set_timeout(_ns(seconds))
    except Err as e:
        raise HostError("set_timeout", None, e.value) from None


def set_interval(seconds: float) -> int:
    """`on_timer(timer)` every `seconds` (at least 0.001) until `cancel`."""
    try:
        return _timers.set_interval(_ns(seconds))
    except Err as e:
        raise HostError("set_interval", None, e.value) from None


def cancel(timer: int) -> bool:
    """Stops a timer; `False` if it already fired (once) or was cancelled."""
    return _quiet(_timers.cancel, timer)


def monotonic_ns() -> int:
    """The loop's monotonic clock, in nanoseconds."""
    return _clock.now()


def monotonic() -> float:
    """The loop's monotonic clock, in seconds (like `time.monotonic`)."""
    return _clock.now() / 1_000_000_000


# ---- Logging -------------------------------------------------------------------
# Into the host's log, tagged with the guest's name. Use these, not `print`:
# built with --stub-wasi, the component has no stdout and `print` traps.


def trace(message: str) -> None:
    _log.log(Level.TRACE, message)


def debug(message: str) -> None:
    _log.log(Level.DEBUG, message)


def info(message: str) -> None:
    _log.log(Level.INFO, message)


def warn(message: str) -> None:
    _log.log(Level.WARN, message)


def error(message: str) -> None:
    _log.log(Level.ERROR, message)
