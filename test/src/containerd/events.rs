//! What containerd's event stream says: a background `ctr events` writes every event to
//! `<dir>/events.log`, from which the harness learns container ids (to find stale shim
//! sockets) and the exit status of tasks (`/tasks/exit`, which `ctr task delete` on 1.6
//! does not report).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use super::ctr::read_lossy;
use super::{CRI_NAMESPACE, Containerd};

impl Containerd {
    /// `ctr events` in the background, to learn the ids of every container this
    /// containerd saw (for finding stale shim sockets).
    pub(super) fn start_events(&mut self) -> anyhow::Result<()> {
        let out = File::create(self.events_log())?;
        let child = Command::new(&self.ctr_bin)
            .arg("-a")
            .arg(self.socket())
            .arg("events")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .context("spawning ctr events")?;
        self.events = Some(child);
        Ok(())
    }

    fn events_log(&self) -> PathBuf {
        self.path.join("events.log")
    }

    /// Record a shim group id (e.g. a sandbox id) so [`Containerd::leftovers`] also looks
    /// for a stale socket of that group. Container ids are learnt from `ctr events`.
    pub fn note_group(&self, id: impl Into<String>) {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.into());
    }

    /// Exit status of the init process of container `id`, from the `/tasks/exit` event
    /// containerd published (`ctr task delete` on 1.6 does not report it), if it exited.
    pub fn exit_status(&self, id: &str) -> Option<u32> {
        let events = read_lossy(&self.events_log());
        let container = format!("\"container_id\":\"{id}\"");
        let init = format!("\"id\":\"{id}\"");
        events
            .lines()
            .filter(|l| l.contains(" /tasks/exit ") && l.contains(&container) && l.contains(&init))
            .map(|l| {
                // protobuf JSON omits a zero exit_status.
                l.split_once("\"exit_status\":")
                    .and_then(|(_, rest)| {
                        let digits: String =
                            rest.chars().take_while(char::is_ascii_digit).collect();
                        digits.parse().ok()
                    })
                    .unwrap_or(0)
            })
            .next_back()
    }

    /// Poll [`Containerd::exit_status`] until container `id`'s task exited or `timeout`.
    pub fn wait_exit(&self, id: &str, timeout: Duration) -> Option<u32> {
        crate::poll::wait_until(timeout, format!("task {id} exited"), || {
            self.exit_status(id)
        })
        .ok()
    }

    /// Container ids from `ctr events` plus noted groups.
    pub(super) fn known_ids(&self) -> BTreeSet<String> {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let events = read_lossy(&self.events_log());
        for line in events.lines() {
            // `TIMESTAMP NAMESPACE TOPIC {json}`
            if !line.contains(&self.namespace) && !line.contains(CRI_NAMESPACE) {
                continue;
            }
            for key in ["\"container_id\":\"", "\"id\":\""] {
                if let Some(start) = line.find(key) {
                    let rest = &line[start + key.len()..];
                    if let Some(end) = rest.find('"') {
                        ids.insert(rest[..end].to_owned());
                    }
                }
            }
        }
        ids
    }
}
