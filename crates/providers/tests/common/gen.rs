//! proptest generators: JSON documents, conversations and responses, and the chat model
//! views the round-trip properties compare.

use proptest::{collection::vec, option, prelude::*};
use serde_json::{Map, Number, Value};
use switchyard_providers::{
    chat::{self, FinishReason, Part, Role, ToolCall},
    Usage,
};

/// Keys the inspectors look for, mixed with arbitrary ones, so generated documents reach
/// their paths.
const KEYS: &[&str] = &[
    "usage",
    "choices",
    "finish_reason",
    "stop_reason",
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "cached_tokens",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "input_tokens_details",
    "status",
    "type",
    "a",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(KEYS).prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

fn number(any_float: bool) -> BoxedStrategy<Value> {
    let float = if any_float {
        // Finite floats only: JSON has no NaN or infinity.
        any::<f64>()
            .prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number))
            .boxed()
    } else {
        // Decimals short enough that `serde_json` (without its `float_roundtrip` feature)
        // reads back exactly the float it wrote.
        (any::<i32>(), 0..6i32)
            .prop_filter_map("finite", |(m, e)| {
                Number::from_f64(f64::from(m) / 10f64.powi(e)).map(Value::Number)
            })
            .boxed()
    };
    prop_oneof![
        (0u64..100).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        float,
    ]
    .boxed()
}

/// Any JSON value, nested a few levels.
pub fn json_value() -> BoxedStrategy<Value> {
    value(true)
}

/// Any JSON value whose floats survive a trip through `serde_json` (see [`number`]).
fn exact_json_value() -> BoxedStrategy<Value> {
    value(false)
}

fn value(any_float: bool) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(any_float),
        any::<String>().prop_map(Value::String),
        proptest::sample::select(&["stop", "end_turn", "tool_calls", "completed", "failed"][..])
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((key(), inner), 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A JSON object.
pub fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    vec((key(), json_value()), 0..8).prop_map(|m| m.into_iter().collect())
}

/// Tool-call arguments: any JSON object.
fn arguments() -> impl Strategy<Value = Map<String, Value>> {
    vec((any::<String>(), exact_json_value()), 0..4).prop_map(|m| m.into_iter().collect())
}

/// Ids and names as providers make them (Anthropic, Gemini and Bedrock constrain them).
fn ident() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_-]{0,24}"
}

/// Text worth sending: not empty (formats leave out empty text blocks).
fn text() -> impl Strategy<Value = String> {
    any::<String>().prop_filter("not empty", |s| !s.is_empty())
}

/// A call the model made.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub id: String,
    pub name: String,
    pub arguments: Map<String, Value>,
}

fn call() -> impl Strategy<Value = Call> {
    (ident(), ident(), arguments()).prop_map(|(id, name, arguments)| Call {
        id,
        name,
        arguments,
    })
}

/// One round of a conversation: the caller's turn (the results of the previous round's
/// calls, then text), then the model's (text, then calls).
#[derive(Clone, Debug)]
pub struct Round {
    pub results: Vec<(String, String)>,
    pub user_text: Option<String>,
    pub assistant_text: Option<String>,
    pub calls: Vec<Call>,
}

/// A conversation in the shape every format carries without loss.
#[derive(Clone, Debug)]
pub struct Conversation {
    pub system: Option<String>,
    pub rounds: Vec<Round>,
}

pub fn conversation() -> impl Strategy<Value = Conversation> {
    let round = (
        option::of(text()),
        option::of(text()),
        vec(call(), 0..3),
        vec(any::<String>(), 3),
    );
    (option::of(text()), vec(round, 1..4)).prop_map(|(system, raw)| {
        let mut rounds = Vec::new();
        let mut pending: Vec<String> = Vec::new();
        for (user_text, assistant_text, calls, outputs) in raw {
            let results: Vec<(String, String)> =
                pending.drain(..).zip(outputs.into_iter().cycle()).collect();
            // Neither turn may be empty.
            let user_text = match (&user_text, results.is_empty()) {
                (None, true) => Some("go on".to_string()),
                _ => user_text,
            };
            let assistant_text = match (&assistant_text, calls.is_empty()) {
                (None, true) => Some("done".to_string()),
                _ => assistant_text,
            };
            pending = calls.iter().map(|c| c.id.clone()).collect();
            rounds.push(Round {
                results,
                user_text,
                assistant_text,
                calls,
            });
        }
        Conversation { system, rounds }
    })
}

/// One item of a [`View`].
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Text(String),
    Call(Call),
    Result { id: String, text: String },
}

/// What a translation must keep of a request: the system prompt and, turn by turn, the
/// text, tool calls and tool results. Neighbouring texts and neighbouring turns of one role
/// are joined, and empty texts left out, as formats differ there without loss.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub system: String,
    pub turns: Vec<(Role, Vec<Item>)>,
}

impl View {
    /// The view of a decoded request.
    pub fn of(req: &chat::Request<'_>) -> View {
        let mut v = View {
            system: String::new(),
            turns: Vec::new(),
        };
        for p in req.folded_system() {
            if let Part::Text(t) = p {
                v.system.push_str(&t.as_str());
            }
        }
        for m in &req.messages {
            for p in &m.content {
                let item = match p {
                    Part::Text(t) => Item::Text(t.as_str().into_owned()),
                    Part::ToolCall(c) => Item::Call(Call {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                    }),
                    Part::ToolResult { id, content, .. } => Item::Result {
                        id: id.clone(),
                        text: chat::joined_text(content),
                    },
                    Part::Reasoning { .. } | Part::Image(_) => continue,
                };
                v.push(m.role, item);
            }
        }
        v
    }

    /// The view of a generated conversation.
    pub fn expected(c: &Conversation) -> View {
        let mut v = View {
            system: c.system.clone().unwrap_or_default(),
            turns: Vec::new(),
        };
        for r in &c.rounds {
            for (id, text) in &r.results {
                v.push(
                    Role::User,
                    Item::Result {
                        id: id.clone(),
                        text: text.clone(),
                    },
                );
            }
            if let Some(t) = &r.user_text {
                v.push(Role::User, Item::Text(t.clone()));
            }
            if let Some(t) = &r.assistant_text {
                v.push(Role::Assistant, Item::Text(t.clone()));
            }
            for call in &r.calls {
                v.push(Role::Assistant, Item::Call(call.clone()));
            }
        }
        v
    }

    fn push(&mut self, role: Role, item: Item) {
        if matches!(&item, Item::Text(t) if t.is_empty()) {
            return;
        }
        if self.turns.last().is_none_or(|(r, _)| *r != role) {
            self.turns.push((role, Vec::new()));
        }
        let Some((_, items)) = self.turns.last_mut() else {
            return;
        };
        match (items.last_mut(), item) {
            (Some(Item::Text(prev)), Item::Text(t)) => prev.push_str(&t),
            (_, item) => items.push(item),
        }
    }
}

/// A complete answer: text, then tool calls.
#[derive(Clone, Debug)]
pub struct Answer {
    pub text: Option<String>,
    pub calls: Vec<Call>,
    pub finish: FinishReason,
    pub usage: Usage,
}

pub fn answer() -> impl Strategy<Value = Answer> {
    let finish = proptest::sample::select(
        &[
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::ToolCalls,
        ][..],
    );
    // Counts as large as a u32: cached tokens are part of the input.
    let usage = (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(a, b, c)| Usage {
        input_tokens: u64::from(a.max(c)),
        output_tokens: u64::from(b),
        cached_input_tokens: u64::from(a.min(c)),
        cache_write_tokens: 0,
    });
    (option::of(text()), vec(call(), 0..3), finish, usage).prop_map(
        |(text, calls, finish, usage)| Answer {
            text,
            calls,
            finish,
            usage,
        },
    )
}

impl Answer {
    /// As a complete internal response.
    pub fn response(&self) -> chat::Response {
        let mut content = Vec::new();
        if let Some(t) = &self.text {
            content.push(Part::Text(t.clone().into()));
        }
        for c in &self.calls {
            content.push(Part::ToolCall(ToolCall {
                id: c.id.clone(),
                name: c.name.clone(),
                arguments: c.arguments.clone(),
            }));
        }
        chat::Response {
            id: "resp_1".into(),
            model: "model-1".into(),
            content,
            finish_reason: Some(self.finish),
            stop_sequence: None,
            usage: Some(self.usage),
        }
    }

    /// Text and calls as a [`View`] turn would hold them.
    pub fn items(&self) -> Vec<Item> {
        let mut items = Vec::new();
        if let Some(t) = &self.text {
            items.push(Item::Text(t.clone()));
        }
        items.extend(self.calls.iter().cloned().map(Item::Call));
        items
    }
}

/// The text and calls of a decoded response, as [`Answer::items`] lists them.
pub fn response_items(r: &chat::Response) -> Vec<Item> {
    let mut v = View {
        system: String::new(),
        turns: Vec::new(),
    };
    for p in &r.content {
        match p {
            Part::Text(t) => v.push(Role::Assistant, Item::Text(t.as_str().into_owned())),
            Part::ToolCall(c) => v.push(
                Role::Assistant,
                Item::Call(Call {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                }),
            ),
            _ => {}
        }
    }
    v.turns.pop().map(|(_, items)| items).unwrap_or_default()
}
