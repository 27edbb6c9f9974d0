//! The cluster map: which nodes exist, which shards they serve, and so
//! which node owns each key.
//!
//! The map is a deterministic state machine: every node applies the same
//! committed [`MapCommand`]s in the same order and reaches the same map,
//! so it can sit behind a consensus log without knowing about it. Nothing
//! here does I/O; a command is checked completely before anything changes,
//! so a refused command leaves no trace and the version counts exactly the
//! commands that took effect.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ring::{MAX_VNODES, Ring, RingError, ShardId, SlotTable};
use super::slot::{Slot, key_slot};
use crate::types::NodeId;

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's name; its [`NodeId`] is [`NodeId::of_name`] of it.
    pub name: String,
    /// Where clients reach it.
    pub client_addr: String,
    /// Where the other nodes reach it (replication, the map's own log).
    pub link_addr: String,
    /// The shard it holds a copy of.
    pub shard: ShardId,
}

/// One shard: a primary and its replicas, all holding the same slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// The node that takes the shard's writes.
    pub primary: NodeId,
    /// The shard's other nodes, in the order they joined.
    pub replicas: Vec<NodeId>,
    /// 1 when the shard is added, +1 on every change of primary: fences a
    /// deposed primary's writes.
    pub epoch: u64,
    /// The replicas whose acks the primary counts (the committed in-sync
    /// set), in id order: a failover promotes only one of them. A replica
    /// joins once it has caught up; it leaves, committed here before the
    /// primary stops waiting for it, when it falls behind.
    pub in_sync: Vec<NodeId>,
}

/// A change to the map: one committed log entry.
///
/// The serde encoding names a variant by its index, and committed entries
/// are kept and replayed: variants are only ever appended, never
/// reordered, removed or changed in their fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapCommand {
    /// Start the cluster with `vnodes` virtual nodes per shard, fixed from
    /// then on; must be the first command and comes once.
    Create { vnodes: u32 },
    /// A node joins shard `info.shard` as a replica.
    AddNode { id: NodeId, info: NodeInfo },
    /// A replica leaves. A primary must hand over first ([`MapCommand::SetPrimary`]).
    RemoveNode { id: NodeId },
    /// A shard is born with its primary, the node `primary` described by
    /// `info` (a shard never exists without a copy); it takes its slots
    /// from the ring at once.
    AddShard {
        id: ShardId,
        primary: NodeId,
        info: NodeInfo,
    },
    /// A shard whose replicas have all left goes, with its primary; its
    /// slots fall to the remaining shards.
    RemoveShard { id: ShardId },
    /// `node`, a replica of `shard`, becomes its primary; the old primary
    /// becomes a replica (out of the in-sync set until it catches up) and
    /// the shard's epoch grows by one.
    SetPrimary { shard: ShardId, node: NodeId },
    /// `shard`'s primary of epoch `epoch` counts acks from `in_sync` from
    /// now on; refused once the epoch has moved on, so a deposed primary's
    /// late request changes nothing.
    SetInSync {
        shard: ShardId,
        epoch: u64,
        in_sync: Vec<NodeId>,
    },
    /// A shard is born with its primary like [`MapCommand::AddShard`], but
    /// off the ring: it owns no slots until a migration puts it on.
    JoinShard {
        id: ShardId,
        primary: NodeId,
        info: NodeInfo,
    },
    /// The ring's shards are to become `ring`: every slot whose owner
    /// differs on that ring moves there, its keys copied while the
    /// current owner serves them. Its id is the version it brings the
    /// map to.
    StartMigration { ring: Vec<ShardId> },
    /// `shard`'s primary of epoch `epoch` holds every key moving to it
    /// and follows the owners' writes closely; once every receiving
    /// shard is ready, the owners stop taking writes to moving slots.
    ImportReady { id: u64, shard: ShardId, epoch: u64 },
    /// `shard` holds, durably on its in-sync set, every write the owners
    /// took to its moving slots; once every receiving shard is done, the
    /// slots change owner in this version, and shards off the new ring
    /// leave with their nodes.
    ImportDone { id: u64, shard: ShardId, epoch: u64 },
    /// Calls migration `id` off: the owners keep their slots (and take
    /// writes to them again); what the receivers copied is swept.
    AbortMigration { id: u64 },
    /// The ring keeps its shards but each gets `vnodes` points: every slot
    /// whose owner differs under the new V moves, as in
    /// [`MapCommand::StartMigration`], and V changes when it finishes.
    /// More points even out the shards' shares (`cluster rebalance`).
    Rebalance { vnodes: u32 },
    /// `node` serves Redis clients (its RESP gateway) at `addr`, or no
    /// longer does for an empty `addr`: what cluster-mode gateways name
    /// in `-MOVED` and `CLUSTER SLOTS`.
    SetGateway { node: NodeId, addr: String },
}

/// A change of the ring's shards in progress (`MapCommand::StartMigration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// The map version that started it.
    pub id: u64,
    /// The shards on the ring once it finishes, in id order.
    pub ring: Vec<ShardId>,
    /// Receiving shards that have copied their slots and follow the
    /// owners' writes, in id order.
    pub ready: Vec<ShardId>,
    /// Whether the owners refuse writes to moving slots (every receiver
    /// was ready).
    pub cutover: bool,
    /// Receiving shards that hold every write to their slots, in id order.
    pub done: Vec<ShardId>,
    /// Virtual nodes per shard once it finishes.
    pub vnodes: u32,
}

/// A migration as layout-3 snapshots (`strsnap3`) carry it, from before a
/// migration could change V: it keeps the map's.
#[derive(Deserialize)]
struct MigrationV3 {
    id: u64,
    ring: Vec<ShardId>,
    ready: Vec<ShardId>,
    cutover: bool,
    done: Vec<ShardId>,
}

impl MigrationV3 {
    fn with_vnodes(self, vnodes: u32) -> Migration {
        Migration {
            id: self.id,
            ring: self.ring,
            ready: self.ready,
            cutover: self.cutover,
            done: self.done,
            vnodes,
        }
    }
}

/// Why a command was refused, or a decoded map is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    #[error("the cluster map has not been created yet")]
    NotCreated,
    #[error("the cluster map was already created")]
    AlreadyCreated,
    #[error("virtual nodes per shard must be 1..={MAX_VNODES}, not {0}")]
    VnodesOutOfRange(u32),
    #[error("unknown node {}", node.0)]
    UnknownNode { node: NodeId },
    #[error("unknown shard {shard}")]
    UnknownShard { shard: ShardId },
    #[error("node {} already exists", node.0)]
    DuplicateNode { node: NodeId },
    #[error("shard {shard} already exists")]
    DuplicateShard { shard: ShardId },
    #[error("node id {} is not the id of the name {name:?}", node.0)]
    IdNotOfName { node: NodeId, name: String },
    #[error("node {} says shard {declared} but is the primary of new shard {shard}", node.0)]
    ShardMismatch {
        node: NodeId,
        declared: ShardId,
        shard: ShardId,
    },
    #[error("removing node {} would leave shard {shard} without a copy", node.0)]
    LastCopy { node: NodeId, shard: ShardId },
    #[error("node {} is the primary of shard {shard}; make another node primary first", node.0)]
    RemovingPrimary { node: NodeId, shard: ShardId },
    #[error("shard {shard} still has {replicas} replica(s); remove them first")]
    ShardHasNodes { shard: ShardId, replicas: usize },
    #[error("shard {shard} is the last one; without it no shard would own the slots")]
    LastShard { shard: ShardId },
    #[error("node {} is not in shard {shard}, so cannot be its primary", node.0)]
    NotInShard { node: NodeId, shard: ShardId },
    #[error("node {} is already the primary of shard {shard}", node.0)]
    AlreadyPrimary { node: NodeId, shard: ShardId },
    #[error(
        "shard {shard} is at epoch {current}, not {asked}: the request comes from a deposed primary"
    )]
    StaleEpoch {
        shard: ShardId,
        asked: u64,
        current: u64,
    },
    #[error("migration {id} is in progress; let it finish or abort it first")]
    MigrationInProgress { id: u64 },
    #[error("no migration {id} is in progress")]
    NoSuchMigration { id: u64 },
    #[error("the ring already holds exactly shards {ring:?}: nothing would move")]
    NothingMoves { ring: Vec<u32> },
    #[error("no slot changes owner with {vnodes} virtual nodes per shard: nothing would move")]
    NothingMovesAt { vnodes: u32 },
    #[error("a ring needs at least one shard")]
    EmptyRing,
    #[error("shard {shard} receives no slots in migration {id}")]
    NotReceiving { id: u64, shard: ShardId },
    #[error("migration {id} is not cut over yet: shard {shard} cannot be done")]
    NotCutOver { id: u64, shard: ShardId },
    #[error("shard {shard} is on the ring; move its slots off first (remove-shard)")]
    OnRing { shard: ShardId },
    #[error("inconsistent cluster map: {0}")]
    Inconsistent(String),
}

impl From<RingError> for MapError {
    fn from(err: RingError) -> MapError {
        match err {
            RingError::VnodesOutOfRange(v) => MapError::VnodesOutOfRange(v),
            other => MapError::Inconsistent(other.to_string()),
        }
    }
}

/// The cluster map: nodes, shards, ring parameters and a version.
///
/// The fields are private so that only [`ClusterMap::apply`] changes them
/// and the invariants (every shard's primary among its nodes, every node
/// listed by its shard) cannot be broken from outside.
///
/// The slot table is kept, not computed on demand: a router looks a key
/// up per request, while the table (N × V hashes, 64 KiB) only changes
/// with the shard set. It is left out of the encoding, since anyone can
/// derive it, and rebuilt on decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "MapState")]
pub struct ClusterMap {
    version: u64,
    /// 0 until [`MapCommand::Create`]; a ring never has 0 virtual nodes.
    vnodes: u32,
    nodes: BTreeMap<NodeId, NodeInfo>,
    shards: BTreeMap<ShardId, ShardInfo>,
    /// The shards whose points are on the ring, in id order: the others
    /// are joining and own no slots.
    ring: Vec<ShardId>,
    migration: Option<Migration>,
    /// Nodes' RESP gateway addresses, of nodes that have one.
    gateways: BTreeMap<NodeId, String>,
    #[serde(skip)]
    table: Option<SlotTable>,
    /// The table once the migration finishes.
    #[serde(skip)]
    target: Option<SlotTable>,
}

/// The encoded form of [`ClusterMap`]: the same fields less the tables.
#[derive(Deserialize)]
struct MapState {
    version: u64,
    vnodes: u32,
    nodes: BTreeMap<NodeId, NodeInfo>,
    shards: BTreeMap<ShardId, ShardInfo>,
    ring: Vec<ShardId>,
    migration: Option<Migration>,
    gateways: BTreeMap<NodeId, String>,
}

impl TryFrom<MapState> for ClusterMap {
    type Error = MapError;

    /// A decoded map is checked like a built one: a bad snapshot must not
    /// route keys.
    fn try_from(state: MapState) -> Result<ClusterMap, MapError> {
        let mut map = ClusterMap {
            version: state.version,
            vnodes: state.vnodes,
            nodes: state.nodes,
            shards: state.shards,
            ring: state.ring,
            migration: state.migration,
            gateways: state.gateways,
            table: None,
            target: None,
        };
        map.check()?;
        map.table = table_of(&map.ring, map.vnodes)?;
        map.target = match &map.migration {
            Some(m) => table_of(&m.ring, m.vnodes)?,
            None => None,
        };
        Ok(map)
    }
}

/// A map as layout-4 snapshots (`strsnap4`) carry it: no node has a
/// gateway address.
#[derive(Debug, Deserialize)]
#[serde(try_from = "MapStateV4")]
pub struct MapV4(pub ClusterMap);

#[derive(Deserialize)]
struct MapStateV4 {
    version: u64,
    vnodes: u32,
    nodes: BTreeMap<NodeId, NodeInfo>,
    shards: BTreeMap<ShardId, ShardInfo>,
    ring: Vec<ShardId>,
    migration: Option<Migration>,
}

impl TryFrom<MapStateV4> for MapV4 {
    type Error = MapError;

    fn try_from(old: MapStateV4) -> Result<MapV4, MapError> {
        ClusterMap::try_from(MapState {
            version: old.version,
            vnodes: old.vnodes,
            nodes: old.nodes,
            shards: old.shards,
            ring: old.ring,
            migration: old.migration,
            gateways: BTreeMap::new(),
        })
        .map(MapV4)
    }
}

/// A map as layout-3 snapshots (`strsnap3`) carry it: its migration, if
/// any, keeps the map's V, and no node has a gateway address.
#[derive(Debug, Deserialize)]
#[serde(try_from = "MapStateV3")]
pub struct MapV3(pub ClusterMap);

#[derive(Deserialize)]
struct MapStateV3 {
    version: u64,
    vnodes: u32,
    nodes: BTreeMap<NodeId, NodeInfo>,
    shards: BTreeMap<ShardId, ShardInfo>,
    ring: Vec<ShardId>,
    migration: Option<MigrationV3>,
}

impl TryFrom<MapStateV3> for MapV3 {
    type Error = MapError;

    fn try_from(old: MapStateV3) -> Result<MapV3, MapError> {
        ClusterMap::try_from(MapState {
            migration: old.migration.map(|m| m.with_vnodes(old.vnodes)),
            version: old.version,
            vnodes: old.vnodes,
            nodes: old.nodes,
            shards: old.shards,
            ring: old.ring,
            gateways: BTreeMap::new(),
        })
        .map(MapV3)
    }
}

/// A map as layout-2 snapshots (`strsnap2`) carry it, from before rings
/// could change online: every shard on the ring, no migration.
#[derive(Debug, Deserialize)]
#[serde(try_from = "MapStateV2")]
pub struct MapV2(pub ClusterMap);

#[derive(Deserialize)]
struct MapStateV2 {
    version: u64,
    vnodes: u32,
    nodes: BTreeMap<NodeId, NodeInfo>,
    shards: BTreeMap<ShardId, ShardInfo>,
}

impl TryFrom<MapStateV2> for MapV2 {
    type Error = MapError;

    fn try_from(old: MapStateV2) -> Result<MapV2, MapError> {
        ClusterMap::try_from(MapState {
            ring: old.shards.keys().copied().collect(),
            version: old.version,
            vnodes: old.vnodes,
            nodes: old.nodes,
            shards: old.shards,
            migration: None,
            gateways: BTreeMap::new(),
        })
        .map(MapV2)
    }
}

/// A map as layout-1 snapshots (`strsnap1`) carry it, from before shards
/// had in-sync sets: read back with every in-sync set empty, which is what
/// replaying the commands it stands for gives.
#[derive(Debug, Deserialize)]
#[serde(try_from = "MapStateV1")]
pub struct MapV1(pub ClusterMap);

#[derive(Deserialize)]
struct MapStateV1 {
    version: u64,
    vnodes: u32,
    nodes: BTreeMap<NodeId, NodeInfo>,
    shards: BTreeMap<ShardId, ShardInfoV1>,
}

#[derive(Deserialize)]
struct ShardInfoV1 {
    primary: NodeId,
    replicas: Vec<NodeId>,
    epoch: u64,
}

impl TryFrom<MapStateV1> for MapV1 {
    type Error = MapError;

    fn try_from(old: MapStateV1) -> Result<MapV1, MapError> {
        let shards = old.shards.into_iter().map(|(id, s)| {
            let shard = ShardInfo {
                primary: s.primary,
                replicas: s.replicas,
                epoch: s.epoch,
                in_sync: Vec::new(),
            };
            (id, shard)
        });
        let shards: BTreeMap<ShardId, ShardInfo> = shards.collect();
        ClusterMap::try_from(MapState {
            ring: shards.keys().copied().collect(),
            version: old.version,
            vnodes: old.vnodes,
            nodes: old.nodes,
            shards,
            migration: None,
            gateways: BTreeMap::new(),
        })
        .map(MapV1)
    }
}

impl Default for ClusterMap {
    fn default() -> ClusterMap {
        ClusterMap::new()
    }
}

impl ClusterMap {
    /// The map before any command: version 0, nothing created.
    pub fn new() -> ClusterMap {
        ClusterMap {
            version: 0,
            vnodes: 0,
            nodes: BTreeMap::new(),
            shards: BTreeMap::new(),
            ring: Vec::new(),
            migration: None,
            gateways: BTreeMap::new(),
            table: None,
            target: None,
        }
    }

    /// How many commands have taken effect.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Virtual nodes per shard; 0 before [`MapCommand::Create`].
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeInfo> {
        &self.nodes
    }

    pub fn shards(&self) -> &BTreeMap<ShardId, ShardInfo> {
        &self.shards
    }

    /// The owner of every slot, once there is a shard.
    pub fn slot_table(&self) -> Option<&SlotTable> {
        self.table.as_ref()
    }

    /// The shards on the ring (owning slots), in id order.
    pub fn ring(&self) -> &[ShardId] {
        &self.ring
    }

    /// The migration in progress, if any.
    pub fn migration(&self) -> Option<&Migration> {
        self.migration.as_ref()
    }

    /// Where `node`'s RESP gateway serves, if it has one.
    pub fn gateway(&self, node: NodeId) -> Option<&str> {
        self.gateways.get(&node).map(String::as_str)
    }

    /// Where `slot` moves in the migration in progress: `(from, to)`.
    pub fn moving(&self, slot: Slot) -> Option<(ShardId, ShardId)> {
        let (from, to) = (
            self.table.as_ref()?.owner(slot),
            self.target.as_ref()?.owner(slot),
        );
        (from != to).then_some((from, to))
    }

    /// Every moving slot as `(slot, from, to)`, in slot order.
    pub fn moves(&self) -> Vec<(Slot, ShardId, ShardId)> {
        Slot::all()
            .filter_map(|slot| self.moving(slot).map(|(from, to)| (slot, from, to)))
            .collect()
    }

    /// The shards receiving slots in the migration in progress, in id order.
    pub fn receivers(&self) -> Vec<ShardId> {
        let mut out: Vec<ShardId> = self.moves().into_iter().map(|(_, _, to)| to).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The shard owning `key` and that shard's primary.
    pub fn owner_of_key(&self, key: &[u8]) -> Option<(ShardId, &NodeInfo)> {
        let shard = self.table.as_ref()?.owner(key_slot(key));
        let primary = self.shards.get(&shard)?.primary;
        Some((shard, self.nodes.get(&primary)?))
    }

    /// Applies `cmd`, raising the version by one, but for
    /// [`MapCommand::SetInSync`]: an in-sync set moves no key and no role,
    /// and clients, which follow the version, need no new map for it. On
    /// an error the map is exactly as before.
    ///
    /// # Errors
    ///
    /// [`MapError`] saying why the command does not fit the map.
    pub fn apply(&mut self, cmd: MapCommand) -> Result<(), MapError> {
        let routed = !matches!(cmd, MapCommand::SetInSync { .. });
        match cmd {
            MapCommand::Create { vnodes } => self.create(vnodes)?,
            MapCommand::AddNode { id, info } => self.add_node(id, info)?,
            MapCommand::RemoveNode { id } => self.remove_node(id)?,
            MapCommand::AddShard { id, primary, info } => self.add_shard(id, primary, info)?,
            MapCommand::RemoveShard { id } => self.remove_shard(id)?,
            MapCommand::SetPrimary { shard, node } => self.set_primary(shard, node)?,
            MapCommand::SetInSync {
                shard,
                epoch,
                in_sync,
            } => self.set_in_sync(shard, epoch, in_sync)?,
            MapCommand::JoinShard { id, primary, info } => self.join_shard(id, primary, info)?,
            MapCommand::StartMigration { ring } => self.start_migration(ring)?,
            MapCommand::ImportReady { id, shard, epoch } => {
                self.import_step(id, shard, epoch, false)?;
            }
            MapCommand::ImportDone { id, shard, epoch } => {
                self.import_step(id, shard, epoch, true)?;
            }
            MapCommand::AbortMigration { id } => self.abort_migration(id)?,
            MapCommand::Rebalance { vnodes } => self.rebalance(vnodes)?,
            MapCommand::SetGateway { node, addr } => self.set_gateway(node, addr)?,
        }
        // A node that left takes its gateway with it.
        let nodes = &self.nodes;
        self.gateways.retain(|node, _| nodes.contains_key(node));
        if routed {
            self.version += 1;
        }
        Ok(())
    }

    fn create(&mut self, vnodes: u32) -> Result<(), MapError> {
        if self.vnodes != 0 {
            return Err(MapError::AlreadyCreated);
        }
        if !(1..=MAX_VNODES).contains(&vnodes) {
            return Err(MapError::VnodesOutOfRange(vnodes));
        }
        self.vnodes = vnodes;
        Ok(())
    }

    fn created(&self) -> Result<(), MapError> {
        if self.vnodes == 0 {
            return Err(MapError::NotCreated);
        }
        Ok(())
    }

    /// Checks that `id` is free and names `info.name`.
    fn check_new_node(&self, id: NodeId, info: &NodeInfo) -> Result<(), MapError> {
        if self.nodes.contains_key(&id) {
            return Err(MapError::DuplicateNode { node: id });
        }
        if NodeId::of_name(&info.name) != id {
            return Err(MapError::IdNotOfName {
                node: id,
                name: info.name.clone(),
            });
        }
        Ok(())
    }

    fn add_node(&mut self, id: NodeId, info: NodeInfo) -> Result<(), MapError> {
        self.created()?;
        self.check_new_node(id, &info)?;
        self.shard_mut(info.shard)?.replicas.push(id);
        self.nodes.insert(id, info);
        Ok(())
    }

    fn remove_node(&mut self, id: NodeId) -> Result<(), MapError> {
        self.created()?;
        let info = self
            .nodes
            .get(&id)
            .ok_or(MapError::UnknownNode { node: id })?;
        let shard_id = info.shard;
        let shard = self.shard_mut(shard_id)?;
        if shard.primary == id {
            return Err(if shard.replicas.is_empty() {
                MapError::LastCopy {
                    node: id,
                    shard: shard_id,
                }
            } else {
                MapError::RemovingPrimary {
                    node: id,
                    shard: shard_id,
                }
            });
        }
        shard.replicas.retain(|&replica| replica != id);
        shard.in_sync.retain(|&replica| replica != id);
        self.nodes.remove(&id);
        Ok(())
    }

    fn add_shard(&mut self, id: ShardId, primary: NodeId, info: NodeInfo) -> Result<(), MapError> {
        self.check_new_shard(id, primary, &info)?;
        if let Some(m) = &self.migration {
            return Err(MapError::MigrationInProgress { id: m.id });
        }
        let mut ring = self.ring.clone();
        ring.push(id);
        ring.sort_unstable();
        // Built before anything changes: the last step that could fail.
        let table = table_of(&ring, self.vnodes)?;
        self.insert_shard(id, primary, info);
        self.ring = ring;
        self.table = table;
        Ok(())
    }

    /// Checks a new shard `id` with primary `primary` described by `info`.
    fn check_new_shard(
        &self,
        id: ShardId,
        primary: NodeId,
        info: &NodeInfo,
    ) -> Result<(), MapError> {
        self.created()?;
        if self.shards.contains_key(&id) {
            return Err(MapError::DuplicateShard { shard: id });
        }
        self.check_new_node(primary, info)?;
        if info.shard != id {
            return Err(MapError::ShardMismatch {
                node: primary,
                declared: info.shard,
                shard: id,
            });
        }
        Ok(())
    }

    fn insert_shard(&mut self, id: ShardId, primary: NodeId, info: NodeInfo) {
        self.shards.insert(
            id,
            ShardInfo {
                primary,
                replicas: Vec::new(),
                epoch: 1,
                in_sync: Vec::new(),
            },
        );
        self.nodes.insert(primary, info);
    }

    fn join_shard(&mut self, id: ShardId, primary: NodeId, info: NodeInfo) -> Result<(), MapError> {
        self.check_new_shard(id, primary, &info)?;
        if self.ring.is_empty() {
            // Nothing to take slots from: a first shard is added on the ring.
            return Err(MapError::EmptyRing);
        }
        self.insert_shard(id, primary, info);
        Ok(())
    }

    fn start_migration(&mut self, mut ring: Vec<ShardId>) -> Result<(), MapError> {
        self.created()?;
        if let Some(m) = &self.migration {
            return Err(MapError::MigrationInProgress { id: m.id });
        }
        ring.sort_unstable();
        ring.dedup();
        if let Some(&shard) = ring.iter().find(|s| !self.shards.contains_key(s)) {
            return Err(MapError::UnknownShard { shard });
        }
        if ring == self.ring {
            return Err(MapError::NothingMoves {
                ring: ring.iter().map(|s| s.0).collect(),
            });
        }
        self.start(ring, self.vnodes)
    }

    fn set_gateway(&mut self, node: NodeId, addr: String) -> Result<(), MapError> {
        self.created()?;
        if !self.nodes.contains_key(&node) {
            return Err(MapError::UnknownNode { node });
        }
        if addr.is_empty() {
            self.gateways.remove(&node);
        } else {
            self.gateways.insert(node, addr);
        }
        Ok(())
    }

    fn rebalance(&mut self, vnodes: u32) -> Result<(), MapError> {
        self.created()?;
        if !(1..=MAX_VNODES).contains(&vnodes) {
            return Err(MapError::VnodesOutOfRange(vnodes));
        }
        if let Some(m) = &self.migration {
            return Err(MapError::MigrationInProgress { id: m.id });
        }
        if table_of(&self.ring, vnodes)? == self.table {
            return Err(MapError::NothingMovesAt { vnodes });
        }
        self.start(self.ring.clone(), vnodes)
    }

    /// Starts the migration to `ring` (sorted, of known shards) with
    /// `vnodes` points per shard.
    fn start(&mut self, ring: Vec<ShardId>, vnodes: u32) -> Result<(), MapError> {
        if ring.is_empty() || self.ring.is_empty() {
            return Err(MapError::EmptyRing);
        }
        self.target = table_of(&ring, vnodes)?;
        self.migration = Some(Migration {
            id: self.version + 1,
            ring,
            ready: Vec::new(),
            cutover: false,
            done: Vec::new(),
            vnodes,
        });
        self.advance_migration();
        Ok(())
    }

    /// The migration `id`, if it is the one in progress.
    fn migration_of(&self, id: u64) -> Result<&Migration, MapError> {
        self.migration
            .as_ref()
            .filter(|m| m.id == id)
            .ok_or(MapError::NoSuchMigration { id })
    }

    /// Marks receiving shard `shard` (primary of `epoch`) ready, or done.
    fn import_step(
        &mut self,
        id: u64,
        shard: ShardId,
        epoch: u64,
        done: bool,
    ) -> Result<(), MapError> {
        self.created()?;
        let cutover = self.migration_of(id)?.cutover;
        let current = self.shard(shard)?.epoch;
        if current != epoch {
            return Err(MapError::StaleEpoch {
                shard,
                asked: epoch,
                current,
            });
        }
        if !self.receivers().contains(&shard) {
            return Err(MapError::NotReceiving { id, shard });
        }
        if done && !cutover {
            return Err(MapError::NotCutOver { id, shard });
        }
        if let Some(m) = &mut self.migration {
            let list = if done { &mut m.done } else { &mut m.ready };
            list.push(shard);
            list.sort_unstable();
            list.dedup();
        }
        self.advance_migration();
        Ok(())
    }

    /// Cuts over once every receiver is ready, and finishes once every one
    /// is done: the slots change owner, and shards off the new ring leave
    /// with their nodes.
    fn advance_migration(&mut self) {
        let receivers = self.receivers();
        let Some(m) = &mut self.migration else {
            return;
        };
        let all = |list: &[ShardId]| receivers.iter().all(|r| list.contains(r));
        if !m.cutover && all(&m.ready) {
            m.cutover = true;
        }
        if !(m.cutover && all(&m.done)) {
            return;
        }
        let (ring, vnodes) = (m.ring.clone(), m.vnodes);
        let leaving: Vec<ShardId> = self
            .ring
            .iter()
            .copied()
            .filter(|s| !ring.contains(s))
            .collect();
        for id in leaving {
            if let Some(shard) = self.shards.remove(&id) {
                for node in std::iter::once(shard.primary).chain(shard.replicas) {
                    self.nodes.remove(&node);
                }
            }
        }
        self.ring = ring;
        self.vnodes = vnodes;
        self.table = self.target.take();
        self.migration = None;
    }

    fn abort_migration(&mut self, id: u64) -> Result<(), MapError> {
        self.created()?;
        self.migration_of(id)?;
        self.migration = None;
        self.target = None;
        Ok(())
    }

    fn remove_shard(&mut self, id: ShardId) -> Result<(), MapError> {
        self.created()?;
        let shard = self.shard(id)?;
        if !self.ring.contains(&id) {
            // A joining shard owns nothing: it goes with its nodes, unless
            // a migration is bringing it on.
            if let Some(m) = self.migration.as_ref().filter(|m| m.ring.contains(&id)) {
                return Err(MapError::MigrationInProgress { id: m.id });
            }
            let nodes: Vec<NodeId> = std::iter::once(shard.primary)
                .chain(shard.replicas.iter().copied())
                .collect();
            for node in nodes {
                self.nodes.remove(&node);
            }
            self.shards.remove(&id);
            return Ok(());
        }
        if let Some(m) = &self.migration {
            return Err(MapError::MigrationInProgress { id: m.id });
        }
        if !shard.replicas.is_empty() {
            return Err(MapError::ShardHasNodes {
                shard: id,
                replicas: shard.replicas.len(),
            });
        }
        if self.ring.len() == 1 {
            return Err(MapError::LastShard { shard: id });
        }
        let primary = shard.primary;
        let ring: Vec<ShardId> = self.ring.iter().copied().filter(|&s| s != id).collect();
        let table = table_of(&ring, self.vnodes)?;
        self.shards.remove(&id);
        self.nodes.remove(&primary);
        self.ring = ring;
        self.table = table;
        Ok(())
    }

    fn set_primary(&mut self, shard_id: ShardId, node: NodeId) -> Result<(), MapError> {
        self.created()?;
        if !self.nodes.contains_key(&node) {
            return Err(MapError::UnknownNode { node });
        }
        let shard = self.shard_mut(shard_id)?;
        if shard.primary == node {
            return Err(MapError::AlreadyPrimary {
                node,
                shard: shard_id,
            });
        }
        let Some(at) = shard.replicas.iter().position(|&r| r == node) else {
            return Err(MapError::NotInShard {
                node,
                shard: shard_id,
            });
        };
        shard.replicas[at] = shard.primary;
        shard.in_sync.retain(|&r| r != node);
        shard.primary = node;
        shard.epoch += 1;
        Ok(())
    }

    fn set_in_sync(
        &mut self,
        shard_id: ShardId,
        epoch: u64,
        mut in_sync: Vec<NodeId>,
    ) -> Result<(), MapError> {
        self.created()?;
        let shard = self.shard_mut(shard_id)?;
        if shard.epoch != epoch {
            return Err(MapError::StaleEpoch {
                shard: shard_id,
                asked: epoch,
                current: shard.epoch,
            });
        }
        if let Some(&node) = in_sync.iter().find(|n| !shard.replicas.contains(n)) {
            return Err(MapError::NotInShard {
                node,
                shard: shard_id,
            });
        }
        in_sync.sort_unstable();
        in_sync.dedup();
        shard.in_sync = in_sync;
        Ok(())
    }

    fn shard(&self, shard: ShardId) -> Result<&ShardInfo, MapError> {
        self.shards
            .get(&shard)
            .ok_or(MapError::UnknownShard { shard })
    }

    fn shard_mut(&mut self, shard: ShardId) -> Result<&mut ShardInfo, MapError> {
        self.shards
            .get_mut(&shard)
            .ok_or(MapError::UnknownShard { shard })
    }

    /// The invariants every reachable map keeps; checked on decoding.
    fn check(&self) -> Result<(), MapError> {
        let bad = |what: String| Err(MapError::Inconsistent(what));
        if self.vnodes == 0 && !(self.nodes.is_empty() && self.shards.is_empty()) {
            return bad("nodes or shards before creation".into());
        }
        if self.vnodes > MAX_VNODES {
            return Err(MapError::VnodesOutOfRange(self.vnodes));
        }
        let mut listed = std::collections::BTreeSet::new();
        for (&shard_id, shard) in &self.shards {
            let sorted = shard.in_sync.windows(2).all(|w| w[0] < w[1]);
            if !sorted || shard.in_sync.iter().any(|n| !shard.replicas.contains(n)) {
                return bad(format!(
                    "shard {shard_id}'s in-sync set is not of its replicas"
                ));
            }
            for &node in std::iter::once(&shard.primary).chain(&shard.replicas) {
                let in_shard = self.nodes.get(&node).is_some_and(|i| i.shard == shard_id);
                if !in_shard || !listed.insert(node) {
                    return bad(format!("shard {shard_id} lists node {} wrongly", node.0));
                }
            }
        }
        let sorted = |list: &[ShardId]| list.windows(2).all(|w| w[0] < w[1]);
        if !sorted(&self.ring) || self.ring.iter().any(|s| !self.shards.contains_key(s)) {
            return bad("the ring lists a shard wrongly".into());
        }
        if let Some(m) = &self.migration {
            let within = |list: &[ShardId]| sorted(list) && list.iter().all(|s| m.ring.contains(s));
            let known = m.ring.iter().all(|s| self.shards.contains_key(s));
            if m.ring.is_empty()
                || !(1..=MAX_VNODES).contains(&m.vnodes)
                || !known
                || !within(&m.ring)
                || !within(&m.ready)
                || !within(&m.done)
            {
                return bad("the migration lists a shard wrongly".into());
            }
        }
        if listed.len() != self.nodes.len() {
            return bad("a node is listed by no shard".into());
        }
        if self.gateways.keys().any(|n| !self.nodes.contains_key(n)) {
            return bad("a gateway of an unknown node".into());
        }
        if let Some((&id, _)) = self
            .nodes
            .iter()
            .find(|(id, i)| NodeId::of_name(&i.name) != **id)
        {
            return bad(format!("node {} is not named by its id", id.0));
        }
        Ok(())
    }
}

/// The slot table of shards `ids` with `vnodes` points each; none for no
/// shards.
fn table_of(ids: &[ShardId], vnodes: u32) -> Result<Option<SlotTable>, MapError> {
    if ids.is_empty() {
        return Ok(None);
    }
    Ok(Some(Ring::new(ids, vnodes)?.slot_table()))
}

#[cfg(test)]
#[path = "map_tests.rs"]
mod tests;
