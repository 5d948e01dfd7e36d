//! Data for the worker's tests: rows written with plain SQL the way the ingest writes them, and in-memory
//! expectations computed by the engine from the same data. The database and the broker names of a test,
//! and its report rows, are `test_support`'s.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use shared_model::models::polls;
use shared_model::schema::{business_hours, current_snapshots, loads, snapshots, store_timezones, stores};
pub use test_support::report_fixture as fixture;
pub use test_support::{TestDatabase, create_report, job_body, report_row};
use uptime_core::engine::{self, Horizon, Inputs, NoProgress};
use uptime_core::input::{self, DataFiles, HoursRow, Poll, StoreIds};
use uptime_core::time::HOUR;

pub fn naive(micros: i64) -> NaiveDateTime {
    DateTime::from_timestamp_micros(micros).expect("in range").naive_utc()
}

/// Records a load of `kind` with `status` and returns its id.
pub fn insert_load(conn: &mut MysqlConnection, kind: &str, status: &str) -> u64 {
    diesel::insert_into(loads::table)
        .values((
            loads::file_kind.eq(kind),
            loads::file_name.eq(format!("{kind}.csv")),
            loads::status.eq(status),
            loads::started_at.eq(Utc::now().naive_utc()),
        ))
        .execute(conn)
        .expect("insert load");
    loads::table.select(diesel::dsl::max(loads::load_id)).first::<Option<u64>>(conn).expect("id").expect("a load")
}

pub fn finish_load(conn: &mut MysqlConnection, load_id: u64) {
    diesel::update(loads::table.find(load_id)).set(loads::status.eq("loaded")).execute(conn).expect("finish load");
}

/// Adds store ids (if new) and returns every id's key.
pub fn insert_stores(conn: &mut MysqlConnection, ids: &[&str]) -> HashMap<String, u32> {
    for chunk in ids.chunks(5_000) {
        let rows: Vec<_> = chunk.iter().map(|id| stores::store_id.eq(*id)).collect();
        diesel::insert_or_ignore_into(stores::table).values(&rows).execute(conn).expect("insert stores");
    }
    stores::table
        .select((stores::store_id, stores::store_key))
        .load::<(String, u32)>(conn)
        .expect("keys")
        .into_iter()
        .collect()
}

/// Upserts polls as the ingest does: same (store, instant) replaces, and `load_id` moves only when the
/// status changes (or the row is new).
pub fn upsert_polls(conn: &mut MysqlConnection, load_id: u64, rows: &[Poll]) {
    for chunk in rows.chunks(10_000) {
        let mut sql = String::from(polls::UPSERT_PREFIX);
        for (i, p) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "({}, '{}', {}, {load_id})",
                p.store,
                naive(p.at).format("%Y-%m-%d %H:%M:%S%.6f"),
                p.active
            ));
        }
        sql.push_str(polls::UPSERT_ON_DUPLICATE);
        conn.batch_execute(&sql).expect("upsert polls");
    }
}

/// Writes a new hours snapshot and makes it current.
pub fn replace_hours(conn: &mut MysqlConnection, load_id: u64, rows: &[HoursRow]) -> u64 {
    let snapshot = new_snapshot(conn, "hours", load_id);
    for (chunk_no, chunk) in rows.chunks(5_000).enumerate() {
        let values: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    business_hours::snapshot_id.eq(snapshot),
                    business_hours::store_key.eq(r.store),
                    business_hours::row_no.eq((chunk_no * 5_000 + i) as u32),
                    business_hours::weekday.eq(r.weekday),
                    business_hours::start_us.eq(r.start),
                    business_hours::end_us.eq(r.end),
                )
            })
            .collect();
        diesel::insert_into(business_hours::table).values(&values).execute(conn).expect("insert hours");
    }
    point_to(conn, "hours", Some(snapshot), load_id);
    snapshot
}

/// Writes a new zones snapshot (names as given, known or not) and makes it current.
pub fn replace_zones(conn: &mut MysqlConnection, load_id: u64, rows: &[(u32, &str)]) -> u64 {
    let snapshot = new_snapshot(conn, "zones", load_id);
    for chunk in rows.chunks(5_000) {
        let values: Vec<_> = chunk
            .iter()
            .map(|(store, name)| {
                (
                    store_timezones::snapshot_id.eq(snapshot),
                    store_timezones::store_key.eq(*store),
                    store_timezones::timezone_str.eq(*name),
                )
            })
            .collect();
        diesel::insert_into(store_timezones::table).values(&values).execute(conn).expect("insert zones");
    }
    point_to(conn, "zones", Some(snapshot), load_id);
    snapshot
}

fn new_snapshot(conn: &mut MysqlConnection, kind: &str, load_id: u64) -> u64 {
    diesel::insert_into(snapshots::table)
        .values((
            snapshots::file_kind.eq(kind),
            snapshots::load_id.eq(load_id),
            snapshots::created_at.eq(Utc::now().naive_utc()),
        ))
        .execute(conn)
        .expect("insert snapshot");
    snapshots::table
        .select(diesel::dsl::max(snapshots::snapshot_id))
        .first::<Option<u64>>(conn)
        .expect("id")
        .expect("one")
}

fn point_to(conn: &mut MysqlConnection, kind: &str, snapshot: Option<u64>, load_id: u64) {
    diesel::update(current_snapshots::table.find(kind))
        .set((current_snapshots::snapshot_id.eq(snapshot), current_snapshots::load_id.eq(load_id)))
        .execute(conn)
        .expect("move pointer");
}

/// A data set in memory, in the database's store keys, that the tests compute expectations from.
#[derive(Debug, Clone, Default)]
pub struct Data {
    pub ids: HashMap<u32, String>,
    pub polls: Vec<Poll>,
    pub hours: Vec<HoursRow>,
    pub zones: Vec<(u32, String)>,
}

/// Slows a report down by a pause after each store, so a test can watch its progress or stop its
/// worker in the middle of it.
#[derive(Debug, Clone, Copy)]
pub struct PacePerStore(pub std::time::Duration);

impl uptime_core::engine::Progress for PacePerStore {
    fn store_done(&self) {
        std::thread::sleep(self.0);
    }
}

impl Data {
    /// The report the engine gives for this data, as the CLI would write it.
    pub fn expected_csv(&self) -> Vec<u8> {
        self.expected_csv_with(Horizon::NONE)
    }

    /// The report with a gap horizon (SPEC §2b), as `compute --unknown-after` would write it.
    pub fn expected_csv_with(&self, horizon: Horizon) -> Vec<u8> {
        let mut polls = self.polls.clone();
        polls.sort_by_key(|p| (p.store, p.at));
        let zones: HashMap<u32, chrono_tz::Tz> =
            self.zones.iter().filter_map(|(k, name)| name.parse().ok().map(|tz| (*k, tz))).collect();
        let mut out = Vec::new();
        engine::report(Inputs { polls: &polls, hours: &self.hours, zones: &zones }, horizon, &NoProgress)
            .write_csv(&mut out, |k| self.ids[&k].as_str())
            .expect("write to memory");
        out
    }

    /// Upserts `newer` into the in-memory polls the way the database does.
    pub fn upsert(&mut self, newer: &[Poll]) {
        let mut by_key: HashMap<(u32, i64), bool> = self.polls.iter().map(|p| ((p.store, p.at), p.active)).collect();
        for p in newer {
            by_key.insert((p.store, p.at), p.active);
        }
        self.polls = by_key.into_iter().map(|((store, at), active)| Poll { store, at, active }).collect();
        self.polls.sort_by_key(|p| (p.store, p.at));
    }
}

/// Loads a folder of the three CSV files into the database as one load per file, and returns the same
/// data in memory (keyed by the database's store keys).
pub fn seed_folder(conn: &mut MysqlConnection, folder: &Path) -> Data {
    let files = DataFiles::find(folder).expect("data files");
    let mut interned = StoreIds::new();
    let polls = input::read_polls(&files.polls, &mut interned, Utc::now().timestamp_micros()).expect("polls").polls;
    let hours = files.hours.as_ref().map(|p| input::read_hours(p, &mut interned).expect("hours").rows);
    let zones = files.zones.as_ref().map(|p| input::read_zones(p, &mut interned).expect("zones").rows);
    let all_ids: Vec<&str> = interned.iter().collect();
    let keys = insert_stores(conn, &all_ids);
    let key = |interned_key: u32| keys[interned.id(interned_key)];

    let mut data = Data { ids: keys.iter().map(|(id, k)| (*k, id.clone())).collect(), ..Data::default() };
    data.polls = polls.iter().map(|p| Poll { store: key(p.store), ..*p }).collect();
    data.polls.sort_by_key(|p| (p.store, p.at));
    let load = insert_load(conn, "polls", "running");
    upsert_polls(conn, load, &data.polls);
    finish_load(conn, load);
    if let Some(hours) = hours {
        data.hours = hours.iter().map(|r| HoursRow { store: key(r.store), ..*r }).collect();
        let load = insert_load(conn, "hours", "running");
        replace_hours(conn, load, &data.hours);
        finish_load(conn, load);
    }
    if let Some(zones) = zones {
        data.zones = zones.iter().map(|z| (key(z.store), z.name.clone())).collect();
        let load = insert_load(conn, "zones", "running");
        let rows: Vec<(u32, &str)> = data.zones.iter().map(|(k, n)| (*k, n.as_str())).collect();
        replace_zones(conn, load, &rows);
        finish_load(conn, load);
    }
    data
}

/// A generated data set: `stores` stores with `polls_per_store` polls each over the last 8 days before
/// `now`, hours for every other store, a zone for every third. Deterministic.
pub fn generate(conn: &mut MysqlConnection, stores: usize, polls_per_store: usize, now: i64) -> Data {
    let ids: Vec<String> = (0..stores).map(|i| format!("gen-store-{i:06}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let keys = insert_stores(conn, &id_refs);
    let zones = ["America/New_York", "Europe/London", "Asia/Tokyo", "Not/A_Zone"];
    let mut data = Data { ids: keys.iter().map(|(id, k)| (*k, id.clone())).collect(), ..Data::default() };
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let span = engine::LOOKBACK;
    for (i, id) in ids.iter().enumerate() {
        let key = keys[id];
        for _ in 0..polls_per_store {
            let at = now - (next() % span as u64) as i64;
            data.polls.push(Poll { store: key, at, active: next() % 5 != 0 });
        }
        if i % 2 == 0 {
            for weekday in 0..7u8 {
                data.hours.push(HoursRow { store: key, weekday, start: 9 * HOUR, end: 21 * HOUR });
            }
        }
        if i % 3 == 0 {
            data.zones.push((key, zones[i % zones.len()].to_owned()));
        }
    }
    data.polls.push(Poll { store: keys[&ids[0]], at: now, active: true });
    data.polls.sort_by_key(|p| (p.store, p.at));
    data.polls.dedup_by_key(|p| (p.store, p.at));
    let load = insert_load(conn, "polls", "running");
    upsert_polls(conn, load, &data.polls);
    finish_load(conn, load);
    let load = insert_load(conn, "hours", "running");
    replace_hours(conn, load, &data.hours);
    finish_load(conn, load);
    let load = insert_load(conn, "zones", "running");
    let rows: Vec<(u32, &str)> = data.zones.iter().map(|(k, n)| (*k, n.as_str())).collect();
    replace_zones(conn, load, &rows);
    finish_load(conn, load);
    data
}
