//! Consumer groups (beyond Kinesis): the workers of one *application* share a
//! stream's shards through leases, as KCL does with a DynamoDB lease table,
//! but native to the engine.
//!
//! - A worker calls [`Engine::group_heartbeat`] every third of its lease
//!   duration. That renews its leases, expires leases of workers that
//!   stopped renewing, and hands it free shards up to its fair share (taking
//!   one lease per heartbeat from a worker holding more than its share).
//! - A shard is leasable only once all its parents are finished (their
//!   checkpoint is `SHARD_END`) or gone, so one partition key's records are
//!   processed in order across splits and merges.
//! - [`Engine::group_checkpoint`] is fenced by the lease: it succeeds only
//!   for the worker holding the lease with that lease id, and is written
//!   while the lease table is locked, so a worker that lost its lease cannot
//!   overwrite its successor's progress. Checkpoints are durable (the
//!   stream's CHECKPOINTS.json, under the application's name); leases live in
//!   memory and are handed out again after a restart.
//! - [`GroupWorker`] is the small loop a service embeds: "give me records,
//!   I checkpoint".

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use super::*;

/// Checkpoint value of a shard whose records are all processed.
pub const SHARD_END: &str = "SHARD_END";
pub const GROUP_LEASE_DEFAULT_MS: u64 = 10_000;
pub const GROUP_LEASE_MIN_MS: u64 = 100;
pub const GROUP_LEASE_MAX_MS: u64 = 600_000;
/// Workers of one application, and applications of one stream.
pub const GROUP_WORKERS_MAX: usize = 1_000;
pub const GROUPS_PER_STREAM_MAX: usize = 100;

/// A lease a worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub shard_id: String,
    /// Changes every time the shard changes hands; checkpoints name it.
    pub lease_id: u64,
    /// The application's checkpoint on the shard (a sequence number), if any.
    pub checkpoint: Option<String>,
    pub expires_ms: i64,
}

/// A shard as a group sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupShard {
    pub shard_id: String,
    pub owner: Option<String>,
    pub lease_id: Option<u64>,
    pub expires_ms: Option<i64>,
    pub checkpoint: Option<String>,
    /// Records written after the checkpoint (lag), for unfinished shards.
    pub records_behind: u64,
    pub finished: bool,
}

/// What [`Engine::group_describe`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub application: String,
    /// Live workers and when each was last heard from (ms).
    pub workers: Vec<(String, i64)>,
    pub shards: Vec<GroupShard>,
}

#[derive(Debug, Clone)]
pub(crate) struct Held {
    owner: String,
    lease_id: u64,
    expires_ms: i64,
}

#[derive(Debug, Default)]
pub(crate) struct GroupState {
    workers: HashMap<String, (i64, u64)>,
    leases: HashMap<u64, Held>,
}

fn check_group_names(application: &str, worker: &str) -> Result<()> {
    if !is_valid_name(application) {
        return Err(Error::InvalidArgument(format!(
            "Application name {application:?} is invalid: 1 to 128 characters of [a-zA-Z0-9_.-]."
        )));
    }
    if !is_valid_name(worker) {
        return Err(Error::InvalidArgument(format!(
            "Worker id {worker:?} is invalid: 1 to 128 characters of [a-zA-Z0-9_.-]."
        )));
    }
    Ok(())
}

impl Engine {
    fn next_lease_id(&self) -> u64 {
        self.inner.lease_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Renews `worker`'s leases and hands it shards up to its fair share;
    /// returns the leases it holds now. Call it every third of `lease_ms`.
    pub fn group_heartbeat(
        &self,
        name: &str,
        application: &str,
        worker: &str,
        lease_ms: u64,
    ) -> Result<Vec<Lease>> {
        check_group_names(application, worker)?;
        if !(GROUP_LEASE_MIN_MS..=GROUP_LEASE_MAX_MS).contains(&lease_ms) {
            return Err(Error::InvalidArgument(format!(
                "Lease duration {lease_ms} ms is outside {GROUP_LEASE_MIN_MS}..={GROUP_LEASE_MAX_MS} ms."
            )));
        }
        let stream = self.stream(name)?;
        let now = self.now_ms();
        // The shard layout, copied so that no stream lock is held while the
        // lease table is (a checkpoint's fsync holds the table).
        let (held_shards, layout): (std::collections::HashSet<u64>, Vec<(u64, Vec<u64>)>) = {
            let st = read(&stream.state);
            (
                st.shards.keys().copied().collect(),
                st.meta
                    .shards
                    .iter()
                    .map(|s| {
                        (
                            s.index,
                            s.parent.iter().chain(s.adjacent_parent.iter()).copied().collect(),
                        )
                    })
                    .collect(),
            )
        };
        let mut groups = lock(&self.inner.groups);
        // Read after taking the table: a SHARD_END written just before is
        // seen (group_checkpoint writes under the same lock).
        let cps: BTreeMap<String, String> = lock(&stream.checkpoints)
            .get(application)
            .cloned()
            .unwrap_or_default();
        // Groups of this stream with no live worker and no lease are gone.
        groups.retain(|(id, _), g| {
            *id != stream.id
                || (!g.leases.is_empty() && g.leases.values().any(|h| h.expires_ms > now))
                || g.workers.values().any(|(seen, ms)| now - *seen <= *ms as i64)
        });
        let apps_of_stream = groups.keys().filter(|(id, _)| *id == stream.id).count();
        let key = (stream.id, application.to_string());
        if !groups.contains_key(&key) && apps_of_stream >= GROUPS_PER_STREAM_MAX {
            return Err(Error::LimitExceeded(format!(
                "Stream {name} already has {GROUPS_PER_STREAM_MAX} consumer groups."
            )));
        }
        let g = groups.entry(key).or_default();
        // Workers are alive while they heartbeat within their lease time.
        g.workers.retain(|_, (seen, ms)| now - *seen <= *ms as i64);
        if !g.workers.contains_key(worker) && g.workers.len() >= GROUP_WORKERS_MAX {
            return Err(Error::LimitExceeded(format!(
                "Application {application} already has {GROUP_WORKERS_MAX} workers."
            )));
        }
        g.workers.insert(worker.to_string(), (now, lease_ms));
        g.leases
            .retain(|index, h| h.expires_ms > now && held_shards.contains(index));
        for h in g.leases.values_mut() {
            if h.owner == worker {
                h.expires_ms = now + lease_ms as i64;
            }
        }
        let finished = |index: u64| cps.get(&shard_id(index)).is_some_and(|c| c == SHARD_END);
        let workable: Vec<u64> = layout
            .iter()
            .filter(|(index, parents)| {
                held_shards.contains(index)
                    && !finished(*index)
                    && parents.iter().all(|p| finished(*p) || !held_shards.contains(p))
            })
            .map(|(index, _)| *index)
            .collect();
        let live = g.workers.len().max(1);
        let target = workable.len().div_ceil(live);
        let mine = |g: &GroupState| g.leases.values().filter(|h| h.owner == worker).count();
        for index in &workable {
            if mine(g) >= target {
                break;
            }
            if !g.leases.contains_key(index) {
                let lease_id = self.next_lease_id();
                g.leases.insert(
                    *index,
                    Held {
                        owner: worker.to_string(),
                        lease_id,
                        expires_ms: now + lease_ms as i64,
                    },
                );
            }
        }
        // Balance: take one lease from the busiest worker if it holds at
        // least two more than this one (so 4 shards over 3 workers settle at
        // 2-1-1, not 2-2-0). The loser learns it at its next heartbeat; its
        // checkpoints are refused from now on.
        if mine(g) < target {
            let have = mine(g);
            let mut load: HashMap<String, Vec<u64>> = HashMap::new();
            for (index, h) in &g.leases {
                load.entry(h.owner.clone()).or_default().push(*index);
            }
            if let Some((_, shards)) = load
                .into_iter()
                .filter(|(w, s)| w != worker && s.len() >= have + 2)
                .max_by_key(|(_, s)| s.len())
            {
                if let Some(index) = shards.into_iter().min() {
                    let lease_id = self.next_lease_id();
                    g.leases.insert(
                        index,
                        Held {
                            owner: worker.to_string(),
                            lease_id,
                            expires_ms: now + lease_ms as i64,
                        },
                    );
                }
            }
        }
        let mut out: Vec<Lease> = g
            .leases
            .iter()
            .filter(|(_, h)| h.owner == worker)
            .map(|(index, h)| Lease {
                shard_id: shard_id(*index),
                lease_id: h.lease_id,
                checkpoint: cps.get(&shard_id(*index)).cloned(),
                expires_ms: h.expires_ms,
            })
            .collect();
        out.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        Ok(out)
    }

    /// Records `sequence_number` (or [`SHARD_END`]) as the application's
    /// progress on `shard`, if `worker` still holds the lease `lease_id`.
    /// `SHARD_END` needs a closed shard and ends the lease, which frees the
    /// shard's children.
    pub fn group_checkpoint(
        &self,
        name: &str,
        application: &str,
        worker: &str,
        shard: &str,
        lease_id: u64,
        sequence_number: &str,
    ) -> Result<()> {
        check_group_names(application, worker)?;
        let stream = self.stream(name)?;
        let now = self.now_ms();
        let index = {
            let st = read(&stream.state);
            let s = self.shard_meta(&st, name, shard)?;
            if sequence_number == SHARD_END {
                if s.closed.is_none() {
                    return Err(Error::InvalidArgument(format!(
                        "Shard {shard} is open; SHARD_END is for closed shards whose records are all processed."
                    )));
                }
            } else {
                // A record's number, or one below a record's (the shard's
                // StartingSequenceNumber: nothing processed yet).
                let n = SeqNum::parse_resume_point(sequence_number).ok_or_else(|| {
                    Error::InvalidArgument(format!("Sequence number {sequence_number} is invalid."))
                })?;
                if n.shard_index != s.index || n.generation != s.generation {
                    return Err(Error::InvalidArgument(format!(
                        "Sequence number {sequence_number} does not belong to shard {shard}."
                    )));
                }
            }
            s.index
        };
        // The lease table stays locked through the durable write, so no
        // other worker can take the lease between the check and the write.
        let mut groups = lock(&self.inner.groups);
        let g = groups.get_mut(&(stream.id, application.to_string()));
        let held = g.as_ref().and_then(|g| g.leases.get(&index));
        let valid = held.is_some_and(|h| h.owner == worker && h.lease_id == lease_id && h.expires_ms > now);
        if !valid {
            return Err(Error::LeaseLost(format!(
                "Worker {worker} of application {application} does not hold lease {lease_id} on shard {shard}; another worker owns it now. Drop the records of that shard and heartbeat."
            )));
        }
        self.write_checkpoint(&stream, application, &shard_id(index), sequence_number)?;
        if sequence_number == SHARD_END {
            if let Some(g) = g {
                g.leases.remove(&index);
            }
        }
        Ok(())
    }

    /// Ends `worker`'s membership: its leases are free at once.
    pub fn group_release(&self, name: &str, application: &str, worker: &str) -> Result<()> {
        check_group_names(application, worker)?;
        let stream = self.stream(name)?;
        let mut groups = lock(&self.inner.groups);
        if let Some(g) = groups.get_mut(&(stream.id, application.to_string())) {
            g.workers.remove(worker);
            g.leases.retain(|_, h| h.owner != worker);
        }
        Ok(())
    }

    /// Applications with checkpoints or live workers on a stream.
    pub fn group_list(&self, name: &str) -> Result<Vec<String>> {
        let stream = self.stream(name)?;
        let mut apps: Vec<String> = lock(&stream.checkpoints).keys().cloned().collect();
        apps.extend(
            lock(&self.inner.groups)
                .keys()
                .filter(|(id, _)| *id == stream.id)
                .map(|(_, a)| a.clone()),
        );
        apps.sort();
        apps.dedup();
        Ok(apps)
    }

    /// Workers, leases, checkpoints and lag of one application.
    pub fn group_describe(&self, name: &str, application: &str) -> Result<GroupDescription> {
        let stream = self.stream(name)?;
        let now = self.now_ms();
        let st = read(&stream.state);
        let cps: BTreeMap<String, String> = lock(&stream.checkpoints)
            .get(application)
            .cloned()
            .unwrap_or_default();
        let groups = lock(&self.inner.groups);
        let g = groups.get(&(stream.id, application.to_string()));
        let mut workers: Vec<(String, i64)> = g
            .map(|g| {
                g.workers
                    .iter()
                    .filter(|(_, (seen, ms))| now - *seen <= *ms as i64)
                    .map(|(w, (seen, _))| (w.clone(), *seen))
                    .collect()
            })
            .unwrap_or_default();
        workers.sort();
        let mut shards = Vec::new();
        for s in &st.meta.shards {
            let Some(rt) = st.shards.get(&s.index) else {
                continue;
            };
            let id = shard_id(s.index);
            let checkpoint = cps.get(&id).cloned();
            let finished = checkpoint.as_deref() == Some(SHARD_END);
            let held = g
                .and_then(|g| g.leases.get(&s.index))
                .filter(|h| h.expires_ms > now);
            let tip = rt.log.log().visible_next_seq();
            let done_upto = match checkpoint.as_deref().and_then(SeqNum::parse_resume_point) {
                Some(n) => n.position.max(rt.log.log().first_seq()),
                None => rt.log.log().first_seq(),
            };
            shards.push(GroupShard {
                shard_id: id,
                owner: held.map(|h| h.owner.clone()),
                lease_id: held.map(|h| h.lease_id),
                expires_ms: held.map(|h| h.expires_ms),
                checkpoint,
                records_behind: if finished {
                    0
                } else {
                    tip.saturating_sub(done_upto)
                },
                finished,
            });
        }
        Ok(GroupDescription {
            application: application.to_string(),
            workers,
            shards,
        })
    }
}

/// Records of one leased shard, as [`GroupWorker::poll`] returns them.
#[derive(Debug, Clone)]
pub struct GroupBatch {
    pub shard_id: String,
    pub lease_id: u64,
    pub records: Vec<StoredRecord>,
    /// The shard is closed and these are its last records: checkpointing
    /// this batch records `SHARD_END` and frees the shard's children.
    pub shard_ended: bool,
}

#[derive(Debug, Clone)]
struct WorkerLease {
    lease_id: u64,
    position: u64,
    /// The end of the shard was handed out; waiting for its checkpoint.
    ended: bool,
}

/// The loop a service embeds to consume a stream as one worker of an
/// application: `poll` for records, process them, `checkpoint` the batch.
///
/// ```no_run
/// # fn main() -> shardlog_stream::Result<()> {
/// # let engine = shardlog_stream::Engine::open("data", Default::default())?;
/// let mut worker = shardlog_stream::GroupWorker::new(engine, "orders", "billing", "worker-1");
/// loop {
///     for batch in worker.poll(500)? {
///         for record in &batch.records {
///             // process record.data ...
///         }
///         worker.checkpoint(&batch)?; // fenced: fails if the lease moved
///     }
/// #   break;
/// }
/// worker.shutdown()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct GroupWorker {
    engine: Engine,
    stream: String,
    application: String,
    worker: String,
    lease_ms: u64,
    leases: BTreeMap<String, WorkerLease>,
    last_heartbeat_ms: Option<i64>,
}

impl GroupWorker {
    pub fn new(engine: Engine, stream: &str, application: &str, worker: &str) -> GroupWorker {
        GroupWorker {
            engine,
            stream: stream.to_string(),
            application: application.to_string(),
            worker: worker.to_string(),
            lease_ms: GROUP_LEASE_DEFAULT_MS,
            leases: BTreeMap::new(),
            last_heartbeat_ms: None,
        }
    }

    /// Sets the lease duration (default [`GROUP_LEASE_DEFAULT_MS`]).
    pub fn with_lease_ms(mut self, lease_ms: u64) -> GroupWorker {
        self.lease_ms = lease_ms;
        self
    }

    /// Shards this worker holds now.
    pub fn shards(&self) -> Vec<String> {
        self.leases.keys().cloned().collect()
    }

    fn heartbeat(&mut self) -> Result<()> {
        let leases =
            self.engine
                .group_heartbeat(&self.stream, &self.application, &self.worker, self.lease_ms)?;
        let mut next = BTreeMap::new();
        for l in leases {
            match self.leases.remove(&l.shard_id) {
                Some(mine) if mine.lease_id == l.lease_id => {
                    next.insert(l.shard_id, mine);
                }
                _ => {
                    // A new lease starts after the application's checkpoint.
                    let start = match &l.checkpoint {
                        Some(seq) => StartingPosition::AfterSequenceNumber(seq.clone()),
                        None => StartingPosition::TrimHorizon,
                    };
                    let position = self.engine.position_of(&self.stream, &l.shard_id, &start)?;
                    next.insert(
                        l.shard_id,
                        WorkerLease {
                            lease_id: l.lease_id,
                            position,
                            ended: false,
                        },
                    );
                }
            }
        }
        self.leases = next;
        self.last_heartbeat_ms = Some(self.engine.now_ms());
        Ok(())
    }

    /// Heartbeats when due and returns up to `max_records` per leased shard.
    pub fn poll(&mut self, max_records: usize) -> Result<Vec<GroupBatch>> {
        let now = self.engine.now_ms();
        let due = self
            .last_heartbeat_ms
            .is_none_or(|t| now - t >= (self.lease_ms / 3) as i64);
        if due || self.leases.is_empty() {
            self.heartbeat()?;
        }
        let mut out = Vec::new();
        for (shard, lease) in self.leases.iter_mut() {
            if lease.ended {
                continue;
            }
            let r = self.engine.read_shard(
                &self.stream,
                shard,
                lease.position,
                max_records.clamp(1, GET_RECORDS_COUNT_MAX),
                GET_RECORDS_BYTES_MAX,
            )?;
            let ended = r.next_position.is_none();
            if let Some(p) = r.next_position {
                lease.position = p;
            }
            lease.ended = ended;
            if !r.records.is_empty() || ended {
                out.push(GroupBatch {
                    shard_id: shard.clone(),
                    lease_id: lease.lease_id,
                    records: r.records,
                    shard_ended: ended,
                });
            }
        }
        Ok(out)
    }

    /// Records that `batch` is processed. Fails with `LeaseLost` if the shard
    /// moved to another worker (then drop the batch: the new owner goes on
    /// from the last checkpoint).
    pub fn checkpoint(&mut self, batch: &GroupBatch) -> Result<()> {
        let value = if batch.shard_ended {
            SHARD_END.to_string()
        } else {
            match batch.records.last() {
                Some(r) => r.sequence_number.to_string(),
                None => return Ok(()),
            }
        };
        let r = self.engine.group_checkpoint(
            &self.stream,
            &self.application,
            &self.worker,
            &batch.shard_id,
            batch.lease_id,
            &value,
        );
        if r.is_err() || batch.shard_ended {
            self.leases.remove(&batch.shard_id);
        }
        r
    }

    /// Leaves the group: its leases are free for others at once.
    pub fn shutdown(self) -> Result<()> {
        self.engine
            .group_release(&self.stream, &self.application, &self.worker)
    }
}
