//! Model prices: the table the operator prices `status.usage.costUSD` with and hands to its
//! agents (so an agent reserves a call's worst-case cost with the very prices the operator
//! then charges), and the cost of a call in US dollars and in integer micro-dollars.
//!
//! A price is in US dollars per million tokens, which is exactly micro-dollars per token: the
//! budget in Redis counts cost in whole micro-dollars, so concurrent agents add integers and
//! never accumulate float drift.

use serde::{Deserialize, Serialize};

/// Model prices in US dollars per million tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Price {
    /// The model name, or a prefix of it ending in `*`.
    pub model: String,
    /// Input tokens.
    pub input: f64,
    /// Output tokens.
    pub output: f64,
    /// Input tokens read from the prompt cache.
    pub cache_read: f64,
    /// Input tokens written to the prompt cache.
    pub cache_write: f64,
}

/// Tokens one model call billed, as the API's `usage` counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BilledTokens {
    /// Uncached input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write: u64,
}

impl Price {
    /// What `tokens` cost, in US dollars.
    pub fn cost_usd(&self, tokens: BilledTokens) -> f64 {
        self.micro_usd(tokens) / 1_000_000.0
    }

    /// What `tokens` cost, in whole micro-dollars (rounded to the nearest).
    pub fn cost_micro_usd(&self, tokens: BilledTokens) -> u64 {
        to_micros(self.micro_usd(tokens).round())
    }

    /// The most a call can cost, in whole micro-dollars (rounded up): `max_tokens` of output,
    /// and `input` tokens at the dearest input rate (a prompt-cache write costs more than plain
    /// input, and the agent cannot know beforehand which part the API caches).
    pub fn worst_case_micro_usd(&self, input: u64, max_tokens: u64) -> u64 {
        let input_rate = self.input.max(self.cache_write).max(self.cache_read);
        to_micros((input as f64 * input_rate + max_tokens as f64 * self.output).ceil())
    }

    /// Dollars per million tokens are micro-dollars per token.
    fn micro_usd(&self, tokens: BilledTokens) -> f64 {
        tokens.input as f64 * self.input
            + tokens.output as f64 * self.output
            + tokens.cache_read as f64 * self.cache_read
            + tokens.cache_write as f64 * self.cache_write
    }
}

/// A non-negative float of whole micro-dollars as an integer (saturating; NaN is 0).
fn to_micros(value: f64) -> u64 {
    if value.is_nan() || value <= 0.0 {
        0
    } else if value >= u64::MAX as f64 {
        u64::MAX
    } else {
        value as u64
    }
}

/// A model price table; the first matching entry prices a model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PriceTable(pub Vec<Price>);

impl PriceTable {
    /// The price of `model`, if the table knows it.
    pub fn price(&self, model: &str) -> Option<&Price> {
        self.0.iter().find(|p| match p.model.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix),
            None => model == p.model,
        })
    }

    /// The table as one line that [`parse_price_table`] reads back exactly (JSON, which is
    /// YAML): how the operator hands its table to the agents in their environment.
    pub fn to_line(&self) -> String {
        let entries: Vec<PriceEntry> = self
            .0
            .iter()
            .map(|p| PriceEntry {
                model: p.model.clone(),
                input: p.input,
                output: p.output,
                cache_read: Some(p.cache_read),
                cache_write: Some(p.cache_write),
            })
            .collect();
        // Serializing strings and finite floats cannot fail.
        serde_json::to_string(&entries).unwrap_or_else(|_| "[]".to_owned())
    }
}

/// Why a price table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PriceTableError {
    /// The file could not be read.
    #[error("cannot read the price table {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not a valid price table.
    #[error("the price table {path} is not valid: {detail}")]
    Invalid {
        /// The file (or where the text came from).
        path: String,
        /// What is wrong.
        detail: String,
    },
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PriceEntry {
    model: String,
    input: f64,
    output: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_read: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_write: Option<f64>,
}

/// Parses a YAML price table (`- {model: "claude-sonnet-4*", input: 3, output: 15}`); cache
/// prices default to 10 % (reads) and 125 % (writes) of the input price, as Anthropic bills
/// them. `path` only names the source in errors.
pub fn parse_price_table(yaml: &str, path: &str) -> Result<PriceTable, PriceTableError> {
    let entries: Vec<PriceEntry> =
        serde_saphyr::from_str(yaml).map_err(|e| PriceTableError::Invalid {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    let mut prices = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let values = [
            entry.input,
            entry.output,
            entry.cache_read.unwrap_or(0.0),
            entry.cache_write.unwrap_or(0.0),
        ];
        if entry.model.is_empty() || values.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(PriceTableError::Invalid {
                path: path.to_owned(),
                detail: format!(
                    "entry {i}: model must be non-empty and prices non-negative numbers"
                ),
            });
        }
        prices.push(Price {
            model: entry.model,
            input: entry.input,
            output: entry.output,
            cache_read: entry.cache_read.unwrap_or(entry.input * 0.1),
            cache_write: entry.cache_write.unwrap_or(entry.input * 1.25),
        });
    }
    Ok(PriceTable(prices))
}

/// Reads the price table at `path`, or the built-in one.
pub fn load_price_table(path: Option<&std::path::Path>) -> Result<PriceTable, PriceTableError> {
    let Some(path) = path else {
        return Ok(default_price_table());
    };
    let shown = path.display().to_string();
    let yaml = std::fs::read_to_string(path).map_err(|source| PriceTableError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_price_table(&yaml, &shown)
}

/// Anthropic's list prices (US dollars per million tokens) for the Claude models MAOS is
/// likely to run; more specific entries first.
pub fn default_price_table() -> PriceTable {
    let price = |model: &str, input: f64, output: f64| Price {
        model: model.to_owned(),
        input,
        output,
        cache_read: input * 0.1,
        cache_write: input * 1.25,
    };
    PriceTable(vec![
        price("claude-opus-4-5*", 5.0, 25.0),
        price("claude-opus-4*", 15.0, 75.0),
        price("claude-sonnet-4*", 3.0, 15.0),
        price("claude-3-7-sonnet*", 3.0, 15.0),
        price("claude-haiku-4-5*", 1.0, 5.0),
        price("claude-3-5-haiku*", 0.8, 4.0),
    ])
}

/// A decimal dollar amount as the CRD allows it (`^[0-9]{1,9}(\.[0-9]{1,6})?$`, e.g. "25.00")
/// in whole micro-dollars, exactly; `None` for anything else.
pub fn micro_usd(dollars: &str) -> Option<u64> {
    let (whole, fraction) = dollars.split_once('.').unwrap_or((dollars, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 9 || fraction.len() > 6 || !digits(whole) {
        return None;
    }
    if !digits(fraction) || (dollars.contains('.') && fraction.is_empty()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let fraction: u64 = format!("{fraction:0<6}").parse().ok()?;
    Some(whole * 1_000_000 + fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_price_table_parses_with_default_cache_prices() {
        let table = parse_price_table(
            "- {model: \"claude-sonnet-4*\", input: 3, output: 15}\n",
            "prices.yaml",
        )
        .expect("valid");
        let price = table.price("claude-sonnet-4-5").expect("priced");
        assert_eq!((price.input, price.output), (3.0, 15.0));
        assert!((price.cache_read - 0.3).abs() < 1e-9);
        assert!((price.cache_write - 3.75).abs() < 1e-9);
    }

    #[test]
    fn a_bad_price_table_names_the_file_and_the_problem() {
        let err = parse_price_table("- {model: m, input: -1, output: 2}\n", "p.yaml")
            .expect_err("negative price");
        assert!(err.to_string().contains("p.yaml"), "{err}");
        assert!(err.to_string().contains("entry 0"), "{err}");
        let err = parse_price_table("- {model: m, inptu: 1, output: 2}\n", "p.yaml")
            .expect_err("unknown field");
        assert!(err.to_string().contains("inptu"), "{err}");
    }

    #[test]
    fn the_built_in_table_prices_the_default_model() {
        let table = default_price_table();
        let price = table
            .price(crate::api::v1alpha1::DEFAULT_MODEL)
            .expect("default model priced");
        assert_eq!(price.input, 3.0);
        assert_eq!(
            table.price("claude-opus-4-5-20251101").map(|p| p.input),
            Some(5.0)
        );
        assert_eq!(table.price("claude-opus-4-1").map(|p| p.input), Some(15.0));
    }

    #[test]
    fn a_table_handed_on_as_one_line_reads_back_the_same() {
        let mut table = default_price_table();
        table.0.push(Price {
            model: "odd \"model\"".into(),
            input: 0.1,
            output: 0.2,
            cache_read: 0.0,
            cache_write: 7.0,
        });
        let line = table.to_line();
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(parse_price_table(&line, "env").expect("parses"), table);
        assert_eq!(
            parse_price_table(&PriceTable::default().to_line(), "env").expect("parses"),
            PriceTable::default()
        );
    }

    #[test]
    fn costs_are_priced_per_million_tokens_in_dollars_and_whole_micro_dollars() {
        let sonnet = default_price_table()
            .price("claude-sonnet-4-5")
            .expect("priced")
            .clone();
        let tokens = BilledTokens {
            input: 1_000,
            output: 2_000,
            cache_read: 10_000,
            cache_write: 4_000,
        };
        // 1000×3 + 2000×15 + 10000×0.3 + 4000×3.75 = 3000 + 30000 + 3000 + 15000 µ$.
        assert_eq!(sonnet.cost_micro_usd(tokens), 51_000);
        assert!((sonnet.cost_usd(tokens) - 0.051).abs() < 1e-12);
        // Worst case: all input at the cache-write rate (3.75), all of max_tokens as output.
        assert_eq!(sonnet.worst_case_micro_usd(1_000, 4_096), 3_750 + 61_440);
        let haiku = default_price_table()
            .price("claude-3-5-haiku")
            .expect("priced")
            .clone();
        // 3 × 0.8 = 2.4 µ$ of input is rounded up, never down.
        assert_eq!(haiku.worst_case_micro_usd(3, 0), 3);
    }

    #[test]
    fn dollar_amounts_become_exact_micro_dollars() {
        assert_eq!(micro_usd("25.00"), Some(25_000_000));
        assert_eq!(micro_usd("0.000001"), Some(1));
        assert_eq!(micro_usd("7"), Some(7_000_000));
        assert_eq!(micro_usd("999999999.999999"), Some(999_999_999_999_999));
        for bad in [
            "",
            ".5",
            "5.",
            "1.0000001",
            "-1",
            "1e3",
            "1,5",
            "1234567890",
        ] {
            assert_eq!(micro_usd(bad), None, "{bad:?}");
        }
    }
}
