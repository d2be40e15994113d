use serde_json::json;

use super::*;
use crate::chat::{Delta, Extra, FunctionCallDelta, ToolCallDelta, Usage};

fn pick<T: Clone>(rng: &mut fastrand::Rng, from: &[T]) -> T {
    from[rng.usize(..from.len())].clone()
}

/// A chunk with a bit of everything the loop looks at, drawn at random.
fn chunk(rng: &mut fastrand::Rng) -> ChatChunk {
    let choices = (0..pick(rng, &[0, 1, 1, 1, 1, 2]))
        .map(|_| {
            let tool_calls = rng.u8(..8).eq(&0).then(|| {
                (0..rng.u32(1..3))
                    .map(|_| ToolCallDelta {
                        index: rng.u32(..2),
                        id: None,
                        kind: None,
                        function: Some(FunctionCallDelta {
                            name: pick(rng, &[None, Some("gw".to_owned()), Some("cl".to_owned())]),
                            arguments: Some("{".into()),
                        }),
                    })
                    .collect()
            });
            let mut extra = Extra::new();
            if rng.u8(..6) == 0 {
                extra.insert("refusal".into(), json!(null));
            }
            ChunkChoice {
                index: pick(rng, &[0, 0, 0, 1]),
                delta: Delta {
                    role: rng.bool().then(|| "assistant".to_owned()),
                    content: pick(rng, &[None, Some(String::new()), Some("x".into())]),
                    tool_calls,
                    extra,
                },
                finish_reason: (rng.u8(..4) == 0).then(|| "stop".to_owned()),
                extra: Extra::new(),
            }
        })
        .collect();
    ChatChunk {
        id: pick(rng, &["a", "a", "a", "b"]).to_owned(),
        object: "chat.completion.chunk".into(),
        created: pick(rng, &[1, 1, 1, 2]),
        model: pick(rng, &["m", "m", "m", "n"]).to_owned(),
        choices,
        usage: (rng.u8(..5) == 0).then(|| Usage::new(1, 2)),
        extra: Extra::new(),
    }
}

/// For random chunk sequences, what `relay` decides gives exactly what editing every chunk
/// gives: the same chunks sent, the same state after each (finish reason, role, tool routes).
#[test]
fn passing_a_chunk_as_it_is_or_dropping_it_is_what_editing_it_would_do() {
    let mut rng = fastrand::Rng::with_seed(17);
    let gw = |name: &str| name == "gw";
    let mut seen = [0usize; 3];
    for _ in 0..20_000 {
        let mut fast = Relayer::default();
        let mut slow = Relayer::default();
        for round in 0..rng.usize(1..3) {
            if round > 0 {
                fast.round();
                slow.round();
            }
            for _ in 0..rng.usize(1..6) {
                let c = chunk(&mut rng);
                let how = fast.relay(&c);
                let sent_fast = match how {
                    Relay::AsIs => Some(c.clone()),
                    Relay::Drop => None,
                    Relay::Edit => {
                        let mut e = c.clone();
                        fast.edit(&mut e, gw).then_some(e)
                    }
                };
                seen[how as usize] += 1;
                slow.head
                    .get_or_insert_with(|| (c.id.clone(), c.created, c.model.clone()));
                let mut e = c.clone();
                let sent_slow = slow.edit(&mut e, gw).then_some(e);
                assert_eq!(sent_fast, sent_slow, "{how:?} {c:?}");
                assert_eq!(fast, slow, "{how:?} {c:?}");
            }
        }
    }
    // Each way was taken often.
    assert!(seen.iter().all(|&n| n > 5_000), "{seen:?}");
}

#[test]
fn an_openai_stream_passes_but_its_finish_and_usage() {
    let mut r = Relayer::default();
    let text = |role: Option<&str>, content: Option<&str>, finish: Option<&str>| ChatChunk {
        choices: vec![ChunkChoice {
            delta: Delta {
                role: role.map(str::to_owned),
                content: content.map(str::to_owned),
                ..Delta::default()
            },
            finish_reason: finish.map(str::to_owned),
            ..ChunkChoice::default()
        }],
        ..ChatChunk::of("c", 1, "m", Delta::default(), None)
    };
    let stream = [
        text(Some("assistant"), Some(""), None),
        text(None, Some("Hello"), None),
        text(None, Some("!"), None),
        text(None, None, Some("stop")),
        ChatChunk {
            choices: Vec::new(),
            usage: Some(Usage::new(3, 4)),
            ..ChatChunk::of("c", 1, "m", Delta::default(), None)
        },
    ];
    let ways: Vec<Relay> = stream.iter().map(|c| r.relay(c)).collect();
    use Relay::{AsIs, Drop};
    assert_eq!(ways, [AsIs, AsIs, AsIs, Drop, Drop]);
    assert_eq!(r.finish.as_deref(), Some("stop"));
}
