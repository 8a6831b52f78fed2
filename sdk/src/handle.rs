//! What every handle type shares: the integer behind it.

/// Implements `raw` and the hidden `from_raw` for handle newtypes over `u64`.
macro_rules! handle_integer {
    ($($handle:ty),* $(,)?) => {$(
        impl $handle {
            /// The host's handle number, e.g. for logs.
            pub fn raw(&self) -> u64 {
                self.0
            }

            /// The handle behind an integer from [`raw`](Self::raw), e.g.
            /// one kept in a migration snapshot. A number the host did not
            /// give this guest is refused with an invalid-handle error.
            pub fn from_raw(raw: u64) -> Self {
                Self(raw)
            }
        }
    )*};
}

handle_integer!(crate::Connection, crate::Listener, crate::Timer, crate::UdpSocket, crate::Request, crate::WebSocket);
