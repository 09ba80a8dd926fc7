//! The stop signal shared by every task: a `watch` channel raised once.

use tokio::sync::watch;

/// Waits until the stop signal is raised (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
