//! A repository behind `borg serve`, reached through the user's ssh exactly as borg
//! reaches it (`borg/remote.py: RemoteRepository`). The server does all the storage
//! work (segments, index, locking); this side speaks the RPC protocol: `negotiate` in the
//! legacy tuple format, then dict-format calls, with writes pipelined.
//!
//! One connection runs three threads: a writer that feeds the server's stdin, a reader
//! that splits its stdout into replies, and a stderr reader that re-emits the server's
//! log lines. The caller's thread never blocks on a pipe write, so a server that stops
//! reading cannot deadlock us against our own unread replies, and a dead connection is
//! always noticed by the reader (end of stream) rather than waited for.

mod errors;
mod maintenance;
mod ratelimit;
mod stderr;
mod transport;
mod wire;

pub use errors::map_remote_error;
pub use stderr::LogLevel;
pub use transport::{shlex_split, ssh_argv, CommandTransport, SshCommand, Transport, TransportIo};

use crate::location::Repo;
use crate::repo::{ObjectId, RepoError, Repository, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rmpv::Value;
use std::collections::{HashSet, VecDeque};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stderr::StderrLog;
use wire::{Arg, RemoteError, Reply, ReplyStream};

/// borg's `MAX_INFLIGHT`: requests outstanding at once.
const MAX_INFLIGHT: usize = 100;
/// Unacknowledged write payload allowed on the wire before we wait for replies.
const WRITE_BUDGET: usize = 8 << 20;
/// Largest object a server accepts (`MAX_DATA_SIZE`); larger puts kill a 1.2 server's
/// unpacker, so they are refused here.
pub const MAX_DATA_SIZE: usize = 20_971_479;
/// Largest single reply we buffer (a maximal object or a 100000-id list fit easily).
const MAX_REPLY: usize = 128 << 20;
/// borg's `LIST_SCAN_LIMIT`: ids per `list` page.
const LIST_LIMIT: u64 = 100_000;
const READ_CHUNK: usize = 128 << 10;
/// How long a rollback on drop may take (borg's shutdown cap).
const ROLLBACK_WAIT: Duration = Duration::from_secs(30);
/// How long the connection may take to end after its input was closed.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// The version we announce; servers only use it for compatibility decisions.
const CLIENT_VERSION: [i64; 4] = [1, 4, 5, -1];

/// How to open a remote repository (borg's `RemoteRepository.__init__` arguments plus
/// the command-line options that shape the ssh command).
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// Take the exclusive lock (needed for any write and for the nonce calls).
    pub exclusive: bool,
    /// Seconds the server waits for the lock.
    pub lock_wait: f64,
    /// Ask for append-only mode (the server may also impose it with `--append-only`).
    pub append_only: bool,
    /// Initialise a new repository at the path (`borg init`).
    pub create: bool,
    /// With `create`: make missing parent directories (server 1.1.9+).
    pub make_parent_dirs: bool,
    /// With `create`: `--storage-quota` for the server.
    pub storage_quota: Option<u64>,
    /// `--rsh`; default `$BORG_RSH` or `ssh`.
    pub rsh: Option<String>,
    /// `--remote-path`; default `$BORG_REMOTE_PATH` or `borg`.
    pub remote_path: Option<String>,
    /// Our log level: mirrored to the server, and the threshold for showing its lines.
    /// (`--umask` is not forwarded: borg 1.2/1.4 do not either; the server applies its own.)
    pub log_level: LogLevel,
    /// `--upload-ratelimit` in bytes per second (`None`: unlimited).
    pub upload_ratelimit: Option<u64>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            exclusive: true,
            lock_wait: 1.0,
            append_only: false,
            create: false,
            make_parent_dirs: false,
            storage_quota: None,
            rsh: None,
            remote_path: None,
            log_level: LogLevel::Warning,
            upload_ratelimit: None,
        }
    }
}

enum Incoming {
    Reply(Reply),
    /// The reply stream ended or broke; why.
    Closed(String),
}

/// Writes `msg`, at most as fast as `limit` allows.
fn write_paced(
    out: &mut impl Write,
    msg: &[u8],
    limit: Option<&mut ratelimit::Limiter>,
) -> std::io::Result<()> {
    let Some(limit) = limit else {
        return out.write_all(msg);
    };
    let mut off = 0;
    while off < msg.len() {
        match limit.grant(msg.len() - off, Instant::now()) {
            ratelimit::Grant::Write(n) => {
                out.write_all(&msg[off..off + n])?;
                limit.sent(n);
                off += n;
            }
            ratelimit::Grant::Wait(d) => std::thread::sleep(d),
        }
    }
    Ok(())
}

/// The byte-level connection and its threads.
struct Conn {
    tx: Option<Sender<Vec<u8>>>,
    rx: Receiver<Incoming>,
    stderr: Arc<StderrLog>,
    transport: Box<dyn Transport>,
    location: String,
    /// Set once the connection failed: the message every later call returns.
    broken: Option<String>,
}

impl Conn {
    fn start(
        mut transport: Box<dyn Transport>,
        location: &str,
        show: LogLevel,
        ratelimit: Option<u64>,
    ) -> Result<Conn> {
        let io = transport
            .take_io()
            .map_err(|e| RepoError::io(format!("connecting to {location}"), e))?;
        let (tx, wrx) = crossbeam_channel::unbounded::<Vec<u8>>();
        let (itx, rx) = crossbeam_channel::unbounded::<Incoming>();
        let stderr = Arc::new(StderrLog::default());
        let spawn_err = |e| RepoError::io("starting a connection thread", e);

        let mut input = io.input;
        std::thread::Builder::new()
            .name("borg-serve-writer".into())
            .spawn(move || {
                let mut limit = ratelimit.map(|r| ratelimit::Limiter::new(r, Instant::now()));
                for msg in wrx {
                    if write_paced(&mut input, &msg, limit.as_mut())
                        .and_then(|_| input.flush())
                        .is_err()
                    {
                        break;
                    }
                }
                // Dropping `input` closes the server's stdin: its signal to finish.
            })
            .map_err(spawn_err)?;

        let mut output = io.output;
        std::thread::Builder::new()
            .name("borg-serve-reader".into())
            .spawn(move || read_replies(&mut output, &itx))
            .map_err(spawn_err)?;

        match io.errors {
            Some(err) => {
                let log = stderr.clone();
                std::thread::Builder::new()
                    .name("borg-serve-stderr".into())
                    .spawn(move || stderr::pump(err, show, log))
                    .map_err(spawn_err)?;
            }
            None => stderr.finish(),
        }
        Ok(Conn {
            tx: Some(tx),
            rx,
            stderr,
            transport,
            location: location.to_string(),
            broken: None,
        })
    }

    fn check(&self) -> Result<()> {
        match &self.broken {
            Some(m) => Err(RepoError::Other(m.clone())),
            None => Ok(()),
        }
    }

    fn send(&mut self, msg: Vec<u8>) -> Result<()> {
        self.check()?;
        if self.tx.as_ref().is_some_and(|t| t.send(msg).is_ok()) {
            return Ok(());
        }
        // The writer is gone (broken pipe): the reader will tell us why shortly.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut why = "cannot send to the server".to_string();
        while let Ok(inc) = self.rx.recv_deadline(deadline) {
            if let Incoming::Closed(r) = inc {
                why = r;
                break;
            }
        }
        Err(self.fail(why))
    }

    /// The next reply; waits as long as the server is alive (borg has no read timeout).
    fn recv(&mut self) -> Result<Reply> {
        self.check()?;
        match self.rx.recv() {
            Ok(Incoming::Reply(r)) => Ok(r),
            Ok(Incoming::Closed(why)) => Err(self.fail(why)),
            Err(_) => Err(self.fail("the reply reader stopped".into())),
        }
    }

    /// The next reply, or `None` once `deadline` passed.
    fn recv_until(&mut self, deadline: Instant) -> Result<Option<Reply>> {
        self.check()?;
        match self.rx.recv_deadline(deadline) {
            Ok(Incoming::Reply(r)) => Ok(Some(r)),
            Ok(Incoming::Closed(why)) => Err(self.fail(why)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                Err(self.fail("the reply reader stopped".into()))
            }
        }
    }

    /// Marks the connection dead and builds the error: what ended it, how the process
    /// exited, and the last things the server (or ssh) said.
    fn fail(&mut self, why: String) -> RepoError {
        if let Some(m) = &self.broken {
            return RepoError::Other(m.clone());
        }
        self.tx = None;
        let tail = self.stderr.tail(Duration::from_secs(2));
        let status = self.transport.wait_exit(Duration::from_secs(1));
        let said = if tail.is_empty() {
            "no message from the server".to_string()
        } else {
            tail[tail.len().saturating_sub(5)..].join(" | ")
        };
        let mut msg = format!("connection to {} closed: {said} ({why}", self.location);
        if let Some(s) = status {
            msg.push_str("; ");
            msg.push_str(&s);
        }
        msg.push(')');
        self.broken = Some(msg.clone());
        RepoError::Other(msg)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.tx = None;
        if self.transport.wait_exit(EXIT_WAIT).is_none() {
            self.transport.kill();
        }
    }
}

/// The reader thread: splits the server's stdout into replies until it ends.
fn read_replies(output: &mut dyn Read, to: &Sender<Incoming>) {
    let mut stream = ReplyStream::default();
    loop {
        let spare = stream.spare(READ_CHUNK);
        let n = match output.read(spare) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                stream.commit(READ_CHUNK, 0);
                continue;
            }
            Err(e) => {
                let _ = to.send(Incoming::Closed(format!("read error: {e}")));
                return;
            }
        };
        stream.commit(READ_CHUNK, n);
        if n == 0 {
            let why = if stream.pending() > 0 {
                "the server's output ended inside a reply"
            } else {
                "end of stream"
            };
            let _ = to.send(Incoming::Closed(why.into()));
            return;
        }
        loop {
            match stream.next_reply(MAX_REPLY) {
                Ok(Some(r)) => {
                    if to.send(Incoming::Reply(r)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = to.send(Incoming::Closed(format!(
                        "garbled reply from the server: {e}"
                    )));
                    return;
                }
            }
        }
    }
}

fn value_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.into_bytes()),
        Value::Binary(b) => Some(b),
        _ => None,
    }
}

fn object_id(v: &Value) -> Option<ObjectId> {
    crate::format::msgpack::as_bytes(v).and_then(|b| ObjectId::try_from(b).ok())
}

/// A repository served by `borg serve` (over ssh by default).
///
/// Writes (`put`, `delete`) are pipelined: they return once queued, with up to
/// [`MAX_INFLIGHT`] requests and [`WRITE_BUDGET`] bytes of payload unacknowledged. A
/// server-side error of such a write is returned by the next call and dooms the
/// transaction: `commit` then refuses until `rollback`. `commit` waits for every
/// outstanding reply first.
pub struct RemoteRepository {
    conn: Conn,
    location: String,
    id: ObjectId,
    append_only: bool,
    server_version: Vec<i64>,
    msgid: u64,
    /// Outstanding writes in request order: (msgid, payload bytes).
    writes: VecDeque<(u64, usize)>,
    write_bytes: usize,
    /// Replies to drop (requests abandoned after an error).
    ignored: HashSet<u64>,
    /// The first unreported error of a pipelined write.
    async_error: Option<RepoError>,
    /// Why the open transaction may not be committed.
    doomed: Option<String>,
    /// Writes were sent since the last commit/rollback.
    in_txn: bool,
    /// Lazily listed ids, kept current with our own writes (see [`Repository::contains`]).
    known: Option<HashSet<ObjectId>>,
}

impl RemoteRepository {
    /// Connects through ssh as borg does and opens (or, with `create`, initialises) the
    /// repository at `repo`.
    pub fn open(repo: &Repo, opts: &RemoteOptions) -> Result<Self> {
        let Repo::Ssh {
            user,
            host,
            port,
            path,
        } = repo
        else {
            return Err(RepoError::Other(format!(
                "{repo} is not a remote (ssh://) repository"
            )));
        };
        let argv = ssh_argv(&SshCommand {
            rsh: opts.rsh.as_deref(),
            remote_path: opts.remote_path.as_deref(),
            user: user.as_deref(),
            host: repo.host().unwrap_or(host),
            port: *port,
            log_level: opts.log_level,
            storage_quota: if opts.create {
                opts.storage_quota
            } else {
                None
            },
        })
        .map_err(RepoError::Other)?;
        let location = repo.canonical();
        let transport = CommandTransport::spawn(argv)
            .map_err(|e| RepoError::io(format!("connecting to {location}"), e))?;
        Self::open_with(Box::new(transport), path, &location, opts)
    }

    /// Opens over any transport; `path` is sent to the server as is, `location` names
    /// the repository in messages.
    pub fn open_with(
        transport: Box<dyn Transport>,
        path: &str,
        location: &str,
        opts: &RemoteOptions,
    ) -> Result<Self> {
        let conn = Conn::start(transport, location, opts.log_level, opts.upload_ratelimit)?;
        let mut repo = RemoteRepository {
            conn,
            location: location.to_string(),
            id: [0; 32],
            append_only: opts.append_only,
            server_version: Vec::new(),
            msgid: 0,
            writes: VecDeque::new(),
            write_bytes: 0,
            ignored: HashSet::new(),
            async_error: None,
            doomed: None,
            in_txn: false,
            known: None,
        };
        repo.negotiate()?;
        repo.id = repo.open_repo(path, opts)?;
        Ok(repo)
    }

    /// The server's borg version (`[major, minor, patch, …]`).
    pub fn server_version(&self) -> &[i64] {
        &self.server_version
    }

    /// The pid of the local process carrying the connection (ssh).
    pub fn process_id(&self) -> Option<u32> {
        self.conn.transport.pid()
    }

    /// Removes the repository's lock regardless of who holds it (`borg break-lock`).
    pub fn break_lock(&mut self) -> Result<()> {
        self.call("break_lock", &[], None).map(|_| ())
    }

    fn next_msgid(&mut self) -> u64 {
        self.msgid += 1;
        self.msgid
    }

    fn protocol_error(&mut self, what: &str) -> RepoError {
        self.conn.fail(format!("protocol error: {what}"))
    }

    fn negotiate(&mut self) -> Result<()> {
        let hint = |e: RepoError| match e {
            RepoError::Other(m) => RepoError::Other(format!("{m}; is borg working on the server?")),
            e => e,
        };
        let mid = self.next_msgid();
        self.conn
            .send(wire::encode_negotiate(mid, &CLIENT_VERSION))
            .map_err(hint)?;
        let outcome = self.wait_for(mid).map_err(hint)?;
        let v = outcome.map_err(|e| map_remote_error(&e, &self.location, None))?;
        if v.as_u64() == Some(2) {
            return Err(RepoError::Other(format!(
                "the borg server at {} is version 1.0 or older; borg 1.1 or newer is required",
                self.location
            )));
        }
        let version = crate::format::msgpack::map_get(&v, b"server_version")
            .and_then(|x| x.as_array())
            .map(|a| a.iter().filter_map(Value::as_i64).collect::<Vec<_>>());
        match version {
            Some(ver) if !ver.is_empty() => {
                self.server_version = ver;
                Ok(())
            }
            _ => Err(self.protocol_error("negotiate did not return a server version")),
        }
    }

    fn open_repo(&mut self, path: &str, opts: &RemoteOptions) -> Result<ObjectId> {
        if opts.make_parent_dirs && self.server_version.as_slice() < [1, 1, 9].as_slice() {
            return Err(RepoError::Other(format!(
                "the borg server at {} is too old for open(make_parent_dirs=True): 1.1.9 or newer is required",
                self.location
            )));
        }
        let lw = opts.lock_wait;
        let lock_wait = if lw >= 0.0 && lw.fract() == 0.0 && lw < 1e15 {
            Arg::UInt(lw as u64)
        } else {
            Arg::Float(lw)
        };
        let v = self.call(
            "open",
            &[
                ("path", Arg::Bytes(path.as_bytes())),
                ("create", Arg::Bool(opts.create)),
                ("lock_wait", lock_wait),
                ("lock", Arg::Bool(true)),
                ("exclusive", Arg::Bool(opts.exclusive)),
                ("append_only", Arg::Bool(opts.append_only)),
                ("make_parent_dirs", Arg::Bool(opts.make_parent_dirs)),
            ],
            None,
        )?;
        match object_id(&v) {
            Some(id) => Ok(id),
            None => Err(self.protocol_error("open did not return a 32-byte repository id")),
        }
    }

    /// Waits for the reply to `msgid`, settling pipelined writes' replies on the way.
    /// The outer error is the connection's, the inner one the server's exception.
    fn wait_for(&mut self, msgid: u64) -> Result<std::result::Result<Value, RemoteError>> {
        loop {
            let r = self.conn.recv()?;
            if r.msgid == msgid {
                return Ok(r.outcome);
            }
            self.absorb(r)?;
        }
    }

    /// A synchronous call.
    fn call(
        &mut self,
        method: &str,
        args: &[(&str, Arg<'_>)],
        object: Option<&ObjectId>,
    ) -> Result<Value> {
        let mid = self.next_msgid();
        self.conn.send(wire::encode_request(mid, method, args))?;
        self.wait_for(mid)?
            .map_err(|e| map_remote_error(&e, &self.location, object))
    }

    /// Handles a reply that is not the one being waited for: a pipelined write's.
    fn absorb(&mut self, r: Reply) -> Result<()> {
        if self.ignored.remove(&r.msgid) {
            return Ok(());
        }
        let Some(pos) = self.writes.iter().position(|w| w.0 == r.msgid) else {
            return Err(self.protocol_error(&format!("reply to unknown request {}", r.msgid)));
        };
        if let Some((_, bytes)) = self.writes.remove(pos) {
            self.write_bytes -= bytes;
        }
        if let Err(e) = r.outcome {
            let err = map_remote_error(&e, &self.location, None);
            self.known = None;
            if self.doomed.is_none() {
                self.doomed = Some(err.to_string());
            }
            if self.async_error.is_none() {
                self.async_error = Some(err);
            }
        }
        Ok(())
    }

    /// Returns (once) the error of an earlier pipelined write.
    fn pending_error(&mut self) -> Result<()> {
        match self.async_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Queues a write, first waiting for replies while the pipeline is full.
    fn send_write(&mut self, method: &str, args: &[(&str, Arg<'_>)], bytes: usize) -> Result<()> {
        while !self.writes.is_empty()
            && (self.writes.len() >= MAX_INFLIGHT || self.write_bytes + bytes > WRITE_BUDGET)
        {
            let r = self.conn.recv()?;
            self.absorb(r)?;
        }
        self.pending_error()?;
        let mid = self.next_msgid();
        self.conn.send(wire::encode_request(mid, method, args))?;
        self.writes.push_back((mid, bytes));
        self.write_bytes += bytes;
        self.in_txn = true;
        Ok(())
    }

    /// Waits until every pipelined write has been answered.
    fn drain(&mut self) -> Result<()> {
        while !self.writes.is_empty() {
            let r = self.conn.recv()?;
            self.absorb(r)?;
        }
        self.pending_error()
    }
}

impl Repository for RemoteRepository {
    fn id(&self) -> ObjectId {
        self.id
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn get(&mut self, id: &ObjectId) -> Result<Vec<u8>> {
        self.pending_error()?;
        let v = self.call("get", &[("id", Arg::Bytes(id))], Some(id))?;
        value_bytes(v).ok_or_else(|| self.protocol_error("get returned a non-bytes value"))
    }

    /// Reads many objects with up to [`MAX_INFLIGHT`] requests in flight; results in
    /// the order of `ids`.
    fn get_many(&mut self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>> {
        self.pending_error()?;
        let mut out = Vec::with_capacity(ids.len());
        let mut inflight: VecDeque<(u64, usize)> = VecDeque::new();
        let mut next = 0;
        let result = 'calls: loop {
            while next < ids.len() && inflight.len() < MAX_INFLIGHT {
                let mid = self.next_msgid();
                let req = wire::encode_request(mid, "get", &[("id", Arg::Bytes(&ids[next]))]);
                if let Err(e) = self.conn.send(req) {
                    break 'calls Err(e);
                }
                inflight.push_back((mid, next));
                next += 1;
            }
            let Some(&(want, idx)) = inflight.front() else {
                break Ok(());
            };
            let r = match self.conn.recv() {
                Ok(r) => r,
                Err(e) => break Err(e),
            };
            if r.msgid != want {
                if let Err(e) = self.absorb(r) {
                    break Err(e);
                }
                continue;
            }
            inflight.pop_front();
            match r.outcome {
                Ok(v) => match value_bytes(v) {
                    Some(b) => out.push(b),
                    None => break Err(self.protocol_error("get returned a non-bytes value")),
                },
                Err(e) => break Err(map_remote_error(&e, &self.location, Some(&ids[idx]))),
            }
        };
        if let Err(e) = result {
            self.ignored.extend(inflight.iter().map(|&(m, _)| m));
            return Err(e);
        }
        Ok(out)
    }

    /// Answered from the full id list, fetched with `list` on first use (about 35 bytes
    /// per object on the wire and 32 in memory) and then kept current with our own
    /// writes; a rollback or a failed write drops it. Exact while we hold the exclusive
    /// lock, which keeps other writers out.
    fn contains(&mut self, id: &ObjectId) -> Result<bool> {
        self.pending_error()?;
        if self.known.is_none() {
            let mut all = HashSet::new();
            let mut marker: Option<ObjectId> = None;
            loop {
                let page = self.list(LIST_LIMIT as usize, marker.as_ref())?;
                let full = page.len() as u64 >= LIST_LIMIT;
                marker = page.last().copied();
                all.extend(page);
                if !full {
                    break;
                }
            }
            self.known = Some(all);
        }
        Ok(self.known.as_ref().is_some_and(|k| k.contains(id)))
    }

    fn put(&mut self, id: &ObjectId, data: &[u8]) -> Result<()> {
        self.pending_error()?;
        if data.len() > MAX_DATA_SIZE {
            return Err(RepoError::Other(format!(
                "object {} is {} bytes, more than the {MAX_DATA_SIZE} a borg repository accepts",
                hex::encode(id),
                data.len()
            )));
        }
        self.send_write(
            "put",
            &[("id", Arg::Bytes(id)), ("data", Arg::Bytes(data))],
            data.len() + 64,
        )?;
        if let Some(k) = &mut self.known {
            k.insert(*id);
        }
        Ok(())
    }

    /// Pipelined like `put`: a missing object is reported by the next call.
    fn delete(&mut self, id: &ObjectId) -> Result<()> {
        self.pending_error()?;
        self.send_write("delete", &[("id", Arg::Bytes(id))], 64)?;
        if let Some(k) = &mut self.known {
            k.remove(id);
        }
        Ok(())
    }

    /// Without writes since the last commit there is nothing to commit, and the server
    /// (which has no transaction then) would fail: that case is a no-op.
    fn commit(&mut self) -> Result<()> {
        self.drain()?;
        if !self.in_txn {
            return Ok(());
        }
        if let Some(why) = &self.doomed {
            return Err(RepoError::Other(format!(
                "not committing to {}: an earlier write failed ({why}); roll back first",
                self.location
            )));
        }
        self.call(
            "commit",
            &[
                ("save_space", Arg::Bool(false)),
                ("compact", Arg::Bool(false)),
                ("threshold", Arg::Float(0.1)),
                ("cleanup_commits", Arg::Bool(false)),
            ],
            None,
        )?;
        self.in_txn = false;
        Ok(())
    }

    fn rollback(&mut self) -> Result<()> {
        let r = self.call("rollback", &[], None);
        self.async_error = None;
        self.doomed = None;
        self.known = None;
        self.in_txn = false;
        r.map(|_| ())
    }

    fn list(&mut self, limit: usize, marker: Option<&ObjectId>) -> Result<Vec<ObjectId>> {
        self.pending_error()?;
        let v = self.call(
            "list",
            &[
                ("limit", Arg::UInt(limit as u64)),
                ("marker", marker.map_or(Arg::Nil, |m| Arg::Bytes(m))),
            ],
            None,
        )?;
        let ids = v
            .as_array()
            .map(|a| a.iter().map(object_id).collect::<Option<Vec<_>>>());
        match ids {
            Some(Some(ids)) => Ok(ids),
            _ => Err(self.protocol_error("list did not return a list of 32-byte ids")),
        }
    }

    fn len(&mut self) -> Result<u64> {
        self.pending_error()?;
        let v = self.call("__len__", &[], None)?;
        v.as_u64()
            .ok_or_else(|| self.protocol_error("__len__ did not return a count"))
    }

    fn load_key(&mut self) -> Result<Vec<u8>> {
        self.pending_error()?;
        match self.call("load_key", &[], None)? {
            Value::Nil => Ok(Vec::new()),
            v => value_bytes(v)
                .ok_or_else(|| self.protocol_error("load_key returned a non-bytes value")),
        }
    }

    fn save_key(&mut self, keydata: &[u8]) -> Result<()> {
        self.pending_error()?;
        self.call("save_key", &[("keydata", Arg::Bytes(keydata))], None)
            .map(|_| ())
    }

    fn get_free_nonce(&mut self) -> Result<Option<u64>> {
        self.pending_error()?;
        match self.call("get_free_nonce", &[], None)? {
            Value::Nil => Ok(None),
            v => match v.as_u64() {
                Some(n) => Ok(Some(n)),
                None => Err(self.protocol_error("get_free_nonce returned a non-integer")),
            },
        }
    }

    fn commit_nonce_reservation(
        &mut self,
        next_unreserved: u64,
        start_nonce: Option<u64>,
    ) -> Result<()> {
        self.pending_error()?;
        self.call(
            "commit_nonce_reservation",
            &[
                ("next_unreserved", Arg::UInt(next_unreserved)),
                ("start_nonce", start_nonce.map_or(Arg::Nil, Arg::UInt)),
            ],
            None,
        )
        .map(|_| ())
    }

    /// What we asked for at open; a server-imposed `--append-only` is not reported by the
    /// protocol.
    fn append_only(&self) -> bool {
        self.append_only
    }
}

impl Drop for RemoteRepository {
    fn drop(&mut self) {
        // Uncommitted writes: roll back explicitly, as borg does on error exits, but never
        // wait long for a server that may be gone. The connection closes afterwards.
        if self.in_txn && self.conn.broken.is_none() {
            let deadline = Instant::now() + ROLLBACK_WAIT;
            let mid = self.next_msgid();
            if self
                .conn
                .send(wire::encode_request(mid, "rollback", &[]))
                .is_ok()
            {
                while let Ok(Some(r)) = self.conn.recv_until(deadline) {
                    if r.msgid == mid {
                        break;
                    }
                }
            }
        }
    }
}
