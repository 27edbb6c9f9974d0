//! End-to-end tests of the log: append, rotate, reopen, read while
//! writing, damage and recovery modes, power loss, poisoning, retention.
//! Damage tests run on the real file system (a temp dir) and on [`SimFs`].

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::types::Seq;

/// A record whose content is a function of its seq (sizes vary a little).
fn rec(seq: u64) -> WalRecord {
    let mut mutations = vec![Mutation::Put {
        key: Bytes::from(format!("key-{}", seq % 17)),
        value: Bytes::from(format!("value-{seq}-{}", "x".repeat((seq % 23) as usize))),
        expires_at_ms: seq * 3,
    }];
    if seq.is_multiple_of(5) {
        mutations.push(Mutation::Delete {
            key: Bytes::from(format!("key-{}", (seq + 1) % 17)),
        });
    }
    WalRecord {
        seq: Seq(seq),
        mutations,
    }
}

fn recs(seqs: RangeInclusive<u64>) -> Vec<WalRecord> {
    seqs.map(rec).collect()
}

/// Appends `seqs` in batches of `batch` records.
fn append_range(w: &mut WalWriter, seqs: RangeInclusive<u64>, batch: usize) {
    for chunk in recs(seqs).chunks(batch) {
        w.append(chunk).unwrap();
    }
}

fn read_all(wal: &Wal, from: u64) -> Vec<WalRecord> {
    wal.read_from(Seq(from))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Offsets and seqs of the good frames of a segment.
fn frame_offsets(data: &[u8]) -> Vec<(usize, Seq)> {
    let mut pos = SEGMENT_HEADER_LEN;
    let mut out = Vec::new();
    while let Some(Ok((r, len))) = data.get(pos..).map(|b| decode_frame(b, u32::MAX)) {
        out.push((pos, r.seq));
        pos += len;
    }
    out
}

fn cfg(dir: &Path, recovery: RecoveryMode) -> WalConfig {
    WalConfig {
        segment_bytes: 256,
        recovery,
        ..WalConfig::new(dir)
    }
}

/// A place to keep a log: the real file system or the simulated one.
trait Disk {
    fn dir(&self) -> PathBuf;
    fn fs(&self) -> Arc<dyn WalFs>;
    fn bytes(&self, path: &Path) -> Vec<u8>;
    fn set_bytes(&self, path: &Path, data: Vec<u8>);
    fn delete(&self, path: &Path);
    /// The segment files, sorted.
    fn segments(&self) -> Vec<PathBuf>;

    fn open(&self, recovery: RecoveryMode) -> Result<Recovered, WalError> {
        Wal::open(cfg(&self.dir(), recovery), self.fs())
    }

    /// A log of records `1..=n` in batches of 3, several segments; closed.
    fn build(&self, n: u64) -> Vec<PathBuf> {
        let mut r = self.open(RecoveryMode::Strict).unwrap();
        append_range(&mut r.writer, 1..=n, 3);
        drop(r);
        self.segments()
    }
}

struct StdDisk(tempfile::TempDir);

impl Disk for StdDisk {
    fn dir(&self) -> PathBuf {
        self.0.path().join("wal")
    }
    fn fs(&self) -> Arc<dyn WalFs> {
        Arc::new(StdFs)
    }
    fn bytes(&self, path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }
    fn set_bytes(&self, path: &Path, data: Vec<u8>) {
        std::fs::write(path, data).unwrap();
    }
    fn delete(&self, path: &Path) {
        std::fs::remove_file(path).unwrap();
    }
    fn segments(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        v.sort();
        v
    }
}

struct SimDisk(SimFs);

impl Disk for SimDisk {
    fn dir(&self) -> PathBuf {
        PathBuf::from("/data/wal")
    }
    fn fs(&self) -> Arc<dyn WalFs> {
        Arc::new(self.0.clone())
    }
    fn bytes(&self, path: &Path) -> Vec<u8> {
        self.0.file(path).unwrap()
    }
    fn set_bytes(&self, path: &Path, data: Vec<u8>) {
        self.0.set_file(path, data);
    }
    fn delete(&self, path: &Path) {
        self.0.remove(path).unwrap();
        self.0.sync_dir(&self.dir()).unwrap();
    }
    fn segments(&self) -> Vec<PathBuf> {
        self.0
            .paths()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect()
    }
}

/// Runs `f` on a fresh real disk, then on a fresh simulated one.
fn each_disk(mut f: impl FnMut(&dyn Disk)) {
    f(&StdDisk(tempfile::tempdir().unwrap()));
    f(&SimDisk(SimFs::new()));
}

fn sim_open(fs: &SimFs, cfg: &WalConfig) -> Result<Recovered, WalError> {
    Wal::open(cfg.clone(), Arc::new(fs.clone()))
}

// ---- append, rotate, reopen, read ----

#[test]
fn append_reopen_and_read_across_rotations() {
    each_disk(|d| {
        let r = d.open(RecoveryMode::Strict).unwrap();
        assert_eq!(
            r.report,
            RecoveryReport {
                segments: 0,
                records: 0,
                first_seq: None,
                last_seq: None,
                truncated: None
            }
        );
        let (wal, mut w) = (r.wal, r.writer);
        assert_eq!(wal.first_seq(), None);
        assert!(read_all(&wal, 0).is_empty());

        let sizes = [1usize, 2, 3, 7];
        let mut next = 1u64;
        let mut i = 0;
        while next <= 60 {
            let n = sizes[i % sizes.len()] as u64;
            let end = (next + n - 1).min(60);
            let out = w.append(&recs(next..=end)).unwrap();
            assert!(out.synced && out.bytes > 0);
            next = end + 1;
            i += 1;
        }
        assert_eq!(w.last_seq(), Some(Seq(60)));
        assert_eq!(
            (wal.first_seq(), wal.last_seq()),
            (Some(Seq(1)), Some(Seq(60)))
        );
        let segs = d.segments();
        assert!(segs.len() > 3, "tiny segment_bytes must rotate: {segs:?}");
        assert_eq!(wal.segment_count(), segs.len());
        let on_disk: u64 = segs.iter().map(|p| d.bytes(p).len() as u64).sum();
        assert_eq!(wal.total_bytes(), on_disk);

        assert_eq!(read_all(&wal, 0), recs(1..=60));
        for from in [1, 2, 17, 30, 59, 60] {
            assert_eq!(read_all(&wal, from), recs(from..=60), "from {from}");
        }
        assert!(read_all(&wal, 61).is_empty());
        // Each segment is named by its first record, and reading from a
        // segment boundary works.
        for p in &segs {
            let first = parse_segment_name(p.file_name().unwrap().to_str().unwrap()).unwrap();
            let data = d.bytes(p);
            assert_eq!(frame_offsets(&data)[0].1, first);
            assert_eq!(read_all(&wal, first.0), recs(first.0..=60));
        }
        drop((wal, w));

        let r = d.open(RecoveryMode::Strict).unwrap();
        assert_eq!(
            r.report,
            RecoveryReport {
                segments: segs.len(),
                records: 60,
                first_seq: Some(Seq(1)),
                last_seq: Some(Seq(60)),
                truncated: None
            }
        );
        let (wal, mut w) = (r.wal, r.writer);
        assert_eq!(w.last_seq(), Some(Seq(60)));
        // The writer continues the log where it ended.
        assert!(matches!(
            w.append(&[rec(62)]),
            Err(WalError::SeqGap {
                expected: Seq(61),
                got: Seq(62)
            })
        ));
        append_range(&mut w, 61..=70, 4);
        assert_eq!(read_all(&wal, 55), recs(55..=70));
        drop((wal, w));
        let r = d.open(RecoveryMode::Strict).unwrap();
        assert_eq!(r.report.records, 70);
        assert_eq!(read_all(&r.wal, 1), recs(1..=70));
    });
}

#[test]
fn read_from_sees_only_complete_records_while_the_writer_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = WalConfig {
        segment_bytes: 4096,
        fsync: FsyncPolicy::Never,
        ..WalConfig::new(tmp.path())
    };
    let r = Wal::open(cfg, Arc::new(StdFs)).unwrap();
    let (wal, mut w) = (r.wal, r.writer);
    const N: u64 = 3000;
    let writer = std::thread::spawn(move || {
        let mut next = 1;
        while next <= N {
            let end = (next + next % 5).min(N);
            w.append(&recs(next..=end)).unwrap();
            next = end + 1;
        }
        w
    });
    let mut reads = 0u64;
    let mut seen_last = 0;
    loop {
        let done = writer.is_finished();
        let from = if reads.is_multiple_of(2) {
            1
        } else {
            seen_last / 2 + 1
        };
        let mut expected = from;
        for item in wal.read_from(Seq(from)).unwrap() {
            let got = item.expect("a concurrent read must only see complete records");
            assert_eq!(got, rec(expected));
            expected += 1;
        }
        let last = expected - 1;
        assert!(
            last >= seen_last || from > seen_last,
            "reads went backwards"
        );
        assert!(wal.last_seq().map_or(0, |s| s.0) >= last);
        seen_last = seen_last.max(last);
        reads += 1;
        if done {
            break;
        }
    }
    let _w = writer.join().unwrap();
    assert_eq!(seen_last, N);
    assert!(reads > 1);
    assert_eq!(read_all(&wal, 1), recs(1..=N));
}

#[test]
fn read_from_below_the_first_retained_record_starts_there() {
    let fs = SimFs::new();
    let cfg = cfg(Path::new("/w"), RecoveryMode::Strict);
    let mut r = sim_open(&fs, &cfg).unwrap();
    append_range(&mut r.writer, 100..=130, 3);
    assert_eq!(r.wal.first_seq(), Some(Seq(100)));
    assert_eq!(read_all(&r.wal, 0), recs(100..=130));
    assert_eq!(read_all(&r.wal, 120), recs(120..=130));
}

// ---- seq checks and refusals that do not poison ----

#[test]
fn seq_misuse_is_refused_without_poisoning() {
    let fs = SimFs::new();
    let mut r = sim_open(&fs, &cfg(Path::new("/w"), RecoveryMode::Strict)).unwrap();
    let w = &mut r.writer;
    // An empty log takes any start seq and names the segment after it.
    w.append(&recs(1000..=1002)).unwrap();
    assert_eq!(
        fs.paths(),
        vec![PathBuf::from("/w").join(segment_file_name(Seq(1000)))]
    );
    let gap = |e: Result<AppendOutcome, WalError>| match e {
        Err(WalError::SeqGap { expected, got }) => (expected.0, got.0),
        other => panic!("expected SeqGap, got {other:?}"),
    };
    assert_eq!(gap(w.append(&[rec(1004)])), (1003, 1004));
    assert_eq!(gap(w.append(&[rec(1002)])), (1003, 1002));
    assert_eq!(gap(w.append(&[rec(1003), rec(1005)])), (1004, 1005));
    assert_eq!(gap(w.append(&[rec(1003), rec(1003)])), (1004, 1003));
    assert!(!r.wal.is_poisoned());
    let before = fs.file(&fs.paths()[0]).unwrap().len();
    w.append(&recs(1003..=1004)).unwrap();
    assert!(fs.file(&fs.paths()[0]).unwrap().len() > before);
    assert_eq!(read_all(&r.wal, 0), recs(1000..=1004));
    // An empty batch is a no-op.
    assert_eq!(
        w.append(&[]).unwrap(),
        AppendOutcome {
            synced: true,
            bytes: 0
        }
    );
}

#[test]
fn record_too_large_is_refused_without_poisoning() {
    let fs = SimFs::new();
    let cfg = WalConfig {
        max_record_bytes: 100,
        ..cfg(Path::new("/w"), RecoveryMode::Strict)
    };
    let mut r = sim_open(&fs, &cfg).unwrap();
    r.writer.append(&[rec(1)]).unwrap();
    let big = WalRecord {
        seq: Seq(3),
        mutations: vec![Mutation::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![7; 200]),
            expires_at_ms: 0,
        }],
    };
    // The oversized record is the second of the batch: nothing is written.
    let err = r.writer.append(&[rec(2), big.clone()]).unwrap_err();
    assert!(
        matches!(err, WalError::RecordTooLarge { max: 100, .. }),
        "{err}"
    );
    assert!(!r.wal.is_poisoned());
    assert_eq!(read_all(&r.wal, 0), recs(1..=1));
    r.writer.append(&[rec(2)]).unwrap();
}

#[test]
fn invalid_config_is_refused() {
    let fs = SimFs::new();
    for cfg in [
        WalConfig {
            segment_bytes: 0,
            ..WalConfig::new("/w")
        },
        WalConfig {
            max_record_bytes: 0,
            ..WalConfig::new("/w")
        },
    ] {
        assert!(matches!(
            sim_open(&fs, &cfg),
            Err(WalError::InvalidConfig { .. })
        ));
    }
}

// ---- torn tails ----

#[test]
fn torn_tails_are_truncated_or_refused_per_mode() {
    // (name, damage to the last segment, expected cut = offset of ... )
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage, bool); 4] = [
        // Cut in the middle of the last record: that record is lost.
        ("cut mid-record", |d| d.truncate(d.len() - 3), true),
        (
            "garbage appended",
            |d| d.extend_from_slice(b"09pmu35w3a9mp53bao9upw3ab5up"),
            false,
        ),
        ("zeros appended", |d| d.extend_from_slice(&[0; 1000]), false),
        (
            "half a frame header appended",
            |d| d.extend_from_slice(&[5, 0, 0, 0, 9]),
            false,
        ),
    ];
    for (name, damage, loses_last) in cases {
        each_disk(|d| {
            let segs = d.build(40);
            let last = segs.last().unwrap().clone();
            let original = d.bytes(&last);
            let frames = frame_offsets(&original);
            let mut data = original.clone();
            damage(&mut data);
            d.set_bytes(&last, data.clone());
            let (cut, records) = if loses_last {
                (frames.last().unwrap().0 as u64, 39)
            } else {
                (original.len() as u64, 40)
            };
            let dropped = data.len() as u64 - cut;

            match d.open(RecoveryMode::Strict) {
                Err(WalError::TornTail {
                    path,
                    offset,
                    dropped: d2,
                    ..
                }) => {
                    assert_eq!((path, offset, d2), (last.clone(), cut, dropped), "{name}");
                }
                other => panic!("{name}: strict must refuse a torn tail, got {other:?}"),
            }
            assert_eq!(
                d.bytes(&last),
                data,
                "{name}: strict must not touch the file"
            );

            let r = d.open(RecoveryMode::TolerateCorruptTail).unwrap();
            let t = r.report.truncated.clone().expect(name);
            assert_eq!(
                (t.file, t.offset, t.bytes_dropped, t.segments_removed),
                (last.clone(), cut, dropped, 0),
                "{name}"
            );
            assert_eq!(r.report.records, records, "{name}");
            assert_eq!(r.report.last_seq, Some(Seq(records)));
            assert_eq!(d.bytes(&last).len() as u64, cut, "{name}: file truncated");
            assert_eq!(read_all(&r.wal, 1), recs(1..=records));
            let (wal, mut w) = (r.wal, r.writer);
            append_range(&mut w, records + 1..=45, 2);
            drop((wal, w));

            let r = d.open(RecoveryMode::Strict).unwrap();
            assert_eq!(r.report.truncated, None, "{name}: clean after the cut");
            assert_eq!(read_all(&r.wal, 1), recs(1..=45));
        });
    }
}

#[test]
fn short_header_in_the_last_segment_is_a_torn_tail() {
    each_disk(|d| {
        d.build(40);
        let torn = d.dir().join(segment_file_name(Seq(41)));
        let header = SegmentHeader { first_seq: Seq(41) }.encode();
        d.set_bytes(&torn, header[..10].to_vec());

        assert!(matches!(
            d.open(RecoveryMode::Strict),
            Err(WalError::TornTail { offset: 0, .. })
        ));
        let r = d.open(RecoveryMode::TolerateCorruptTail).unwrap();
        let t = r.report.truncated.clone().unwrap();
        assert_eq!(
            (t.file, t.offset, t.bytes_dropped, t.segments_removed),
            (torn.clone(), 0, 10, 1)
        );
        assert!(!d.segments().contains(&torn));
        assert_eq!(r.report.last_seq, Some(Seq(40)));
        let (wal, mut w) = (r.wal, r.writer);
        append_range(&mut w, 41..=42, 1);
        assert_eq!(read_all(&wal, 39), recs(39..=42));
    });
}

#[test]
fn full_length_bad_header_is_corruption() {
    each_disk(|d| {
        d.build(40);
        let bad = d.dir().join(segment_file_name(Seq(41)));
        d.set_bytes(&bad, vec![0; SEGMENT_HEADER_LEN]);
        for mode in [RecoveryMode::Strict, RecoveryMode::TolerateCorruptTail] {
            match d.open(mode) {
                Err(WalError::Corrupt {
                    path,
                    offset: 0,
                    reason: CorruptReason::BadMagic { .. },
                }) => assert_eq!(path, bad),
                other => panic!("{mode}: {other:?}"),
            }
        }
        let r = d.open(RecoveryMode::PointInTime).unwrap();
        assert_eq!(r.report.last_seq, Some(Seq(40)));
        assert!(!d.segments().contains(&bad));
    });
}

#[test]
fn header_only_lone_segment_is_dropped_and_any_start_seq_is_accepted() {
    each_disk(|d| {
        let fs = d.fs();
        fs.create_dir_all(&d.dir()).unwrap();
        let p = d.dir().join(segment_file_name(Seq(5)));
        d.set_bytes(&p, SegmentHeader { first_seq: Seq(5) }.encode().to_vec());
        let mut r = d.open(RecoveryMode::Strict).unwrap();
        assert_eq!((r.report.segments, r.report.records), (0, 0));
        assert!(d.segments().is_empty());
        r.writer.append(&recs(1..=2)).unwrap();
        assert_eq!(read_all(&r.wal, 0), recs(1..=2));
    });
}

// ---- corruption before the tail ----

#[test]
fn flipped_byte_in_a_middle_segment_is_corrupt_with_file_and_offset() {
    each_disk(|d| {
        let segs = d.build(40);
        assert!(segs.len() >= 4, "{segs:?}");
        let victim = segs[1].clone();
        let mut data = d.bytes(&victim);
        let frames = frame_offsets(&data);
        let (bad_off, bad_seq) = frames[1];
        data[bad_off + FRAME_HEADER_LEN + 2] ^= 0x20;
        d.set_bytes(&victim, data.clone());

        for mode in [RecoveryMode::Strict, RecoveryMode::TolerateCorruptTail] {
            let err = d.open(mode).unwrap_err();
            match &err {
                WalError::Corrupt {
                    path,
                    offset,
                    reason: CorruptReason::Checksum { .. },
                } => assert_eq!((path, *offset), (&victim, bad_off as u64)),
                other => panic!("{mode}: {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains(&victim.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("at byte {bad_off}")), "{msg}");
            assert!(msg.contains("point-in-time"), "{msg}");
            assert_eq!(d.segments(), segs, "{mode} must not delete anything");
        }

        let r = d.open(RecoveryMode::PointInTime).unwrap();
        let t = r.report.truncated.clone().unwrap();
        assert_eq!(
            (t.file, t.offset, t.bytes_dropped, t.segments_removed),
            (
                victim.clone(),
                bad_off as u64,
                (data.len() - bad_off) as u64,
                segs.len() - 2
            )
        );
        let last = bad_seq.0 - 1;
        assert_eq!(r.report.last_seq, Some(Seq(last)));
        assert_eq!(d.segments(), segs[..2].to_vec());
        assert_eq!(read_all(&r.wal, 0), recs(1..=last));
        let (wal, mut w) = (r.wal, r.writer);
        append_range(&mut w, last + 1..=last + 5, 2);
        drop((wal, w));
        let r = d.open(RecoveryMode::TolerateCorruptTail).unwrap();
        assert_eq!(r.report.truncated, None);
        assert_eq!(read_all(&r.wal, 0), recs(1..=last + 5));
    });
}

#[test]
fn bad_record_followed_by_a_valid_one_in_the_last_segment_is_corrupt() {
    each_disk(|d| {
        let segs = d.build(40);
        let last = segs.last().unwrap().clone();
        let mut data = d.bytes(&last);
        let frames = frame_offsets(&data);
        assert!(frames.len() >= 2);
        let (off, _) = frames[0];
        data[off + FRAME_HEADER_LEN + 1] ^= 0x01;
        d.set_bytes(&last, data);
        match d.open(RecoveryMode::TolerateCorruptTail) {
            Err(WalError::Corrupt { path, offset, .. }) => {
                assert_eq!((path, offset), (last.clone(), off as u64));
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn missing_segment_is_corrupt() {
    each_disk(|d| {
        let segs = d.build(40);
        d.delete(&segs[1]);
        let next_first =
            parse_segment_name(segs[2].file_name().unwrap().to_str().unwrap()).unwrap();
        let prev_data = d.bytes(&segs[0]);
        let expected = frame_offsets(&prev_data).last().unwrap().1.next();
        match d.open(RecoveryMode::TolerateCorruptTail) {
            Err(WalError::Corrupt {
                path,
                offset: 0,
                reason: CorruptReason::SegmentGap { expected: e, found },
            }) => {
                assert_eq!((path, e, found), (segs[2].clone(), expected, next_first));
            }
            other => panic!("{other:?}"),
        }
        let r = d.open(RecoveryMode::PointInTime).unwrap();
        assert_eq!(r.report.last_seq, Some(Seq(expected.0 - 1)));
        assert_eq!(d.segments(), vec![segs[0].clone()]);
    });
}

#[test]
fn unknown_version_is_refused_in_every_mode() {
    each_disk(|d| {
        let segs = d.build(10);
        let mut data = d.bytes(&segs[0]);
        data[8..12].copy_from_slice(&3u32.to_le_bytes());
        d.set_bytes(&segs[0], data.clone());
        for mode in [
            RecoveryMode::Strict,
            RecoveryMode::TolerateCorruptTail,
            RecoveryMode::PointInTime,
        ] {
            match d.open(mode) {
                Err(WalError::UnsupportedVersion { path, version: 3 }) => assert_eq!(path, segs[0]),
                other => panic!("{mode}: {other:?}"),
            }
        }
        assert_eq!(d.segments(), segs);
        assert_eq!(d.bytes(&segs[0]), data);
    });
}

#[test]
fn foreign_files_in_the_wal_dir_are_ignored() {
    each_disk(|d| {
        d.build(5);
        d.set_bytes(&d.dir().join("notes.txt"), b"hello".to_vec());
        d.set_bytes(&d.dir().join("7.wal"), b"junk".to_vec());
        let r = d.open(RecoveryMode::Strict).unwrap();
        assert_eq!(read_all(&r.wal, 0), recs(1..=5));
    });
}

// ---- group commit and fsync policies ----

fn sim_writer(fsync: FsyncPolicy) -> (SimFs, Recovered) {
    let fs = SimFs::new();
    let cfg = WalConfig {
        fsync,
        ..WalConfig::new("/w")
    };
    let mut r = sim_open(&fs, &cfg).unwrap();
    // The first append creates the segment (its own syncs); start after it.
    r.writer.append(&[rec(1)]).unwrap();
    (fs, r)
}

#[test]
fn group_commit_one_sync_per_batch_under_always() {
    let (fs, mut r) = sim_writer(FsyncPolicy::Always);
    for (batch, from) in [(1u64, 2u64), (50, 3), (128, 53)] {
        let before = fs.sync_count();
        let out = r.writer.append(&recs(from..=from + batch - 1)).unwrap();
        assert!(out.synced);
        assert_eq!(fs.sync_count() - before, 1, "batch of {batch}");
    }
    assert_eq!(r.wal.durable_seq(), Some(Seq(180)));
}

#[test]
fn never_policy_does_not_sync() {
    let (fs, mut r) = sim_writer(FsyncPolicy::Never);
    let before = fs.sync_count();
    let out = r.writer.append(&recs(2..=51)).unwrap();
    assert!(!out.synced);
    assert!(!r.writer.sync_if_due().unwrap());
    assert_eq!(fs.sync_count(), before);
    assert_eq!(r.wal.durable_seq(), None);
    // An explicit sync still works.
    r.writer.sync().unwrap();
    assert_eq!(fs.sync_count(), before + 1);
    assert_eq!(r.wal.durable_seq(), Some(Seq(51)));
    r.writer.sync().unwrap();
    assert_eq!(fs.sync_count(), before + 1, "nothing new to sync");
}

#[test]
fn interval_policy_syncs_when_due() {
    let (fs, mut r) = sim_writer(FsyncPolicy::Interval(Duration::from_secs(3600)));
    let before = fs.sync_count();
    assert!(!r.writer.append(&recs(2..=10)).unwrap().synced);
    assert!(!r.writer.sync_if_due().unwrap(), "interval not elapsed");
    assert_eq!(fs.sync_count(), before);

    let (fs, mut r) = sim_writer(FsyncPolicy::Interval(Duration::ZERO));
    let before = fs.sync_count();
    assert!(r.writer.append(&recs(2..=10)).unwrap().synced);
    assert_eq!(fs.sync_count(), before + 1);
    assert!(!r.writer.sync_if_due().unwrap(), "nothing unsynced");
    assert_eq!(r.wal.durable_seq(), Some(Seq(10)));

    let (fs, mut r) = sim_writer(FsyncPolicy::Interval(Duration::from_millis(30)));
    r.writer.append(&recs(2..=3)).unwrap();
    std::thread::sleep(Duration::from_millis(40));
    let before = fs.sync_count();
    assert!(r.writer.sync_if_due().unwrap());
    assert_eq!(fs.sync_count(), before + 1);
}

// ---- power loss ----

#[test]
fn power_loss_keeps_every_acknowledged_batch_under_always() {
    for seed in 0..8u64 {
        let fs = SimFs::new();
        let cfg = cfg(Path::new("/w"), RecoveryMode::TolerateCorruptTail);
        let mut acked = 0u64;
        for round in 0..4u64 {
            let mut r = sim_open(&fs, &cfg).unwrap();
            assert_eq!(r.report.last_seq.map_or(0, |s| s.0), acked, "seed {seed}");
            for i in 0..(3 + (seed + round) % 4) {
                let n = 1 + (seed * 7 + round * 3 + i) % 6;
                let out = r.writer.append(&recs(acked + 1..=acked + n)).unwrap();
                assert!(out.synced);
                acked += n;
            }
            drop(r);
            fs.power_loss_torn(seed * 31 + round);
        }
        let r = sim_open(&fs, &cfg).unwrap();
        assert_eq!(read_all(&r.wal, 0), recs(1..=acked), "seed {seed}");
    }
}

#[test]
fn power_loss_loses_unsynced_data_under_never() {
    let fs = SimFs::new();
    let cfg = WalConfig {
        fsync: FsyncPolicy::Never,
        ..WalConfig::new("/w")
    };
    let mut r = sim_open(&fs, &cfg).unwrap();
    append_range(&mut r.writer, 1..=10, 3);
    assert_eq!(read_all(&r.wal, 0).len(), 10);
    drop(r);
    fs.power_loss();
    let r = sim_open(&fs, &cfg).unwrap();
    assert_eq!(r.report.records, 0, "unsynced records must be lost");
    assert_eq!(r.report.truncated, None, "a clean cut at the synced length");
}

#[test]
fn power_loss_under_never_keeps_sealed_segments_without_a_gap() {
    let fs = SimFs::new();
    let cfg = WalConfig {
        fsync: FsyncPolicy::Never,
        ..cfg(Path::new("/w"), RecoveryMode::Strict)
    };
    let mut r = sim_open(&fs, &cfg).unwrap();
    append_range(&mut r.writer, 1..=40, 3);
    let segs = r.wal.segment_count();
    assert!(segs >= 3);
    drop(r);
    fs.power_loss();
    // Strict: the sealed segments are intact, the active one holds only its header.
    let r = sim_open(&fs, &cfg).unwrap();
    let last = r.report.last_seq.unwrap().0;
    assert!(last < 40 && last > 10, "{last}");
    assert_eq!(read_all(&r.wal, 0), recs(1..=last));
}

/// Crash drill: random batches, syncs at random points, a torn power loss.
/// Recovery must return exactly a prefix of what was written that contains
/// everything synced (never invent, never lose synced).
#[test]
fn torn_power_loss_recovers_a_prefix_containing_everything_synced() {
    for seed in 0..60u64 {
        let fs = SimFs::new();
        let cfg = WalConfig {
            fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
            ..cfg(Path::new("/w"), RecoveryMode::TolerateCorruptTail)
        };
        let mut r = sim_open(&fs, &cfg).unwrap();
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut step = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut written = 0u64;
        let mut synced = 0u64;
        for _ in 0..(5 + step() % 20) {
            let n = 1 + step() % 5;
            r.writer.append(&recs(written + 1..=written + n)).unwrap();
            written += n;
            if step().is_multiple_of(4) {
                r.writer.sync().unwrap();
                synced = written;
            }
        }
        drop(r);
        fs.power_loss_torn(seed);
        let r = sim_open(&fs, &cfg).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let got = read_all(&r.wal, 0);
        let m = got.len() as u64;
        assert!(
            m >= synced && m <= written,
            "seed {seed}: {m} not in {synced}..={written}"
        );
        assert_eq!(got, recs(1..=m), "seed {seed}");
        // The log keeps working after recovery.
        let (wal, mut w) = (r.wal, r.writer);
        w.append(&recs(m + 1..=m + 2)).unwrap();
        assert_eq!(wal.last_seq(), Some(Seq(m + 2)));
    }
}

// ---- poisoning ----

#[test]
fn fsync_failure_poisons_the_log() {
    let fs = SimFs::new();
    let cfg = WalConfig::new("/w");
    let mut r = sim_open(&fs, &cfg).unwrap();
    r.writer.append(&[rec(1)]).unwrap();
    fs.fail_syncs(true);
    let err = r.writer.append(&[rec(2)]).unwrap_err();
    assert!(matches!(err, WalError::SyncFailed { .. }), "{err}");
    assert!(r.wal.is_poisoned());
    fs.fail_syncs(false);
    // No retry, whatever comes next.
    assert!(matches!(
        r.writer.append(&[rec(3)]),
        Err(WalError::Poisoned)
    ));
    assert!(matches!(
        r.writer.append(&[rec(2)]),
        Err(WalError::Poisoned)
    ));
    assert!(matches!(r.writer.sync(), Err(WalError::Poisoned)));
    assert!(matches!(r.writer.sync_if_due(), Err(WalError::Poisoned)));
    assert_eq!(
        WalError::Poisoned.to_string(),
        "wal poisoned by an earlier write/fsync failure; restart the node"
    );
    assert_eq!(r.wal.durable_seq(), Some(Seq(1)));
    drop(r);
    // Record 2 was written but never made durable: a power loss takes it.
    fs.power_loss();
    let r = sim_open(&fs, &cfg).unwrap();
    assert!(!r.wal.is_poisoned());
    assert_eq!(read_all(&r.wal, 0), recs(1..=1));
}

#[test]
fn write_failure_poisons_and_hides_the_partial_frame() {
    let fs = SimFs::new();
    let cfg = WalConfig::new("/w");
    let mut r = sim_open(&fs, &cfg).unwrap();
    append_range(&mut r.writer, 1..=4, 2);
    fs.fail_writes(true);
    let err = r.writer.append(&recs(5..=8)).unwrap_err();
    assert!(matches!(err, WalError::Io { .. }), "{err}");
    fs.fail_writes(false);
    assert!(matches!(
        r.writer.append(&recs(5..=8)),
        Err(WalError::Poisoned)
    ));
    // Readers see only the complete records, not the half-written batch.
    assert_eq!(read_all(&r.wal, 0), recs(1..=4));
    drop(r);
    // A restart (no power loss) finds the partial batch as a torn tail.
    let r = sim_open(&fs, &cfg).unwrap();
    assert!(r.report.truncated.is_some());
    let got = read_all(&r.wal, 0);
    assert!(
        got.len() >= 4 && got == recs(1..=got.len() as u64),
        "{got:?}"
    );
}

#[test]
fn rotation_failure_poisons_the_log() {
    let fs = SimFs::new();
    let cfg = cfg(Path::new("/w"), RecoveryMode::TolerateCorruptTail);
    let mut r = sim_open(&fs, &cfg).unwrap();
    fs.fail_syncs(true);
    assert!(matches!(
        r.writer.append(&recs(1..=2)),
        Err(WalError::SyncFailed { .. })
    ));
    assert!(matches!(
        r.writer.append(&recs(1..=2)),
        Err(WalError::Poisoned)
    ));
    assert!(r.wal.is_poisoned());
}

// ---- retention ----

#[test]
fn remove_covered_removes_exactly_the_covered_sealed_segments() {
    each_disk(|d| {
        let segs = d.build(40);
        let firsts: Vec<u64> = segs
            .iter()
            .map(|p| {
                parse_segment_name(p.file_name().unwrap().to_str().unwrap())
                    .unwrap()
                    .0
            })
            .collect();
        assert!(firsts.len() >= 4, "{firsts:?}");
        let r = d.open(RecoveryMode::Strict).unwrap();
        let (wal, mut w) = (r.wal, r.writer);
        let bytes_before = wal.total_bytes();

        // Segment 0 holds firsts[0]..firsts[1]-1: not covered one short of that.
        assert_eq!(wal.remove_covered(Seq(firsts[1] - 2)).unwrap(), 0);
        assert_eq!(d.segments(), segs);
        assert_eq!(wal.remove_covered(Seq(firsts[1] - 1)).unwrap(), 1);
        assert_eq!(d.segments(), segs[1..].to_vec());
        assert_eq!(wal.first_seq(), Some(Seq(firsts[1])));
        assert!(wal.total_bytes() < bytes_before);
        assert_eq!(read_all(&wal, 0), recs(firsts[1]..=40));
        // Covering up to the middle of segment 2 removes segment 1 only.
        assert_eq!(wal.remove_covered(Seq(firsts[2] + 1)).unwrap(), 1);
        assert_eq!(d.segments(), segs[2..].to_vec());
        // Everything covered: all but the active segment go.
        let n = segs.len();
        assert_eq!(wal.remove_covered(Seq(u64::MAX)).unwrap(), n - 3);
        assert_eq!(d.segments(), segs[n - 1..].to_vec());
        assert_eq!(
            wal.remove_covered(Seq(u64::MAX)).unwrap(),
            0,
            "never the active one"
        );
        assert_eq!(wal.first_seq(), Some(Seq(firsts[n - 1])));

        append_range(&mut w, 41..=45, 2);
        drop((wal, w));
        let r = d.open(RecoveryMode::Strict).unwrap();
        assert_eq!(r.report.first_seq, Some(Seq(firsts[n - 1])));
        assert_eq!(read_all(&r.wal, 0), recs(firsts[n - 1]..=45));
    });
}

#[test]
fn remove_covered_runs_safely_beside_the_writer() {
    let fs = SimFs::new();
    let cfg = WalConfig {
        segment_bytes: 256,
        ..cfg(Path::new("/w"), RecoveryMode::Strict)
    };
    let r = sim_open(&fs, &cfg).unwrap();
    let (wal, mut w) = (r.wal, r.writer);
    let writer = std::thread::spawn(move || {
        append_range(&mut w, 1..=2000, 3);
        w
    });
    let mut removed = 0;
    while !writer.is_finished() {
        if let Some(last) = wal.last_seq() {
            removed += wal.remove_covered(Seq(last.0.saturating_sub(50))).unwrap();
        }
        // Reads may race with removal, but never see a bad record.
        if let Ok(iter) = wal.read_from(Seq(0)) {
            for item in iter {
                match item {
                    Ok(_) | Err(WalError::SegmentRemoved { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
    let _w = writer.join().unwrap();
    assert!(removed > 0);
    let first = wal.first_seq().unwrap().0;
    assert_eq!(read_all(&wal, 0), recs(first..=2000));
    drop(wal);
    fs.power_loss();
    let r = sim_open(&fs, &cfg).unwrap();
    assert_eq!(r.report.last_seq, Some(Seq(2000)));
}

#[test]
fn removals_survive_power_loss_in_order() {
    let fs = SimFs::new();
    let cfg = cfg(Path::new("/w"), RecoveryMode::Strict);
    let mut r = sim_open(&fs, &cfg).unwrap();
    append_range(&mut r.writer, 1..=40, 3);
    let removed = r.wal.remove_covered(Seq(30)).unwrap();
    assert!(removed > 0);
    let first = r.wal.first_seq().unwrap();
    drop(r);
    fs.power_loss();
    let r = sim_open(&fs, &cfg).unwrap();
    assert_eq!(r.report.first_seq, Some(first));
}

// ---- arbitrary damage ----

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever bytes get flipped or cut, open never panics; when it
    /// succeeds it holds a prefix of what was written (I2), and
    /// point-in-time always succeeds unless a version field was hit.
    #[test]
    fn open_on_damaged_log_never_panics_nor_invents(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let fs = SimFs::new();
        let d = SimDisk(fs.clone());
        let segs = d.build(30);
        for (seg, at, x) in &flips {
            let p = &segs[seg.index(segs.len())];
            let mut data = d.bytes(p);
            let i = at.index(data.len());
            data[i] ^= x;
            d.set_bytes(p, data);
        }
        if let Some(c) = cut {
            let p = segs.last().unwrap();
            let mut data = d.bytes(p);
            data.truncate(c.index(data.len() + 1));
            d.set_bytes(p, data);
        }
        for mode in [RecoveryMode::Strict, RecoveryMode::TolerateCorruptTail, RecoveryMode::PointInTime] {
            match d.open(mode) {
                Ok(r) => {
                    let got: Vec<WalRecord> = r.wal.read_from(Seq(0)).unwrap().collect::<Result<_, _>>().unwrap();
                    prop_assert_eq!(got.len() as u64, r.report.records);
                    prop_assert_eq!(&got[..], &recs(1..=got.len() as u64)[..]);
                }
                Err(WalError::UnsupportedVersion { .. }) => {}
                Err(e) => prop_assert!(mode != RecoveryMode::PointInTime, "point-in-time failed: {}", e),
            }
        }
    }
}

// ---- restart ----

#[test]
fn restart_at_discards_the_log_and_continues_at_the_given_seq() {
    let fs = SimFs::new();
    let cfg = cfg(Path::new("/w"), RecoveryMode::Strict);
    let mut r = sim_open(&fs, &cfg).unwrap();
    append_range(&mut r.writer, 1..=20, 3);
    let segs = fs.paths();
    assert!(segs.len() > 1);

    // Going back (reusing seqs) is refused and changes nothing.
    assert!(matches!(
        r.writer.restart_at(Seq(15)),
        Err(WalError::SeqGap {
            expected: Seq(21),
            got: Seq(15)
        })
    ));
    // The seq that follows anyway: nothing to do.
    r.writer.restart_at(Seq(21)).unwrap();
    assert_eq!(fs.paths(), segs);
    assert!(!r.wal.is_poisoned());

    r.writer.restart_at(Seq(100)).unwrap();
    assert_eq!(
        fs.paths(),
        vec![PathBuf::from("/w").join(segment_file_name(Seq(100)))]
    );
    assert_eq!((r.wal.first_seq(), r.wal.last_seq()), (None, None));
    assert_eq!(r.writer.last_seq(), None);
    assert!(matches!(
        r.writer.append(&[rec(99)]),
        Err(WalError::SeqGap {
            expected: Seq(100),
            got: Seq(99)
        })
    ));
    append_range(&mut r.writer, 100..=105, 4);
    assert_eq!(read_all(&r.wal, 0), recs(100..=105));
    drop(r);
    fs.power_loss();
    let r = sim_open(&fs, &cfg).unwrap();
    assert_eq!(r.report.first_seq, Some(Seq(100)));
    assert_eq!(read_all(&r.wal, 0), recs(100..=105));
}

#[test]
fn restart_at_failure_poisons() {
    let fs = SimFs::new();
    let cfg = cfg(Path::new("/w"), RecoveryMode::Strict);
    let mut r = sim_open(&fs, &cfg).unwrap();
    append_range(&mut r.writer, 1..=5, 2);
    fs.fail_syncs(true);
    assert!(matches!(
        r.writer.restart_at(Seq(50)),
        Err(WalError::SyncFailed { .. })
    ));
    assert!(matches!(
        r.writer.append(&[rec(50)]),
        Err(WalError::Poisoned)
    ));
}
