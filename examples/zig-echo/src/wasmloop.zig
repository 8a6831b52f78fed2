//! wasmloop for Zig: a thin layer over the C bindings that `wit-bindgen c`
//! generates from wit/handler.wit (world `minimal`), translated to Zig by
//! `zig translate-c` (the `bindings` module; build.sh makes it).
//!
//! - Handles are distinct enum types (`Connection`, `Listener`, `Timer`)
//!   with the host functions as methods, returning Zig errors.
//! - `exportHandler(H)` exports the callbacks of world `minimal` for a
//!   handler type `H`, like the Rust SDK's `export!`: `H.init` is required,
//!   every other callback (`onAccept`, `onData`, `onEof`, `onWritable`,
//!   `onClose`, `onTimer`, `onShutdown`) is optional and defaults to doing
//!   nothing (`onEof` to `.close`).
//! - Whatever the host passed in (bytes, strings, the close reason) is valid
//!   until the callback returns, then freed here: copy what you keep.

const std = @import("std");
const c = @import("bindings");

/// The heap the bindings use too (`cabi_realloc` is libc's `realloc`).
pub const allocator = std.heap.c_allocator;

pub const Error = error{
    /// Not one of this guest's live objects (never given, closed, cancelled).
    InvalidHandle,
    /// The connection is closing or its write side is shut.
    Closed,
    /// An argument is out of range (for example a zero interval).
    InvalidArgument,
    /// A per-guest limit was reached (for example too many timers).
    LimitReached,
};

fn fromCode(code: c.wasmloop_handler_types_error_code_t) Error {
    return switch (code) {
        c.WASMLOOP_HANDLER_TYPES_ERROR_CODE_INVALID_HANDLE => error.InvalidHandle,
        c.WASMLOOP_HANDLER_TYPES_ERROR_CODE_CLOSED => error.Closed,
        c.WASMLOOP_HANDLER_TYPES_ERROR_CODE_INVALID_ARGUMENT => error.InvalidArgument,
        else => error.LimitReached,
    };
}

/// Borrows `bytes` as a WIT list or string: imports do not take ownership.
fn borrowList(bytes: []const u8) c.minimal_list_u8_t {
    return .{ .ptr = @constCast(bytes.ptr), .len = bytes.len };
}

/// A TCP connection handed to the guest by `onAccept`.
pub const Connection = enum(u64) {
    _,

    /// Offers `data` and returns how many bytes the host took. Fewer than
    /// `data.len` means the output buffer is full: the rest is still yours.
    pub fn write(self: Connection, data: []const u8) Error!usize {
        var list = borrowList(data);
        var taken: u32 = undefined;
        var code: c.wasmloop_handler_types_error_code_t = undefined;
        if (!c.wasmloop_handler_connections_write(@backingInt(self), &list, &taken, &code)) return fromCode(code);
        return taken;
    }

    /// One `onWritable` once the output buffer is empty.
    pub fn notifyWritable(self: Connection) Error!void {
        return call(c.wasmloop_handler_connections_notify_writable, self);
    }
    /// No `onData` until `resumeReading`; TCP slows the peer down.
    pub fn pauseReading(self: Connection) Error!void {
        return call(c.wasmloop_handler_connections_pause_reading, self);
    }
    pub fn resumeReading(self: Connection) Error!void {
        return call(c.wasmloop_handler_connections_resume_reading, self);
    }
    /// Sends FIN once the buffered output is sent; reading goes on.
    pub fn shutdownWrite(self: Connection) Error!void {
        return call(c.wasmloop_handler_connections_shutdown_write, self);
    }
    /// Graceful close: buffered output is still sent. `onClose` follows.
    pub fn close(self: Connection) Error!void {
        return call(c.wasmloop_handler_connections_close, self);
    }
    /// Reset: buffered output is discarded. `onClose` follows.
    pub fn abort(self: Connection) Error!void {
        return call(c.wasmloop_handler_connections_abort, self);
    }

    /// Bytes in the output buffer not yet handed to the kernel.
    pub fn buffered(self: Connection) Error!usize {
        var bytes: u32 = undefined;
        var code: c.wasmloop_handler_types_error_code_t = undefined;
        if (!c.wasmloop_handler_connections_buffered(@backingInt(self), &bytes, &code)) return fromCode(code);
        return bytes;
    }

    fn call(comptime function: anytype, self: Connection) Error!void {
        var code: c.wasmloop_handler_types_error_code_t = undefined;
        if (!function(@backingInt(self), &code)) return fromCode(code);
    }

    pub fn format(self: Connection, w: *std.Io.Writer) std.Io.Writer.Error!void {
        try w.print("connection {d}", .{@backingInt(self)});
    }
};

/// A listening socket granted by the operator.
pub const Listener = enum(u64) { _ };

/// A timer started by the guest.
pub const Timer = enum(u64) {
    _,

    /// Fires `onTimer` once, `delay_ns` from now.
    pub fn setTimeout(delay_ns: u64) Error!Timer {
        return start(c.wasmloop_handler_timers_set_timeout, delay_ns);
    }
    /// Fires `onTimer` every `interval_ns` (at least 1 ms) until cancelled.
    pub fn setInterval(interval_ns: u64) Error!Timer {
        return start(c.wasmloop_handler_timers_set_interval, interval_ns);
    }
    pub fn cancel(self: Timer) Error!void {
        var code: c.wasmloop_handler_types_error_code_t = undefined;
        if (!c.wasmloop_handler_timers_cancel(@backingInt(self), &code)) return fromCode(code);
    }

    fn start(comptime function: anytype, ns: u64) Error!Timer {
        var timer: u64 = undefined;
        var code: c.wasmloop_handler_types_error_code_t = undefined;
        if (!function(ns, &timer, &code)) return fromCode(code);
        return @fromBackingInt(timer);
    }
};

/// Nanoseconds on the monotonic clock.
pub fn now() u64 {
    return c.wasmloop_handler_clock_now();
}

pub const ListenerInfo = struct {
    handle: Listener,
    /// The bound address, e.g. `127.0.0.1:7000`.
    address: []const u8,
};

pub const CloseReason = union(enum) {
    /// The guest called `close` or `abort`.
    local,
    /// The peer closed and `onEof` returned `.close`.
    peer_closed,
    /// The peer reset the connection.
    reset,
    /// Another socket error, as the OS describes it.
    failed: []const u8,
    /// The host is shutting down.
    host_shutdown,
};

pub const EofAction = enum {
    /// Send what is buffered, then close.
    close,
    /// Keep the connection open for writing; close it yourself later.
    keep_open,
};

pub const Level = enum { trace, debug, info, warn, err };

/// Formats into the host's log (cut at 1 KiB), tagged with the guest's name.
pub fn log(level: Level, comptime format: []const u8, args: anytype) void {
    var buffer: [1024]u8 = undefined;
    var w: std.Io.Writer = .fixed(&buffer);
    w.print(format, args) catch {};
    var message = borrowList(w.buffered());
    const wit_level: c.wasmloop_handler_types_level_t = switch (level) {
        .trace => c.WASMLOOP_HANDLER_TYPES_LEVEL_TRACE,
        .debug => c.WASMLOOP_HANDLER_TYPES_LEVEL_DEBUG,
        .info => c.WASMLOOP_HANDLER_TYPES_LEVEL_INFO,
        .warn => c.WASMLOOP_HANDLER_TYPES_LEVEL_WARN,
        .err => c.WASMLOOP_HANDLER_TYPES_LEVEL_ERROR,
    };
    c.wasmloop_handler_log_log(wit_level, @ptrCast(&message));
}

/// Exports world `minimal`'s callbacks, dispatching to one `H`, made by
/// `H.init(config, listeners) !H`. Call it from a `comptime` block.
pub fn exportHandler(comptime H: type) void {
    const Exports = struct {
        var handler: H = undefined;

        fn init(
            config: *c.minimal_string_t,
            listeners: *c.exports_wasmloop_handler_callbacks_list_listener_info_t,
            err: *c.minimal_string_t,
        ) callconv(.c) bool {
            defer c.minimal_string_free(config);
            defer c.exports_wasmloop_handler_callbacks_list_listener_info_free(listeners);
            const infos = allocator.alloc(ListenerInfo, listeners.len) catch return fail(err, "OutOfMemory");
            defer allocator.free(infos);
            for (infos, listeners.ptr[0..listeners.len]) |*info, raw| {
                info.* = .{ .handle = @fromBackingInt(raw.handle), .address = raw.address.ptr[0..raw.address.len] };
            }
            handler = H.init(config.ptr[0..config.len], infos) catch |e| return fail(err, @errorName(e));
            return true;
        }

        /// Hands the host a copy of `message` (it frees it after the call).
        fn fail(err: *c.minimal_string_t, message: []const u8) bool {
            c.minimal_string_dup_n(err, message.ptr, message.len);
            return false;
        }

        fn onAccept(listener: u64, conn: u64) callconv(.c) void {
            if (@hasDecl(H, "onAccept")) handler.onAccept(@fromBackingInt(listener), @fromBackingInt(conn));
        }

        fn onData(conn: u64, data: *c.minimal_list_u8_t) callconv(.c) void {
            defer c.minimal_list_u8_free(data);
            if (@hasDecl(H, "onData")) handler.onData(@fromBackingInt(conn), data.ptr[0..data.len]);
        }

        fn onEof(conn: u64) callconv(.c) c.exports_wasmloop_handler_callbacks_eof_action_t {
            const action: EofAction = if (@hasDecl(H, "onEof")) handler.onEof(@fromBackingInt(conn)) else .close;
            return switch (action) {
                .close => c.WASMLOOP_HANDLER_TYPES_EOF_ACTION_CLOSE,
                .keep_open => c.WASMLOOP_HANDLER_TYPES_EOF_ACTION_KEEP_OPEN,
            };
        }

        fn onWritable(conn: u64) callconv(.c) void {
            if (@hasDecl(H, "onWritable")) handler.onWritable(@fromBackingInt(conn));
        }

        fn onClose(conn: u64, raw: *c.exports_wasmloop_handler_callbacks_close_reason_t) callconv(.c) void {
            defer c.exports_wasmloop_handler_callbacks_close_reason_free(raw);
            if (!@hasDecl(H, "onClose")) return;
            const reason: CloseReason = switch (raw.tag) {
                c.WASMLOOP_HANDLER_TYPES_CLOSE_REASON_LOCAL => .local,
                c.WASMLOOP_HANDLER_TYPES_CLOSE_REASON_PEER_CLOSED => .peer_closed,
                c.WASMLOOP_HANDLER_TYPES_CLOSE_REASON_RESET => .reset,
                c.WASMLOOP_HANDLER_TYPES_CLOSE_REASON_ERROR => blk: {
                    const message = raw.val.@"error";
                    break :blk .{ .failed = message.ptr[0..message.len] };
                },
                else => .host_shutdown,
            };
            handler.onClose(@fromBackingInt(conn), reason);
        }

        fn onTimer(timer: u64) callconv(.c) void {
            if (@hasDecl(H, "onTimer")) handler.onTimer(@fromBackingInt(timer));
        }

        fn onShutdown() callconv(.c) void {
            if (@hasDecl(H, "onShutdown")) handler.onShutdown();
        }
    };
    const prefix = "exports_wasmloop_handler_callbacks_";
    @export(&Exports.init, .{ .name = prefix ++ "init" });
    @export(&Exports.onAccept, .{ .name = prefix ++ "on_accept" });
    @export(&Exports.onData, .{ .name = prefix ++ "on_data" });
    @export(&Exports.onEof, .{ .name = prefix ++ "on_eof" });
    @export(&Exports.onWritable, .{ .name = prefix ++ "on_writable" });
    @export(&Exports.onClose, .{ .name = prefix ++ "on_close" });
    @export(&Exports.onTimer, .{ .name = prefix ++ "on_timer" });
    @export(&Exports.onShutdown, .{ .name = prefix ++ "on_shutdown" });
}
