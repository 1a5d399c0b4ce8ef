//! `backup`: proxborg's job, natively. Resolves targets through the Proxmox tools, then
//! per target: image mode streams `vzdump --stdout` into one item; LXC directory mode
//! snapshots every selected volume at once and archives the snapshot trees laid out as
//! the container sees them (ids shifted for unprivileged containers); dataset mode
//! archives one dataset's snapshot. Snapshots and clones are always removed (also on
//! error and on SIGINT/SIGTERM, via the cancel flag), and a failing target never stops
//! the others unless asked.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Local;

use super::naming::{self, GuestType};
use super::pve::Pve;
use super::pveconf::{parse_lxc_config, Resource, VolumeKind};
use super::target::{parse_target, Mode, Selector, Target};
use super::zfs::{SnapshotAccess, Zfs, CLONE_MARK};
use crate::archive::create::{self, CreateOptions, Root, Source, StatusFn, StdinSpec};
use crate::session::Session;

/// How directory-mode snapshots are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotMethod {
    /// `pct snapshot` (freezes a running container; visible in the GUI while it exists).
    Pct,
    /// One atomic `zfs snapshot a@s b@s …` (no freeze).
    Zfs,
}

/// proxborg's settings (its environment variables, as options).
#[derive(Clone, Debug)]
pub struct Settings {
    pub hostname_in_archivename: bool,
    pub exit_on_errors: bool,
    pub vzdump_opts: Vec<String>,
    pub snapname: String,
    pub sleep_before_delete: u64,
    pub method: SnapshotMethod,
    /// Archive name template: `{prefix}{ts}` by default; `{vmid}`, `{type}` and borg's
    /// placeholders also work.
    pub name_template: Option<String>,
    pub dry_run: bool,
}

/// How one target ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Result_ {
    Ok,
    Warning,
    Failed,
}

/// One line of the run summary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    pub target: String,
    pub result: Result_,
    pub message: String,
    pub archive: Option<String>,
    /// Prefix the archive name starts with (what prune works on).
    pub prefix: Option<String>,
    pub snapshot: Option<String>,
    pub seconds: f64,
    pub original_size: u64,
    pub deduplicated_size: u64,
    pub nfiles: u64,
}

impl Outcome {
    fn new(target: &str) -> Self {
        Outcome {
            target: target.into(),
            result: Result_::Ok,
            message: String::new(),
            archive: None,
            prefix: None,
            snapshot: None,
            seconds: 0.0,
            original_size: 0,
            deduplicated_size: 0,
            nfiles: 0,
        }
    }
    fn fail(mut self, msg: impl Into<String>) -> Self {
        self.result = Result_::Failed;
        self.message = msg.into();
        self
    }
    fn warn(mut self, msg: impl Into<String>) -> Self {
        self.result = Result_::Warning;
        self.message = msg.into();
        self
    }
}

/// The archive-name prefixes to prune after a run, in target order, each once: those of
/// targets that made an archive (proxborg prunes per prefix, and only what it backed up).
pub fn prune_prefixes(outcomes: &[Outcome]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for o in outcomes {
        if o.result == Result_::Failed || o.archive.is_none() {
            continue;
        }
        if let Some(p) = &o.prefix {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
    }
    out
}

/// Undo actions run in reverse order when dropped (snapshots, clones, mounts).
type UndoFn = Box<dyn FnOnce() -> Result<(), String>>;

#[derive(Default)]
pub struct Cleanup {
    actions: Vec<(String, UndoFn)>,
    pub errors: Vec<String>,
}

impl Cleanup {
    pub fn push(
        &mut self,
        what: impl Into<String>,
        f: impl FnOnce() -> Result<(), String> + 'static,
    ) {
        self.actions.push((what.into(), Box::new(f)));
    }
    /// Runs every action now; returns the failures.
    pub fn run(&mut self) -> Vec<String> {
        while let Some((what, f)) = self.actions.pop() {
            if let Err(e) = f() {
                self.errors.push(format!("{what}: {e}"));
            }
        }
        std::mem::take(&mut self.errors)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for e in self.run() {
            eprintln!("cleanup failed: {e}");
        }
    }
}

/// Everything a run needs besides the targets.
pub struct Context<'a> {
    pub env: crate::paths::Env<'a>,
    pub pve: Pve,
    pub zfs: Zfs,
    pub settings: Settings,
    pub make_opts: &'a dyn Fn() -> CreateOptions,
    pub status: StatusFn<'a>,
    pub cancel: Arc<AtomicBool>,
    pub host_hostname: String,
}

struct Resolved {
    label: String,
    kind: GuestType,
    vmid: u32,
    name: Option<String>,
    mode: Mode,
}

fn template_name(
    ctx: &Context,
    prefix: &str,
    ts: &str,
    vmid: Option<u32>,
    kind: &str,
) -> Result<String, String> {
    let Some(t) = &ctx.settings.name_template else {
        return Ok(format!("{prefix}{ts}"));
    };
    let t = t
        .replace("{prefix}", &prefix.replace('{', "{{").replace('}', "}}"))
        .replace("{ts}", ts)
        .replace("{vmid}", &vmid.map(|v| v.to_string()).unwrap_or_default())
        .replace("{type}", kind);
    crate::placeholders::Placeholders::current()
        .expand(&t)
        .map_err(|e| e.to_string())
}

/// Removes snapshots and clones a killed run left behind (we hold the host lock).
pub fn sweep_stale(ctx: &Context) -> Vec<String> {
    let mut done = Vec::new();
    if let Ok(fs) = ctx.zfs.filesystems() {
        for (name, _) in fs.iter().filter(|(n, _)| n.contains(CLONE_MARK)) {
            let acc = SnapshotAccess {
                path: PathBuf::new(),
                clone: Some(name.clone()),
            };
            if ctx.zfs.release(&acc).is_ok() {
                done.push(format!("removed stale clone {name}"));
            }
        }
    }
    if let Ok(snaps) = ctx.zfs.snapshots() {
        let ours: Vec<&String> = snaps
            .iter()
            .filter(|s| {
                s.split_once('@').is_some_and(|(_, n)| {
                    super::zfs::is_our_snapname(n) || n == ctx.settings.snapname
                })
            })
            .collect();
        let mut pct_done: HashSet<(u32, String)> = HashSet::new();
        for s in ours {
            let (ds, snap) = s.split_once('@').expect("filtered on '@'");
            // volumes named like PVE's subvol-<vmid>-disk-N belong to a guest: let pct
            // remove the snapshot so the guest config forgets it too
            let vmid = ds
                .rsplit('/')
                .next()
                .and_then(|b| b.strip_prefix("subvol-"))
                .and_then(|r| r.split('-').next())
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(v) = vmid {
                if ctx.pve.config_has_snapshot(v, snap) {
                    if pct_done.insert((v, snap.to_string()))
                        && ctx.pve.pct_delsnapshot(v, snap).is_ok()
                    {
                        done.push(format!("removed stale snapshot {snap} of guest {v}"));
                    }
                    continue;
                }
            }
            if ctx.zfs.destroy(s).is_ok() {
                done.push(format!("removed stale snapshot {s}"));
            }
        }
    }
    done
}

/// Runs every target; returns one outcome per target (in order).
pub fn run(ctx: &Context, session: &mut Session, targets: &[String]) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut resources: Option<Result<Vec<Resource>, String>> = None;
    let mut seen_guests: HashSet<(u32, Mode)> = HashSet::new();
    let mut seen_paths: HashSet<PathBuf> = HashSet::new();
    let get_resources =
        |res: &mut Option<Result<Vec<Resource>, String>>| -> Result<Vec<Resource>, String> {
            if res.is_none() {
                *res = Some(ctx.pve.resources().map_err(|e| e.to_string()));
            }
            res.clone().expect("just set")
        };
    for t in targets {
        if ctx.cancel.load(Ordering::Relaxed) {
            outcomes.push(Outcome::new(t).fail("interrupted"));
            continue;
        }
        let parsed = match parse_target(t) {
            Ok(p) => p,
            Err(e) => {
                outcomes.push(Outcome::new(t).fail(e.to_string()));
                continue;
            }
        };
        match parsed {
            Target::Dataset(p) => {
                let real = match super::pve::realpath(&p) {
                    Ok(r) => r,
                    Err(e) => {
                        outcomes.push(Outcome::new(t).warn(format!("path {p} not found: {e}")));
                        continue;
                    }
                };
                if !seen_paths.insert(real.clone()) {
                    continue;
                }
                outcomes.push(backup_dataset(ctx, session, t, &real));
            }
            Target::Guests { selector, mode } => {
                let all = match get_resources(&mut resources) {
                    Ok(r) => r,
                    Err(e) => {
                        outcomes.push(Outcome::new(t).fail(e));
                        continue;
                    }
                };
                let picked: Vec<&Resource> = match &selector {
                    Selector::Vmid(id) => all.iter().filter(|r| r.vmid == *id).collect(),
                    Selector::Name(n) => {
                        let m: Vec<&Resource> = all
                            .iter()
                            .filter(|r| r.name.as_deref() == Some(n))
                            .collect();
                        if m.len() > 1 {
                            let ids: Vec<String> =
                                m.iter().map(|r| format!("{} {}", r.kind, r.vmid)).collect();
                            outcomes.push(Outcome::new(t).fail(format!(
                                "guest name {n:?} is ambiguous ({}); nothing archived",
                                ids.join(", ")
                            )));
                            continue;
                        }
                        m
                    }
                    Selector::Pool(p) => match ctx.pve.pool_members(p) {
                        Ok(ids) => all.iter().filter(|r| ids.contains(&r.vmid)).collect(),
                        Err(e) => {
                            outcomes.push(Outcome::new(t).fail(format!("pool {p}: {e}")));
                            continue;
                        }
                    },
                };
                if picked.is_empty() {
                    outcomes.push(Outcome::new(t).warn("no such guest"));
                    continue;
                }
                for r in picked {
                    let label = if matches!(selector, Selector::Pool(_)) {
                        format!("{t} ({})", r.vmid)
                    } else {
                        t.clone()
                    };
                    if r.node != ctx.pve.node {
                        outcomes.push(Outcome::new(&label).warn(format!(
                            "guest {} runs on node {}, not {}; skipped",
                            r.vmid, r.node, ctx.pve.node
                        )));
                        continue;
                    }
                    let kind = if r.kind == "lxc" {
                        GuestType::Lxc
                    } else {
                        GuestType::Qemu
                    };
                    let mut mode = mode;
                    let mut note = None;
                    if kind == GuestType::Qemu && mode != Mode::Image {
                        note = Some(
                            "directory mode is for containers; QEMU guest backed up as an image"
                                .to_string(),
                        );
                        mode = Mode::Image;
                    }
                    if !seen_guests.insert((r.vmid, mode)) {
                        continue;
                    }
                    let g = Resolved {
                        label,
                        kind,
                        vmid: r.vmid,
                        name: r.name.clone(),
                        mode,
                    };
                    let mut o = match mode {
                        Mode::Image => backup_image(ctx, session, &g),
                        Mode::Dir | Mode::DirAll => backup_lxc_dir(ctx, session, &g),
                    };
                    if let (Some(n), Result_::Ok) = (note, &o.result) {
                        o.result = Result_::Warning;
                        o.message = n;
                    }
                    outcomes.push(o);
                }
            }
        }
        if ctx.settings.exit_on_errors && outcomes.iter().any(|o| o.result == Result_::Failed) {
            break;
        }
    }
    outcomes
}

fn fill_stats(o: &mut Outcome, r: &create::CreateResult) {
    o.archive = Some(r.name.clone());
    o.original_size = r.size;
    o.nfiles = r.nfiles;
    o.deduplicated_size = crate::archive::stats::Stats::get(&r.stats.stats.csize_new);
    if !r.warnings.is_empty() {
        o.result = Result_::Warning;
        o.message = r.warnings.join("; ");
    }
}

/// Ends a snapshot-based target: cleanup first (snapshots must go whatever happened),
/// then the outcome; a failed cleanup turns success into a warning.
fn finish(
    mut o: Outcome,
    res: Result<create::CreateResult, create::CreateError>,
    cleanup: &mut Cleanup,
    t0: Instant,
) -> Outcome {
    let errs = cleanup.run();
    o.seconds = t0.elapsed().as_secs_f64();
    match res {
        Ok(r) => {
            fill_stats(&mut o, &r);
            if !errs.is_empty() {
                o.result = Result_::Warning;
                o.message = format!("cleanup: {}", errs.join("; "));
            }
            o
        }
        Err(e) => o.fail(e.to_string()),
    }
}

fn backup_image(ctx: &Context, session: &mut Session, g: &Resolved) -> Outcome {
    let t0 = Instant::now();
    let mut o = Outcome::new(&g.label);
    let ts = naming::timestamp(Local::now());
    let host = ctx
        .settings
        .hostname_in_archivename
        .then_some(ctx.host_hostname.as_str());
    let prefix = naming::image_prefix(g.kind, g.vmid, host);
    let item_name = naming::image_name(g.kind, g.vmid, host, &ts);
    let kind = if g.kind == GuestType::Lxc {
        "lxc"
    } else {
        "qemu"
    };
    let name = match template_name(ctx, &prefix, &ts, Some(g.vmid), kind) {
        Ok(n) => n,
        Err(e) => return o.fail(e),
    };
    o.prefix = Some(prefix);
    let name = if ctx.settings.name_template.is_none() {
        item_name.clone()
    } else {
        name
    };
    let mut child = match ctx.pve.vzdump_stream(g.vmid, &ctx.settings.vzdump_opts) {
        Ok(c) => c,
        Err(e) => return o.fail(e.to_string()),
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::with_capacity(8 << 20, stdout);
    // like proxborg's pipe_if_not_empty: no archive when vzdump fails before any output
    let empty = match reader.fill_buf() {
        Ok(b) => b.is_empty(),
        Err(e) => return o.fail(format!("reading vzdump output: {e}")),
    };
    if empty {
        let st = child.wait();
        return o.fail(format!(
            "vzdump {} produced no output ({})",
            g.vmid,
            st.map(|s| s.to_string()).unwrap_or_default()
        ));
    }
    let child = Mutex::new(Some(child));
    let mut opts = (ctx.make_opts)();
    opts.cancel = Some(ctx.cancel.clone());
    opts.cache_tag = format!("image/{}", g.vmid).into_bytes();
    let child_for_check = Arc::new(child);
    let c2 = child_for_check.clone();
    opts.pre_commit = Mutex::new(Some(Box::new(move || {
        let mut c = c2
            .lock()
            .expect("vzdump child")
            .take()
            .ok_or("vzdump already reaped")?;
        let st = c.wait().map_err(|e| e.to_string())?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("vzdump failed ({st}); archive not saved"))
        }
    })));
    let sources = vec![Source::Stream {
        spec: StdinSpec {
            name: item_name,
            mode: 0o640,
            user: "root".into(),
            group: "root".into(),
        },
        reader: Box::new(reader),
    }];
    let res = create::create(ctx.env, session, &name, sources, opts, ctx.status);
    if let Some(mut c) = child_for_check.lock().expect("vzdump child").take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    o.seconds = t0.elapsed().as_secs_f64();
    match res {
        Ok(r) => {
            fill_stats(&mut o, &r);
            o
        }
        Err(e) => o.fail(e.to_string()),
    }
}

/// Checks every selected volume is ZFS; returns (mount point, dataset) pairs.
fn zfs_volumes(
    ctx: &Context,
    conf: &super::pveconf::LxcConfig,
    all: bool,
) -> Result<Vec<(super::pveconf::MountPoint, String)>, String> {
    let mut out = Vec::new();
    for mp in conf.selected(all) {
        let VolumeKind::Volume { storage, volume } = &mp.kind else {
            return Err(format!("{} is not a storage volume", mp.key));
        };
        let path = ctx
            .pve
            .volume_path(storage, volume)
            .map_err(|e| e.to_string())?;
        let ds = ctx.zfs.dataset_at(&path).map_err(|_| {
            format!(
                "{} ({storage}:{volume}, {}) is not a ZFS filesystem; directory mode needs every backed-up volume on ZFS",
                mp.key,
                path.display()
            )
        })?;
        out.push((mp.clone(), ds));
    }
    Ok(out)
}

fn backup_lxc_dir(ctx: &Context, session: &mut Session, g: &Resolved) -> Outcome {
    let t0 = Instant::now();
    let mut o = Outcome::new(&g.label);
    let conf_text = match ctx.pve.lxc_config_text(g.vmid) {
        Ok(t) => t,
        Err(e) => return o.fail(e.to_string()),
    };
    let conf = match parse_lxc_config(g.vmid, &conf_text) {
        Ok(c) => c,
        Err(e) => return o.fail(e.to_string()),
    };
    let vols = match zfs_volumes(ctx, &conf, g.mode == Mode::DirAll) {
        Ok(v) => v,
        Err(e) => return o.fail(e),
    };
    let ts = naming::timestamp(Local::now());
    let hn = if ctx.settings.hostname_in_archivename {
        conf.hostname.clone().or(g.name.clone())
    } else {
        None
    };
    let prefix = naming::dir_prefix(g.vmid, hn.as_deref());
    let name = match template_name(ctx, &prefix, &ts, Some(g.vmid), "lxc") {
        Ok(n) => n,
        Err(e) => return o.fail(e),
    };
    o.prefix = Some(prefix);
    if ctx.settings.dry_run {
        o.archive = Some(name);
        o.message = format!("dry run: would snapshot {} volume(s)", vols.len());
        return o;
    }
    let snap = ctx.settings.snapname.clone();
    o.snapshot = Some(snap.clone());
    let mut cleanup = Cleanup::default();
    // snapshot all volumes at once
    match ctx.settings.method {
        SnapshotMethod::Pct => {
            let desc = format!("proxborg-native snapshot {ts}");
            // register removal first: a half-made pct snapshot must go too
            let (pve, vmid, s2, sleep) = (
                ctx.pve.clone(),
                g.vmid,
                snap.clone(),
                ctx.settings.sleep_before_delete,
            );
            if let Err(e) = ctx.pve.pct_snapshot(g.vmid, &snap, &desc) {
                let _ = ctx.pve.pct_delsnapshot(g.vmid, &snap);
                return o.fail(e.to_string());
            }
            cleanup.push(format!("pct delsnapshot {vmid} {s2}"), move || {
                std::thread::sleep(Duration::from_secs(sleep));
                pve.pct_delsnapshot(vmid, &s2).map_err(|e| e.to_string())
            });
        }
        SnapshotMethod::Zfs => {
            let datasets: Vec<String> = vols.iter().map(|(_, d)| d.clone()).collect();
            match ctx.zfs.snapshot(&datasets, &snap) {
                Ok(true) => {}
                Ok(false) => eprintln!("note: this ZFS cannot snapshot several datasets atomically; took them one by one"),
                Err(e) => return o.fail(e.to_string()),
            }
            for d in datasets {
                let (z, s2, sleep) = (
                    ctx.zfs.clone(),
                    format!("{d}@{snap}"),
                    ctx.settings.sleep_before_delete,
                );
                cleanup.push(format!("zfs destroy {s2}"), move || {
                    std::thread::sleep(Duration::from_secs(sleep));
                    z.destroy(&s2).map_err(|e| e.to_string())
                });
            }
        }
    }
    let base = match super::pve::private_dir(&format!("proxborg-native-{snap}-{}", g.vmid)) {
        Ok(b) => b,
        Err(e) => return o.fail(format!("private mount dir: {e}")),
    };
    {
        let b2 = base.clone();
        cleanup.push(format!("rmdir {}", base.display()), move || {
            let _ = std::fs::remove_dir_all(&b2);
            Ok(())
        });
    }
    let mut roots: Vec<(String, PathBuf)> = Vec::new();
    for (mp, ds) in &vols {
        match ctx.zfs.access(ds, &snap, &base.join(&mp.key)) {
            Ok(acc) => {
                roots.push((mp.path.clone(), acc.path.clone()));
                let z = ctx.zfs.clone();
                cleanup.push(format!("release {}", acc.path.display()), move || {
                    z.release(&acc).map_err(|e| e.to_string())
                });
            }
            Err(e) => {
                drop(cleanup);
                return o.fail(e.to_string());
            }
        }
    }
    // parents before children (C order), and a mount point shadows the directory below it
    roots.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut sources = Vec::new();
    let mount_paths: Vec<Vec<u8>> = roots
        .iter()
        .map(|(p, _)| {
            let r = p.trim_start_matches('/');
            if r.is_empty() {
                b".".to_vec()
            } else {
                r.as_bytes().to_vec()
            }
        })
        .collect();
    for (i, (_, fs)) in roots.iter().enumerate() {
        let arch = mount_paths[i].clone();
        let skip: Vec<Vec<u8>> = mount_paths
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| p.clone())
            .collect();
        sources.push(Source::Tree(Root {
            fs_path: fs.clone(),
            archive_path: arch,
            match_archive_path: true,
            emit_root: true,
            skip,
            recurse: true,
        }));
    }
    let (owner, fw) = if conf.unprivileged {
        (super::pveconf::OVERFLOW_ID, 0o644)
    } else {
        (0, 0o644)
    };
    let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    sources.push(Source::Memory {
        path: b"etc/vzdump/pct.conf".to_vec(),
        data: conf.vzdump_pct_conf().into_bytes(),
        mode: 0o644,
        uid: owner,
        gid: owner,
        mtime_ns: now_ns,
    });
    sources.push(Source::Memory {
        path: b"etc/vzdump/pct.fw".to_vec(),
        data: ctx.pve.firewall(g.vmid).unwrap_or_default(),
        mode: fw,
        uid: owner,
        gid: owner,
        mtime_ns: now_ns,
    });
    let mut opts = (ctx.make_opts)();
    opts.cancel = Some(ctx.cancel.clone());
    opts.one_file_system = true;
    opts.meta.numeric_ids = true;
    opts.cache_tag = format!("lxc/{}", g.vmid).into_bytes();
    for ex in ["lost+found", "./tmp/?*", "./var/tmp/?*", "./var/run/?*.pid"] {
        let _ = opts.matcher.add_exclude(ex);
    }
    if let Some(m) = conf.id_mapper() {
        let m2 = m.clone();
        opts.id_map = Some(Arc::new(move |u, g| (m.uid(u), m.gid(g))));
        opts.acl_map = Some(Arc::new(move |t: &[u8]| m2.map_acl_text(t)));
    }
    let res = create::create(ctx.env, session, &name, sources, opts, ctx.status);
    finish(o, res, &mut cleanup, t0)
}

fn backup_dataset(ctx: &Context, session: &mut Session, label: &str, path: &Path) -> Outcome {
    let t0 = Instant::now();
    let mut o = Outcome::new(label);
    let ds = match ctx.zfs.dataset_at(path) {
        Ok(d) => d,
        Err(e) => return o.fail(e.to_string()),
    };
    let ts = naming::timestamp(Local::now());
    let host = ctx
        .settings
        .hostname_in_archivename
        .then_some(ctx.host_hostname.as_str());
    let mp = path.to_string_lossy().into_owned();
    let prefix = naming::dataset_prefix(&mp, host);
    let name = match template_name(ctx, &prefix, &ts, None, "dataset") {
        Ok(n) => n,
        Err(e) => return o.fail(e),
    };
    o.prefix = Some(prefix);
    if ctx.settings.dry_run {
        o.archive = Some(name);
        return o;
    }
    let snap = ctx.settings.snapname.clone();
    o.snapshot = Some(format!("{ds}@{snap}"));
    let mut cleanup = Cleanup::default();
    if let Err(e) = ctx.zfs.snapshot(std::slice::from_ref(&ds), &snap) {
        return o.fail(e.to_string());
    }
    {
        let (z, s2, sleep) = (
            ctx.zfs.clone(),
            format!("{ds}@{snap}"),
            ctx.settings.sleep_before_delete,
        );
        cleanup.push(format!("zfs destroy {s2}"), move || {
            std::thread::sleep(Duration::from_secs(sleep));
            z.destroy(&s2).map_err(|e| e.to_string())
        });
    }
    let base = match super::pve::private_dir(&format!("proxborg-native-{snap}-ds")) {
        Ok(b) => b,
        Err(e) => return o.fail(format!("private mount dir: {e}")),
    };
    let acc = match ctx.zfs.access(&ds, &snap, &base.join(ds.replace('/', "_"))) {
        Ok(a) => a,
        Err(e) => return o.fail(e.to_string()),
    };
    let root = acc.path.clone();
    {
        let z = ctx.zfs.clone();
        let b2 = base.clone();
        cleanup.push(format!("release {}", root.display()), move || {
            let r = z.release(&acc).map_err(|e| e.to_string());
            let _ = std::fs::remove_dir_all(&b2);
            r
        });
    }
    let mut opts = (ctx.make_opts)();
    opts.cancel = Some(ctx.cancel.clone());
    opts.one_file_system = true;
    opts.cache_tag = format!("dataset:{mp}").into_bytes();
    let sources = vec![Source::Tree(Root {
        fs_path: root,
        archive_path: b".".to_vec(),
        match_archive_path: true,
        emit_root: true,
        skip: Vec::new(),
        recurse: true,
    })];
    let res = create::create(ctx.env, session, &name, sources, opts, ctx.status);
    finish(o, res, &mut cleanup, t0)
}
