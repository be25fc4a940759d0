//! Raft's durable state in one redb file per member: the log, the vote, the
//! committed index and the latest snapshot. Every write is one redb
//! transaction, committed (fsynced) before openraft is told it is done, so
//! a vote or an entry that was acknowledged survives a crash or power loss.
//!
//! The state machine ([`FleetView`]) lives in memory: it is the snapshot
//! plus the committed entries after it, which openraft applies again at
//! start (it reads the committed index back from here).

// openraft's storage traits fix `StorageError` (large) as their error type,
// and redb's own error is as large; neither is on a hot path.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use crate::model::{FleetView, Outcome};
use crate::{NodeId, Peer, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

type StoreResult<T> = Result<T, StorageError<NodeId>>;

fn io_err(what: &str, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::write(&std::io::Error::other(format!("{what}: {e}"))).into()
}

fn read_err(what: &str, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::read(&std::io::Error::other(format!("{what}: {e}"))).into()
}

/// Opens (or creates) the member's store at `path`.
pub fn open(path: &Path) -> Result<(LogStore, StateMachine), redb::Error> {
    let db = Database::create(path)?;
    let tx = db.begin_write()?;
    {
        tx.open_table(LOG)?;
        tx.open_table(META)?;
    }
    tx.commit()?;
    let db = Arc::new(db);
    let snapshot = load_meta::<StoredSnapshot>(&db, "snapshot")
        .map_err(|e| redb::Error::Corrupted(format!("the stored snapshot does not read: {e}")))?;
    let sm = StateMachine::new(db.clone(), snapshot);
    Ok((LogStore { db }, sm))
}

fn load_meta<T: for<'de> Deserialize<'de>>(db: &Database, key: &str) -> Result<Option<T>, String> {
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let t = tx.open_table(META).map_err(|e| e.to_string())?;
    match t.get(key).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| format!("{key}: {e}")),
    }
}

/// Runs a redb write transaction on a blocking thread (it fsyncs).
async fn write<F>(db: &Arc<Database>, what: &'static str, f: F) -> StoreResult<()>
where
    F: FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
{
    let db = db.clone();
    tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
        let tx = db.begin_write()?;
        f(&tx)?;
        tx.commit()?;
        Ok(())
    })
    .await
    .map_err(|e| io_err(what, e))?
    .map_err(|e| io_err(what, e))
}

fn put_meta(
    tx: &redb::WriteTransaction,
    key: &str,
    value: &impl Serialize,
) -> Result<(), redb::Error> {
    let bytes = serde_json::to_vec(value).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    tx.open_table(META)?.insert(key, bytes.as_slice())?;
    Ok(())
}

/// The log, the vote and the committed index.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    fn read_entries(&self, range: (Bound<u64>, Bound<u64>)) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let tx = self.db.begin_read().map_err(|e| read_err("log", e))?;
        let t = tx.open_table(LOG).map_err(|e| read_err("log", e))?;
        let mut out = vec![];
        for item in t.range::<u64>(range).map_err(|e| read_err("log", e))? {
            let (_, v) = item.map_err(|e| read_err("log", e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| read_err("log entry", e))?);
        }
        Ok(out)
    }

    fn meta<T: for<'de> Deserialize<'de>>(&self, key: &str) -> StoreResult<Option<T>> {
        load_meta(&self.db, key).map_err(|e| read_err("meta", e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let r = (range.start_bound().cloned(), range.end_bound().cloned());
        self.read_entries(r)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let purged: Option<LogId<NodeId>> = self.meta("purged")?;
        let last = {
            let tx = self.db.begin_read().map_err(|e| read_err("log", e))?;
            let t = tx.open_table(LOG).map_err(|e| read_err("log", e))?;
            let last = t.last().map_err(|e| read_err("log", e))?;
            let id = match last {
                Some((_, v)) => Some(
                    serde_json::from_slice::<Entry<TypeConfig>>(v.value())
                        .map_err(|e| read_err("log entry", e))?
                        .log_id,
                ),
                None => None,
            };
            id
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        let vote = *vote;
        write(&self.db, "vote", move |tx| put_meta(tx, "vote", &vote)).await
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        self.meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        write(&self.db, "committed", move |tx| {
            put_meta(tx, "committed", &committed)
        })
        .await
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        Ok(self.meta::<Option<LogId<NodeId>>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = vec![];
        for e in entries {
            let bytes = serde_json::to_vec(&e).map_err(|err| io_err("log entry", err))?;
            rows.push((e.log_id.index, bytes));
        }
        let result = write(&self.db, "append", move |tx| {
            let mut t = tx.open_table(LOG)?;
            for (i, b) in &rows {
                t.insert(*i, b.as_slice())?;
            }
            Ok(())
        })
        .await;
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        write(&self.db, "truncate", move |tx| {
            tx.open_table(LOG)?
                .retain_in(log_id.index.., |_, _| false)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        write(&self.db, "purge", move |tx| {
            put_meta(tx, "purged", &log_id)?;
            tx.open_table(LOG)?
                .retain_in(..=log_id.index, |_, _| false)?;
            Ok(())
        })
        .await
    }
}

/// A snapshot as stored: its metadata and the state it holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Peer>,
    view: FleetView,
}

/// What the state machine holds between entries.
#[derive(Clone, Debug, Default)]
struct Applied {
    last: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Peer>,
    view: FleetView,
    snapshot: Option<StoredSnapshot>,
}

/// The in-memory [`FleetView`], its snapshots (durable in the same file),
/// and a watch channel that sees every applied change.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    inner: Arc<Mutex<Applied>>,
    tx: Arc<watch::Sender<FleetView>>,
}

impl StateMachine {
    fn new(db: Arc<Database>, snapshot: Option<StoredSnapshot>) -> StateMachine {
        let mut a = Applied::default();
        if let Some(s) = snapshot {
            a.last = s.meta.last_log_id;
            a.membership = s.meta.last_membership.clone();
            a.view = s.view.clone();
            a.snapshot = Some(s);
        }
        let (tx, _) = watch::channel(a.view.clone());
        StateMachine {
            db,
            inner: Arc::new(Mutex::new(a)),
            tx: Arc::new(tx),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<FleetView> {
        self.tx.subscribe()
    }

    pub fn view(&self) -> FleetView {
        self.tx.borrow().clone()
    }

    /// Reads part of the applied state without copying the rest.
    pub fn read_view<T>(&self, f: impl FnOnce(&FleetView) -> T) -> T {
        f(&self.tx.borrow())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let mut a = self.inner.lock().await;
        let id = match a.last {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "empty".to_string(),
        };
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: a.last,
                last_membership: a.membership.clone(),
                snapshot_id: id,
            },
            view: a.view.clone(),
        };
        let copy = stored.clone();
        write(&self.db, "snapshot", move |tx| {
            put_meta(tx, "snapshot", &copy)
        })
        .await?;
        let data = serde_json::to_vec(&stored.view).map_err(|e| io_err("snapshot", e))?;
        a.snapshot = Some(stored.clone());
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> StoreResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, Peer>)> {
        let a = self.inner.lock().await;
        Ok((a.last, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut a = self.inner.lock().await;
        let mut out = vec![];
        for e in entries {
            a.last = Some(e.log_id);
            match &e.payload {
                EntryPayload::Blank => {
                    a.view.applied = e.log_id.index;
                    out.push(Outcome::None);
                }
                EntryPayload::Normal(cmd) => {
                    let o = a.view.apply(e.log_id.index, cmd);
                    out.push(o);
                }
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(e.log_id), m.clone());
                    a.view.applied = e.log_id.index;
                    out.push(Outcome::None);
                }
            }
        }
        self.tx.send_replace(a.view.clone());
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Peer>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let view: FleetView = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageIOError::<NodeId>::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            view: view.clone(),
        };
        let copy = stored.clone();
        write(&self.db, "snapshot", move |tx| {
            put_meta(tx, "snapshot", &copy)
        })
        .await?;
        let mut a = self.inner.lock().await;
        a.last = meta.last_log_id;
        a.membership = meta.last_membership.clone();
        a.view = view;
        a.snapshot = Some(stored);
        self.tx.send_replace(a.view.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        let a = self.inner.lock().await;
        match &a.snapshot {
            None => Ok(None),
            Some(s) => {
                let data = serde_json::to_vec(&s.view).map_err(|e| io_err("snapshot", e))?;
                Ok(Some(Snapshot {
                    meta: s.meta.clone(),
                    snapshot: Box::new(Cursor::new(data)),
                }))
            }
        }
    }
}
