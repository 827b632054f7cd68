//! Wire types of evald's HTTP APIs, with no behaviour beyond (de)serialising
//! and the field checks that are part of a protocol's contract.
//!
//! - [`v1`]: the native API under `/api/v1` (documented by the OpenAPI
//!   document the server serves at `/api/v1/openapi.json`).
//! - [`piston`]: Piston v2 under `/api/v2`, byte-for-byte compatible with
//!   Piston 3.1.1 for its existing clients, including its error messages.
//! - [`path`]: the path rule of workspace files, shared by every API and
//!   enforced again by the sandbox.
//!
//! Architecture invariant: this crate knows neither HTTP nor the engine; the
//! server maps these types to engine calls.

#![forbid(unsafe_code)]

pub mod path;
pub mod piston;
pub mod v1;
