//! The snapshot of one Task as stored in object storage: versioned, zstd-compressed JSON.
//!
//! Pure encoding: nothing here does I/O beyond the reader or writer it is given. Every map in a
//! snapshot is ordered (`BTreeMap`) and nothing time-dependent is added, so the same state
//! always encodes to the same bytes.

use std::io::{BufReader, BufWriter, Read, Write};

use maos_core::api::v1alpha1::{TaskSpec, TaskStatus};
use maos_core::coord::dump::TaskDump;
use serde::{Deserialize, Serialize};

/// The snapshot format this operator writes and reads.
pub const FORMAT: u32 = 1;
/// zstd level: 3 is zstd's default, fast enough to save 10 MiB well within a second.
const LEVEL: i32 = 3;
/// Buffer between the JSON serializer's many small writes and the compressor.
const BUFFER: usize = 256 << 10;

/// A Task's spec, status and every Redis key it had.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The snapshot format ([`FORMAT`]); a reader refuses formats it does not know.
    pub format: u32,
    /// Which Task it is of.
    pub task: TaskIdentity,
    /// The Task's spec when it was taken.
    pub spec: TaskSpec,
    /// The Task's status as last written when it was taken (read before the Redis state, so
    /// the state holds everything the status says).
    pub status: TaskStatus,
    /// The Task's Redis keys.
    pub state: TaskDump,
}

/// Where a snapshot came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskIdentity {
    /// The Task's namespace.
    pub namespace: String,
    /// The Task's name.
    pub name: String,
    /// The Task's uid.
    pub uid: String,
    /// The uid of the AgentPool its keys lived under.
    #[serde(rename = "poolUID")]
    pub pool_uid: String,
}

/// Why a snapshot could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Writing or reading the compressed stream failed.
    #[error("compressed stream: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a snapshot this operator can read.
    #[error("not a MAOS snapshot of format {FORMAT}: {0}")]
    Format(String),
}

/// Writes `snapshot` to `out` compressed; returns `out` once everything is flushed into it.
pub fn encode<W: Write>(snapshot: &Snapshot, out: W) -> Result<W, SnapshotError> {
    let encoder = zstd::stream::write::Encoder::new(out, LEVEL)?;
    let mut buffered = BufWriter::with_capacity(BUFFER, encoder);
    serde_json::to_writer(&mut buffered, snapshot).map_err(std::io::Error::from)?;
    let encoder = buffered
        .into_inner()
        .map_err(|e| SnapshotError::Io(e.into_error()))?;
    Ok(encoder.finish()?)
}

/// Reads a snapshot written by [`encode`].
pub fn decode<R: Read>(input: R) -> Result<Snapshot, SnapshotError> {
    let decoder = zstd::stream::read::Decoder::new(input)?;
    let reader = BufReader::with_capacity(BUFFER, decoder);
    let snapshot: Snapshot = serde_json::from_reader(reader).map_err(|e| {
        if e.is_io() {
            SnapshotError::Io(e.into())
        } else {
            SnapshotError::Format(e.to_string())
        }
    })?;
    if snapshot.format != FORMAT {
        return Err(SnapshotError::Format(format!(
            "it is format {}",
            snapshot.format
        )));
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use maos_core::coord::dump::{KeyDump, StreamEntry};
    use std::collections::BTreeMap;

    fn sample() -> Snapshot {
        let spec: TaskSpec = serde_json::from_value(serde_json::json!({
            "prompt": "Say hello",
            "poolRef": {"name": "default"}
        }))
        .unwrap();
        let mut state = TaskDump::default();
        let fields: BTreeMap<String, String> = (0..50)
            .map(|i| (format!("key-{i}"), format!("value \"{i}\" ✓")))
            .collect();
        state.keys.insert("kv".into(), KeyDump::Hash { fields });
        state.keys.insert(
            "events".into(),
            KeyDump::Stream {
                entries: vec![StreamEntry {
                    id: "1-0".into(),
                    fields: vec![("event".into(), "{}".into())],
                }],
                last_id: "1-0".into(),
                groups: [("operator".to_owned(), "0-0".to_owned())].into(),
            },
        );
        Snapshot {
            format: FORMAT,
            task: TaskIdentity {
                namespace: "default".into(),
                name: "hello".into(),
                uid: "u1".into(),
                pool_uid: "p1".into(),
            },
            spec,
            status: TaskStatus::default(),
            state,
        }
    }

    #[test]
    fn a_snapshot_round_trips_and_encodes_to_the_same_bytes_every_time() {
        let snapshot = sample();
        let first = encode(&snapshot, Vec::new()).unwrap();
        let second = encode(&snapshot.clone(), Vec::new()).unwrap();
        assert_eq!(first, second, "same state, same bytes");
        assert_eq!(&first[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
        assert_eq!(decode(first.as_slice()).unwrap(), snapshot);
    }

    #[test]
    fn an_unknown_format_is_refused_by_name() {
        let mut snapshot = sample();
        snapshot.format = 99;
        let bytes = encode(&snapshot, Vec::new()).unwrap();
        let err = decode(bytes.as_slice()).unwrap_err();
        assert!(
            matches!(&err, SnapshotError::Format(m) if m.contains("format 99")),
            "{err}"
        );
    }

    #[test]
    fn bytes_that_are_not_zstd_or_not_a_snapshot_are_errors_not_panics() {
        assert!(decode(&b"plain text"[..]).is_err());
        let not_a_snapshot = zstd::encode_all(&br#"{"hello": 1}"#[..], 3).unwrap();
        assert!(matches!(
            decode(not_a_snapshot.as_slice()),
            Err(SnapshotError::Format(_))
        ));
        let truncated = encode(&sample(), Vec::new()).unwrap();
        assert!(decode(&truncated[..truncated.len() / 2]).is_err());
    }
}
