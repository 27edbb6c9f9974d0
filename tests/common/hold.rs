//! Holding the server's own code at a named failpoint (`fail`), so a test
//! can act while a step is known to be in progress.

use std::sync::{Mutex, mpsc};
use std::time::Duration;

/// Bounds a test that would otherwise hang; nothing waits this long when
/// the code under test works.
const HANG: Duration = Duration::from_secs(60);

/// Code reaching `point` stops there until [`Hold::release`].
pub struct Hold {
    point: &'static str,
    entered: tokio::sync::mpsc::UnboundedReceiver<()>,
    release: mpsc::Sender<()>,
}

impl Hold {
    /// Arms `point`: the next thread to reach it reports and waits.
    pub fn arm(point: &'static str) -> Hold {
        let (entered_tx, entered) = tokio::sync::mpsc::unbounded_channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        fail::cfg_callback(point, move || {
            let _ = entered_tx.send(());
            let _ = release_rx.lock().unwrap().recv_timeout(HANG);
        })
        .unwrap();
        Hold {
            point,
            entered,
            release,
        }
    }

    /// Waits until a thread is held at the point; `what` names it.
    pub async fn reached(&mut self, what: &str) {
        tokio::time::timeout(HANG, self.entered.recv())
            .await
            .unwrap_or_else(|_| panic!("{what} never reached {}", self.point));
    }

    /// Disarms the point and lets the held thread go on.
    pub fn release(self) {
        fail::remove(self.point);
        let _ = self.release.send(());
    }
}
