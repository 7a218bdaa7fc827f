//! The build sandbox: a private mount namespace, the chroot's API mounts,
//! and cleanup that never removes through a live mount.
