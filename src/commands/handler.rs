//! The command task (I/O): takes the commands one broker delivers (manual ack), carries each out
//! through the bus owner, answers it, and acknowledges the PUBLISH only once the answer is
//! committed.
//!
//! # One command, step by step
//! 1. The topic names the device and point; the payload is parsed ([`CommandPayload`]).
//! 2. With an `id`, the recent-commands table is asked first ([`Queue::recent_command`]):
//!    - **answered** before: the stored result is published again, nothing is written;
//!    - **writing**: the gateway stopped between the write and its answer. It does not write
//!      again; it reads the point back and answers `ok` if the device holds the requested
//!      value, `device_error` otherwise (or if it cannot read it);
//!    - unknown: go on.
//! 3. Checks against the point map, pure ([`plan`](super::plan)): `unknown_point`,
//!    `not_writable`, `expired`, `bad_payload`, `out_of_range`. A device whose last poll failed
//!    gets `device_offline` at once, nothing sent.
//! 4. With an `id`: "writing" is committed ([`Queue::command_taken`]) — only then the write goes
//!    to the bus owner (FC 5/6/15/16, failing fast when the device is offline), and with
//!    `verify: true` the point is read back.
//! 5. The answer is committed: for the cloud, the result row and the recorded answer in one
//!    transaction ([`Queue::answer_command`]); for the on-site broker, the recorded answer, then
//!    the result is handed to the local client. Then, and only then, the PUBLISH is
//!    acknowledged. A crash anywhere before that makes the broker redeliver the command (with a
//!    persistent session), and step 2 makes sure it is written at most once.
//!
//! Commands **without an id** have no record: a redelivery after a crash between the write and
//! the answer writes again (at least once). Senders that need exactly once send an id.
//!
//! A failure to commit (disk full, closed queue), or a local result the local client cannot
//! take, leaves the PUBLISH unacknowledged: its [`AckToken`] is dropped without an ack, which
//! makes the connection's owner renew the connection, and the broker redelivers the command on
//! the next one (`uplink::inbound`; a failure that lasts redials at the backoff's pace, not in
//! a loop). Left alone, the unacknowledged PUBLISH would hold back the acknowledgement of every
//! later command of that connection. Commands are handled one at a time in arrival order,
//! so two commands to one point are written in the order they were sent; a slow device delays
//! the commands behind it by at most its bus timeout (a dead one fails fast).

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::payload::{CommandId, CommandPayload};
use super::plan::{check_age, WritePlan};
use super::result::{self, ErrorCode, Outcome, Refusal};
use super::topic;
use crate::config::{CommandsConfig, PointConfig, Qos};
use crate::modbus::{BusHandle, DeviceView, WriteError};
use crate::queue::{CommandKey, Message, MessageKind, Queue, RecentCommand};
use crate::sample::now_ms;
use crate::uplink::{AckToken, Incoming};

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
    /// The name commands are remembered under (see `queue/recent.rs`).
    pub fn name(&self) -> &'static str {
        match self {
            Origin::Cloud => "cloud",
            Origin::Local(_) => "local",
        }
    }
}

/// The command task of one origin.
pub struct Handler {
    pub origin: Origin,
    /// The topic prefix commands arrive under (`P` of `P/+/+/set`).
    pub prefix: String,
    pub queue: Queue,
    /// The running bus owners (writes, read-backs, the point map), replaced by a reload.
    pub handles: watch::Receiver<Arc<[BusHandle]>>,
    pub commands: CommandsConfig,
}

impl Handler {
    /// Handles commands from `rx` until `cancel` fires. A command under way when it fires is
    /// dropped unanswered and unacknowledged: the broker redelivers it to the next run.
    pub async fn run(self, mut rx: mpsc::Receiver<Incoming>, cancel: CancellationToken) {
        loop {
            let incoming = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                incoming = rx.recv() => match incoming {
                    Some(incoming) => incoming,
                    None => return,
                },
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                () = self.handle(incoming) => {}
            }
        }
    }

    async fn handle(&self, incoming: Incoming) {
        let Incoming {
            topic,
            payload,
            ack,
            ..
        } = incoming;
        let Some((device, point)) = topic::parse(&self.prefix, &topic) else {
            warn!(%topic, "ignoring a message that is not a command topic");
            acknowledge(ack);
            return;
        };
        let parsed = CommandPayload::parse(&payload);
        let id = match &parsed {
            Ok(command) => command.id.clone(),
            Err(error) => error.id.clone(),
        };
        let key = id.as_ref().map(|id| CommandKey {
            origin: self.origin.name(),
            device: device.to_owned(),
            point: point.to_owned(),
            id: id.key(),
        });
        if let Some(key) = &key {
            match self.queue.recent_command(key.clone()).await {
                Err(error) => {
                    warn!(%device, %point, %error, "cannot look the command up; left unacknowledged for redelivery");
                    return;
                }
                Ok(Some(RecentCommand::Answered(result))) => {
                    info!(%device, %point, id = %key.id, "command seen before: answered again, not written");
                    self.deliver(device, point, None, result, ack).await;
                    return;
                }
                Ok(Some(RecentCommand::Writing)) => {
                    let outcome = self.interrupted(device, point, &parsed).await;
                    self.answer(device, point, key.clone(), id.as_ref(), outcome, ack)
                        .await;
                    return;
                }
                Ok(None) => {}
            }
        }
        let outcome = match &parsed {
            Err(error) => Outcome::Failed(Refusal::new(ErrorCode::BadPayload, &error.reason)),
            Ok(command) => match self.execute(device, point, command, key.as_ref()).await {
                Some(outcome) => outcome,
                // "Writing" could not be committed: nothing was written. Dropping `ack` unacked
                // renews the connection, and the broker redelivers the command.
                None => return,
            },
        };
        match key {
            Some(key) => {
                self.answer(device, point, key, id.as_ref(), outcome, ack)
                    .await
            }
            None => self.answer_once(device, point, outcome, ack).await,
        }
    }

    /// The running device `name`, its handle and view.
    fn find(&self, name: &str) -> Option<(BusHandle, DeviceView)> {
        let handles = self.handles.borrow();
        handles.iter().find_map(|handle| {
            handle
                .device(name)
                .map(|view| (handle.clone(), view.clone()))
        })
    }

    /// The device and point of a command, or `unknown_point`.
    fn target(
        &self,
        device: &str,
        point: &str,
    ) -> Result<(BusHandle, DeviceView, PointConfig), Refusal> {
        let (handle, view) = self.find(device).ok_or_else(|| {
            Refusal::new(
                ErrorCode::UnknownPoint,
                format!("there is no device {device:?}"),
            )
        })?;
        let config = view
            .config
            .points
            .iter()
            .find(|p| p.name == point)
            .cloned()
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::UnknownPoint,
                    format!("device {device:?} has no point {point:?}"),
                )
            })?;
        Ok((handle, view, config))
    }

    /// Checks and carries out a command; `None` when its "writing" record could not be committed
    /// (then nothing was written).
    async fn execute(
        &self,
        device: &str,
        point: &str,
        command: &CommandPayload,
        key: Option<&CommandKey>,
    ) -> Option<Outcome> {
        let (handle, view, config) = match self.target(device, point) {
            Ok(target) => target,
            Err(refusal) => return Some(Outcome::Failed(refusal)),
        };
        let Some(write) = config.write else {
            return Some(Outcome::Failed(Refusal::new(
                ErrorCode::NotWritable,
                format!("point {point:?} of {device:?} is not writable"),
            )));
        };
        let max_age = write.max_age.unwrap_or(self.commands.max_age);
        if let Err(refusal) = check_age(command.ts_ms, now_ms(), max_age, self.commands.without_ts)
        {
            return Some(Outcome::Failed(refusal));
        }
        let plan = match WritePlan::new(&config, &command.value) {
            Ok(plan) => plan,
            Err(refusal) => return Some(Outcome::Failed(refusal)),
        };
        let health = view.health.borrow().clone();
        if !health.online {
            return Some(Outcome::Failed(Refusal::new(
                ErrorCode::DeviceOffline,
                format!(
                    "the device does not answer ({}); nothing was written",
                    health.last_error.as_deref().unwrap_or("not answering")
                ),
            )));
        }
        if let Some(key) = key {
            if let Err(error) = self.queue.command_taken(key.clone()).await {
                warn!(%device, %point, %error, "cannot record the command; not written, left unacknowledged for redelivery");
                return None;
            }
        }
        if let Err(error) = handle.write(device, plan.request.clone()).await {
            return Some(Outcome::Failed(write_refusal(error)));
        }
        if !plan.verify {
            return Some(Outcome::Done {
                value: plan.value,
                note: None,
            });
        }
        Some(match handle.read_point(device, point).await {
            Ok(read) => match plan.confirmed_by(&read) {
                Ok(value) => Outcome::Done { value, note: None },
                Err(holds) => Outcome::Failed(Refusal::new(
                    ErrorCode::VerifyFailed,
                    format!("written and acknowledged, but {holds}"),
                )),
            },
            Err(error) => Outcome::Failed(Refusal::new(
                ErrorCode::VerifyFailed,
                format!("written and acknowledged, but the read-back failed: {error}"),
            )),
        })
    }

    /// A command found "writing": the gateway stopped while carrying it out. Never written
    /// again; the point is read back to tell what happened.
    async fn interrupted(
        &self,
        device: &str,
        point: &str,
        parsed: &Result<CommandPayload, super::payload::PayloadError>,
    ) -> Outcome {
        const STOPPED: &str =
            "the gateway stopped while carrying out this command and does not write it twice";
        info!(%device, %point, "command redelivered after an interrupted write: reading the point back");
        let plan = match parsed {
            Ok(command) => self.target(device, point).and_then(|(handle, _, config)| {
                WritePlan::new(&config, &command.value).map(|plan| (handle, plan))
            }),
            Err(error) => Err(Refusal::new(ErrorCode::BadPayload, &error.reason)),
        };
        let (handle, plan) = match plan {
            Ok(found) => found,
            Err(refusal) => {
                return Outcome::Failed(Refusal::new(
                    ErrorCode::DeviceError,
                    format!("{STOPPED}; its outcome is unknown ({})", refusal.message),
                ))
            }
        };
        match handle.read_point(device, point).await {
            Ok(read) => match plan.confirmed_by(&read) {
                Ok(value) => Outcome::Done {
                    value,
                    note: Some(format!("{STOPPED}; the device holds the requested value")),
                },
                Err(holds) => Outcome::Failed(Refusal::new(
                    ErrorCode::DeviceError,
                    format!("{STOPPED}: {holds}"),
                )),
            },
            Err(error) => Outcome::Failed(Refusal::new(
                ErrorCode::DeviceError,
                format!(
                    "{STOPPED}, and cannot read the point back ({error}): its outcome is unknown"
                ),
            )),
        }
    }

    /// Commits and publishes the answer of a command with an id, then acknowledges it.
    async fn answer(
        &self,
        device: &str,
        point: &str,
        key: CommandKey,
        id: Option<&CommandId>,
        outcome: Outcome,
        ack: Option<AckToken>,
    ) {
        let payload = self.render(device, point, id, &outcome);
        self.deliver(device, point, Some(key), payload, ack).await;
    }

    /// The same for a command without an id: nothing is recorded.
    async fn answer_once(
        &self,
        device: &str,
        point: &str,
        outcome: Outcome,
        ack: Option<AckToken>,
    ) {
        let payload = self.render(device, point, None, &outcome);
        self.deliver(device, point, None, payload, ack).await;
    }

    fn render(
        &self,
        device: &str,
        point: &str,
        id: Option<&CommandId>,
        outcome: &Outcome,
    ) -> String {
        let id_text = id.map_or_else(|| "none".to_owned(), ToString::to_string);
        match outcome {
            Outcome::Done { value, .. } => {
                info!(origin = self.origin.name(), %device, %point, id = %id_text, value = %value.to_json(), "command done")
            }
            Outcome::Failed(refusal) => info!(
                origin = self.origin.name(), %device, %point, id = %id_text,
                error = refusal.code.as_str(), message = %refusal.message, "command refused"
            ),
        }
        result::payload(id, outcome, now_ms())
    }

    /// Commits `payload` (recorded under `key` when given) and hands it to the broker the
    /// command came from; acknowledges the command once that is done.
    async fn deliver(
        &self,
        device: &str,
        point: &str,
        key: Option<CommandKey>,
        payload: String,
        ack: Option<AckToken>,
    ) {
        match &self.origin {
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
                match self.queue.answer_command(key, payload, Some(message)).await {
                    Ok(()) => acknowledge(ack),
                    Err(error) => {
                        warn!(%device, %point, %error, "cannot commit the command's result; left unacknowledged for redelivery")
                    }
                }
            }
            Origin::Local(results) => {
                if key.is_some() {
                    if let Err(error) = self.queue.answer_command(key, payload.clone(), None).await
                    {
                        warn!(%device, %point, %error, "cannot record the command's result; left unacknowledged for redelivery");
                        return;
                    }
                }
                if results.result(device, point, payload) {
                    acknowledge(ack);
                } else {
                    warn!(%device, %point, "the local broker client cannot take the result now; left unacknowledged for redelivery");
                }
            }
        }
    }
}

fn acknowledge(ack: Option<AckToken>) {
    if let Some(ack) = ack {
        ack.ack();
    }
}

/// What a failed write means for the sender.
fn write_refusal(error: WriteError) -> Refusal {
    match error {
        WriteError::DeviceOffline(reason) => Refusal::new(
            ErrorCode::DeviceOffline,
            format!("the device does not answer ({reason}); nothing was written"),
        ),
        WriteError::BusClosed => Refusal::new(
            ErrorCode::DeviceOffline,
            "the device's bus is stopping or restarting; nothing was written",
        ),
        WriteError::UnknownDevice(_) | WriteError::UnknownPoint(_) => Refusal::new(
            ErrorCode::UnknownPoint,
            "the device or point was removed by a reload",
        ),
        WriteError::NotWritable(point) => Refusal::new(
            ErrorCode::NotWritable,
            format!("point {point:?} cannot be written"),
        ),
        WriteError::Exception(exception) => Refusal::new(
            ErrorCode::DeviceError,
            format!("the device refused the write: {exception}"),
        ),
        WriteError::Busy => Refusal::new(
            ErrorCode::DeviceError,
            "the bus is busy with other commands; nothing was written",
        ),
        WriteError::Failed(reason) => Refusal::new(
            ErrorCode::DeviceError,
            format!("the write failed ({reason}); the device may or may not have applied it"),
        ),
        WriteError::Encode(error) => Refusal::new(ErrorCode::BadPayload, error.to_string()),
    }
}
