//! Pipelined runs of plain `GET key` or `SET key value` as one store
//! request: a run of SETs is one `MultiSet` (one WAL record, one commit,
//! one wait for its acknowledgement policy) instead of one commit per
//! command, and a run of GETs one `MultiGet` (and one `Exists` of the keys
//! it did not find, which may hold lists).
//!
//! Only consecutive commands of one kind join a run, and a run finishes
//! before the next command starts, so a pipeline still reads its own
//! writes and the last SET of a key wins, as when they ran one by one.
//! A run's request either applies every SET or none (one record), so an
//! error answers each command of the run alike, as each would have been
//! answered alone: every per-command condition that could tell them apart
//! (authentication, sizes, a cluster's routing) keeps a command out.

use bytes::Bytes;

use super::commands::is;
use super::reply::{OK, Reply};
use super::session::Session;
use crate::proto::SetEntry;

/// What a run is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Get,
    Set,
}

/// Request bytes one run carries at most.
const MAX_RUN_BYTES: usize = 4 << 20;

/// GETs one run carries at most: their values are all in memory at once
/// before the first reply is written.
const MAX_GET_RUN: usize = 64;

/// Commands waiting to run together.
#[derive(Debug, Default)]
pub(crate) struct Run {
    kind: Option<Kind>,
    commands: Vec<Vec<Bytes>>,
    bytes: usize,
}

impl Run {
    /// Takes `args` into the run if it can join it: a plain GET or SET
    /// of the run's kind, within the run's bounds, on a session that may
    /// batch. Otherwise hands it back (run what is pending first).
    pub(crate) fn offer(&mut self, s: &Session, args: Vec<Bytes>) -> Option<Vec<Bytes>> {
        let Some(kind) = batchable(s, &args) else {
            return Some(args);
        };
        let size: usize = args.iter().map(Bytes::len).sum();
        let most = match kind {
            Kind::Get => MAX_GET_RUN.min(s.chunk()),
            Kind::Set => s.chunk(),
        };
        let full = self.commands.len() >= most || self.bytes + size > MAX_RUN_BYTES;
        if self.kind.is_some_and(|k| k != kind) || full {
            return Some(args);
        }
        self.kind = Some(kind);
        self.bytes += size;
        self.commands.push(args);
        None
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Runs the pending commands; their replies, in order.
    pub(crate) async fn run(&mut self, s: &mut Session) -> Vec<Reply> {
        let commands = std::mem::take(&mut self.commands);
        let kind = self.kind.take();
        self.bytes = 0;
        let n = commands.len();
        let outcome = match kind {
            None => return Vec::new(),
            Some(Kind::Get) => {
                s.last_command = "get";
                let keys: Vec<Bytes> = commands.into_iter().map(|mut a| a.swap_remove(1)).collect();
                get_run(s, &keys).await
            }
            Some(Kind::Set) => {
                s.last_command = "set";
                let entries = commands
                    .into_iter()
                    .map(|a| SetEntry {
                        key: a[1].clone(),
                        value: a[2].clone(),
                        ttl_ms: None,
                    })
                    .collect();
                s.set_many(entries).await.map(|()| vec![OK; n])
            }
        };
        outcome.unwrap_or_else(|e| vec![e; n])
    }
}

/// The replies to a run of GETs. A multi-get reads a list as absent, so
/// the keys it did not find are asked after once more, one by one when
/// any of them exists, to answer a list's GET with WRONGTYPE.
async fn get_run(s: &Session, keys: &[Bytes]) -> Result<Vec<Reply>, Reply> {
    let values = s.get_many(keys).await?;
    let missing: Vec<Bytes> = keys
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    let recheck = !missing.is_empty() && s.exists(&missing).await? > 0;
    let mut out = Vec::with_capacity(keys.len());
    for (key, value) in keys.iter().zip(values) {
        out.push(match value {
            Some(e) => Reply::Bulk(e.value),
            None if recheck => match s.get(key).await {
                Ok(found) => found.map_or(Reply::Null, |e| Reply::Bulk(e.value)),
                Err(e) => e,
            },
            None => Reply::Null,
        });
    }
    Ok(out)
}

/// The kind of run `args` may join on `s`: a plain `GET key` or `SET key
/// value` within the node's size limits, from an authenticated session of
/// a node outside a cluster (where each command is routed by its slot).
fn batchable(s: &Session, args: &[Bytes]) -> Option<Kind> {
    let kind = match args {
        [name, _] if is(name, "get") => Kind::Get,
        [name, _, _] if is(name, "set") => Kind::Set,
        _ => return None,
    };
    let limits = &s.gw.node.limits;
    let within = args[1].len() <= limits.max_key_bytes as usize
        && args
            .get(2)
            .is_none_or(|v| v.len() <= limits.max_value_bytes as usize);
    let standalone = matches!(s.gw.node.cluster(), Ok(None));
    (within && standalone && s.role.is_some()).then_some(kind)
}
