//! A subtask's conversation journal: one stream entry per model response and per tool result,
//! so an agent that takes over a reclaimed subtask replays the conversation and continues it.
//!
//! Tool results carry their tool-use id; a replaying agent asks [`Conversation::tool_result`]
//! before running a tool, so a tool call already applied is not applied twice.
//!
//! Before the operator dispatches the retry of a failed attempt it appends an
//! [`EntryKind::Ended`] marker ([`Journal::end_before`]): the retry starts a fresh conversation
//! after it ([`Conversation::live`]) and is told why the last one failed
//! ([`Conversation::last_failure`]); replay is only for taking over an attempt whose agent
//! died, never for continuing a failed one.

use redis::streams::StreamRangeReply;

use super::conn::Redis;
use super::entry;
use super::error::{CoordError, CoordResult};
use super::functions::Function;
use super::keys::{TaskKeys, field};
use super::queue::EntryId;
use super::script::Call;
use crate::dag::SubtaskName;

/// Entries read per XRANGE page when replaying.
const PAGE: usize = 500;

/// What one journal entry holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// The opening user message (the context the agent built), so a takeover replays exactly
    /// the conversation the model saw rather than rebuilding it from a changed world.
    Opening,
    /// A model response (the assistant message, as JSON).
    ModelResponse,
    /// A tool's result, answering the tool use with this id.
    ToolResult {
        /// The tool-use id from the model's request.
        tool_use_id: String,
    },
    /// The attempts up to this entry's failed; the body says why (`"<Reason>: <detail>"`).
    Ended,
}

impl EntryKind {
    fn tag(&self) -> &'static str {
        match self {
            Self::Opening => "opening",
            Self::ModelResponse => "model_response",
            Self::ToolResult { .. } => "tool_result",
            Self::Ended => "ended",
        }
    }
}

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    /// Its position in the journal.
    pub id: EntryId,
    /// Model response or tool result.
    pub kind: EntryKind,
    /// The attempt that wrote it.
    pub attempt: u32,
    /// The payload (JSON as the Messages API has it).
    pub body: String,
}

/// A subtask's conversation as read back, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conversation {
    /// Every entry, oldest first.
    pub entries: Vec<JournalEntry>,
}

impl Conversation {
    /// The recorded result of tool use `tool_use_id`, if that tool call was already applied.
    pub fn tool_result(&self, tool_use_id: &str) -> Option<&JournalEntry> {
        self.live().into_iter().find(
            |e| matches!(&e.kind, EntryKind::ToolResult { tool_use_id: id } if id == tool_use_id),
        )
    }

    /// The conversation of the attempt in progress: every entry after the last
    /// [`EntryKind::Ended`] marker of a later attempt than the marker's (all of them when no
    /// attempt failed). A failed attempt's agent that was stuck and writes on after its end
    /// adds nothing to its retry's conversation.
    pub fn live(&self) -> Vec<&JournalEntry> {
        let Some(at) = self
            .entries
            .iter()
            .rposition(|e| e.kind == EntryKind::Ended)
        else {
            return self.entries.iter().collect();
        };
        let ended = self.entries[at].attempt;
        self.entries[at + 1..]
            .iter()
            .filter(|e| e.attempt > ended)
            .collect()
    }

    /// Why the last failed attempt ended, if one did.
    pub fn last_failure(&self) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.kind == EntryKind::Ended)
            .map(|e| e.body.as_str())
    }
}

// KEYS: the journal stream, the journal index. ARGV: subtask, then the entry's field/value
// pairs. The index first, so cleanup always knows a journal that exists. Reply: the entry id.
pub(crate) static APPEND: Function = Function::new(
    "maos_journal_append",
    r"
redis.call('SADD', KEYS[2], ARGV[1])
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
",
);

/// One subtask's journal.
#[derive(Clone, Debug)]
pub struct Journal {
    redis: Redis,
    keys: TaskKeys,
    subtask: SubtaskName,
}

impl Journal {
    /// The journal of `subtask` in the task with `keys`.
    pub fn new(redis: Redis, keys: TaskKeys, subtask: SubtaskName) -> Self {
        Self {
            redis,
            keys,
            subtask,
        }
    }

    /// Appends an entry written by `attempt`.
    pub async fn append(&self, attempt: u32, kind: &EntryKind, body: &str) -> CoordResult<EntryId> {
        let (stream, index) = (self.keys.journal(&self.subtask), self.keys.journal_index());
        let tool_use_id = match kind {
            EntryKind::ToolResult { tool_use_id } => tool_use_id.as_str(),
            EntryKind::Opening | EntryKind::ModelResponse | EntryKind::Ended => "",
        };
        let id: String = self
            .redis
            .run("append journal", |mut c| {
                let (stream, index) = (&stream, &index);
                async move {
                    Call::new(&APPEND, &[stream, index], body.len() + 128)
                        .arg(self.subtask.as_str())
                        .arg(field::ENTRY_KIND)
                        .arg(kind.tag())
                        .arg(field::ATTEMPT)
                        .arg(attempt)
                        .arg(field::TOOL_USE_ID)
                        .arg(tool_use_id)
                        .arg(field::BODY)
                        .arg(body)
                        .invoke(&mut c)
                        .await
                }
            })
            .await?;
        Ok(EntryId::from_raw(id))
    }

    /// Deletes the conversation, so the next attempt starts afresh (a plan the operator
    /// rejected, whose reason the planner is told through the plan's feedback instead).
    pub async fn clear(&self) -> CoordResult<()> {
        let (stream, index) = (self.keys.journal(&self.subtask), self.keys.journal_index());
        let mut pipe = redis::pipe();
        pipe.cmd("UNLINK").arg(&stream).ignore();
        pipe.cmd("SREM")
            .arg(&index)
            .arg(self.subtask.as_str())
            .ignore();
        self.redis
            .run("clear journal", |mut c| {
                let pipe = &pipe;
                async move { pipe.query_async::<()>(&mut c).await }
            })
            .await
    }

    /// The whole conversation, in the order it was appended.
    pub async fn read_all(&self) -> CoordResult<Conversation> {
        const OP: &str = "read journal";
        let stream = self.keys.journal(&self.subtask);
        let mut entries = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let page: StreamRangeReply = self
                .redis
                .run(OP, |mut c| {
                    let (stream, start) = (&stream, &start);
                    async move {
                        redis::cmd("XRANGE")
                            .arg(stream)
                            .arg(start)
                            .arg("+")
                            .arg("COUNT")
                            .arg(PAGE)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            let full = page.ids.len() >= PAGE;
            for e in page.ids {
                start = format!("({}", e.id);
                entries.push(parse(OP, e)?);
            }
            if !full {
                return Ok(Conversation { entries });
            }
        }
    }

    /// Ends every attempt before `attempt` with `reason`, unless the newest entry is already a
    /// marker or is of `attempt` or later: the operator does this before it dispatches retry
    /// `attempt`, so the retry starts afresh whether the failed attempt's agent reported the
    /// failure or was stuck past its timeout. Returns whether a marker was written.
    pub async fn end_before(&self, attempt: u32, reason: &str) -> CoordResult<bool> {
        const OP: &str = "end journal attempt";
        let stream = self.keys.journal(&self.subtask);
        let newest: StreamRangeReply = self
            .redis
            .run(OP, |mut c| {
                let stream = &stream;
                async move {
                    redis::cmd("XREVRANGE")
                        .arg(stream)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        let Some(newest) = newest.ids.into_iter().next() else {
            return Ok(false);
        };
        let newest = parse(OP, newest)?;
        if newest.kind == EntryKind::Ended || newest.attempt >= attempt {
            return Ok(false);
        }
        self.append(attempt.saturating_sub(1), &EntryKind::Ended, reason)
            .await?;
        Ok(true)
    }
}

/// One stream entry as a journal entry.
fn parse(op: &'static str, e: redis::streams::StreamId) -> CoordResult<JournalEntry> {
    let tag = entry::text(op, &e.map, field::ENTRY_KIND)?;
    let attempt = u32::try_from(entry::number(op, &e.map, field::ATTEMPT)?)
        .map_err(|_| CoordError::protocol(op, "attempt out of range"))?;
    let kind = match tag.as_str() {
        "opening" => EntryKind::Opening,
        "model_response" => EntryKind::ModelResponse,
        "ended" => EntryKind::Ended,
        "tool_result" => EntryKind::ToolResult {
            tool_use_id: entry::text(op, &e.map, field::TOOL_USE_ID)?,
        },
        other => {
            return Err(CoordError::protocol(
                op,
                format!("unknown journal entry kind {other:?}"),
            ));
        }
    };
    Ok(JournalEntry {
        id: EntryId::from_raw(e.id),
        kind,
        attempt,
        body: entry::text(op, &e.map, field::BODY)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32, kind: EntryKind, body: &str) -> JournalEntry {
        JournalEntry {
            id: EntryId::from_raw(format!("{n}-0")),
            kind,
            attempt: n,
            body: body.to_owned(),
        }
    }

    #[test]
    fn a_failed_attempt_leaves_the_next_one_a_fresh_conversation_and_its_reason() {
        let mut conversation = Conversation {
            entries: vec![
                entry(1, EntryKind::Opening, "go"),
                entry(1, EntryKind::ModelResponse, "[]"),
                entry(
                    1,
                    EntryKind::ToolResult {
                        tool_use_id: "t1".into(),
                    },
                    "{}",
                ),
            ],
        };
        assert_eq!(conversation.live().len(), 3, "nothing failed: all is live");
        assert_eq!(conversation.last_failure(), None);
        assert!(conversation.tool_result("t1").is_some());

        conversation
            .entries
            .push(entry(1, EntryKind::Ended, "NoAnswer: no plan"));
        assert!(conversation.live().is_empty());
        assert_eq!(conversation.last_failure(), Some("NoAnswer: no plan"));
        assert!(
            conversation.tool_result("t1").is_none(),
            "a failed attempt's tool calls are not the retry's"
        );

        conversation
            .entries
            .push(entry(2, EntryKind::Opening, "again"));
        conversation
            .entries
            .push(entry(2, EntryKind::Ended, "ModelError: x"));
        conversation.entries.push(entry(
            2,
            EntryKind::ModelResponse,
            "late, from the stuck attempt 2",
        ));
        conversation
            .entries
            .push(entry(3, EntryKind::Opening, "third"));
        assert_eq!(conversation.live().len(), 1);
        assert_eq!(conversation.live()[0].body, "third");
        assert_eq!(conversation.last_failure(), Some("ModelError: x"));
    }
}
