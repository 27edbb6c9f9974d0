use proptest::prelude::*;

use super::*;
use crate::cluster::ring::Ring;
use crate::cluster::slot::SLOTS;

fn info(name: &str, shard: u32) -> NodeInfo {
    NodeInfo {
        name: name.to_string(),
        client_addr: format!("{name}:7000"),
        link_addr: format!("{name}:7001"),
        shard: ShardId(shard),
    }
}

fn id(name: &str) -> NodeId {
    NodeId::of_name(name)
}

fn add_shard(shard: u32, name: &str) -> MapCommand {
    MapCommand::AddShard {
        id: ShardId(shard),
        primary: id(name),
        info: info(name, shard),
    }
}

fn add_node(name: &str, shard: u32) -> MapCommand {
    MapCommand::AddNode {
        id: id(name),
        info: info(name, shard),
    }
}

/// Created with V = 16, shards 1 (a, a2) and 2 (b).
fn sample() -> ClusterMap {
    let mut map = ClusterMap::new();
    for cmd in [
        MapCommand::Create { vnodes: 16 },
        add_shard(1, "a"),
        add_node("a2", 1),
        add_shard(2, "b"),
    ] {
        map.apply(cmd).unwrap();
    }
    map
}

/// Applies `cmd`, expecting `err` and no change at all.
fn refused(map: &mut ClusterMap, cmd: MapCommand, err: MapError) {
    let before = map.clone();
    assert_eq!(map.apply(cmd), Err(err));
    assert_eq!(*map, before);
}

#[test]
fn commands_before_create_are_refused() {
    let mut map = ClusterMap::new();
    refused(&mut map, add_shard(1, "a"), MapError::NotCreated);
    refused(
        &mut map,
        MapCommand::RemoveShard { id: ShardId(1) },
        MapError::NotCreated,
    );
    assert!(map.slot_table().is_none());
    assert_eq!(map.owner_of_key(b"foo"), None);
}

#[test]
fn create_checks_v_and_comes_once() {
    let mut map = ClusterMap::new();
    refused(
        &mut map,
        MapCommand::Create { vnodes: 0 },
        MapError::VnodesOutOfRange(0),
    );
    refused(
        &mut map,
        MapCommand::Create {
            vnodes: MAX_VNODES + 1,
        },
        MapError::VnodesOutOfRange(MAX_VNODES + 1),
    );
    map.apply(MapCommand::Create { vnodes: MAX_VNODES })
        .unwrap();
    assert_eq!((map.version(), map.vnodes()), (1, MAX_VNODES));
    refused(
        &mut map,
        MapCommand::Create { vnodes: 8 },
        MapError::AlreadyCreated,
    );
}

#[test]
fn the_sample_map_routes_keys_to_primaries() {
    let map = sample();
    assert_eq!(map.version(), 4);
    let ring = Ring::new(&[ShardId(1), ShardId(2)], 16).unwrap();
    assert_eq!(map.slot_table(), Some(&ring.slot_table()));
    for key in [b"foo".as_slice(), b"bar", b"hello", b"{user1000}.following"] {
        let shard = ring.owner(key_slot(key));
        let (owner, primary) = map.owner_of_key(key).unwrap();
        assert_eq!(owner, shard);
        let expected = if shard == ShardId(1) { "a" } else { "b" };
        assert_eq!(primary.name, expected);
    }
    assert_eq!(map.shards()[&ShardId(1)].replicas, vec![id("a2")]);
    map.check().unwrap();
}

#[test]
fn nodes_are_checked_on_joining() {
    let mut map = sample();
    refused(
        &mut map,
        add_node("a2", 2),
        MapError::DuplicateNode { node: id("a2") },
    );
    refused(
        &mut map,
        add_node("c", 9),
        MapError::UnknownShard { shard: ShardId(9) },
    );
    let mut wrong = add_node("c", 1);
    if let MapCommand::AddNode { id: node, .. } = &mut wrong {
        *node = id("d");
    }
    refused(
        &mut map,
        wrong,
        MapError::IdNotOfName {
            node: id("d"),
            name: "c".into(),
        },
    );
}

#[test]
fn shards_are_checked_on_joining() {
    let mut map = sample();
    refused(
        &mut map,
        add_shard(2, "c"),
        MapError::DuplicateShard { shard: ShardId(2) },
    );
    refused(
        &mut map,
        add_shard(3, "b"),
        MapError::DuplicateNode { node: id("b") },
    );
    refused(
        &mut map,
        MapCommand::AddShard {
            id: ShardId(3),
            primary: id("c"),
            info: info("c", 4),
        },
        MapError::ShardMismatch {
            node: id("c"),
            declared: ShardId(4),
            shard: ShardId(3),
        },
    );
}

#[test]
fn a_shard_keeps_a_copy_and_a_primary() {
    let mut map = sample();
    let remove = |name| MapCommand::RemoveNode { id: id(name) };
    refused(
        &mut map,
        remove("b"),
        MapError::LastCopy {
            node: id("b"),
            shard: ShardId(2),
        },
    );
    refused(
        &mut map,
        remove("a"),
        MapError::RemovingPrimary {
            node: id("a"),
            shard: ShardId(1),
        },
    );
    refused(
        &mut map,
        remove("zz"),
        MapError::UnknownNode { node: id("zz") },
    );
    map.apply(remove("a2")).unwrap();
    assert!(!map.nodes().contains_key(&id("a2")));
    assert!(map.shards()[&ShardId(1)].replicas.is_empty());
    map.check().unwrap();
}

#[test]
fn set_primary_swaps_roles_and_bumps_the_epoch() {
    let mut map = sample();
    let set = |shard, name| MapCommand::SetPrimary {
        shard: ShardId(shard),
        node: id(name),
    };
    refused(
        &mut map,
        set(2, "a2"),
        MapError::NotInShard {
            node: id("a2"),
            shard: ShardId(2),
        },
    );
    refused(
        &mut map,
        set(1, "a"),
        MapError::AlreadyPrimary {
            node: id("a"),
            shard: ShardId(1),
        },
    );
    refused(
        &mut map,
        set(3, "a"),
        MapError::UnknownShard { shard: ShardId(3) },
    );
    map.apply(set(1, "a2")).unwrap();
    let shard = &map.shards()[&ShardId(1)];
    assert_eq!((shard.primary, shard.epoch), (id("a2"), 2));
    assert_eq!(shard.replicas, vec![id("a")]);
    map.check().unwrap();
}

#[test]
fn removing_shards() {
    let mut map = sample();
    let remove = |shard| MapCommand::RemoveShard { id: ShardId(shard) };
    refused(
        &mut map,
        remove(1),
        MapError::ShardHasNodes {
            shard: ShardId(1),
            replicas: 1,
        },
    );
    refused(
        &mut map,
        remove(7),
        MapError::UnknownShard { shard: ShardId(7) },
    );
    map.apply(remove(2)).unwrap();
    assert!(!map.nodes().contains_key(&id("b")));
    let table = map.slot_table().unwrap();
    assert_eq!(table.shares().get(&ShardId(1)), Some(&u32::from(SLOTS)));
    refused(
        &mut map,
        MapCommand::RemoveNode { id: id("b") },
        MapError::UnknownNode { node: id("b") },
    );
}

#[test]
fn the_last_shard_stays() {
    let mut map = ClusterMap::new();
    map.apply(MapCommand::Create { vnodes: 4 }).unwrap();
    map.apply(add_shard(5, "solo")).unwrap();
    refused(
        &mut map,
        MapCommand::RemoveShard { id: ShardId(5) },
        MapError::LastShard { shard: ShardId(5) },
    );
}

#[test]
fn serde_round_trip_rebuilds_the_table() {
    let map = sample();
    let bytes = postcard::to_stdvec(&map).unwrap();
    let back: ClusterMap = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, map);
    assert!(back.slot_table().is_some());
    let empty: ClusterMap =
        postcard::from_bytes(&postcard::to_stdvec(&ClusterMap::new()).unwrap()).unwrap();
    assert_eq!(empty, ClusterMap::new());
}

#[test]
fn inconsistent_encodings_are_refused() {
    let mut map = sample();
    if let Some(shard) = map.shards.get_mut(&ShardId(2)) {
        shard.replicas.push(id("a2"));
    }
    let bytes = postcard::to_stdvec(&map).unwrap();
    assert!(postcard::from_bytes::<ClusterMap>(&bytes).is_err());
}

#[test]
fn commands_round_trip() {
    for cmd in [
        MapCommand::Create { vnodes: 256 },
        add_node("n", 1),
        add_shard(3, "m"),
        MapCommand::SetPrimary {
            shard: ShardId(3),
            node: id("m"),
        },
    ] {
        let bytes = postcard::to_stdvec(&cmd).unwrap();
        assert_eq!(postcard::from_bytes::<MapCommand>(&bytes).unwrap(), cmd);
    }
}

/// Commands over a few names, shards and V values, so that a sequence
/// mixes successes with every kind of refusal.
fn command() -> impl Strategy<Value = MapCommand> {
    let name = (0u8..6).prop_map(|n| format!("node-{n}"));
    let shard = 0u32..4;
    prop_oneof![
        1 => prop_oneof![Just(0u32), 1u32..=8, Just(MAX_VNODES + 1)]
            .prop_map(|vnodes| MapCommand::Create { vnodes }),
        6 => (name.clone(), shard.clone()).prop_map(|(n, s)| add_node(&n, s)),
        2 => name.clone().prop_map(|n| MapCommand::RemoveNode { id: id(&n) }),
        3 => (shard.clone(), name.clone(), shard.clone())
            .prop_map(|(s, n, declared)| MapCommand::AddShard {
                id: ShardId(s),
                primary: id(&n),
                // Now and then the node names another shard than its own.
                info: info(&n, if declared == 0 { declared } else { s }),
            }),
        2 => shard.clone().prop_map(|s| MapCommand::RemoveShard { id: ShardId(s) }),
        4 => (shard, name).prop_map(|(s, n)| MapCommand::SetPrimary {
            shard: ShardId(s),
            node: id(&n),
        }),
    ]
}

/// After a successful command: slots moved only as the ring allows.
fn check_moves(before: &ClusterMap, after: &ClusterMap, cmd: &MapCommand) {
    let (Some(old), Some(new)) = (before.slot_table(), after.slot_table()) else {
        return;
    };
    for ((slot, was), (_, is)) in old.iter().zip(new.iter()) {
        match cmd {
            MapCommand::AddShard { id, .. } => {
                assert!(is == was || is == *id, "slot {slot} moved {was} -> {is}");
            }
            MapCommand::RemoveShard { id } => {
                assert!(is == was || was == *id, "slot {slot} moved {was} -> {is}");
            }
            _ => assert_eq!(is, was, "slot {slot} moved without a shard change"),
        }
    }
}

/// What holds after every command, refused or not.
fn check_invariants(map: &ClusterMap) {
    map.check().unwrap();
    for (&id, shard) in map.shards() {
        assert_eq!(map.nodes().get(&shard.primary).map(|n| n.shard), Some(id));
    }
    match map.slot_table() {
        None => assert!(map.shards().is_empty()),
        Some(table) => {
            assert_eq!(table.iter().len(), usize::from(SLOTS));
            for (_, owner) in table.iter() {
                assert!(map.shards().contains_key(&owner));
            }
            let ids: Vec<ShardId> = map.shards().keys().copied().collect();
            assert_eq!(*table, Ring::new(&ids, map.vnodes()).unwrap().slot_table());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5742_a7a0),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_command_sequences_keep_the_map_sound(
        create in proptest::option::weighted(0.9, 1u32..=8),
        cmds in proptest::collection::vec(command(), 1..60),
    ) {
        let mut map = ClusterMap::new();
        // Most sequences start created, so the later commands get to work.
        if let Some(vnodes) = create {
            map.apply(MapCommand::Create { vnodes }).unwrap();
        }
        let mut had_shard = false;
        for cmd in cmds {
            let before = map.clone();
            match map.apply(cmd.clone()) {
                Ok(()) => {
                    prop_assert_eq!(map.version(), before.version() + 1);
                    check_moves(&before, &map, &cmd);
                }
                Err(_) => prop_assert_eq!(&map, &before),
            }
            check_invariants(&map);
            had_shard |= !map.shards().is_empty();
            prop_assert_eq!(map.slot_table().is_some(), had_shard);
        }
        let bytes = postcard::to_stdvec(&map).unwrap();
        prop_assert_eq!(postcard::from_bytes::<ClusterMap>(&bytes).unwrap(), map);
    }
}

#[test]
fn in_sync_sets_are_of_the_shards_replicas_and_of_the_current_epoch() {
    let mut map = ClusterMap::new();
    map.apply(MapCommand::Create { vnodes: 4 }).unwrap();
    let info = |name: &str| NodeInfo {
        name: name.into(),
        client_addr: format!("{name}:1"),
        link_addr: format!("{name}:2"),
        shard: ShardId(1),
    };
    let (p, r1, r2) = (
        NodeId::of_name("p"),
        NodeId::of_name("r1"),
        NodeId::of_name("r2"),
    );
    map.apply(MapCommand::AddShard {
        id: ShardId(1),
        primary: p,
        info: info("p"),
    })
    .unwrap();
    for (id, name) in [(r1, "r1"), (r2, "r2")] {
        map.apply(MapCommand::AddNode {
            id,
            info: info(name),
        })
        .unwrap();
    }
    let shard = |map: &ClusterMap| map.shards()[&ShardId(1)].clone();
    assert!(
        shard(&map).in_sync.is_empty(),
        "a new replica is not in sync yet"
    );
    let set = |epoch, in_sync| MapCommand::SetInSync {
        shard: ShardId(1),
        epoch,
        in_sync,
    };
    let version = map.version();
    map.apply(set(1, vec![r2, r1, r2])).unwrap();
    let mut both = vec![r1, r2];
    both.sort_unstable();
    assert_eq!(shard(&map).in_sync, both, "sorted, once each");
    assert_eq!(map.version(), version, "clients need no new map for it");
    let before = map.clone();
    assert!(matches!(
        map.apply(set(1, vec![p])),
        Err(MapError::NotInShard { .. })
    ));
    assert!(matches!(
        map.apply(set(2, vec![r1])),
        Err(MapError::StaleEpoch { current: 1, .. })
    ));
    assert_eq!(map, before, "a refused change leaves no trace");
    // A promotion takes the new primary out; the old one is not in sync
    // until it catches up.
    map.apply(MapCommand::SetPrimary {
        shard: ShardId(1),
        node: r1,
    })
    .unwrap();
    assert_eq!(shard(&map).in_sync, vec![r2]);
    assert!(
        matches!(
            map.apply(set(1, vec![])),
            Err(MapError::StaleEpoch {
                asked: 1,
                current: 2,
                ..
            })
        ),
        "the deposed primary's request"
    );
    map.apply(MapCommand::RemoveNode { id: r2 }).unwrap();
    assert!(shard(&map).in_sync.is_empty());
    // The encoding round-trips, and a decoded map is checked.
    let bytes = postcard::to_stdvec(&map).unwrap();
    assert_eq!(postcard::from_bytes::<ClusterMap>(&bytes).unwrap(), map);
}

fn join_shard(shard: u32, name: &str) -> MapCommand {
    MapCommand::JoinShard {
        id: ShardId(shard),
        primary: id(name),
        info: info(name, shard),
    }
}

fn start(ring: &[u32]) -> MapCommand {
    MapCommand::StartMigration {
        ring: ring.iter().copied().map(ShardId).collect(),
    }
}

fn step(map: &ClusterMap, shard: u32, done: bool) -> MapCommand {
    let id = map.migration().unwrap().id;
    let (shard, epoch) = (ShardId(shard), map.shards()[&ShardId(shard)].epoch);
    if done {
        MapCommand::ImportDone { id, shard, epoch }
    } else {
        MapCommand::ImportReady { id, shard, epoch }
    }
}

#[test]
fn a_joining_shard_owns_nothing_until_its_migration_finishes() {
    let mut map = sample();
    let before = map.slot_table().unwrap().clone();
    map.apply(join_shard(3, "c")).unwrap();
    map.apply(add_node("c2", 3)).unwrap();
    assert_eq!(map.ring(), [ShardId(1), ShardId(2)]);
    assert_eq!(map.slot_table(), Some(&before), "joining moves no slot");
    map.apply(start(&[1, 2, 3])).unwrap();
    let id = map.migration().unwrap().id;
    assert_eq!(id, map.version(), "a migration is named by its version");
    assert_eq!(map.receivers(), [ShardId(3)]);
    let moves = map.moves();
    assert!(!moves.is_empty());
    assert!(
        moves
            .iter()
            .all(|&(_, from, to)| from != ShardId(3) && to == ShardId(3))
    );
    assert_eq!(
        map.slot_table(),
        Some(&before),
        "nothing moves before the end"
    );

    refused(
        &mut map,
        step(&sample_with_3(), 3, true),
        MapError::NotCutOver {
            id,
            shard: ShardId(3),
        },
    );
    let not_receiving = step(&map, 1, false);
    refused(
        &mut map,
        not_receiving,
        MapError::NotReceiving {
            id,
            shard: ShardId(1),
        },
    );
    refused(
        &mut map,
        start(&[1, 2]),
        MapError::MigrationInProgress { id },
    );
    refused(
        &mut map,
        add_shard(4, "d"),
        MapError::MigrationInProgress { id },
    );
    refused(
        &mut map,
        MapCommand::RemoveShard { id: ShardId(3) },
        MapError::MigrationInProgress { id },
    );

    map.apply(step(&map.clone(), 3, false)).unwrap();
    assert!(
        map.migration().unwrap().cutover,
        "the only receiver is ready"
    );
    map.apply(step(&map.clone(), 3, true)).unwrap();
    assert!(map.migration().is_none());
    assert_eq!(map.ring(), [ShardId(1), ShardId(2), ShardId(3)]);
    let after = map.slot_table().unwrap();
    for (slot, from, _) in &moves {
        assert_eq!(after.owner(*slot), ShardId(3));
        assert_eq!(before.owner(*slot), *from);
    }
    assert_eq!(before.moved(after), moves.len());
    let ring = Ring::new(&[ShardId(1), ShardId(2), ShardId(3)], 16).unwrap();
    assert_eq!(*after, ring.slot_table(), "the table is the new ring's");
}

/// `sample()` with shard 3 joining and a migration onto it started, for
/// building commands against.
fn sample_with_3() -> ClusterMap {
    let mut map = sample();
    map.apply(join_shard(3, "c")).unwrap();
    map.apply(add_node("c2", 3)).unwrap();
    map.apply(start(&[1, 2, 3])).unwrap();
    map
}

#[test]
fn removing_a_shard_moves_its_slots_then_drops_it_with_its_nodes() {
    let mut map = sample();
    map.apply(start(&[2])).unwrap();
    assert_eq!(map.receivers(), [ShardId(2)]);
    assert!(map.moves().iter().all(|&(_, from, _)| from == ShardId(1)));
    map.apply(step(&map.clone(), 2, false)).unwrap();
    map.apply(step(&map.clone(), 2, true)).unwrap();
    assert_eq!(map.ring(), [ShardId(2)]);
    assert!(!map.shards().contains_key(&ShardId(1)));
    assert!(!map.nodes().contains_key(&id("a")) && !map.nodes().contains_key(&id("a2")));
    assert!(
        map.slot_table()
            .unwrap()
            .iter()
            .all(|(_, s)| s == ShardId(2))
    );
    assert_eq!(map.owner_of_key(b"foo").unwrap().1.name, "b");
}

#[test]
fn an_aborted_migration_leaves_ownership_alone() {
    let mut map = sample_with_3();
    let before = map.slot_table().unwrap().clone();
    let id = map.migration().unwrap().id;
    map.apply(step(&map.clone(), 3, false)).unwrap();
    refused(
        &mut map,
        MapCommand::AbortMigration { id: id + 1 },
        MapError::NoSuchMigration { id: id + 1 },
    );
    map.apply(MapCommand::AbortMigration { id }).unwrap();
    assert!(map.migration().is_none());
    assert!(map.moving(Slot::new(0).unwrap()).is_none());
    assert_eq!(map.slot_table(), Some(&before));
    // The joining shard can go again, with its nodes.
    map.apply(MapCommand::RemoveShard { id: ShardId(3) })
        .unwrap();
    assert!(!map.nodes().contains_key(&NodeId::of_name("c2")));
    map.check().unwrap();
}

#[test]
fn migration_steps_check_the_epoch_and_the_ring() {
    let mut map = sample_with_3();
    let mid = map.migration().unwrap().id;
    let stale = MapCommand::ImportReady {
        id: mid,
        shard: ShardId(3),
        epoch: 7,
    };
    refused(
        &mut map,
        stale,
        MapError::StaleEpoch {
            shard: ShardId(3),
            asked: 7,
            current: 1,
        },
    );
    let mut fresh = sample();
    refused(
        &mut fresh,
        start(&[1, 2]),
        MapError::NothingMoves { ring: vec![1, 2] },
    );
    refused(&mut fresh, start(&[]), MapError::EmptyRing);
    refused(
        &mut fresh,
        start(&[1, 9]),
        MapError::UnknownShard { shard: ShardId(9) },
    );
    let mut empty = ClusterMap::new();
    empty.apply(MapCommand::Create { vnodes: 4 }).unwrap();
    refused(&mut empty, join_shard(1, "a"), MapError::EmptyRing);
}

#[test]
fn a_map_mid_migration_survives_encoding() {
    let mut map = sample_with_3();
    map.apply(step(&map.clone(), 3, false)).unwrap();
    let bytes = postcard::to_stdvec(&map).unwrap();
    let back: ClusterMap = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, map);
    assert_eq!(back.moves(), map.moves());
    assert!(back.migration().unwrap().cutover);
}

#[test]
fn a_rebalance_moves_slots_between_ring_shards_then_changes_v() {
    let mut map = sample();
    refused(
        &mut map,
        MapCommand::Rebalance { vnodes: 16 },
        MapError::NothingMovesAt { vnodes: 16 },
    );
    refused(
        &mut map,
        MapCommand::Rebalance { vnodes: 0 },
        MapError::VnodesOutOfRange(0),
    );
    let before = map.slot_table().unwrap().clone();
    map.apply(MapCommand::Rebalance { vnodes: 256 }).unwrap();
    let id = map.migration().unwrap().id;
    assert_eq!(map.vnodes(), 16, "V changes only when it finishes");
    assert_eq!(map.slot_table(), Some(&before));
    let moves = map.moves();
    assert!(!moves.is_empty());
    let ring = [ShardId(1), ShardId(2)];
    assert!(
        moves
            .iter()
            .all(|(_, from, to)| ring.contains(from) && ring.contains(to))
    );
    refused(
        &mut map,
        MapCommand::Rebalance { vnodes: 64 },
        MapError::MigrationInProgress { id },
    );
    let receivers = map.receivers();
    for &shard in &receivers {
        map.apply(step(&map.clone(), shard.0, false)).unwrap();
    }
    for &shard in &receivers {
        map.apply(step(&map.clone(), shard.0, true)).unwrap();
    }
    assert!(map.migration().is_none());
    assert_eq!(map.vnodes(), 256);
    assert_eq!(map.ring(), ring);
    let want = Ring::new(&ring, 256).unwrap().slot_table();
    assert_eq!(map.slot_table(), Some(&want));
    assert_eq!(before.moved(&want), moves.len());
}

#[test]
fn a_layout_3_map_reads_its_migration_with_the_maps_v() {
    let mut map = sample_with_3();
    map.apply(step(&map.clone(), 3, false)).unwrap();
    let bytes = postcard::to_stdvec(&map).unwrap();
    // Layout 3 is this without the migration's V (16) and the gateways
    // (none: 00), its last two bytes.
    assert_eq!(bytes[bytes.len() - 2..], [16, 0]);
    let old: MapV3 = postcard::from_bytes(&bytes[..bytes.len() - 2]).unwrap();
    assert_eq!(old.0, map);
}

#[test]
fn gateways_are_set_cleared_and_leave_with_their_node() {
    let mut map = sample();
    let set = |name: &str, addr: &str| MapCommand::SetGateway {
        node: id(name),
        addr: addr.to_string(),
    };
    refused(
        &mut map,
        set("nobody", "x:1"),
        MapError::UnknownNode { node: id("nobody") },
    );
    let before = map.version();
    map.apply(set("a2", "10.0.0.2:6380")).unwrap();
    map.apply(set("b", "10.0.0.3:6380")).unwrap();
    assert_eq!(map.version(), before + 2);
    assert_eq!(map.gateway(id("a2")), Some("10.0.0.2:6380"));
    map.apply(set("b", "")).unwrap();
    assert_eq!(map.gateway(id("b")), None);
    let bytes = postcard::to_stdvec(&map).unwrap();
    assert_eq!(postcard::from_bytes::<ClusterMap>(&bytes).unwrap(), map);
    map.apply(MapCommand::RemoveNode { id: id("a2") }).unwrap();
    assert_eq!(map.gateway(id("a2")), None, "gone with its node");
    map.check().unwrap();
}
