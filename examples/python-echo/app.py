"""Echo, in Python: sends every byte back, in order, without dropping any
under backpressure.

When the host's output buffer for a connection is full, `write` takes only
part of the data. The rest waits here, reading is paused (so TCP flow
control slows the peer down instead of our memory growing), and
`on_writable` sends it once the buffer drains. The same guest as the Rust
`guests/echo`, callback for callback.
"""

from wasmloop import (
    EofAction,
    Guest,
    HostError,
    abort,
    close,
    export,
    notify_writable,
    pause_reading,
    resume_reading,
    warn,
    write,
)


class Pending:
    """Bytes of one connection that the host has not taken yet."""

    __slots__ = ("data", "close_when_done")

    def __init__(self, data: bytes):
        self.data = data
        # The peer has sent EOF: close once `data` is written.
        self.close_when_done = False


class Echo(Guest):
    def __init__(self):
        # Only connections under backpressure have an entry.
        self.pending: dict[int, Pending] = {}

    def on_data(self, conn, data):
        pending = self.pending.get(conn)
        if pending is not None:
            # Reading is paused while bytes are pending, so the host should
            # not get here; if it does, keep the order anyway.
            pending.data += data
            return
        taken = self.send(conn, data)
        if taken is not None and taken < len(data):
            self.pending[conn] = Pending(data[taken:])
            pause_reading(conn)
            notify_writable(conn)

    def on_writable(self, conn):
        pending = self.pending.get(conn)
        if pending is None:
            return
        taken = self.send(conn, pending.data)
        if taken is None:
            return
        pending.data = pending.data[taken:]
        if pending.data:
            # The buffer filled up again: wait for the next drain.
            notify_writable(conn)
            return
        del self.pending[conn]
        if pending.close_when_done:
            # Graceful close: the host still sends what it buffered.
            close(conn)
        else:
            resume_reading(conn)

    def on_eof(self, conn):
        pending = self.pending.get(conn)
        if pending is None:
            # Everything was handed to the host, which sends it before closing.
            return EofAction.CLOSE
        # Bytes still wait here: close ourselves once they are written, so a
        # half-closed client still gets all of its bytes back.
        pending.close_when_done = True
        return EofAction.KEEP_OPEN

    def on_close(self, conn, reason):
        self.pending.pop(conn, None)

    def send(self, conn, data):
        """Writes `data` and returns how many bytes the host took. A write
        error means echoing can no longer be complete, so the connection is
        aborted rather than left with a gap, and `None` is returned."""
        try:
            return write(conn, data)
        except HostError as e:
            warn(f"{e}; aborting")
            abort(conn)
            return None


# componentize-py looks for the exported interface's class by name.
Callbacks = export(Echo)
