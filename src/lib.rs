//! mkimage: build, serve and boot-test RAM-resident Debian netboot images.
//!
//! The binary (`src/main.rs`) only parses the command line and prints errors;
//! everything it does lives in these modules, one job each.

pub mod apt;
pub mod archive;
pub mod artifact;
pub mod bootstrap;
pub mod boottest;
pub mod cache_cmd;
pub mod config;
pub mod error;
pub mod exec;
pub mod flock;
pub mod hex;
pub mod image;
pub mod initramfs;
pub mod inspect;
pub mod inspect_summary;
pub mod inventory;
pub mod iso;
pub mod kmod;
pub mod lockfile;
pub mod power;
pub mod progress;
pub mod provision;
pub mod secureboot;
pub mod serve;
pub mod suite;
pub mod sys;
pub mod template;
pub mod timings;
pub mod tree_tar;
pub mod yaml;

pub use error::{exit_code, ConfigError, UsageError};

#[cfg(test)]
mod layering_tests;
