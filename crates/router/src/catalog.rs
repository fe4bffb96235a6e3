//! The built-in price catalog: list prices of common models, compiled into the binary from
//! `data/prices.json`, used for a ModelBackend model whose `pricing` is left out (or
//! partly left out: a price given in the resource always wins over the catalog's).
//!
//! Each entry names the provider whose price list it comes from, its source and the date
//! it was checked. A backend looks a model up among the entries of its own provider
//! family (an `openai-compatible` backend — DeepSeek, Mistral, Zhipu GLM … — among all of
//! them), by id or alias; a Vertex-style `model@version` id is looked up without its
//! `@version` as well.

use std::{collections::HashMap, sync::OnceLock};

use serde::{Deserialize, Serialize};
use switchyard_types::{parse_price, MicroUsd, Provider};

use crate::pricing::Pricing;

/// The catalog as shipped.
const PRICES_JSON: &str = include_str!("../data/prices.json");

/// The parsed catalog.
#[derive(Debug, Deserialize, Serialize)]
pub struct Catalog {
    /// What the prices are and how they are used.
    pub about: String,
    /// When the file as a whole was last checked.
    pub date: String,
    /// One entry per model and provider.
    pub models: Vec<Entry>,
}

/// One model's list prices, USD per million tokens as decimal strings.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Whose price list: `openai`, `azure-openai`, `anthropic`, `bedrock`, `gemini`,
    /// `deepseek`, `mistral`, `zhipu`.
    pub provider: String,
    /// The model id as the provider's API takes it.
    pub model: String,
    /// Other ids of the same model (dated snapshots, region-less Bedrock ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Fresh input.
    pub input: String,
    /// Output.
    pub output: String,
    /// Input read from the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<String>,
    /// Input written to the prompt cache (5-minute lifetime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<String>,
    /// A caveat on the figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Where the prices were read.
    pub source: String,
    /// When they were read.
    pub date: String,
}

/// One entry's prices, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListPrice {
    /// Fresh input.
    pub input: MicroUsd,
    /// Output.
    pub output: MicroUsd,
    /// Cache reads, when the provider lists them.
    pub cache_read: Option<MicroUsd>,
    /// Cache writes, when the provider lists them.
    pub cache_write: Option<MicroUsd>,
}

struct Index {
    catalog: Catalog,
    /// id → (provider, prices), keyed by the id alone so that a lookup borrows.
    by_id: HashMap<String, Vec<(String, ListPrice)>>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        // The file is ours and checked by a test; a broken one yields an empty catalog
        // rather than a crash.
        let catalog: Catalog = serde_json::from_str(PRICES_JSON).unwrap_or(Catalog {
            about: String::new(),
            date: String::new(),
            models: Vec::new(),
        });
        let mut by_id: HashMap<String, Vec<(String, ListPrice)>> = HashMap::new();
        for e in &catalog.models {
            let price = |s: &str| parse_price(s).ok();
            let (Some(input), Some(output)) = (price(&e.input), price(&e.output)) else {
                continue;
            };
            let p = ListPrice {
                input,
                output,
                cache_read: e.cache_read.as_deref().and_then(price),
                cache_write: e.cache_write.as_deref().and_then(price),
            };
            for id in std::iter::once(&e.model).chain(&e.aliases) {
                by_id
                    .entry(id.clone())
                    .or_default()
                    .push((e.provider.clone(), p));
            }
        }
        Index { catalog, by_id }
    })
}

/// The catalog file as compiled in, for `switchyard prices --json`.
pub fn json() -> &'static str {
    PRICES_JSON
}

/// The whole catalog, for `switchyard prices`.
pub fn catalog() -> &'static Catalog {
    &index().catalog
}

/// The price lists a backend of `provider` is billed by, most specific first.
fn families(provider: Provider) -> &'static [&'static str] {
    match provider {
        Provider::OpenAi => &["openai"],
        Provider::AzureOpenAi => &["azure-openai", "openai"],
        Provider::Anthropic => &["anthropic"],
        Provider::Bedrock => &["bedrock"],
        Provider::Gemini => &["gemini"],
        Provider::OpenAiCompatible => &["deepseek", "mistral", "zhipu", "openai"],
    }
}

/// The list price of `model` at a backend of `provider`, if the catalog has it.
pub fn lookup(provider: Provider, model: &str) -> Option<ListPrice> {
    let idx = index();
    let find = |m: &str| {
        let listed = idx.by_id.get(m)?;
        families(provider)
            .iter()
            .find_map(|f| listed.iter().find(|(p, _)| p == f).map(|(_, price)| *price))
    };
    find(model).or_else(|| model.split_once('@').and_then(|(m, _)| find(m)))
}

/// The prices a ModelBackend gives for one of its models, each optional (`spec.models[].pricing`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GivenPrices {
    /// `inputPerMillion`.
    pub input: Option<MicroUsd>,
    /// `outputPerMillion`.
    pub output: Option<MicroUsd>,
    /// `cacheReadPerMillion`, else `cachedInputPerMillion`.
    pub cache_read: Option<MicroUsd>,
    /// `cacheWritePerMillion`.
    pub cache_write: Option<MicroUsd>,
}

/// The prices of `model` at a backend of `provider`: each price `given` wins, the rest come
/// from the catalog ([`lookup`]), and cache prices missing from both follow from the input
/// price by provider:
///
/// | provider | cache read | cache write |
/// |---|---|---|
/// | anthropic, bedrock | 0.1× input | 1.25× input (5-minute lifetime) |
/// | gemini | 0.25× input | 1× input |
/// | openai, azure-openai, openai-compatible | 0.5× input | 1× input |
///
/// (the lowest discount each provider publishes for its automatic caching, so spend is never
/// under-reported). Unknown (`known: false`, all zero) when neither `given` nor the catalog
/// has an input or output price.
pub fn resolve(provider: Provider, model: &str, given: GivenPrices) -> Pricing {
    let listed = lookup(provider, model);
    let input = given.input.or(listed.map(|l| l.input));
    let output = given.output.or(listed.map(|l| l.output));
    if input.is_none() && output.is_none() {
        return Pricing::default();
    }
    let input = input.unwrap_or_default();
    // Multipliers in thousandths of the input price.
    let (read_permille, write_permille) = match provider {
        Provider::Anthropic | Provider::Bedrock => (100, 1250),
        Provider::Gemini => (250, 1000),
        Provider::OpenAi | Provider::AzureOpenAi | Provider::OpenAiCompatible => (500, 1000),
    };
    let scaled = |permille: u64| MicroUsd(input.0.saturating_mul(permille) / 1000);
    Pricing {
        input,
        output: output.unwrap_or_default(),
        cached_input: given
            .cache_read
            .or(listed.and_then(|l| l.cache_read))
            .unwrap_or_else(|| scaled(read_permille)),
        cache_write: given
            .cache_write
            .or(listed.and_then(|l| l.cache_write))
            .unwrap_or_else(|| scaled(write_permille)),
        known: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_parses_and_is_dated() {
        let c: Catalog = serde_json::from_str(PRICES_JSON).unwrap();
        assert!(!c.date.is_empty());
        assert!(c.models.len() >= 20);
        for e in &c.models {
            for p in [Some(&e.input), Some(&e.output)]
                .into_iter()
                .chain([e.cache_read.as_ref(), e.cache_write.as_ref()])
                .flatten()
            {
                parse_price(p).unwrap_or_else(|err| panic!("{}: {p}: {err}", e.model));
            }
            assert!(!e.source.is_empty() && !e.date.is_empty(), "{}", e.model);
        }
    }

    #[test]
    fn lookup_by_provider_family_alias_and_vertex_version() {
        let p = lookup(Provider::Anthropic, "claude-sonnet-4-5-20250929").unwrap();
        assert_eq!(p.input, parse_price("3").unwrap());
        assert_eq!(p.cache_write, Some(parse_price("3.75").unwrap()));
        assert_eq!(p.cache_read, Some(parse_price("0.30").unwrap()));
        assert!(lookup(Provider::Anthropic, "claude-sonnet-4-5@20250929").is_some());
        // Another provider's price list is not used.
        assert!(lookup(Provider::Gemini, "claude-sonnet-4-5").is_none());
        assert!(lookup(Provider::OpenAiCompatible, "deepseek-chat").is_some());
        assert!(lookup(Provider::AzureOpenAi, "gpt-4.1").is_some());
        assert!(lookup(Provider::OpenAi, "no-such-model").is_none());
    }
}
