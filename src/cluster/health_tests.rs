use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::cluster::map::{MapCommand, NodeInfo};

const TIMING: HealthTiming = HealthTiming {
    heartbeat_ms: 500,
    lease_ms: 2000,
    failover_timeout_ms: 5000,
};

fn id(name: &str) -> NodeId {
    NodeId::of_name(name)
}

fn info(name: &str, shard: u32) -> NodeInfo {
    NodeInfo {
        name: name.to_string(),
        client_addr: format!("{name}:7000"),
        link_addr: format!("{name}:7001"),
        shard: ShardId(shard),
    }
}

/// Shard 1: primary p, replicas r1 and r2. Shard 2: primary q alone.
fn map() -> ClusterMap {
    let mut map = ClusterMap::new();
    for cmd in [
        MapCommand::Create { vnodes: 16 },
        MapCommand::AddShard {
            id: ShardId(1),
            primary: id("p"),
            info: info("p", 1),
        },
        MapCommand::AddNode {
            id: id("r1"),
            info: info("r1", 1),
        },
        MapCommand::AddNode {
            id: id("r2"),
            info: info("r2", 1),
        },
        MapCommand::AddShard {
            id: ShardId(2),
            primary: id("q"),
            info: info("q", 2),
        },
    ] {
        map.apply(cmd).unwrap();
    }
    map
}

const HISTORY: [u8; 16] = [7; 16];

fn report(name: &str, primary: bool, seq: u64) -> NodeReport {
    NodeReport {
        node: id(name),
        map_version: 5,
        primary,
        repl_id: HISTORY,
        epoch: 1,
        applied_seq: seq,
        full_sync: false,
    }
}

fn all_report(d: &mut Detector, now: u64) {
    d.observe(now, report("p", true, 100));
    d.observe(now, report("r1", false, 90));
    d.observe(now, report("r2", false, 95));
    d.observe(now, report("q", true, 10));
}

#[test]
fn a_silent_primary_is_replaced_by_its_most_advanced_replica() {
    let map = map();
    let mut d = Detector::new(TIMING, 0);
    all_report(&mut d, 1000);
    assert!(
        d.tick(&map, 5999).is_empty(),
        "silent for less than the timeout"
    );
    // Only the replicas go on reporting.
    d.observe(6001, report("r1", false, 90));
    assert_eq!(
        d.tick(&map, 6001),
        vec![(ShardId(1), Err(Waiting::Positions(vec![id("r2")])))],
        "declared at 6000; r2 has not reported since"
    );
    assert!(!d.may_lease(&map, id("p")), "no lease while failing over");
    assert!(d.may_lease(&map, id("q")), "shard 2 is not affected");
    d.observe(6100, report("r2", false, 97));
    d.observe(6100, report("r1", false, 99));
    assert_eq!(d.tick(&map, 6100), vec![(ShardId(1), Ok(id("r1")))]);
}

#[test]
fn a_report_from_before_the_declaration_does_not_count() {
    let map = map();
    let mut d = Detector::new(TIMING, 0);
    all_report(&mut d, 1000);
    d.observe(5900, report("r1", false, 90));
    d.observe(5900, report("r2", false, 95));
    // p was declared failed at 6000; r1 and r2 last spoke before that.
    assert_eq!(
        d.tick(&map, 6050),
        vec![(
            ShardId(1),
            Err(Waiting::Positions(vec![id("r1"), id("r2")]))
        )]
    );
}

#[test]
fn never_a_replica_in_a_full_sync_or_of_another_history() {
    let map = map();
    let mut d = Detector::new(TIMING, 0);
    all_report(&mut d, 1000);
    let mut syncing = report("r2", false, 500);
    syncing.full_sync = true;
    d.observe(7000, syncing);
    let mut other = report("r1", false, 400);
    other.repl_id = [9; 16];
    d.observe(7000, other);
    assert_eq!(
        d.tick(&map, 7000),
        vec![(ShardId(1), Err(Waiting::NoCandidate))]
    );
    d.observe(7100, report("r1", false, 80));
    assert_eq!(d.tick(&map, 7100), vec![(ShardId(1), Ok(id("r1")))]);
}

#[test]
fn a_primary_heard_again_before_the_commit_keeps_its_shard() {
    let map = map();
    let mut d = Detector::new(TIMING, 0);
    all_report(&mut d, 1000);
    assert_eq!(d.tick(&map, 6000).len(), 1);
    d.observe(6200, report("p", true, 101));
    assert!(d.tick(&map, 6200).is_empty());
    assert!(d.may_lease(&map, id("p")));

    // Once the promotion is being committed, it is too late.
    assert_eq!(d.tick(&map, 11_200).len(), 1);
    d.committing(ShardId(1), true);
    d.observe(11_300, report("p", true, 101));
    assert!(!d.may_lease(&map, id("p")));
    assert!(d.tick(&map, 11_300).is_empty(), "being committed");
}

#[test]
fn the_failover_ends_when_the_map_has_a_new_primary() {
    let mut map = map();
    let mut d = Detector::new(TIMING, 0);
    all_report(&mut d, 1000);
    d.observe(6500, report("r1", false, 99));
    d.observe(6500, report("r2", false, 95));
    assert_eq!(d.tick(&map, 6500), vec![(ShardId(1), Ok(id("r1")))]);
    d.committing(ShardId(1), true);
    map.apply(MapCommand::SetPrimary {
        shard: ShardId(1),
        node: id("r1"),
    })
    .unwrap();
    assert!(d.tick(&map, 6600).is_empty());
    assert!(d.failing().is_empty());
    assert!(d.may_lease(&map, id("r1")));
    assert!(!d.may_lease(&map, id("p")), "now a replica");
}

#[test]
fn a_new_leader_waits_a_whole_timeout_and_a_lone_primary_is_never_failed() {
    let map = map();
    let mut d = Detector::new(TIMING, 50_000);
    assert!(
        d.tick(&map, 54_999).is_empty(),
        "nobody heard yet, but the leader is new"
    );
    let failed = d.tick(&map, 55_000);
    assert_eq!(
        failed.len(),
        1,
        "shard 2 has no replica to promote: {failed:?}"
    );
    assert_eq!(failed[0].0, ShardId(1));
}

/// Heartbeats every 500 ms ± 200 ms of jitter, 5% of them lost, for two
/// minutes of simulated time in each of 1000 seeded schedules: no healthy primary is ever failed over
/// (10 lost in a row would be needed).
#[test]
fn lost_and_late_heartbeats_do_not_fail_over_a_healthy_primary() {
    let map = map();
    for seed in 0..1000u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut d = Detector::new(TIMING, 0);
        let names = ["p", "r1", "r2", "q"];
        let mut next: Vec<u64> = names.iter().map(|_| rng.random_range(0..500)).collect();
        let mut now = 0;
        while now < 120_000 {
            now += 50;
            for (i, name) in names.iter().enumerate() {
                if next[i] <= now {
                    next[i] = now + rng.random_range(300..=700);
                    if rng.random_bool(0.95) {
                        d.observe(now, report(name, i == 0 || i == 3, now));
                    }
                }
            }
            let decided = d.tick(&map, now);
            assert!(decided.is_empty(), "seed {seed} at {now} ms: {decided:?}");
        }
    }
}

#[test]
fn a_planned_switchover_fences_then_waits_for_the_target_to_catch_up() {
    let map = map();
    let mut d = Detector::new(TIMING, 0);
    all_report(&mut d, 1000);
    assert!(d.plan(&map, ShardId(2), None, 1000).is_err(), "no replica");
    assert!(
        d.plan(&map, ShardId(1), Some(id("q")), 1000).is_err(),
        "not its replica"
    );
    d.plan(&map, ShardId(1), Some(id("r1")), 1000).unwrap();
    assert!(
        d.plan(&map, ShardId(1), None, 1000).is_err(),
        "once at a time"
    );
    assert!(!d.may_lease(&map, id("p")), "no lease from the start");
    assert_eq!(
        d.tick(&map, 3000),
        vec![(ShardId(1), Err(Waiting::Fencing { left_ms: 2000 }))]
    );
    // The primary, alive, reports its final position after the fence.
    d.observe(5100, report("p", true, 120));
    d.observe(5100, report("r1", false, 118));
    d.observe(5100, report("r2", false, 120));
    assert!(!d.may_lease(&map, id("p")), "heard again, still switching");
    assert_eq!(
        d.tick(&map, 5100),
        vec![(
            ShardId(1),
            Err(Waiting::CatchingUp {
                primary_seq: Some(120)
            })
        )],
        "r2 has caught up, but the target is r1"
    );
    d.observe(5300, report("r1", false, 120));
    assert_eq!(d.tick(&map, 5300), vec![(ShardId(1), Ok(id("r1")))]);
    // Called off before the commit: the primary leases again.
    d.cancel(ShardId(1));
    assert!(d.may_lease(&map, id("p")));
}

#[test]
fn an_unclean_promotion_names_its_gap_and_needs_a_failed_primary() {
    let map = map();
    let mut d = Detector::new(TIMING, 0);
    all_report(&mut d, 1000);
    assert!(
        d.unclean(&map, ShardId(1), None, true).is_err(),
        "the primary has not failed"
    );
    // p fails; r2 stays silent too, so nothing is promoted by itself.
    d.observe(6500, report("r1", false, 90));
    assert_eq!(
        d.tick(&map, 6500),
        vec![(ShardId(1), Err(Waiting::Positions(vec![id("r2")])))]
    );
    assert!(
        d.unclean(&map, ShardId(1), Some(id("r2")), false).is_err(),
        "r2 did not report"
    );
    let dry = d.unclean(&map, ShardId(1), None, false).unwrap();
    assert_eq!(
        dry,
        Unclean {
            node: id("r1"),
            behind: Some(10),
        },
        "p had applied 100 at its last report, r1 has 90"
    );
    assert_eq!(d.tick(&map, 6600).len(), 1, "a dry run changes nothing");
    d.unclean(&map, ShardId(1), None, true).unwrap();
    assert!(d.tick(&map, 6700).is_empty(), "being committed");
}

#[test]
fn only_a_member_of_the_in_sync_set_is_waited_for_and_promoted() {
    let mut map = map();
    map.apply(MapCommand::SetInSync {
        shard: ShardId(1),
        epoch: 1,
        in_sync: vec![id("r1")],
    })
    .unwrap();
    let mut d = Detector::new(TIMING, 0);
    all_report(&mut d, 1000);
    // r2 left the set (it fell behind); it is silent now, and although it
    // reports the higher seq below, r1 alone holds every acknowledged write.
    d.observe(6001, report("r1", false, 90));
    assert_eq!(d.tick(&map, 6001), vec![(ShardId(1), Ok(id("r1")))]);
    let mut d = Detector::new(TIMING, 0);
    all_report(&mut d, 1000);
    d.observe(6001, report("r2", false, 99));
    assert_eq!(
        d.tick(&map, 6001),
        vec![(ShardId(1), Err(Waiting::Positions(vec![id("r1")])))],
        "r2 is not in the set: it is never promoted, however far it got"
    );
}
