//! Long jobs: the mmap profiler (one run at a time, cancellable, its progress streamed
//! as server-sent events) and token generation (streamed as it decodes).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::response::sse::{Event, KeepAlive, Sse};
use dhurandhar::{CancelToken, Progress, Unit};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::watch;

/// How often a progress stream sends an update at most.
const TICK: Duration = Duration::from_millis(150);

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Idle,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    fn finished(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

/// The profiler job as `/api/profile` reports it and its event stream sends it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// Increases with every job started (0: none yet).
    pub id: u64,
    pub state: JobState,
    /// The current phase ("random_decode cold").
    pub phase: String,
    pub done: u64,
    pub total: Option<u64>,
    pub unit: String,
    pub seconds: f64,
    pub messages: Vec<String>,
    pub error: Option<String>,
    /// The facade's profile report once done.
    pub report: Option<serde_json::Value>,
}

impl Default for JobStatus {
    fn default() -> Self {
        JobStatus {
            id: 0,
            state: JobState::Idle,
            phase: String::new(),
            done: 0,
            total: None,
            unit: String::new(),
            seconds: 0.0,
            messages: Vec::new(),
            error: None,
            report: None,
        }
    }
}

/// The one profiler slot: its status, a version counter that wakes the event streams,
/// and the running job's cancel token.
pub struct ProfileSlot {
    status: Mutex<JobStatus>,
    version: watch::Sender<u64>,
    cancel: Mutex<Option<CancelToken>>,
    started: Mutex<Option<Instant>>,
}

impl Default for ProfileSlot {
    fn default() -> Self {
        ProfileSlot {
            status: Mutex::new(JobStatus::default()),
            version: watch::channel(0).0,
            cancel: Mutex::new(None),
            started: Mutex::new(None),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data; keep serving it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProfileSlot {
    pub fn status(&self) -> JobStatus {
        let mut s = lock(&self.status).clone();
        if s.state == JobState::Running {
            if let Some(t) = *lock(&self.started) {
                s.seconds = t.elapsed().as_secs_f64();
            }
        }
        s
    }

    fn update(&self, f: impl FnOnce(&mut JobStatus)) {
        f(&mut lock(&self.status));
        self.version.send_modify(|v| *v += 1);
    }

    /// Claim the slot for a new job: its id and cancel token, or `None` when a job runs.
    pub fn try_start(&self) -> Option<(u64, CancelToken)> {
        let mut st = lock(&self.status);
        if st.state == JobState::Running {
            return None;
        }
        let token = CancelToken::new();
        *st = JobStatus {
            id: st.id + 1,
            state: JobState::Running,
            ..JobStatus::default()
        };
        let id = st.id;
        // Set while the status lock is held, so a cancel that sees `running` finds it.
        *lock(&self.cancel) = Some(token.clone());
        *lock(&self.started) = Some(Instant::now());
        drop(st);
        self.version.send_modify(|v| *v += 1);
        Some((id, token))
    }

    /// Cancel the running job; false when none runs.
    pub fn cancel(&self) -> bool {
        let running = lock(&self.status).state == JobState::Running;
        if running {
            if let Some(t) = &*lock(&self.cancel) {
                t.cancel();
            }
        }
        running
    }

    /// Record how the job ended.
    pub fn finish(&self, result: dhurandhar::Result<serde_json::Value>) {
        let seconds = lock(&self.started)
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        self.update(|s| {
            s.seconds = seconds;
            match result {
                Ok(report) => {
                    s.state = JobState::Done;
                    s.report = Some(report);
                }
                Err(e) if matches!(e.root(), dhurandhar::Error::Cancelled) => {
                    s.state = JobState::Cancelled;
                }
                Err(e) => {
                    s.state = JobState::Failed;
                    s.error = Some(e.to_string());
                }
            }
        });
        *lock(&self.cancel) = None;
    }

    /// Server-sent events of the status: one `status` event now, one per change (at
    /// most every [`TICK`]), ending after the job's final state.
    pub fn events(self: Arc<Self>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
        let rx = self.version.subscribe();
        let stream = futures_util::stream::unfold(
            (self, rx, false, true),
            |(slot, mut rx, ended, first)| async move {
                if ended {
                    return None;
                }
                if !first {
                    tokio::time::sleep(TICK).await;
                    // Wait for a change; a closed channel cannot happen while `slot` lives.
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
                rx.borrow_and_update();
                let status = slot.status();
                let end = status.state.finished() || status.state == JobState::Idle;
                let ev = Event::default()
                    .event("status")
                    .json_data(&status)
                    .unwrap_or_else(|_| Event::default().event("status").data("{}"));
                Some((Ok(ev), (slot, rx, end, false)))
            },
        );
        Sse::new(stream).keep_alive(KeepAlive::default())
    }
}

/// The facade's progress sink for the profiler slot.
pub struct SlotProgress(pub Arc<ProfileSlot>);

impl Progress for SlotProgress {
    fn start(&self, label: &str, total: Option<u64>, unit: Unit) {
        let unit = match unit {
            Unit::Bytes => "bytes".to_string(),
            Unit::Items(s) => s.to_string(),
        };
        self.0.update(|s| {
            s.phase = label.to_string();
            s.total = total;
            s.done = 0;
            s.unit = unit;
        });
    }
    fn advance(&self, n: u64) {
        // Called per token: update the counter, wake the streams (they throttle).
        self.0.update(|s| s.done = s.done.saturating_add(n));
    }
    fn message(&self, text: &str) {
        self.0.update(|s| {
            if s.messages.len() < 100 {
                s.messages.push(text.to_string());
            }
        });
    }
}
