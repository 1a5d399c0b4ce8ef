//! Archive names exactly as proxborg makes them (and the prefixes it prunes by), with
//! vzdump's timestamp format `%Y_%m_%d-%H_%M_%S` in local time.

use chrono::{DateTime, Local};

/// vzdump's timestamp in archive names.
pub fn timestamp(t: DateTime<Local>) -> String {
    t.format("%Y_%m_%d-%H_%M_%S").to_string()
}

/// Guest type for image archives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestType {
    Lxc,
    Qemu,
}

/// Prefix of an image archive: `vzdump-lxc-101-` (or `<hostname>-lxc-101-`).
pub fn image_prefix(kind: GuestType, vmid: u32, hostname: Option<&str>) -> String {
    let t = match kind {
        GuestType::Lxc => "lxc",
        GuestType::Qemu => "qemu",
    };
    format!("{}-{t}-{vmid}-", hostname.unwrap_or("vzdump"))
}

/// Image archive (and its single item) name: `vzdump-lxc-101-<ts>.tar` / `….vma`.
pub fn image_name(kind: GuestType, vmid: u32, hostname: Option<&str>, ts: &str) -> String {
    let ext = match kind {
        GuestType::Lxc => "tar",
        GuestType::Qemu => "vma",
    };
    format!("{}{ts}.{ext}", image_prefix(kind, vmid, hostname))
}

/// Prefix of an LXC directory archive: `dump-101-` (or `<guest hostname>-101-`).
pub fn dir_prefix(vmid: u32, guest_hostname: Option<&str>) -> String {
    format!("{}-{vmid}-", guest_hostname.unwrap_or("dump"))
}

/// LXC directory archive name: `dump-101-<ts>`.
pub fn dir_name(vmid: u32, guest_hostname: Option<&str>, ts: &str) -> String {
    format!("{}{ts}", dir_prefix(vmid, guest_hostname))
}

/// Prefix of a dataset archive: `dataset-rpool-data--` (every char but `[A-Za-z0-9-]`
/// becomes `-`; the `--` keeps prune from matching sub-paths).
pub fn dataset_prefix(mountpoint: &str, host_hostname: Option<&str>) -> String {
    let p: String = mountpoint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{}{p}--", host_hostname.unwrap_or("dataset"))
}

/// Dataset archive name: `dataset-rpool-data--<ts>`.
pub fn dataset_name(mountpoint: &str, host_hostname: Option<&str>, ts: &str) -> String {
    format!("{}{ts}", dataset_prefix(mountpoint, host_hostname))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn proxborg_names() {
        let ts = timestamp(Local.with_ymd_and_hms(2020, 1, 2, 3, 4, 5).unwrap());
        assert_eq!(ts, "2020_01_02-03_04_05");
        assert_eq!(
            image_name(GuestType::Lxc, 100, None, &ts),
            "vzdump-lxc-100-2020_01_02-03_04_05.tar"
        );
        assert_eq!(
            image_name(GuestType::Qemu, 101, None, &ts),
            "vzdump-qemu-101-2020_01_02-03_04_05.vma"
        );
        assert_eq!(
            image_name(GuestType::Lxc, 100, Some("pve1"), &ts),
            "pve1-lxc-100-2020_01_02-03_04_05.tar"
        );
        assert_eq!(dir_name(100, None, &ts), "dump-100-2020_01_02-03_04_05");
        assert_eq!(
            dir_name(100, Some("test1"), &ts),
            "test1-100-2020_01_02-03_04_05"
        );
        assert_eq!(
            dataset_name("/rpool/data", None, &ts),
            "dataset-rpool-data--2020_01_02-03_04_05"
        );
        assert_eq!(
            dataset_prefix("/rpool/data", Some("pve1")),
            "pve1-rpool-data--"
        );
    }
}
