//! The server's `max_allowed_packet` bounds every statement the worker sends: a multi-row INSERT of report
//! chunks larger than it is refused ("Got a packet bigger than 'max_allowed_packet'"), on every attempt.
//! `worker.max_insert_bytes` (8 MiB) fits the defaults (16 MiB on MariaDB, 64 MiB on MySQL 8), but a
//! server may be set lower, so the worker reads the limit before it stores a report and writes under it.

use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::sql_query;
use shared_model::models::reports::Chunking;

/// The packet also carries the statement around the data and each row's other columns: the data stays a
/// sixteenth of the packet below it (15 MiB of a 16 MiB packet, as `MAX_STATEMENT_BYTES` assumes), and at
/// least 4 KiB below on small packets.
const MARGIN_DIVISOR: u64 = 16;
const MIN_MARGIN_BYTES: u64 = 4 << 10;

#[derive(QueryableByName)]
struct PacketLimit {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    bytes: i64,
}

/// `max_allowed_packet` of this connection's session, in bytes.
pub fn max_allowed_packet(conn: &mut MysqlConnection) -> QueryResult<u64> {
    let packet: PacketLimit = sql_query("SELECT CAST(@@max_allowed_packet AS SIGNED) AS bytes").get_result(conn)?;
    // The server keeps it between 1 KiB and 1 GiB; a negative answer would be a broken server.
    Ok(packet.bytes.max(0).unsigned_abs())
}

/// The most chunk data one statement may carry under a packet limit of `max_allowed_packet` bytes.
pub fn statement_limit(max_allowed_packet: u64) -> usize {
    let margin = (max_allowed_packet / MARGIN_DIVISOR).max(MIN_MARGIN_BYTES).min(max_allowed_packet / 2);
    usize::try_from(max_allowed_packet - margin).unwrap_or(usize::MAX).max(1)
}

/// `configured`, lowered where the server's packet limit requires: statements under
/// [`statement_limit`], and chunks no larger than a statement.
pub fn capped_chunking(configured: Chunking, max_allowed_packet: u64) -> Chunking {
    let max_statement_bytes = configured.max_statement_bytes.min(statement_limit(max_allowed_packet));
    Chunking { chunk_bytes: configured.chunk_bytes.min(max_statement_bytes), max_statement_bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_default_settings_fit_the_default_packets_unchanged() {
        for packet in [16 * MIB, 64 * MIB, 1 << 30] {
            assert_eq!(capped_chunking(Chunking::default(), packet), Chunking::default(), "{packet}");
        }
        assert_eq!(statement_limit(16 * MIB), 15 << 20, "the shared model's MAX_STATEMENT_BYTES");
    }

    #[test]
    fn a_small_packet_lowers_statements_and_chunks_below_it() {
        let capped = capped_chunking(Chunking::default(), 4 * MIB);
        assert_eq!(capped, Chunking { chunk_bytes: 1 << 20, max_statement_bytes: (4 << 20) - (256 << 10) });
        let capped = capped_chunking(Chunking::default(), 512 << 10);
        assert_eq!(capped.max_statement_bytes, (512 << 10) - (32 << 10));
        assert_eq!(capped.chunk_bytes, capped.max_statement_bytes, "a chunk must fit a statement");
        // MariaDB's smallest allowed value: half of it still carries data.
        let capped = capped_chunking(Chunking::default(), 1024);
        assert_eq!((capped.chunk_bytes, capped.max_statement_bytes), (512, 512));
        for packet in [1024, 5000, 100_000, 3 * MIB, 16 * MIB] {
            let capped = capped_chunking(Chunking::default(), packet);
            assert!((capped.max_statement_bytes as u64) < packet, "{packet}: {capped:?}");
            assert!(capped.chunk_bytes >= 1 && capped.chunk_bytes <= capped.max_statement_bytes, "{capped:?}");
        }
    }
}
