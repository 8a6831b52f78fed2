pub mod connection;
pub mod runtime;
pub mod server;
