//! A report worker in the test's process, as `report-worker run` would run it (feature `worker`).

use std::sync::Arc;
use std::time::Duration;

use report_worker::settings::{Settings, WorkerSettings};
use tokio::sync::Notify;

use crate::{TestDatabase, TestTopology};

/// Worker settings on the test's database and topology.
pub fn worker_settings(database: &TestDatabase, topology: &TestTopology, worker: WorkerSettings) -> Settings {
    Settings { database: database.settings(), amqp: topology.amqp.clone(), worker }
}

/// `report_worker::consumer::run` on a tokio task. [`InProcessWorker::stop`] stops it as SIGTERM would;
/// a test that fails before that aborts it on drop, so it does not outlive the test and declare its
/// queues again after they were deleted.
pub struct InProcessWorker {
    stop: Arc<Notify>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl InProcessWorker {
    /// Starts a worker with `settings` on the current tokio runtime.
    pub fn start(settings: Settings) -> InProcessWorker {
        crate::init_logging();
        let stop = Arc::new(Notify::new());
        let signal = Arc::clone(&stop);
        let task = tokio::spawn(report_worker::consumer::run(settings, async move { signal.notified().await }));
        InProcessWorker { stop, task: Some(task) }
    }

    /// Asks the worker to finish and checks that it ended in time and without an error.
    pub async fn stop(mut self) {
        self.stop.notify_one();
        let task = self.task.take().expect("the worker runs");
        let ended = tokio::time::timeout(Duration::from_secs(30), task).await.expect("the worker stops in time");
        ended.expect("the worker task").expect("the worker ends without an error");
    }
}

impl Drop for InProcessWorker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
