//! The domain core of Restaurant Monitor, pure: the input readers of SPEC §1 (bytes in, validated rows
//! and an account of every rejected row out), the uptime engine of SPEC §2 (data in, report rows out; no
//! clock, no database, no broker) and the time arithmetic both share. The services and the offline CLI
//! adapt it to MySQL, RabbitMQ and files; it builds and is tested without any of them.

pub mod engine;
pub mod input;
pub mod time;
