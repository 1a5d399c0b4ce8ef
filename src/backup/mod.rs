//! What to back up: Proxmox guests and ZFS datasets, the proxborg way.

pub mod naming;
pub mod pve;
pub mod pveconf;
pub mod run;
pub mod target;
pub mod tool;
pub mod zfs;
