//! The command handler of one origin (I/O): works through the command inbox
//! (`queue/inbox.rs`) in arrival order, carries each command out through the bus owner and
//! answers it; the answer's commit removes the command from the inbox.
//!
//! # One command, step by step
//! 1. The [intake](super::intake) committed it to the inbox (and its PUBLISH was acknowledged
//!    then). The handler reads the next commands of its origin ([`Queue::inbox_next`]), each
//!    with what the recent-commands table knows of its id.
//! 2. An oversized command is answered `bad_payload` unread. A retained one (delivered at
//!    subscribe) is never carried out: answered `retained` and its id recorded, so the copy the
//!    broker delivers at the next connect is dropped silently.
//! 3. With an `id` seen before:
//!    - **answered**: the stored result is published again, nothing is written;
//!    - **writing**: the gateway stopped between the write and its answer. It does not write
//!      again; it reads the point back and answers `ok` if the device holds the requested
//!      value, `device_error` otherwise (or if it cannot read it).
//! 4. Checks against the point map, pure ([`plan`](super::plan)): `unknown_point`,
//!    `not_writable`, `expired` (the age of its `ts` now, at execution; under MQTT 5 also its
//!    Message Expiry deadline, [`request`](super::request)), `bad_payload`,
//!    `out_of_range`. A device whose last poll failed gets `device_offline` at once.
//! 5. With an `id`: "writing" is committed ([`Queue::command_taken`]) — only then the write goes
//!    to the bus owner (FC 5/6/15/16, failing fast when the device is offline), and with
//!    `verify: true` the point is read back.
//! 6. The answer is committed ([`Answers`]): for the cloud, the result row, the recorded answer
//!    and the removal from the inbox in one transaction; for the on-site broker, the recorded
//!    answer and the removal, then the result is handed to the local client. A cloud command
//!    with an MQTT 5 Response Topic also gets a `command_response` row, committed with them
//!    (or just before, in the writer's order: a crash in between answers it again at the next
//!    start).
//!
//! Answers are handed to the queue without waiting for each commit (the next command's own
//! reads and writes come after them in the writer's order), and a batch's answers are awaited
//! together: a run of refused commands costs one commit, a written one the commit of its
//! "writing" record. A crash anywhere before an answer's commit leaves the command in the inbox,
//! and the next start carries it out (step 3 keeps that from writing twice). A queue failure
//! (disk full) stops the batch; the handler waits, growing its pause, and reads the inbox again
//! from where the batch began.
//!
//! Commands **without an id** have no record: one interrupted between its write and its answer
//! is written again after a restart (at least once). Senders that need exactly once send an id.
//!
//! Commands are handled one at a time in arrival order, so two commands to one point are
//! written in the order they were sent; a slow device delays the commands behind it by at most
//! its bus timeout (a dead one fails fast).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::answer::{Answer, Answers, Origin, Response};
use super::payload::{CommandId, CommandPayload, MAX_PAYLOAD};
use super::plan::{check_age, WritePlan};
use super::request::expiry_refusal;
use super::result::{self, ErrorCode, Outcome, Refusal};
use super::stats::CommandStats;
use crate::backoff::Backoff;
use crate::config::{CommandsConfig, PointConfig};
use crate::modbus::{BusHandle, DeviceView, WriteError};
use crate::queue::{CommandKey, CommandRequest, InboxCommand, Queue, QueueError, RecentCommand};
use crate::sample::now_ms;

/// Commands read from the inbox at once; their answers are awaited together.
const BATCH: usize = 256;
/// First pause after a queue failure; doubles (with jitter) up to [`RETRY_MAX`].
const RETRY_INITIAL: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The command handler of one origin.
pub struct Handler {
    pub origin: Origin,
    pub queue: Queue,
    /// The running bus owners (writes, read-backs, the point map), replaced by a reload.
    pub handles: watch::Receiver<Arc<[BusHandle]>>,
    pub commands: CommandsConfig,
    pub stats: Arc<CommandStats>,
}

/// Answers made in the current batch, by key: a repeated id in the same batch gets the same.
type Made = HashMap<CommandKey, String>;

impl Handler {
    /// Works through the inbox until `cancel` fires; `wake` is notified when commands arrive. A
    /// command under way when it fires stays in the inbox for the next start.
    pub async fn run(self, wake: Arc<Notify>, cancel: CancellationToken) {
        let mut after = 0;
        let mut retry = Backoff::new(RETRY_INITIAL, RETRY_MAX);
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                next = self.queue.inbox_next(self.origin.name(), after, BATCH) => next,
            };
            let failure = match next {
                Ok(batch) if batch.is_empty() => {
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => return,
                        () = wake.notified() => {}
                    }
                    continue;
                }
                Ok(batch) => {
                    let last = batch.last().map_or(after, |c| c.row);
                    let done = tokio::select! {
                        biased;
                        () = cancel.cancelled() => return,
                        done = self.work(batch) => done,
                    };
                    match done {
                        Ok(()) => {
                            after = last;
                            retry.reset();
                            continue;
                        }
                        Err(error) => error,
                    }
                }
                Err(error) => error,
            };
            if matches!(failure, QueueError::Closed) {
                return;
            }
            let pause = retry.next_delay();
            warn!(origin = self.origin.name(), error = %failure, ?pause, "commands wait: the queue failed; trying again");
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Carries out and answers `batch`; returns once every answer is committed.
    async fn work(&self, batch: Vec<InboxCommand>) -> Result<(), QueueError> {
        let mut answers = Answers::new(&self.origin);
        let mut made = Made::new();
        let mut result = Ok(());
        for command in batch {
            result = self.handle(command, &mut made, &mut answers).await;
            if result.is_err() {
                break;
            }
        }
        let answered = answers.len();
        let flushed = answers.flush().await;
        if flushed.is_ok() {
            CommandStats::add(&self.stats.answered, answered);
        }
        result.and(flushed)
    }

    async fn handle(
        &self,
        command: InboxCommand,
        made: &mut Made,
        answers: &mut Answers<'_>,
    ) -> Result<(), QueueError> {
        let device = command.device.as_str();
        let point = command.point.as_str();
        let key = command.id.as_ref().map(|id| CommandKey {
            origin: self.origin.name(),
            device: device.to_owned(),
            point: point.to_owned(),
            id: id.clone(),
        });
        let answer = |key: Option<CommandKey>, payload: String| Answer {
            device,
            point,
            key,
            payload,
            inbox: Some(command.row),
            response: Response::of(&command.request),
        };
        if command.oversized {
            let refusal = Refusal::new(
                ErrorCode::BadPayload,
                format!(
                    "payload of {} bytes is too large (at most {MAX_PAYLOAD}); it was discarded unread",
                    command.size
                ),
            );
            let payload = self.render(device, point, None, &Outcome::Failed(refusal));
            return answers.send(&self.queue, answer(None, payload)).await;
        }
        let parsed = CommandPayload::parse(&command.payload);
        let id = match &parsed {
            Ok(command) => command.id.clone(),
            Err(error) => error.id.clone(),
        };
        let recent = match &key {
            Some(key) => made
                .get(key)
                .map(|result| RecentCommand::Answered(result.clone()))
                .or(command.recent.clone()),
            None => None,
        };
        if command.retained {
            CommandStats::add(&self.stats.retained, 1);
            if recent.is_some() {
                // A retained copy of a command already answered (or refused) under its id.
                return self.queue.inbox_done(command.row).await;
            }
            let refusal = Refusal::new(
                ErrorCode::Retained,
                "a retained command is never carried out (it would be at every connect); send it without retain",
            );
            let payload = self.render(device, point, id.as_ref(), &Outcome::Failed(refusal));
            return self.answer(made, answers, answer(key, payload)).await;
        }
        let outcome = match (&recent, &key) {
            (Some(RecentCommand::Answered(result)), Some(key)) => {
                info!(%device, %point, id = %key.id, "command seen before: answered again, not written");
                return answers
                    .send(&self.queue, answer(None, result.clone()))
                    .await;
            }
            (Some(RecentCommand::Writing), _) => self.interrupted(device, point, &parsed).await,
            _ => match &parsed {
                Err(error) => Outcome::Failed(Refusal::new(ErrorCode::BadPayload, &error.reason)),
                Ok(parsed) => {
                    let target = (device, point, &command.request);
                    self.execute(target, parsed, key.as_ref()).await?
                }
            },
        };
        let payload = self.render(device, point, id.as_ref(), &outcome);
        self.answer(made, answers, answer(key, payload)).await
    }

    /// Sends an answer, remembering it for a repeat of its id later in the batch.
    async fn answer(
        &self,
        made: &mut Made,
        answers: &mut Answers<'_>,
        answer: Answer<'_>,
    ) -> Result<(), QueueError> {
        if let Some(key) = &answer.key {
            made.insert(key.clone(), answer.payload.clone());
        }
        answers.send(&self.queue, answer).await
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

    /// Checks and carries out a command; an error when its "writing" record could not be
    /// committed (then nothing was written).
    async fn execute(
        &self,
        (device, point, request): (&str, &str, &CommandRequest),
        command: &CommandPayload,
        key: Option<&CommandKey>,
    ) -> Result<Outcome, QueueError> {
        let (handle, view, config) = match self.target(device, point) {
            Ok(target) => target,
            Err(refusal) => return Ok(Outcome::Failed(refusal)),
        };
        let Some(write) = config.write else {
            return Ok(Outcome::Failed(Refusal::new(
                ErrorCode::NotWritable,
                format!("point {point:?} of {device:?} is not writable"),
            )));
        };
        let max_age = write.max_age.unwrap_or(self.commands.max_age);
        if let Err(refusal) = check_age(command.ts_ms, now_ms(), max_age, self.commands.without_ts)
        {
            return Ok(Outcome::Failed(refusal));
        }
        if let Some(refusal) = expiry_refusal(request, now_ms()) {
            return Ok(Outcome::Failed(refusal));
        }
        let plan = match WritePlan::new(&config, &command.value) {
            Ok(plan) => plan,
            Err(refusal) => return Ok(Outcome::Failed(refusal)),
        };
        let health = view.health.borrow().clone();
        if !health.online {
            return Ok(Outcome::Failed(Refusal::new(
                ErrorCode::DeviceOffline,
                format!(
                    "the device does not answer ({}); nothing was written",
                    health.last_error.as_deref().unwrap_or("not answering")
                ),
            )));
        }
        if let Some(key) = key {
            if let Err(error) = self.queue.command_taken(key.clone()).await {
                warn!(%device, %point, %error, "cannot record the command; not written, it stays in the inbox");
                return Err(error);
            }
        }
        if let Err(error) = handle.write(device, plan.request.clone()).await {
            return Ok(Outcome::Failed(write_refusal(error)));
        }
        if !plan.verify {
            return Ok(Outcome::Done {
                value: plan.value,
                note: None,
            });
        }
        Ok(match handle.read_point(device, point).await {
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
        info!(%device, %point, "command interrupted between its write and its answer: reading the point back");
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
        WriteError::UnknownDevice(_) => Refusal::new(
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
