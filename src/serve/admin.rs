//! The one place that decides whether a request may change what the server
//! does to a machine when the machine did not report it itself: a profile
//! for its next boot, its power state as an operator saw it. Every such
//! route asks [`refusal`] first.
//!
//! Today it allows every request, as the rest of the node API does: the
//! admin token (`serve --admin-token-file`, the trust issue) goes here, and
//! with it every guarded route is guarded at once.

use http::request::Parts;

use super::reply::Reply;

/// `None` when `req` may change state on an operator's behalf; else the
/// reply to send (401/403) instead.
pub fn refusal(req: &Parts) -> Option<Reply> {
    let _ = req;
    None
}
