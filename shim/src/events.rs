//! Task events for containerd (TaskCreate, TaskStart, TaskExecAdded, TaskExecStarted,
//! TaskExit, TaskDelete, TaskOOM, TaskPaused, TaskResumed).
//!
//! The lifecycle code hands plain [`TaskEvent`]s to an [`EventSink`]. In the shim the sink is
//! [`RemoteEvents`]: a thread that forwards them, in order, to containerd over ttrpc so no RPC
//! handler waits on containerd. Tests use a channel sink and assert the exact sequence.
//!
//! containerd may restart while a pod runs (an upgrade, a crash): the ttrpc connection then
//! breaks, and an event published meanwhile (a container's exit) must still reach the new
//! containerd, or CRI shows the container running forever. A failed publish is retried,
//! reconnecting each time, with backoff for up to [`RETRY_FOR`]; events keep their order
//! (one thread, one queue) and the queue holds at most [`QUEUE_CAP`] events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, Instant, SystemTime};

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::publisher::RemotePublisher;
use log::{debug, warn};

/// Something containerd should hear about.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    Create {
        id: String,
        bundle: String,
        pid: u32,
    },
    Start {
        id: String,
        pid: u32,
    },
    /// The exit of a container's process (`exec_id` `None`) or of one of its execs.
    Exit {
        id: String,
        exec_id: Option<String>,
        pid: u32,
        exit_status: u32,
        exited_at: SystemTime,
    },
    Delete {
        id: String,
        pid: u32,
        exit_status: u32,
        exited_at: SystemTime,
    },
    Oom {
        id: String,
    },
    ExecAdded {
        id: String,
        exec_id: String,
    },
    ExecStarted {
        id: String,
        exec_id: String,
        pid: u32,
    },
    Paused {
        id: String,
    },
    Resumed {
        id: String,
    },
}

/// Where lifecycle events go.
pub trait EventSink: Send + Sync {
    fn publish(&self, event: TaskEvent);
}

/// How long one event is retried while containerd is unreachable (a restart).
pub const RETRY_FOR: Duration = Duration::from_secs(120);
/// Events waiting to be published at most; beyond, new ones are dropped with a warning.
pub const QUEUE_CAP: usize = 4096;

/// Forwards events to containerd from a dedicated thread.
pub struct RemoteEvents {
    tx: std::sync::Mutex<Sender<TaskEvent>>,
    queued: Arc<AtomicUsize>,
}

impl RemoteEvents {
    /// `address`: containerd's ttrpc socket, to reconnect to after a restart.
    pub fn new(publisher: RemotePublisher, namespace: String, address: Option<String>) -> Self {
        let (tx, rx) = channel::<TaskEvent>();
        let queued = Arc::new(AtomicUsize::new(0));
        let in_queue = queued.clone();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                let mut publisher = publisher;
                for event in rx {
                    in_queue.fetch_sub(1, Ordering::SeqCst);
                    publish_until_done(&mut publisher, &namespace, address.as_deref(), &event);
                }
            })
            .expect("spawn events thread");
        RemoteEvents {
            tx: std::sync::Mutex::new(tx),
            queued,
        }
    }
}

/// Publishes `event`, reconnecting and retrying with backoff for up to [`RETRY_FOR`].
fn publish_until_done(
    publisher: &mut RemotePublisher,
    namespace: &str,
    address: Option<&str>,
    event: &TaskEvent,
) {
    let began = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let (topic, message) = to_proto(event);
        let error = match publisher.publish(Context::default(), topic, namespace, message) {
            Ok(()) => {
                debug!("published {topic}: {event:?}");
                return;
            }
            Err(e) => e,
        };
        let Some(address) = address.filter(|_| began.elapsed() < RETRY_FOR) else {
            warn!("publishing {topic} to containerd failed: {error}; event dropped: {event:?}");
            return;
        };
        debug!("publishing {topic} failed ({error}); reconnecting to {address} in {pause:?}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
        match RemotePublisher::new(address) {
            Ok(reconnected) => *publisher = reconnected,
            Err(e) => debug!("reconnecting to {address}: {e}"),
        }
    }
}

impl EventSink for RemoteEvents {
    fn publish(&self, event: TaskEvent) {
        if self.queued.load(Ordering::SeqCst) >= QUEUE_CAP {
            warn!("{QUEUE_CAP} events wait for containerd already; event dropped: {event:?}");
            return;
        }
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        self.queued.fetch_add(1, Ordering::SeqCst);
        if tx.send(event).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            warn!("events thread is gone; event dropped");
        }
    }
}

/// A channel sink for tests.
impl EventSink for std::sync::Mutex<Sender<TaskEvent>> {
    fn publish(&self, event: TaskEvent) {
        let _ = self.lock().unwrap().send(event);
    }
}

/// A protobuf timestamp for `at`.
pub fn to_timestamp(at: SystemTime) -> Timestamp {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = since.as_secs() as i64;
    ts.nanos = since.subsec_nanos() as i32;
    ts
}

/// The topic and protobuf message containerd expects for `event`.
fn to_proto(event: &TaskEvent) -> (&'static str, Box<dyn MessageDyn>) {
    match event {
        TaskEvent::Create { id, bundle, pid } => {
            let mut e = TaskCreate::new();
            e.container_id = id.clone();
            e.bundle = bundle.clone();
            e.pid = *pid;
            (topics::TASK_CREATE_EVENT_TOPIC, Box::new(e))
        }
        TaskEvent::Start { id, pid } => {
            let mut e = TaskStart::new();
            e.container_id = id.clone();
            e.pid = *pid;
            (topics::TASK_START_EVENT_TOPIC, Box::new(e))
        }
        TaskEvent::Exit {
            id,
            exec_id,
            pid,
            exit_status,
            exited_at,
        } => {
            let mut e = TaskExit::new();
            e.container_id = id.clone();
            e.id = exec_id.clone().unwrap_or_else(|| id.clone());
            e.pid = *pid;
            e.exit_status = *exit_status;
            e.exited_at = Some(to_timestamp(*exited_at)).into();
            (topics::TASK_EXIT_EVENT_TOPIC, Box::new(e))
        }
        TaskEvent::Delete {
            id,
            pid,
            exit_status,
            exited_at,
        } => {
            let mut e = TaskDelete::new();
            e.container_id = id.clone();
            e.id = id.clone();
            e.pid = *pid;
            e.exit_status = *exit_status;
            e.exited_at = Some(to_timestamp(*exited_at)).into();
            (topics::TASK_DELETE_EVENT_TOPIC, Box::new(e))
        }
        TaskEvent::Oom { id } => {
            let mut e = TaskOOM::new();
            e.container_id = id.clone();
            (topics::TASK_OOM_EVENT_TOPIC, Box::new(e))
        }
        TaskEvent::ExecAdded { id, exec_id } => {
            let mut e = TaskExecAdded::new();
            e.container_id = id.clone();
            e.exec_id = exec_id.clone();
            (topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(e))
        }
        TaskEvent::ExecStarted { id, exec_id, pid } => {
            let mut e = TaskExecStarted::new();
            e.container_id = id.clone();
            e.exec_id = exec_id.clone();
            e.pid = *pid;
            (topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(e))
        }
        TaskEvent::Paused { id } => {
            let mut e = TaskPaused::new();
            e.container_id = id.clone();
            (topics::TASK_PAUSED_EVENT_TOPIC, Box::new(e))
        }
        TaskEvent::Resumed { id } => {
            let mut e = TaskResumed::new();
            e.container_id = id.clone();
            (topics::TASK_RESUMED_EVENT_TOPIC, Box::new(e))
        }
    }
}
