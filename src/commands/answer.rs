//! Where a command's answer goes, and when it counts as given (I/O).
//!
//! Every answer is committed first: for the cloud, the result row (queued and published like a
//! sample), the recorded answer of an id and the removal of the command from the inbox, in one
//! transaction (with, for an MQTT 5 command that named a Response Topic, the answer row on that
//! topic, handed to the writer just before); for the on-site broker, the recorded answer and the removal, and then, after
//! the commit, the result is handed to the local client (live, not durable). [`Answers`] sends
//! answers to the queue without waiting for each commit, so a run of commands costs one commit,
//! and [`Answers::flush`] waits for them in order.

use std::sync::Arc;

use crate::config::Qos;
use crate::queue::request::to_hex;
use crate::queue::{
    AnswerSent, CommandKey, CommandRequest, Message, MessageKind, Queue, QueueError,
};
use crate::sample::now_ms;

/// Where the results of the on-site broker's commands go (its client): non-durable, offered
/// without waiting; `false` when it cannot take the result now.
pub trait LocalResults: Send + Sync + 'static {
    fn result(&self, device: &str, point: &str, payload: String) -> bool;
}

/// Which broker the commands come from, and so where their results go.
#[derive(Clone)]
pub enum Origin {
    /// The uplink: results through the durable queue.
    Cloud,
    /// The on-site broker: results straight back to it.
    Local(Arc<dyn LocalResults>),
}

impl Origin {
    /// The name commands are remembered and stored under (see `queue/recent.rs`,
    /// `queue/inbox.rs`).
    pub fn name(&self) -> &'static str {
        match self {
            Origin::Cloud => "cloud",
            Origin::Local(_) => "local",
        }
    }
}

/// One answer for [`Answers::send`].
pub(super) struct Answer<'a> {
    pub device: &'a str,
    pub point: &'a str,
    /// Recorded under this key (commands with an id).
    pub key: Option<CommandKey>,
    pub payload: String,
    /// The command's inbox row, removed with the answer.
    pub inbox: Option<i64>,
    /// MQTT 5: the command's Response Topic, answered there too (cloud only).
    pub response: Option<Response<'a>>,
}

/// Where an MQTT 5 requester waits for the answer (`request.rs`).
#[derive(Clone, Copy)]
pub(super) struct Response<'a> {
    pub topic: &'a str,
    pub correlation: Option<&'a [u8]>,
}

impl<'a> Response<'a> {
    /// The response topic `request` names, if any.
    pub fn of(request: &'a CommandRequest) -> Option<Response<'a>> {
        request.response_topic.as_deref().map(|topic| Response {
            topic,
            correlation: request.correlation.as_deref(),
        })
    }
}

/// A result for the local client: device, point, payload.
type LocalResult = (String, String, String);

/// Answers sent to the queue and not yet known to be committed, in the order they were made.
pub(super) struct Answers<'o> {
    origin: &'o Origin,
    sent: Vec<(AnswerSent, Option<LocalResult>)>,
}

impl<'o> Answers<'o> {
    pub fn new(origin: &'o Origin) -> Answers<'o> {
        Answers {
            origin,
            sent: Vec::new(),
        }
    }

    /// Hands `answer` to the queue; its commit is awaited by [`Answers::flush`].
    pub async fn send(&mut self, queue: &Queue, answer: Answer<'_>) -> Result<(), QueueError> {
        let Answer {
            device,
            point,
            key,
            payload,
            inbox,
            response,
        } = answer;
        let (message, local) = match self.origin {
            Origin::Cloud => {
                let message = Message {
                    kind: MessageKind::CommandResult,
                    device: Arc::from(device),
                    point: Arc::from(point),
                    payload: payload.clone(),
                    ts_ms: now_ms(),
                    qos: Qos::AtLeastOnce,
                    retain: false,
                };
                (Some(message), None)
            }
            Origin::Local(_) => (
                None,
                Some((device.to_owned(), point.to_owned(), payload.clone())),
            ),
        };
        if let (Some(response), Some(result)) = (response, &message) {
            // Committed before (mostly with) the result and the inbox removal: a crash in
            // between leaves the command in the inbox, answered again at the next start.
            let message = Message {
                kind: MessageKind::CommandResponse,
                device: Arc::from(response.topic),
                point: Arc::from(to_hex(response.correlation.unwrap_or_default())),
                ..result.clone()
            };
            let sent = queue
                .send_answer(None, String::new(), Some(message), None)
                .await?;
            self.sent.push((sent, None));
        }
        let sent = queue.send_answer(key, payload, message, inbox).await?;
        self.sent.push((sent, local));
        Ok(())
    }

    /// How many answers wait for [`Answers::flush`].
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// Waits for every answer's commit, in order, and then hands the local results to the
    /// local client. Returns the first failure; the answers that committed are given all the
    /// same.
    pub async fn flush(&mut self) -> Result<(), QueueError> {
        let mut failure = None;
        for (sent, local) in self.sent.drain(..) {
            match sent.committed().await {
                Ok(()) => {
                    if let (Origin::Local(results), Some((device, point, payload))) =
                        (self.origin, local)
                    {
                        if !results.result(&device, &point, payload) {
                            tracing::warn!(%device, %point, "the local broker client cannot take a command result now; it is dropped");
                        }
                    }
                }
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }
}
