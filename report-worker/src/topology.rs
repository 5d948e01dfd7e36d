//! The broker objects the worker needs, declared idempotently.
//!
//! The job topology itself (exchange, quorum job queue with its delivery limit and dead-letter exchange,
//! dead-letter queue) is `shared_model::queue`'s; the worker adds one queue of its own: the
//! *failed-marker* queue, bound to the dead-letter exchange with the same routing key as the dead-letter
//! queue. Every dead-lettered job thus reaches both: the dead-letter queue keeps it for a person to
//! inspect, and the worker consumes the copy to mark its report Failed — the one path that still works
//! when a worker died on the last delivery the queue allowed, or MySQL was down when it gave up.

use lapin::Channel;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use shared_model::queue::{self, DEAD_LETTER_ROUTING_KEY, QueueError};
use shared_model::settings::AmqpSettings;

/// The failed-marker queue of a topology ([`AmqpSettings::failed_marker_queue`], where every queue name lives).
pub fn failed_marker_queue(amqp: &AmqpSettings) -> String {
    amqp.failed_marker_queue()
}

/// Declares the job topology and the failed-marker queue.
pub async fn declare(channel: &Channel, amqp: &AmqpSettings) -> Result<(), QueueError> {
    queue::declare_topology(channel, amqp).await?;
    let marker = failed_marker_queue(amqp);
    let declare_error = |source| QueueError::Declare { what: "failed-marker queue", name: marker.clone(), source };
    // A classic durable queue: the marker hands a message back while MySQL is down, as often as it takes,
    // and quorum queues of RabbitMQ 4 drop a message after 20 returns by default.
    channel
        .queue_declare(
            marker.as_str().into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(declare_error)?;
    channel
        .queue_bind(
            marker.as_str().into(),
            amqp.dead_letter_exchange.as_str().into(),
            DEAD_LETTER_ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(declare_error)
}

/// Deletes the failed-marker queue and the job topology, messages included. For tests with suffixed names.
pub async fn delete(channel: &Channel, amqp: &AmqpSettings) -> Result<(), QueueError> {
    let marker = failed_marker_queue(amqp);
    channel.queue_delete(marker.as_str().into(), Default::default()).await.map_err(|source| QueueError::Delete {
        what: "failed-marker queue",
        name: marker.clone(),
        source,
    })?;
    queue::delete_topology(channel, amqp).await
}
