//! `export-tar` (borg's command of the same name, with borg 2's `--tar-format`).

use std::fs::File;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::cmd_extract::{open_archive_session, SelectArgs};
use super::{Common, Outcome};
use proxborg::archive::tar::{export_tar, TarEvent, TarFormat, TarOptions};

#[derive(Args, Debug)]
pub struct ExportTarArgs {
    /// Filter program to pipe the tar stream through ("auto": by the file name's
    /// extension, as borg: .tar.gz gzip, .tar.bz2 bzip2, .tar.xz xz, .tar.lz4 lz4,
    /// .tar.zst zstd)
    #[arg(long, value_name = "CMD", default_value = "auto")]
    pub tar_filter: String,
    /// Print each exported path
    #[arg(long = "list")]
    pub list: bool,
    /// GNU (borg 1.x's output), PAX (default: with ACLs, xattrs, ns times) or BORG (PAX
    /// plus all borg item metadata)
    #[arg(long, value_name = "FMT", default_value = "PAX", value_parser = parse_format)]
    pub tar_format: TarFormat,
    /// Write ACL entries with user/group names (where archived) instead of numeric ids
    #[arg(long)]
    pub acl_names: bool,
    #[command(flatten)]
    pub select: SelectArgs,
    /// REPOSITORY::ARCHIVE
    pub location: String,
    /// Output tar file; "-" for stdout
    pub file: String,
    /// Paths to export; patterns are supported
    pub paths: Vec<String>,
}

fn parse_format(s: &str) -> Result<TarFormat, String> {
    TarFormat::parse(s).ok_or_else(|| format!("unknown tar format {s:?} (GNU, PAX or BORG)"))
}

/// borg's `get_tar_filter` for writing.
pub fn auto_filter(file: &str) -> Option<&'static str> {
    let ends = |exts: &[&str]| exts.iter().any(|e| file.ends_with(e));
    if ends(&[".tar.gz", ".tgz"]) {
        Some("gzip")
    } else if ends(&[".tar.bz2", ".tbz"]) {
        Some("bzip2")
    } else if ends(&[".tar.xz", ".txz"]) {
        Some("xz")
    } else if ends(&[".tar.lz4"]) {
        Some("lz4")
    } else if ends(&[".tar.zstd", ".tar.zst"]) {
        Some("zstd")
    } else {
        None
    }
}

pub fn run(common: &Common, args: ExportTarArgs) -> Result<Outcome> {
    let (session, archive) = open_archive_session(common, &args.location)?;
    let mut selector = args.select.selector(&args.paths)?;
    let filter = match args.tar_filter.as_str() {
        "auto" => auto_filter(&args.file).map(str::to_string),
        "" => None,
        f => Some(f.to_string()),
    };
    let opts = TarOptions {
        format: args.tar_format,
        acl_names: args.acl_names,
    };
    let list = args.list;
    let mut events = |e: TarEvent<'_>| match e {
        TarEvent::Item(p) if list => eprintln!("{}", proxborg::archive::read::display_path(p)),
        TarEvent::Item(_) => {}
        TarEvent::Warning(w) => eprintln!("{w}"),
    };
    let summary = match filter {
        Some(cmd) => {
            let sink: Stdio = if args.file == "-" {
                Stdio::inherit()
            } else {
                File::create(&args.file)
                    .with_context(|| format!("create {}", args.file))?
                    .into()
            };
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .stdin(Stdio::piped())
                .stdout(sink)
                .spawn()
                .with_context(|| format!("filter {cmd}: process creation failed"))?;
            let stdin = child.stdin.take().context("filter stdin")?;
            let res = export_tar(
                &session,
                &archive,
                &mut selector,
                std::io::BufWriter::with_capacity(1 << 20, stdin),
                &opts,
                &mut events,
            );
            let status = child.wait().context("filter process")?;
            let summary = res?;
            if !status.success() {
                bail!("filter {cmd} failed: {status}");
            }
            summary
        }
        None if args.file == "-" => {
            let out = std::io::stdout();
            let w = std::io::BufWriter::with_capacity(1 << 20, out.lock());
            export_tar(&session, &archive, &mut selector, w, &opts, &mut events)?
        }
        None => {
            let f = File::create(&args.file).with_context(|| format!("create {}", args.file))?;
            let w = std::io::BufWriter::with_capacity(1 << 20, f);
            export_tar(&session, &archive, &mut selector, w, &opts, &mut events)?
        }
    };
    Ok(if summary.warnings > 0 {
        Outcome::Warning
    } else {
        Outcome::Success
    })
}
