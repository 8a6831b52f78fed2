//! What every handle type shares: the integer behind it.

/// Implements `raw` and the hidden `from_raw` for handle newtypes over `u64`.
macro_rules! handle_integer {
    ($($handle:ty),* $(,)?) => {$(
        impl $handle {
            /// The host's handle number, e.g. for logs.
            pub fn raw(&self) -> u64 {
                self.0
            }

            /// A wrapper around any integer, for tests that hand the host
            /// forged or stale handles. A handle the host did not give this
            /// guest is refused with an invalid-handle error.
            #[doc(hidden)]
            pub fn from_raw(raw: u64) -> Self {
                Self(raw)
            }
        }
    )*};
}

handle_integer!(crate::Connection, crate::Listener, crate::Timer, crate::UdpSocket);
