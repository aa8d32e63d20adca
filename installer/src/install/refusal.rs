//! A refused install: everything it did is undone, and the error says what failed and what
//! the rollback did.

use super::{Options, Seams, expect, set_label};
use crate::Error;
use crate::detect::Detected;
use crate::rollback::Snapshot;
use crate::tomledit::ConfigVersion;

/// Undo an install that failed after its snapshot: put every file back, restart containerd
/// again if it was restarted (it must serve again), remove the node label. Returns the error
/// to report: `cause` and what the rollback did.
pub(super) fn refuse(
    opts: &Options,
    seams: &Seams<'_>,
    detected: &Detected,
    snapshot: &Snapshot,
    cause: Error,
    restarted: bool,
) -> Error {
    log::error!("{cause}");
    log::warn!("refusing the install: putting every file back as it was");
    let mut rollback = match snapshot.restore(&opts.host) {
        Ok(()) => "every file was put back as it was".to_owned(),
        Err(e) => format!("putting the files back FAILED ({e}); check the node"),
    };
    if restarted {
        let again = seams
            .restarter
            .restart(&detected.unit)
            .map_err(Error::from)
            .and_then(|()| {
                let version = detected.version.unwrap_or(ConfigVersion::V2);
                seams
                    .prober
                    .probe(&expect(detected, opts, version, None))
                    .map_err(Error::from)
            });
        rollback.push_str(&match again {
            Ok(()) => ", containerd was restarted with its previous configuration and serves".to_owned(),
            Err(e) => format!(
                ", but containerd did not come back with its previous configuration either ({e}): the node needs attention"
            ),
        });
    } else {
        rollback.push_str(", containerd was not restarted");
    }
    if let Err(e) = set_label(seams, opts, None) {
        log::warn!("could not remove the node label: {e}");
    }
    rollback.push_str(", the node is not labelled");
    log::warn!("{rollback}");
    Error::RolledBack {
        cause: Box::new(cause),
        rollback,
    }
}
