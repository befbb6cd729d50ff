//! The configuration task (I/O): takes `P/config/set` and `P/config/get` from the uplink, puts
//! a valid pushed file in place and applies it, watches it through its trial and rolls it back
//! when it does not confirm; answers on `P/config/result` and `P/config/current` through the
//! queue, like command results.
//!
//! One PUBLISH at a time, in arrival order; its token is acknowledged only after what it
//! caused is on disk (the answer committed, or the trial state and the new file written), so a
//! crash before makes the broker redeliver it. The trial runs beside the intake (a look every
//! [`LOOK_EVERY`]), so a push on trial never holds back the acknowledgements of commands.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::files::Files;
use super::payload::{self, Answer, Problem, Status};
use super::pending::{AtStart, Final, Observed, Pending, Phase, Verdict};
use super::redact::redacted;
use super::stats::PushStats;
use crate::config::{self, Qos, RemoteConfig};
use crate::modbus::BusHandle;
use crate::queue::{CommandKey, Message, MessageKind, Queue, QueueError, RecentCommand};
use crate::reload::{Outcome, ReloadRequest};
use crate::sample::now_ms;
use crate::status::stamp::{sha256_hex, ConfigStamp};
use crate::uplink::{AckToken, Incoming, LinkState};

/// How often a push on trial is looked at.
pub const LOOK_EVERY: Duration = Duration::from_millis(250);

/// The name pushes are remembered under in the queue's recent-commands table.
const ORIGIN: &str = "config";

/// The configuration task's parts.
pub struct ConfigTask {
    pub files: Files,
    pub settings: RemoteConfig,
    /// `P/config/set` and `P/config/get`.
    pub set_topic: String,
    pub get_topic: String,
    /// `host:port` of the cloud broker, for the answers.
    pub broker: String,
    pub queue: Queue,
    pub link: watch::Receiver<LinkState>,
    pub handles: watch::Receiver<Arc<[BusHandle]>>,
    pub reload: mpsc::Sender<ReloadRequest>,
    pub stamp: Arc<watch::Sender<Option<ConfigStamp>>>,
    /// Set before `stop` is cancelled when applying needs a restart.
    pub restart: Arc<AtomicBool>,
    /// The gateway's shutdown token.
    pub stop: CancellationToken,
    pub stats: Arc<PushStats>,
}

/// The push on trial.
struct Trial {
    pending: Pending,
    /// Applying it restarted the gateway.
    restarted: bool,
}

/// What the task's own steps can fail on.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    File(#[from] super::files::FileError),
}

impl ConfigTask {
    /// Runs until `cancel` fires (or it asks for a restart).
    pub async fn run(self, mut rx: mpsc::Receiver<Vec<Incoming>>, cancel: CancellationToken) {
        let mut task = Running {
            parts: self,
            trial: None,
        };
        task.resume().await;
        let mut look = tokio::time::interval(LOOK_EVERY);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Closed at once when pushes are not allowed (any more): only a trial left on disk by
        // the push that turned them off is seen through.
        let mut open = true;
        loop {
            if !open && task.trial.is_none() {
                return;
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                batch = rx.recv(), if open => match batch {
                    Some(batch) => {
                        for incoming in batch {
                            task.handle(incoming).await;
                        }
                    }
                    None => open = false,
                },
                _ = look.tick(), if task.trial.is_some() => task.look().await,
            }
            task.parts.stats.set_on_trial(task.trial.is_some());
        }
    }
}

struct Running {
    parts: ConfigTask,
    trial: Option<Trial>,
}

fn key(id: &str) -> CommandKey {
    CommandKey {
        origin: ORIGIN,
        device: "config".to_owned(),
        point: "set".to_owned(),
        id: Value::String(id.to_owned()).to_string(),
    }
}

impl Running {
    /// At start: a trial state left on disk is picked up (see `pending.rs`).
    async fn resume(&mut self) {
        let files = &self.parts.files;
        let found = files.pending().and_then(|pending| {
            pending
                .map(|p| files.current().map(|current| (p, sha256_hex(&current))))
                .transpose()
        });
        let (pending, current) = match found {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(error) => {
                error!(%error, "cannot read the pushed configuration's trial state");
                return;
            }
        };
        match pending.at_start(&current, now_ms()) {
            AtStart::Confirm => {
                info!(id = %pending.id, "the pushed configuration runs after a restart; confirming it");
                self.trial = Some(Trial {
                    pending,
                    restarted: true,
                });
            }
            AtStart::RollBack { failed } => {
                self.trial = Some(Trial {
                    pending,
                    restarted: true,
                });
                self.roll_back(failed).await;
            }
            AtStart::Answer(end) => {
                self.trial = Some(Trial {
                    pending,
                    restarted: false,
                });
                self.finish(end).await;
            }
        }
    }

    async fn handle(&mut self, incoming: Incoming) {
        let Incoming {
            topic,
            payload,
            retained,
            oversized,
            mut ack,
            ..
        } = incoming;
        let done = if retained {
            // A retained push would be applied again at every connect: never acted on.
            warn!(%topic, "ignoring a retained message on a configuration topic");
            Ok(())
        } else if topic == self.parts.get_topic {
            self.current(&payload).await
        } else if topic == self.parts.set_topic {
            let size = oversized.unwrap_or(payload.len() as u64);
            if size > self.parts.settings.max_size || oversized.is_some() {
                let answer =
                    Answer::new(Value::Null, Status::TooLarge, now_ms()).with_error(format!(
                        "{size} bytes, more than remote_config.max_size ({} bytes)",
                        self.parts.settings.max_size
                    ));
                self.answer(None, &answer).await
            } else {
                self.push(&payload, &mut ack).await
            }
        } else {
            Ok(())
        };
        match (done, ack) {
            (Ok(()), Some(ack)) => ack.ack(),
            (Ok(()), None) => {}
            // Not acknowledged: the token reports it abandoned and the broker redelivers it.
            (Err(error), _) => {
                warn!(%topic, %error, "a configuration message could not be handled; the broker will redeliver it")
            }
        }
    }

    /// `P/config/set`; `ack` is taken once the push is on disk, before it is applied.
    async fn push(&mut self, payload: &[u8], ack: &mut Option<AckToken>) -> Result<(), StepError> {
        let push = match payload::parse_push(payload) {
            Ok(push) => push,
            Err(bad) => {
                let answer =
                    Answer::new(bad.id.unwrap_or(Value::Null), Status::BadPayload, now_ms())
                        .with_error(bad.error);
                return self.answer(None, &answer).await;
            }
        };
        let id = Value::String(push.id.clone());
        match self.parts.queue.recent_command(key(&push.id)).await? {
            Some(RecentCommand::Answered(result)) => {
                info!(id = %push.id, "configuration push seen before: its answer is sent again");
                return self.publish(MessageKind::ConfigResult, result).await;
            }
            Some(RecentCommand::Writing) if self.on_trial(&push.id) => {
                // A redelivery of the push on trial: it is answered when the trial ends.
                return Ok(());
            }
            _ => {}
        }
        if let Some(trial) = &self.trial {
            let answer = Answer::new(id, Status::Busy, now_ms()).with_error(format!(
                "the push {:?} is on trial; send this one again once it is answered",
                trial.pending.id
            ));
            return self.answer(None, &answer).await;
        }
        let current = self.parts.files.current()?;
        let new_hash = sha256_hex(push.config.as_bytes());
        if new_hash == sha256_hex(&current) {
            let answer = Answer::new(id, Status::Unchanged, now_ms()).with_hash(&new_hash);
            return self.answer(Some(key(&push.id)), &answer).await;
        }
        let text = push.config.clone();
        let checked =
            tokio::task::spawn_blocking(move || config::load_pushed(&text, "pushed configuration"))
                .await;
        let problems = match checked {
            Ok(Ok(_)) => None,
            Ok(Err(errors)) => Some(errors.errors.iter().map(Problem::from).collect()),
            Err(join) => Some(vec![Problem {
                line: None,
                column: None,
                path: String::new(),
                message: format!("the check failed: {join}"),
            }]),
        };
        if let Some(errors) = problems {
            info!(id = %push.id, "configuration push refused: invalid");
            let mut answer = Answer::new(id, Status::Invalid, now_ms());
            answer.errors = errors;
            return self.answer(Some(key(&push.id)), &answer).await;
        }
        self.apply(push, current, new_hash, ack).await
    }

    /// A valid push: recorded as taken, the files written in order, then reloaded.
    async fn apply(
        &mut self,
        push: payload::Push,
        current: Vec<u8>,
        new_hash: String,
        ack: &mut Option<AckToken>,
    ) -> Result<(), StepError> {
        self.parts.queue.command_taken(key(&push.id)).await?;
        let pending = Pending::new(
            push.id.clone(),
            (sha256_hex(&current), new_hash),
            now_ms(),
            u64::try_from(self.parts.settings.confirm_within.as_millis()).unwrap_or(u64::MAX),
            self.answering().into_iter().collect(),
        );
        let files = &self.parts.files;
        let written = files
            .keep_last_good(&current)
            .and_then(|()| files.write_pending(&pending))
            .and_then(|()| files.replace(push.config.as_bytes()));
        if let Err(error) = written {
            // The file is the old one (replace is atomic): forget the trial, say why.
            let _ = files.remove_pending();
            error!(%error, "cannot put the pushed configuration in place");
            let answer = Answer::new(Value::String(push.id.clone()), Status::Failed, now_ms())
                .with_error(format!("cannot write the configuration: {error}"));
            return self.answer(Some(key(&push.id)), &answer).await;
        }
        // On disk: acknowledged now, before a restart could cut the connection.
        if let Some(ack) = ack.take() {
            ack.ack();
        }
        info!(id = %push.id, confirm_within = ?self.parts.settings.confirm_within, "pushed configuration in place; applying it");
        self.trial = Some(Trial {
            pending,
            restarted: false,
        });
        match self.reload().await {
            Some(Outcome::Applied | Outcome::Unchanged) => {}
            Some(Outcome::NeedsRestart) => self.restart("apply the pushed configuration"),
            Some(Outcome::Invalid) | None => {
                self.roll_back(vec!["the pushed file did not reload".to_owned()])
                    .await
            }
        }
        Ok(())
    }

    fn on_trial(&self, id: &str) -> bool {
        self.trial.as_ref().is_some_and(|t| t.pending.id == id)
    }

    /// One look at the push on trial.
    async fn look(&mut self) {
        let Some(trial) = &self.trial else {
            return;
        };
        if let Phase::RollingBack { failed } = &trial.pending.phase {
            // A rollback whose restore failed (disk): tried again.
            let failed = failed.clone();
            self.roll_back(failed).await;
            return;
        }
        // Replaced on the gateway meanwhile (edited and reloaded by hand): that file rules.
        let on_disk = self.parts.files.current().map(|bytes| sha256_hex(&bytes));
        if on_disk.is_ok_and(|hash| hash != trial.pending.new_hash) {
            self.finish(Final::Superseded).await;
            return;
        }
        match trial.pending.verdict(&self.observe()) {
            Verdict::Confirmed => self.finish(Final::Applied).await,
            Verdict::RollBack(failed) => self.roll_back(failed).await,
            Verdict::Waiting(_) => {}
        }
    }

    fn observe(&self) -> Observed {
        let handles = self.parts.handles.borrow().clone();
        let configured = handles
            .iter()
            .flat_map(|h| h.devices().iter().map(|d| d.config.name.clone()))
            .collect();
        Observed {
            now_ms: now_ms(),
            connected: *self.parts.link.borrow() == LinkState::Connected,
            broker: self.parts.broker.clone(),
            configured,
            answering: self.answering(),
        }
    }

    /// Devices whose last poll succeeded since their bus owner started.
    fn answering(&self) -> BTreeSet<String> {
        let handles = self.parts.handles.borrow().clone();
        handles
            .iter()
            .flat_map(|h| h.devices().iter())
            .filter(|d| {
                let health = d.health.borrow();
                health.online && health.answered && health.consecutive_failures == 0
            })
            .map(|d| d.config.name.clone())
            .collect()
    }

    /// Restores the last-known-good and applies it; answers once it runs.
    async fn roll_back(&mut self, failed: Vec<String>) {
        let Some(trial) = &mut self.trial else {
            return;
        };
        warn!(id = %trial.pending.id, reasons = %failed.join("; "), "the pushed configuration did not confirm: rolling back to the last-known-good file");
        match self.parts.files.roll_back(&trial.pending, failed.clone()) {
            Ok(back) => trial.pending = back,
            Err(error) => {
                error!(%error, "cannot restore the last-known-good configuration; trying again");
                trial.pending = trial.pending.rolling_back(failed);
                return;
            }
        }
        match self.reload().await {
            Some(Outcome::Applied | Outcome::Unchanged) => {
                self.finish(Final::RolledBack { failed }).await;
            }
            Some(Outcome::NeedsRestart | Outcome::Invalid) | None => {
                self.restart("return to the last-known-good configuration");
            }
        }
    }

    /// Ends the trial: the answer committed (once per id), then the state removed.
    async fn finish(&mut self, end: Final) {
        let Some(trial) = &self.trial else {
            return;
        };
        let id = trial.pending.id.clone();
        let hash = match self.parts.files.current() {
            Ok(bytes) => sha256_hex(&bytes),
            Err(error) => {
                error!(%error, "cannot read the configuration file");
                return;
            }
        };
        if end == Final::Applied {
            if let Err(error) = self.parts.files.write_origin(&id, &hash) {
                warn!(%error, "cannot record which push wrote the configuration");
            }
            info!(%id, "pushed configuration confirmed");
        }
        self.parts
            .stamp
            .send_replace(ConfigStamp::read(self.parts.files.config()));
        let answer = Answer::of_final(&id, &end, &hash, trial.restarted, now_ms());
        let answered = match self.parts.queue.recent_command(key(&id)).await {
            // Answered before a crash that kept the state file: not answered twice.
            Ok(Some(RecentCommand::Answered(_))) => Ok(()),
            Ok(_) => self.answer(Some(key(&id)), &answer).await,
            Err(error) => Err(error.into()),
        };
        if let Err(error) = answered {
            warn!(%error, "cannot commit the answer to the pushed configuration; trying again");
            return;
        }
        if let Err(error) = self.parts.files.remove_pending() {
            warn!(%error, "cannot remove the trial state");
        }
        self.trial = None;
    }

    /// Asks the reload task to apply the file now; `None` when it is gone (shutdown).
    async fn reload(&self) -> Option<Outcome> {
        let (reply, outcome) = oneshot::channel();
        self.parts.reload.send(reply).await.ok()?;
        outcome.await.ok()
    }

    fn restart(&self, why: &str) {
        info!("restarting to {why} (exit status 75; systemd starts the gateway again)");
        self.parts.restart.store(true, Ordering::SeqCst);
        self.parts.stop.cancel();
    }

    /// `P/config/get`: the running file, secrets replaced.
    async fn current(&self, payload: &[u8]) -> Result<(), StepError> {
        let text = self.parts.files.current()?;
        let stamp = ConfigStamp::of_text(&text, None);
        let set_by = ConfigStamp::read(self.parts.files.config()).and_then(|s| s.id);
        let tree = redacted(&String::from_utf8_lossy(&text));
        let body = json!({
            "id": payload::get_id(payload),
            "hash": stamp.hash,
            "set_by": set_by,
            "config": tree,
            "ts": now_ms(),
        });
        self.publish(MessageKind::ConfigCurrent, body.to_string())
            .await
    }

    /// Commits `answer` (recorded under `key` when given) to go out on `P/config/result`.
    async fn answer(&self, key: Option<CommandKey>, answer: &Answer) -> Result<(), StepError> {
        let payload = answer.to_json();
        let message = message(MessageKind::ConfigResult, payload.clone());
        self.parts
            .queue
            .answer_command(key, payload, Some(message), None)
            .await?;
        self.parts.stats.answered(answer.status);
        Ok(())
    }

    async fn publish(&self, kind: MessageKind, payload: String) -> Result<(), StepError> {
        self.parts
            .queue
            .answer_command(None, payload.clone(), Some(message(kind, payload)), None)
            .await?;
        Ok(())
    }
}

fn message(kind: MessageKind, payload: String) -> Message {
    Message {
        kind,
        device: Arc::from(""),
        point: Arc::from(""),
        payload,
        ts_ms: now_ms(),
        qos: Qos::AtLeastOnce,
        retain: false,
    }
}
