#!/usr/bin/env python3
"""Writes the bundled sample data set: store_status.csv, menu_hours.csv, timezones.csv beside this file.

Synthetic, deterministic (fixed seed) and shaped like the real data of this problem: numeric 19-digit and
UUID store ids, several intervals a day (some touching), "all day" written as 00:00:00,23:59:00 or
00:00:00,23:59:59, shifts past midnight written as a second 00:00:00,00:10:00 row on the same weekday,
stores open only some weekdays, about a fifth of polled stores without hours, a twentieth without a zone,
a few unknown zones, eight days of unsorted hourly polls with 2 to 6 fractional digits and a " UTC" suffix,
runs of outages, and a handful of bad rows so the load summary shows rejections.

Run again after editing: python3 data/sample/generate.py
"""

import csv
import datetime as dt
import pathlib
import random
import uuid

SEED = 20241014
STORES = 250
NOW = dt.datetime(2024, 10, 14, 23, 55, 18, 727055)
DAYS_OF_POLLS = 8.25
HERE = pathlib.Path(__file__).resolve().parent

ZONES = [
    "America/Chicago", "America/New_York", "America/Denver", "America/Los_Angeles", "America/Phoenix",
    "America/Boise", "America/Detroit", "America/Indiana/Indianapolis", "America/Anchorage", "Pacific/Honolulu",
    "America/Puerto_Rico", "Asia/Beirut",
]
UNKNOWN_ZONES = ["Mars/Olympus_Mons", "America/Springfield", "EST5EDT7"]


def store_ids(rng):
    ids = []
    for i in range(STORES):
        if i % 5 == 4:
            ids.append(str(uuid.UUID(int=rng.getrandbits(128), version=4)))
        else:
            ids.append(str(rng.randrange(10**18, 10**19)))
    return ids


def hours_rows(rng, store):
    """Rows (store, day, start, end) in one of the shapes the real data has."""
    shape = rng.choices(["all_day", "lunch_dinner", "touching", "late_night", "weekdays", "single"], [2, 4, 2, 2, 2, 3])[0]
    rows = []
    for day in range(7):
        if shape == "all_day":
            rows.append((store, day, "00:00:00", rng.choice(["23:59:00", "23:59:59"])))
        elif shape == "lunch_dinner":
            rows.append((store, day, "11:00:00", "14:30:00"))
            rows.append((store, day, "17:00:00", "22:00:00"))
        elif shape == "touching":
            rows.append((store, day, "10:00:00", "15:00:00"))
            rows.append((store, day, "15:00:00", "21:30:00"))
        elif shape == "late_night":
            rows.append((store, day, "18:00:00", "23:59:59"))
            rows.append((store, day, "00:00:00", "00:10:00"))
        elif shape == "weekdays" and day < 5:
            rows.append((store, day, "08:00:00", "17:00:00"))
        elif shape == "single" and rng.random() < 0.8:
            start = rng.choice([6, 7, 8, 9, 10])
            rows.append((store, day, f"{start:02d}:00:00", f"{start + rng.choice([8, 10, 12]):02d}:30:00"))
    rng.shuffle(rows)
    return rows


def stamp(rng, when):
    digits = rng.randint(2, 6)
    frac = f"{when.microsecond:06d}"[:digits]
    return when.strftime("%Y-%m-%d %H:%M:%S") + "." + frac + " UTC"


def polls(rng, store):
    """Hourly polls with jitter over the last DAYS_OF_POLLS days; outages come in runs."""
    rows = []
    reliability = rng.choice([0.0, 0.01, 0.03, 0.08])
    recovery = rng.choice([0.2, 0.4, 0.7])
    active = True
    when = NOW - dt.timedelta(days=DAYS_OF_POLLS) + dt.timedelta(minutes=rng.randint(0, 59))
    while when < NOW - dt.timedelta(minutes=1):
        active = (rng.random() >= reliability) if active else (rng.random() < recovery)
        if rng.random() > 0.05:  # an occasional missed poll
            jittered = when + dt.timedelta(seconds=rng.randint(-300, 300), microseconds=rng.randint(0, 999999))
            if jittered < NOW:
                rows.append((store, "active" if active else "inactive", stamp(rng, jittered)))
        when += dt.timedelta(hours=1)
    return rows


def main():
    rng = random.Random(SEED)
    ids = store_ids(rng)
    hours, zones, status = [], [], []
    for i, store in enumerate(ids):
        if i % 5 != 1:  # a fifth of the stores have no hours: open all the time
            hours.extend(hours_rows(rng, store))
        if i % 20 == 7:
            pass  # a twentieth have no zone: America/Chicago
        elif i % 83 == 3:
            zones.append((store, UNKNOWN_ZONES[i % len(UNKNOWN_ZONES)]))
        else:
            zones.append((store, rng.choice(ZONES)))
        status.extend(polls(rng, store))
    # "now" of the data set: the latest poll.
    status.append((ids[0], "active", NOW.strftime("%Y-%m-%d %H:%M:%S.%f") + " UTC"))
    status.extend([
        ("", "active", "2024-10-14 12:00:00.00 UTC"),
        (ids[1], "unknown", "2024-10-14 12:00:00.00 UTC"),
        (ids[2], "active", "yesterday"),
        (ids[3], "inactive", "2024-02-30 10:00:00.00 UTC"),
        (ids[4], "active", "2099-01-01 00:00:00.00 UTC"),
    ])
    rng.shuffle(status)
    hours.append((ids[5], 7, "09:00:00", "17:00:00"))  # a weekday that does not exist

    def write(name, header, rows):
        with open(HERE / name, "w", newline="") as f:
            out = csv.writer(f, lineterminator="\n")
            out.writerow(header)
            out.writerows(rows)

    write("store_status.csv", ["store_id", "status", "timestamp_utc"], status)
    with open(HERE / "store_status.csv", "a", newline="") as f:
        f.write(f"{ids[6]},active\n")  # a row with a missing field
    write("menu_hours.csv", ["store_id", "dayOfWeek", "start_time_local", "end_time_local"], hours)
    write("timezones.csv", ["store_id", "timezone_str"], zones)
    print(f"{len(status) + 1} polls, {len(hours)} hour rows, {len(zones)} zones for {STORES} stores in {HERE}")


if __name__ == "__main__":
    main()
