//! Echo in Zig: sends every byte back, in order, without dropping any under
//! backpressure (the same behaviour as guests/echo, the Rust echo).
//!
//! When the host's output buffer for a connection is full, `write` takes only
//! part of the data. The rest waits here, reading is paused (so TCP flow
//! control slows the peer down instead of our memory growing), and
//! `onWritable` sends it once the buffer drains.

const std = @import("std");
const wasmloop = @import("wasmloop");

const Connection = wasmloop.Connection;

comptime {
    wasmloop.exportHandler(Echo);
}

const Echo = struct {
    /// Connections with bytes the host has not taken yet. Only connections
    /// under backpressure have an entry.
    pending: std.AutoHashMapUnmanaged(Connection, Pending) = .empty,

    const Pending = struct {
        /// Received bytes not yet taken by `write`, oldest first.
        bytes: std.ArrayList(u8) = .empty,
        /// The peer has sent EOF: close once `bytes` are written.
        close_when_done: bool = false,
    };

    const gpa = wasmloop.allocator;

    pub fn init(config: []const u8, listeners: []const wasmloop.ListenerInfo) !Echo {
        _ = config;
        _ = listeners;
        return .{};
    }

    pub fn onData(self: *Echo, conn: Connection, data: []const u8) void {
        if (self.pending.getPtr(conn)) |pending| {
            // Reading is paused while bytes are pending, so the host should
            // not get here; if it does, keep the order anyway.
            pending.bytes.appendSlice(gpa, data) catch abortOutOfMemory(conn);
            return;
        }
        const taken = write(conn, data) orelse return;
        if (taken == data.len) return;
        self.keep(conn, data[taken..]) catch return abortOutOfMemory(conn);
        // These only fail for a connection that is closing, where there is
        // nothing left to do anyway.
        conn.pauseReading() catch {};
        conn.notifyWritable() catch {};
    }

    fn keep(self: *Echo, conn: Connection, rest: []const u8) !void {
        var pending: Pending = .{};
        errdefer pending.bytes.deinit(gpa);
        try pending.bytes.appendSlice(gpa, rest);
        try self.pending.put(gpa, conn, pending);
    }

    pub fn onWritable(self: *Echo, conn: Connection) void {
        const pending = self.pending.getPtr(conn) orelse return;
        const taken = write(conn, pending.bytes.items) orelse return;
        pending.bytes.replaceRangeAssumeCapacity(0, taken, &.{});
        if (pending.bytes.items.len > 0) {
            // The buffer filled up again: wait for the next drain.
            conn.notifyWritable() catch {};
            return;
        }
        const close_when_done = pending.close_when_done;
        self.forget(conn);
        if (close_when_done) {
            // Graceful close: the host still sends what it buffered.
            conn.close() catch {};
        } else {
            conn.resumeReading() catch {};
        }
    }

    pub fn onEof(self: *Echo, conn: Connection) wasmloop.EofAction {
        // Everything was handed to the host, which sends it before closing.
        const pending = self.pending.getPtr(conn) orelse return .close;
        // Bytes still wait here: close ourselves once they are written, so a
        // half-closed client still gets all of its bytes back.
        pending.close_when_done = true;
        return .keep_open;
    }

    pub fn onClose(self: *Echo, conn: Connection, reason: wasmloop.CloseReason) void {
        _ = reason;
        self.forget(conn);
    }

    fn forget(self: *Echo, conn: Connection) void {
        if (self.pending.fetchRemove(conn)) |entry| {
            var bytes = entry.value.bytes;
            bytes.deinit(gpa);
        }
    }
};

/// Writes `data` to `conn` and returns how many bytes the host took. A write
/// error means echoing can no longer be complete, so the connection is
/// aborted rather than left with a gap, and null is returned.
fn write(conn: Connection, data: []const u8) ?usize {
    return conn.write(data) catch |err| {
        wasmloop.log(.warn, "{f}: write failed ({t}); aborting", .{ conn, err });
        conn.abort() catch {};
        return null;
    };
}

fn abortOutOfMemory(conn: Connection) void {
    wasmloop.log(.err, "{f}: out of memory; aborting", .{conn});
    conn.abort() catch {};
}
