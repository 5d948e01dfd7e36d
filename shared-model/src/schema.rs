// The diesel view of `migrations/`. Kept by hand in step with the SQL (diesel print-schema output shape).

diesel::table! {
    stores (store_key) {
        store_key -> Unsigned<Integer>,
        store_id -> Varchar,
    }
}

diesel::table! {
    polls (store_key, polled_at) {
        store_key -> Unsigned<Integer>,
        polled_at -> Datetime,
        active -> Bool,
        load_id -> Unsigned<Bigint>,
    }
}

diesel::table! {
    polls_staging (load_id, store_key, polled_at) {
        load_id -> Unsigned<Bigint>,
        store_key -> Unsigned<Integer>,
        polled_at -> Datetime,
        active -> Bool,
    }
}

diesel::table! {
    loads (load_id) {
        load_id -> Unsigned<Bigint>,
        file_kind -> Varchar,
        file_name -> Varchar,
        file_bytes -> Nullable<Unsigned<Bigint>>,
        file_digest -> Nullable<Varchar>,
        status -> Varchar,
        started_at -> Datetime,
        finished_at -> Nullable<Datetime>,
        rows_read -> Unsigned<Bigint>,
        rows_loaded -> Unsigned<Bigint>,
        rows_rejected -> Unsigned<Bigint>,
        rejected_by_reason -> Nullable<Text>,
        sample_rejections -> Nullable<Text>,
        notes -> Nullable<Text>,
        error -> Nullable<Text>,
    }
}

diesel::table! {
    snapshots (snapshot_id) {
        snapshot_id -> Unsigned<Bigint>,
        file_kind -> Varchar,
        load_id -> Unsigned<Bigint>,
        created_at -> Datetime,
    }
}

diesel::table! {
    current_snapshots (file_kind) {
        file_kind -> Varchar,
        snapshot_id -> Nullable<Unsigned<Bigint>>,
        load_id -> Nullable<Unsigned<Bigint>>,
    }
}

diesel::table! {
    business_hours (snapshot_id, store_key, row_no) {
        snapshot_id -> Unsigned<Bigint>,
        store_key -> Unsigned<Integer>,
        row_no -> Unsigned<Integer>,
        weekday -> Unsigned<Tinyint>,
        start_us -> Bigint,
        end_us -> Bigint,
    }
}

diesel::table! {
    store_timezones (snapshot_id, store_key) {
        snapshot_id -> Unsigned<Bigint>,
        store_key -> Unsigned<Integer>,
        timezone_str -> Varchar,
    }
}

diesel::table! {
    reports (report_id) {
        report_id -> Char,
        status -> Varchar,
        created_at -> Datetime,
        queued_at -> Nullable<Datetime>,
        started_at -> Nullable<Datetime>,
        finished_at -> Nullable<Datetime>,
        as_of -> Nullable<Datetime>,
        stores_done -> Nullable<Unsigned<Integer>>,
        stores_total -> Nullable<Unsigned<Integer>>,
        store_count -> Nullable<Unsigned<Integer>>,
        csv_bytes -> Nullable<Unsigned<Bigint>>,
        attempts -> Unsigned<Integer>,
        error -> Nullable<Text>,
        data_polls_load_id -> Nullable<Unsigned<Bigint>>,
        data_hours_snapshot -> Nullable<Unsigned<Bigint>>,
        data_zones_snapshot -> Nullable<Unsigned<Bigint>>,
        shares_report_id -> Nullable<Char>,
        heartbeat_at -> Nullable<Datetime>,
        redeliveries -> Unsigned<Integer>,
        csv_deleted_at -> Nullable<Datetime>,
        unknown_after_minutes -> Nullable<Unsigned<Smallint>>,
        shards_total -> Nullable<Unsigned<Integer>>,
        shards_done -> Nullable<Unsigned<Integer>>,
        plan_hours_snapshot -> Nullable<Unsigned<Bigint>>,
        plan_zones_snapshot -> Nullable<Unsigned<Bigint>>,
    }
}

diesel::table! {
    report_shards (report_id, shard_no) {
        report_id -> Char,
        shard_no -> Unsigned<Integer>,
        first_store_key -> Unsigned<Integer>,
        end_store_key -> Nullable<Unsigned<Integer>>,
        status -> Varchar,
        attempts -> Unsigned<Integer>,
        stores_done -> Nullable<Unsigned<Integer>>,
        stores_total -> Nullable<Unsigned<Integer>>,
        store_count -> Nullable<Unsigned<Integer>>,
        csv_bytes -> Nullable<Unsigned<Bigint>>,
        chunks -> Nullable<Unsigned<Integer>>,
        worker -> Nullable<Varchar>,
        started_at -> Nullable<Datetime>,
        finished_at -> Nullable<Datetime>,
    }
}

diesel::table! {
    report_workers (worker) {
        worker -> Varchar,
        started_at -> Datetime,
        heartbeat_at -> Datetime,
    }
}

diesel::table! {
    idempotency_keys (client, idempotency_key) {
        idempotency_key -> Varchar,
        client -> Char,
        body_digest -> Char,
        report_id -> Char,
        created_at -> Datetime,
    }
}

diesel::table! {
    report_chunks (report_id, shard_no, seq) {
        report_id -> Char,
        shard_no -> Unsigned<Integer>,
        seq -> Unsigned<Integer>,
        data -> Mediumblob,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    stores,
    polls,
    polls_staging,
    loads,
    snapshots,
    current_snapshots,
    business_hours,
    store_timezones,
    reports,
    report_chunks,
    report_shards,
    report_workers,
    idempotency_keys,
);
