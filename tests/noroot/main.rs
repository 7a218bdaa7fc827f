//! The integration tests that need neither root nor a VM, in one binary
//! (one link step): the CLI and its errors, the docs against the code, and
//! `mkimage serve` and its clients on loopback. Run them as any user:
//! `cargo test --release --test noroot` (one file: add its module name,
//! e.g. `cargo test --release --test noroot serve_http::`).
//!
//! Each file is a module; the support modules beside the harnesses
//! (`tests/common`, `tests/*_support`) are shared by path.

#[path = "../common/mod.rs"]
mod common;
#[path = "../nginx_support/mod.rs"]
mod nginx_support;
#[path = "../power_support/mod.rs"]
mod power_support;
#[path = "../serve_support/mod.rs"]
mod serve_support;

mod archive_inspect;
mod cli_config;
mod docs;
mod initrd_fetch_fallback;
mod iso_build;
mod power_bmcs;
mod publish_secure_boot;
mod publish_static;
mod serve_content;
mod serve_http;
mod serve_identity;
mod serve_nginx_cache;
mod serve_node_reports;
mod serve_node_signing;
mod serve_nodes;
mod serve_profiles;
mod serve_republish;
mod serve_scale;
mod serve_servers;
mod serve_tftp;
mod serve_trust;
mod sign_ukis;
