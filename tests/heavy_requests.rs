//! Whole-database operations are admin-only, run one at a time, and stop
//! when whoever asked is gone, instead of running on for nobody.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::hold::Hold;
use strata::cmd::{Node, check_access};
use strata::config::Role;
use strata::proto::{ErrorCode, Limits, Request, Response};
use strata::repl::{ReplConfig, Replication};
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
