//! What the streamed tool loop does to each upstream chunk before the client sees it: every
//! round's chunks carry the first round's id, time and model; the role is sent once; the finish
//! reason and usage are held for the end of all rounds; the gateway's own tool calls are left out
//! and the client's renumbered.
//!
//! Most chunks need none of that and pass as they are ([`Relay::AsIs`]): an OpenAI chunk that
//! kept its JSON then goes to the client as that JSON, and is not decoded again. A chunk that
//! would be left out whole is not changed either ([`Relay::Drop`]).

use std::collections::HashMap;

use crate::chat::{ChatChunk, ChunkChoice};

/// What becomes of one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Relay {
    /// Sent unchanged.
    AsIs,
    /// Left out (it only carried the finish reason, usage, or nothing the client is sent).
    Drop,
    /// Changed by [`Relayer::edit`], then sent if anything is left of it.
    Edit,
}

/// The loop's state over one request's chunks.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Relayer {
    /// The first round's id, time and model.
    pub head: Option<(String, u64, String)>,
    /// Whether the role went out.
    sent_role: bool,
    /// This round: the client's index for each upstream tool call index (`None`: the gateway's).
    routes: HashMap<u32, Option<u32>>,
    /// This round: the next client tool call index.
    next_client: u32,
    /// This round: the upstream's finish reason.
    pub finish: Option<String>,
}

impl Relayer {
    /// A new round: its tool calls and finish reason start afresh.
    pub fn round(&mut self) {
        self.routes.clear();
        self.next_client = 0;
        self.finish = None;
    }

    /// What becomes of `chunk` (whose usage has been counted). A chunk sent as it is or left out
    /// is taken note of here (its role, its finish reason); for `Edit`, [`Relayer::edit`] must
    /// follow.
    pub fn relay(&mut self, chunk: &ChatChunk) -> Relay {
        let how = self.decide(chunk);
        if how != Relay::Edit {
            for c in chunk.choices.iter().filter(|c| c.index == 0) {
                if c.finish_reason.is_some() {
                    self.finish.clone_from(&c.finish_reason);
                }
                self.sent_role |= c.delta.role.is_some();
            }
        }
        how
    }

    fn decide(&mut self, chunk: &ChatChunk) -> Relay {
        let head = &*self
            .head
            .get_or_insert_with(|| (chunk.id.clone(), chunk.created, chunk.model.clone()));
        let sent_role = self.sent_role;
        if chunk.choices.iter().all(|c| left_out(c, sent_role)) {
            return Relay::Drop;
        }
        let same_head = chunk.id == head.0 && chunk.created == head.1 && chunk.model == head.2;
        // Choice 0 once (a second one could lose the role the first one sends), kept whole.
        let firsts = chunk.choices.iter().filter(|c| c.index == 0).count();
        let kept_as_is = |c: &ChunkChoice| {
            c.index != 0
                || (c.finish_reason.is_none()
                    && c.delta.tool_calls.is_none()
                    && !(sent_role && c.delta.role.is_some())
                    && !left_out(c, sent_role))
        };
        if chunk.usage.is_none() && same_head && firsts <= 1 && chunk.choices.iter().all(kept_as_is)
        {
            Relay::AsIs
        } else {
            Relay::Edit
        }
    }

    /// Changes `chunk` for the client; `false` when nothing is left of it to send.
    /// `is_gateway` says whether a tool name is one the gateway runs.
    pub fn edit(&mut self, chunk: &mut ChatChunk, is_gateway: impl Fn(&str) -> bool) -> bool {
        chunk.usage = None;
        if let Some((id, created, model)) = &self.head {
            if chunk.id != *id {
                chunk.id.clone_from(id);
            }
            chunk.created = *created;
            if chunk.model != *model {
                chunk.model.clone_from(model);
            }
        }
        chunk.choices.retain_mut(|c| {
            if c.index != 0 {
                return true;
            }
            if c.finish_reason.is_some() {
                self.finish = c.finish_reason.take();
            }
            if self.sent_role {
                c.delta.role = None;
            } else if c.delta.role.is_some() {
                self.sent_role = true;
            }
            if let Some(deltas) = c.delta.tool_calls.take() {
                let kept: Vec<_> = deltas
                    .into_iter()
                    .filter_map(|mut d| {
                        let route = *self.routes.entry(d.index).or_insert_with(|| {
                            let name = d
                                .function
                                .as_ref()
                                .and_then(|f| f.name.as_deref())
                                .unwrap_or("");
                            if is_gateway(name) {
                                None
                            } else {
                                self.next_client += 1;
                                Some(self.next_client - 1)
                            }
                        });
                        route.map(|i| {
                            d.index = i;
                            d
                        })
                    })
                    .collect();
                if !kept.is_empty() {
                    c.delta.tool_calls = Some(kept);
                }
            }
            c.delta.role.is_some()
                || c.delta.content.is_some()
                || c.delta.tool_calls.is_some()
                || !c.delta.extra.is_empty()
        });
        !chunk.choices.is_empty()
    }
}

/// Whether choice `c` would be left out whole: choice 0 with nothing but its finish reason, or a
/// role already sent.
fn left_out(c: &ChunkChoice, sent_role: bool) -> bool {
    c.index == 0
        && c.delta.tool_calls.is_none()
        && c.delta.content.is_none()
        && c.delta.extra.is_empty()
        && (c.delta.role.is_none() || sent_role)
}

#[cfg(test)]
mod tests;
