//! The signals that stop a server: SIGINT (Ctrl-C) and SIGTERM (what
//! container runtimes send).

/// Completes when the process receives SIGINT or SIGTERM.
///
/// # Panics
/// If the signal handlers cannot be installed, which only happens when the
/// process is out of file descriptors at start-up.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
        let mut terminate =
            signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
