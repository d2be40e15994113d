//! The one integration-test binary: real gateway, mock providers speaking the real wire formats.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod anthropic_ingress;
mod cli;
mod conformance;
mod edge;
mod gateway;
mod interop;
mod mock;
mod router;
