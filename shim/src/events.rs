//! Task events for containerd (TaskCreate, TaskStart, TaskExit, TaskDelete).
//!
//! The lifecycle code hands plain [`TaskEvent`]s to an [`EventSink`]. In the shim the sink is
//! [`RemoteEvents`]: a thread that forwards them, in order, to containerd over ttrpc so no RPC
//! handler waits on containerd. Tests use a channel sink and assert the exact sequence.

use std::sync::mpsc::{Sender, channel};
use std::time::SystemTime;

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExit, TaskOOM, TaskPaused, TaskResumed, TaskStart,
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
    Exit {
        id: String,
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

/// Forwards events to containerd from a dedicated thread.
pub struct RemoteEvents {
    tx: std::sync::Mutex<Sender<TaskEvent>>,
}

impl RemoteEvents {
    pub fn new(publisher: RemotePublisher, namespace: String) -> Self {
        let (tx, rx) = channel::<TaskEvent>();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for event in rx {
                    let (topic, message) = to_proto(&event);
                    if let Err(e) =
                        publisher.publish(Context::default(), topic, &namespace, message)
                    {
                        warn!("publishing {topic} to containerd failed: {e}; event: {event:?}");
                    } else {
                        debug!("published {topic}: {event:?}");
                    }
                }
            })
            .expect("spawn events thread");
        RemoteEvents {
            tx: std::sync::Mutex::new(tx),
        }
    }
}

impl EventSink for RemoteEvents {
    fn publish(&self, event: TaskEvent) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.send(event).is_err() {
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
            pid,
            exit_status,
            exited_at,
        } => {
            let mut e = TaskExit::new();
            e.container_id = id.clone();
            e.id = id.clone();
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
