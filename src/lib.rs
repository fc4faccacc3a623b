//! supamount: mount Supabase Storage (S3 protocol) buckets as directories.
//!
//! Layout: `fuse` (the only code that knows the kernel protocol) over `fs` (POSIX semantics and
//! Supabase conventions) over `store` (the object store trait; `store::s3` is the only code that
//! knows aws-sdk-s3). `connect` builds the S3 client; `server` is the built-in local S3 server.

pub mod cache;
pub mod cli;
pub mod connect;
pub mod credentials;
pub mod daemon;
pub mod endpoint;
pub mod error_chain;
pub mod fs;
pub mod fuse;
pub mod mount;
pub mod mount_helper;
pub mod names;
pub mod notify;
pub mod server;
pub mod status;
pub mod store;
pub mod upload;
