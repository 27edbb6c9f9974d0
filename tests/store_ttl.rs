//! I4: an expired key is never returned, from either tier, across a reopen,
//! and compaction reclaims it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{b, config, manual_clock, open_with_clock};
use strata::clock::Clock;
use strata::store::{TtlState, WriteOutcome};
use strata::types::Condition;
use strata::wal::FsyncPolicy;

#[tokio::test]
async fn expiry_in_both_tiers_across_reopen_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let store = open_with_clock(config(dir.path(), FsyncPolicy::Always), clock.clone());
    let ttl = Some(Duration::from_secs(10));
    store
        .set(b("short"), b("s"), ttl, Condition::Always)
        .await
        .unwrap();
    store
        .set(
            b("long"),
            b("l"),
            Some(Duration::from_secs(1000)),
            Condition::Always,
        )
        .await
        .unwrap();
    store
        .set(b("forever"), b("f"), None, Condition::Always)
        .await
        .unwrap();
    assert_eq!(
        store.ttl(b"short").await.unwrap(),
        TtlState::ExpiresInMs(10_000)
    );

    clock.advance_ms(10_000);
    // Memory tier: still cached, never returned.
    assert!(store.memory_peek(b"short").is_none() || store.get(b"short").await.unwrap().is_none());
    assert_eq!(store.get(b"short").await.unwrap(), None);
    // Disk tier: evicted from memory, the disk copy is expired too.
    store.evict_from_memory(b"short");
    assert_eq!(store.get(b"short").await.unwrap(), None);
    assert_eq!(store.ttl(b"short").await.unwrap(), TtlState::Missing);
    assert_eq!(store.exists(&[b("short"), b("long")]).await.unwrap(), 1);
    // Expired keys behave as absent for conditions and scans.
    assert!(matches!(
        store
            .set(b("short"), b("again"), None, Condition::IfPresent)
            .await
            .unwrap(),
        WriteOutcome::ConditionFailed { current: None }
    ));
    let page = store.scan(b(""), None, 100).await.unwrap();
    let mut keys: Vec<_> = page.entries.iter().map(|(k, _)| k.clone()).collect();
    keys.sort();
    assert_eq!(keys, vec![b("forever"), b("long")]);
    drop(store);

    // Across a reopen (WAL replay) the deadline is absolute, so still expired.
    let store = open_with_clock(config(dir.path(), FsyncPolicy::Always), clock.clone());
    assert_eq!(store.get(b"short").await.unwrap(), None);
    assert_eq!(
        store.get(b"long").await.unwrap().unwrap().ttl_ms,
        Some(990_000)
    );
    // Compaction drops the expired entry physically.
    store.checkpoint().await.unwrap();
    assert!(
        store.disk_get(b"short").unwrap().is_some(),
        "still on disk before compaction"
    );
    store.compact();
    assert!(
        store.disk_get(b"short").unwrap().is_none(),
        "compaction filter dropped it"
    );
    assert_eq!(store.disk_raw_len().unwrap(), 2);

    clock.advance_ms(990_000);
    assert_eq!(store.get(b"long").await.unwrap(), None);
    assert_eq!(store.get(b"forever").await.unwrap().unwrap().value, b("f"));
}

#[tokio::test]
async fn overwrite_replaces_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let store = open_with_clock(config(dir.path(), FsyncPolicy::Never), clock.clone());
    store
        .set(
            b("k"),
            b("1"),
            Some(Duration::from_secs(5)),
            Condition::Always,
        )
        .await
        .unwrap();
    store
        .set(b("k"), b("2"), None, Condition::Always)
        .await
        .unwrap();
    clock.advance_ms(6_000);
    assert_eq!(store.get(b"k").await.unwrap().unwrap().value, b("2"));
    // incr keeps the key's deadline.
    store
        .set(
            b("n"),
            b("1"),
            Some(Duration::from_secs(5)),
            Condition::Always,
        )
        .await
        .unwrap();
    store.incr(b("n"), 1).await.unwrap();
    assert_eq!(store.ttl(b"n").await.unwrap(), TtlState::ExpiresInMs(5_000));
    clock.advance_ms(5_000);
    assert_eq!(store.get(b"n").await.unwrap(), None);
    // incr on an expired key starts from zero.
    assert_eq!(store.incr(b("n"), 3).await.unwrap().0, 3);
}

/// A scan page bounds the entries it examines, expired ones included: over
/// a long run of dead keys it returns early (even empty, with a cursor)
/// instead of walking them all, and the pages together still give exactly
/// the live keys.
#[tokio::test]
async fn scan_pages_over_expired_keys_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let store = open_with_clock(config(dir.path(), FsyncPolicy::Never), clock.clone());
    for i in 0..1000 {
        let key = b(&format!("k{i:04}"));
        store
            .set(key, b("v"), Some(Duration::from_secs(5)), Condition::Always)
            .await
            .unwrap();
    }
    store
        .set(b("k9999"), b("live"), None, Condition::Always)
        .await
        .unwrap();
    clock.advance_ms(10_000);

    let limit = 10;
    let first = store.scan(b("k"), None, limit).await.unwrap();
    assert!(first.entries.is_empty());
    assert!(
        first.next_cursor.is_some(),
        "a page that examined its share says where to go on"
    );
    let (mut cursor, mut pages, mut live) = (first.next_cursor, 1, Vec::new());
    while let Some(after) = cursor {
        let page = store.scan(b("k"), Some(after), limit).await.unwrap();
        live.extend(page.entries.into_iter().map(|(k, _)| k));
        cursor = page.next_cursor;
        pages += 1;
        assert!(pages <= 1000, "the scan does not end");
    }
    assert_eq!(live, vec![b("k9999")]);
    // Each page examined at most 4 x 10 + 64 entries.
    assert!(pages >= 1000 / (4 * limit + 64), "{pages} pages");
}

/// Deadlines given as Unix times are kept exactly, read back exactly, and
/// survive a reopen; one already past writes the key expired.
#[tokio::test]
async fn absolute_deadlines_are_kept_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let now = clock.now_ms();
    let store = open_with_clock(config(dir.path(), FsyncPolicy::Always), clock.clone());
    let at = now + 12_345;
    store
        .set_at(b("k"), b("v"), at, Condition::Always)
        .await
        .unwrap();
    assert_eq!(store.deadline(b"k").await.unwrap(), Some(at));
    assert_eq!(
        store.ttl(b"k").await.unwrap(),
        TtlState::ExpiresInMs(12_345)
    );
    // A relative TTL is turned into a deadline at the commit's clock.
    store
        .set(
            b("rel"),
            b("v"),
            Some(Duration::from_secs(1)),
            Condition::Always,
        )
        .await
        .unwrap();
    assert_eq!(store.deadline(b"rel").await.unwrap(), Some(now + 1_000));
    store
        .set(b("forever"), b("v"), None, Condition::Always)
        .await
        .unwrap();
    assert_eq!(store.deadline(b"forever").await.unwrap(), Some(0));
    assert_eq!(store.deadline(b"missing").await.unwrap(), None);

    // expire_at moves it, to the millisecond.
    let later = now + 99_999;
    let moved = store.expire_at(b("forever"), later).await.unwrap();
    assert!(matches!(moved, WriteOutcome::Written(_)));
    assert_eq!(store.deadline(b"forever").await.unwrap(), Some(later));
    assert_eq!(
        store.expire_at(b("missing"), later).await.unwrap(),
        WriteOutcome::NotFound
    );

    // A deadline already past: written, and gone to every read.
    let written = store
        .set_at(b("past"), b("v"), now - 1, Condition::Always)
        .await
        .unwrap();
    assert!(matches!(written, WriteOutcome::Written(_)));
    assert_eq!(store.get(b"past").await.unwrap(), None);
    assert_eq!(store.deadline(b"past").await.unwrap(), None);
    store.expire_at(b("rel"), now).await.unwrap();
    assert_eq!(store.get(b"rel").await.unwrap(), None);

    // 0 means "never" in the stored format, so it is refused as a time.
    assert!(
        store
            .set_at(b("zero"), b("v"), 0, Condition::Always)
            .await
            .is_err()
    );
    assert!(store.expire_at(b("k"), 0).await.is_err());
    assert_eq!(store.deadline(b"k").await.unwrap(), Some(at));

    drop(store);
    let store = open_with_clock(config(dir.path(), FsyncPolicy::Always), clock.clone());
    assert_eq!(store.deadline(b"k").await.unwrap(), Some(at));
    assert_eq!(store.deadline(b"forever").await.unwrap(), Some(later));
    clock.advance_ms(12_345);
    assert_eq!(store.get(b"k").await.unwrap(), None);
}
