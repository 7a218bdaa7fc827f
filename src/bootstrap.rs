//! Bootstrapping a Debian tree with debootstrap or mmdebstrap.
