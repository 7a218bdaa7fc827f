//! Roles: `provisioners/<role>/tasks.yml`, run task by task in the chroot.
