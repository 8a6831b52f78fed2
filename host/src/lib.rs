pub mod config;
pub mod connection;
pub mod grants;
pub mod os_error;
pub mod runtime;
pub mod server;
