//! `thinking`: extended thinking for a pool's or a Task's model calls.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Extended thinking: the model thinks, within a budget, before each answer. Thinking tokens
/// are output tokens, billed and counted against the Task's budget. The bounds are the API's:
/// at least 1,024, and below max_tokens, which an agent's call sets to the budget plus its
/// 4,096 answer tokens, at most the 64,000 output tokens Claude's 4.x models allow.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = Rule::new("self.budgetTokens >= 1024").message(kube::core::Message::Expression("'thinking.budgetTokens is ' + string(self.budgetTokens) + '; the Claude API needs at least 1024'".into())).field_path(".budgetTokens"),
    validation = Rule::new("self.budgetTokens <= 59904").message(kube::core::Message::Expression("'thinking.budgetTokens is ' + string(self.budgetTokens) + '; at most 59904: the API wants it below max_tokens, which is the budget plus 4096 for the answer and at most 64000'".into())).field_path(".budgetTokens")
)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    /// The most tokens the model may think before each answer: 1024 to 59904. Each call's
    /// max_tokens is this plus 4096 for the answer, so the budget stays below max_tokens as the
    /// API requires (a model with a smaller output limit, e.g. Opus 4.1's 32000, refuses more).
    pub budget_tokens: u32,
}
