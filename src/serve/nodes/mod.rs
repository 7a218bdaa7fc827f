//! The node registry: which machines the server has seen and where each
//! one's boot got to. One JSON record per MAC under the served dir's state
//! area (`DIR/.state/nodes/`, never served as a file), written whole
//! (`store`); filled by the server itself (script served, kernel and initrd
//! fetched), by the init's and the booted system's stage reports and the
//! discovery overlay's inventory (`api`); shown by `/api/nodes`, the status
//! page, `/metrics` and `mkimage nodes` (`show`).

pub mod api;
pub mod record;
pub mod show;
mod stage;
mod store;
pub mod timeline;

pub use record::{Failure, Inventory, Power, Record, Seen};
pub use show::{list, Summary};
pub use stage::Stage;
pub use store::{Change, NodeError, Store, NODES};
