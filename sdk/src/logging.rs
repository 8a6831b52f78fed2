//! The guest's log, written to the host's log tagged with the guest's name.

use crate::bindings::wasmloop::handler::{log as host, types};

/// How important a log message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes `message` to the host's log. The macros [`trace!`](crate::trace),
/// [`debug!`](crate::debug), [`info!`](crate::info), [`warn!`](crate::warn)
/// and [`error!`](crate::error) format and call this.
pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => types::Level::Trace,
        Level::Debug => types::Level::Debug,
        Level::Info => types::Level::Info,
        Level::Warn => types::Level::Warn,
        Level::Error => types::Level::Error,
    };
    host::log(level, message);
}

/// Logs at [`Level::Trace`], with `format!` arguments.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log($crate::Level::Trace, &::std::format!($($arg)+)) };
}

/// Logs at [`Level::Debug`], with `format!` arguments.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log($crate::Level::Debug, &::std::format!($($arg)+)) };
}

/// Logs at [`Level::Info`], with `format!` arguments.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log($crate::Level::Info, &::std::format!($($arg)+)) };
}

/// Logs at [`Level::Warn`], with `format!` arguments.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log($crate::Level::Warn, &::std::format!($($arg)+)) };
}

/// Logs at [`Level::Error`], with `format!` arguments.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log($crate::Level::Error, &::std::format!($($arg)+)) };
}
