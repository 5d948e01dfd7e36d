//! The stop signal every service obeys: SIGTERM (what `docker stop` and orchestrators send) or SIGINT
//! (Ctrl-C). Services take their shutdown as a future, so tests pass one of their own instead.

/// Completes on SIGTERM or SIGINT, whichever comes first, and logs which.
pub async fn signalled() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            log::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                log::error!("cannot listen for SIGTERM ({e}); stopping on Ctrl-C only");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => log::info!("SIGINT received"),
        () = terminate => log::info!("SIGTERM received"),
    }
}
