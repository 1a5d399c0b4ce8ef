//! Turns the exceptions a `borg serve` reports into [`RepoError`]s, as borg's client
//! (`RemoteRepository.call_many.handle_error`) re-raises them.

use super::wire::RemoteError;
use crate::repo::{ObjectId, RepoError};
use std::path::PathBuf;

/// Maps one remote exception. `location` names the repository in messages; `object` is
/// the id the failed call was about (used if the server's argument is unreadable).
pub fn map_remote_error(e: &RemoteError, location: &str, object: Option<&ObjectId>) -> RepoError {
    let loc = || PathBuf::from(location);
    let arg = |i: usize| e.arg(i).unwrap_or_else(|| "(not available)".into());
    match e.class.as_str() {
        "DoesNotExist" => RepoError::DoesNotExist(loc()),
        "AlreadyExists" => RepoError::AlreadyExists(loc()),
        "ParentPathDoesNotExist" => RepoError::ParentPathDoesNotExist(PathBuf::from(arg(0))),
        "InvalidRepository" => {
            RepoError::InvalidRepository(loc(), "not a valid repository, check its config".into())
        }
        "InvalidRepositoryConfig" => {
            RepoError::InvalidRepository(loc(), format!("invalid config: {}", arg(1)))
        }
        "AtticRepository" => RepoError::InvalidRepository(
            loc(),
            "this is an Attic repository; run \"borg upgrade\" on it first".into(),
        ),
        "CheckNeeded" => RepoError::Integrity {
            path: loc(),
            detail: "the repository is inconsistent; run \"borg check\"".into(),
        },
        "IntegrityError" => RepoError::Integrity {
            path: loc(),
            detail: arg(0),
        },
        "ObjectNotFound" => {
            let id = e
                .arg(0)
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| <ObjectId>::try_from(b.as_slice()).ok())
                .or_else(|| object.copied())
                .unwrap_or([0; 32]);
            RepoError::ObjectNotFound(id, loc())
        }
        "PathNotAllowed" => RepoError::Other(format!(
            "repository path {} is not allowed by the server \
             (borg serve --restrict-to-path/--restrict-to-repository)",
            arg(0)
        )),
        "PathAlreadyExists" => {
            RepoError::Other(format!("there is already something at {}", arg(0)))
        }
        "PathPermissionDenied" => RepoError::Other(format!("permission denied to {}", arg(0))),
        "InvalidRPCMethod" => RepoError::Other(format!(
            "the borg server at {location} is too old: it does not support {}",
            arg(0)
        )),
        "LockTimeout" => RepoError::LockTimeout(PathBuf::from(arg(0)), "another process".into()),
        "LockFailed" => RepoError::LockFailed {
            path: PathBuf::from(arg(0)),
            reason: arg(1),
        },
        "NotLocked" | "NotMyLock" => RepoError::LockFailed {
            path: PathBuf::from(arg(0)),
            reason: format!("the lock was lost ({})", e.class),
        },
        "StorageQuotaExceeded" => match (
            e.arg(0).and_then(|s| parse_size(&s)),
            e.arg(1).and_then(|s| parse_size(&s)),
        ) {
            (Some(quota), Some(used)) => RepoError::StorageQuotaExceeded { quota, used },
            _ => RepoError::Other(e.short.clone()),
        },
        "InsufficientFreeSpaceError" => RepoError::Other(format!(
            "insufficient free space on the server to complete the transaction \
             (required: {}, available: {})",
            arg(0),
            arg(1)
        )),
        // `commit_nonce_reservation` raises a bare Exception when the compare fails.
        "Exception" if e.short.contains("nonce space reservation") => {
            RepoError::NonceMismatch(loc())
        }
        // `destroy` / `check(repair=True)` refuse with ValueError in append-only mode.
        "ValueError" if e.short.contains("append-only") => {
            RepoError::AppendOnly(loc(), e.short.clone())
        }
        "Error" | "ErrorWithTraceback" => RepoError::Other(format!("{location}: {}", arg(0))),
        _ => RepoError::Other(format!("{location}: remote {}: {}", e.class, e.short)),
    }
}

/// Reads back borg's `format_file_size` output (`"1.05 MB"`, `"287 B"`): decimal units,
/// so the value is exact to the shown precision only.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = s.split_once(' ')?;
    let v: f64 = num.parse().ok()?;
    let prefix = unit.strip_suffix('B')?;
    let exp = match prefix {
        "" => 0,
        "k" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        "P" => 5,
        "E" => 6,
        "Z" => 7,
        "Y" => 8,
        _ => return None,
    };
    if !(v.is_finite() && v >= 0.0) {
        return None;
    }
    Some((v * 1000f64.powi(exp)).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::msgpack::raw;
    use std::path::Path;

    fn err(class: &str, args: &[&str], short: &str) -> RemoteError {
        RemoteError {
            class: class.into(),
            args: args.iter().map(|a| raw(a.as_bytes())).collect(),
            short: short.into(),
        }
    }

    #[test]
    fn known_classes_map_to_variants() {
        let loc = "ssh://h/r";
        let id = [0x11u8; 32];
        match map_remote_error(
            &err("ObjectNotFound", &[&hex::encode(id), "/r"], ""),
            loc,
            None,
        ) {
            RepoError::ObjectNotFound(got, p) => {
                assert_eq!(got, id);
                assert_eq!(p, PathBuf::from(loc));
            }
            other => panic!("{other:?}"),
        }
        let other = [0x22u8; 32];
        assert!(matches!(
            map_remote_error(&err("ObjectNotFound", &["zz"], ""), loc, Some(&other)),
            RepoError::ObjectNotFound(x, _) if x == other
        ));
        assert!(matches!(
            map_remote_error(&err("DoesNotExist", &["/r"], ""), loc, None),
            RepoError::DoesNotExist(_)
        ));
        assert!(matches!(
            map_remote_error(&err("AlreadyExists", &["/r"], ""), loc, None),
            RepoError::AlreadyExists(_)
        ));
        assert!(matches!(
            map_remote_error(&err("LockTimeout", &["/r/lock.exclusive"], ""), loc, None),
            RepoError::LockTimeout(p, _) if p == Path::new("/r/lock.exclusive")
        ));
        assert!(matches!(
            map_remote_error(&err("LockFailed", &["/r/lock", "EACCES"], ""), loc, None),
            RepoError::LockFailed { reason, .. } if reason == "EACCES"
        ));
        let m =
            map_remote_error(&err("PathNotAllowed", &["/elsewhere"], ""), loc, None).to_string();
        assert!(m.contains("not allowed") && m.contains("/elsewhere"), "{m}");
        let m = map_remote_error(&err("InvalidRPCMethod", &["scan"], ""), loc, None).to_string();
        assert!(m.contains("too old") && m.contains("scan"), "{m}");
        assert!(matches!(
            map_remote_error(
                &err("StorageQuotaExceeded", &["1.00 MB", "1.05 MB"], ""),
                loc,
                None
            ),
            RepoError::StorageQuotaExceeded {
                quota: 1_000_000,
                used: 1_050_000
            }
        ));
        assert!(matches!(
            map_remote_error(
                &err(
                    "Exception",
                    &["nonce space reservation with mismatched previous state"],
                    "Exception: nonce space reservation with mismatched previous state"
                ),
                loc,
                None
            ),
            RepoError::NonceMismatch(_)
        ));
        assert!(matches!(
            map_remote_error(
                &err("ValueError", &[], "ValueError: /r is in append-only mode"),
                loc,
                None
            ),
            RepoError::AppendOnly(..)
        ));
        assert!(
            matches!(map_remote_error(&err("IntegrityError", &["bad crc"], ""), loc, None), RepoError::Integrity { detail, .. } if detail == "bad crc")
        );
        let m = map_remote_error(
            &err(
                "ZeroDivisionError",
                &[],
                "ZeroDivisionError: integer division",
            ),
            loc,
            None,
        )
        .to_string();
        assert!(m.contains("ZeroDivisionError: integer division"), "{m}");
    }

    #[test]
    fn sizes_parse_like_borg_prints_them() {
        assert_eq!(parse_size("287 B"), Some(287));
        assert_eq!(parse_size("1.04 kB"), Some(1040));
        assert_eq!(parse_size("2.50 GB"), Some(2_500_000_000));
        assert_eq!(parse_size("1.0 XB"), None);
        assert_eq!(parse_size("nan B"), None);
        assert_eq!(parse_size("12"), None);
    }
}
