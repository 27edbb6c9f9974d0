//! Whole-database operations are admin-only, run one at a time, and stop
//! when whoever asked is gone, instead of running on for nobody.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::hold::Hold;
use strata::cmd::{Node, check_access};
use strata::config::Role;
use strata::proto::{ErrorCode, Limits, Request, Response};
use strata::repl::{MAX_LIVE_SNAPSHOTS, ReplConfig, Replication};
use strata::store::{Store, StoreConfig};
use strata::types::Cancel;
use strata::wal::FsyncPolicy;

fn code(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error(e) => Some(e.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_is_admin_only_bounded_and_cancellable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path()).with_fsync(FsyncPolicy::Never)).unwrap();
    store
        .set(
            "k".into(),
            "v".into(),
            None,
            strata::types::Condition::Always,
        )
        .await
        .unwrap();
    let repl = Replication::new(store, ReplConfig::default(), dir.path()).unwrap();
    let node = Node::new(repl, Limits::default(), true);
    let digest = Request::Digest {
        expired_before_ms: 0,
    };

    // A read-only token may not hash the whole database.
    let denied = check_access(&node, Some(Role::ReadOnly), &digest).unwrap_err();
    assert_eq!(denied.code, ErrorCode::PermissionDenied);
    assert!(check_access(&node, Some(Role::Admin), &digest).is_ok());

    // Hold the first digest inside its scan.
    let mut hold = Hold::arm("digest_every_1024_entries");
    let first_cancel = Cancel::default();
    let first = {
        let (node, cancel, digest) = (node.clone(), first_cancel.clone(), digest.clone());
        tokio::spawn(async move { node.dispatch(digest, cancel).await })
    };
    hold.reached("the first digest").await;

    // A second one is refused while the first runs.
    let second = node.dispatch(digest.clone(), Cancel::default()).await;
    assert_eq!(code(&second), Some(ErrorCode::Overloaded), "{second:?}");
    match &second {
        Response::Error(e) => assert!(e.retry_after_ms.is_some()),
        _ => unreachable!(),
    }

    // Its client goes away: the digest stops instead of finishing.
    first_cancel.cancel();
    hold.release();
    let first = first.await.unwrap();
    assert_eq!(code(&first), Some(ErrorCode::Timeout), "{first:?}");

    // And the next one runs to the end.
    let again = node.dispatch(digest, Cancel::default()).await;
    assert!(matches!(again, Response::Info(_)), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_snapshots_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path()).with_fsync(FsyncPolicy::Never)).unwrap();
    // Entries larger than half a page, so a first page never ends a snapshot.
    for i in 0..4 {
        let key = format!("k{i}");
        let value = vec![b'v'; 700];
        store
            .set(
                key.into(),
                value.into(),
                None,
                strata::types::Condition::Always,
            )
            .await
            .unwrap();
    }
    let repl = Replication::new(store, ReplConfig::default(), dir.path()).unwrap();
    let limits = Limits {
        max_frame_bytes: 2048,
        ..Limits::default()
    };
    let node = Node::new(repl, limits, false);
    let start = Request::Snapshot {
        snapshot: None,
        after: None,
    };
    let mut open = Vec::new();
    for _ in 0..MAX_LIVE_SNAPSHOTS {
        match node.dispatch(start.clone(), Cancel::default()).await {
            Response::Snapshot(page) => {
                assert!(page.next.is_some(), "a first page must not finish it");
                open.push(page);
            }
            other => panic!("snapshot refused below the cap: {other:?}"),
        }
    }
    // One more is refused, retryably, naming the limit.
    let refused = node.dispatch(start.clone(), Cancel::default()).await;
    match &refused {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::Overloaded, "{e:?}");
            assert!(e.retry_after_ms.is_some());
            assert!(e.message.contains("snapshots are open"), "{}", e.message);
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }
    // Paging one to its end frees its place.
    let first = open.remove(0);
    let mut after = first.next;
    while let Some(key) = after {
        let page = Request::Snapshot {
            snapshot: Some(first.snapshot),
            after: Some(key),
        };
        after = match node.dispatch(page, Cancel::default()).await {
            Response::Snapshot(page) => page.next,
            other => panic!("paging failed: {other:?}"),
        };
    }
    assert!(matches!(
        node.dispatch(start, Cancel::default()).await,
        Response::Snapshot(_)
    ));
}
