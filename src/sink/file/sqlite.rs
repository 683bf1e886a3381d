//! SQLite: one database per output directory, `spillway.sqlite`, that
//! accumulates runs, so cron jobs build a history to query with SQL.
//!
//! What users query (schema version 2, in `PRAGMA user_version`, created
//! when absent):
//! ```text
//! runs(run_id TEXT PRIMARY KEY, started_at TEXT, finished_at TEXT,   -- RFC 3339 UTC
//!      from_ms, to_ms, step_ms INTEGER, queries TEXT,               -- JSON array
//!      samples, alerts INTEGER, failed_queries TEXT)                -- JSON array
//! samples(run_id, query, metric, labels, timestamp_ms, value, out_of_range, alert)  -- view
//! alerts(...)   -- view, same columns, only the alert-flagged samples
//! ```
//! `labels` is a JSON object without `__name__` (query it with
//! `json_extract(labels, '$.instance')`); `value` is REAL, NULL for NaN
//! (SQLite cannot store NaN), ±Inf kept, -0 reads back as 0; flags are 0/1.
//!
//! Storage is normalised because a run can hold tens of millions of rows and
//! the strings of a series would otherwise repeat on every one (measured:
//! 254 bytes per row flat, about 100 normalised). `series(id, query, metric,
//! labels)` holds each (query, labels) once, `UNIQUE(metric, labels,
//! query)`; `sample_rows` holds `(run, series_id, timestamp_ms, value,
//! out_of_range, alert)` where `run` is the rowid of the run in `runs`; the
//! `samples` view joins it back into the flat shape, and the `alerts` view
//! is the same join restricted to `alert = 1`: alert rows are stored once.
//! `sample_rows` is stored in the order of its key `(series_id,
//! timestamp_ms, run)` (`WITHOUT ROWID`), so a series' rows are read in
//! time order without a separate index. An index by series and time,
//! built after a load, was a second sorted copy of every row: one sort of
//! all of them, and a file 56% larger (6 h of 10,000 series: 777 against
//! 496 MB). A series' later windows land between rows already stored,
//! which costs less than that sort (CHANGELOG, Performance). A series
//! has one sample per timestamp in a run: a repeated one is stored once.
//! Indexes: `series(metric, ..)` (the unique constraint), `sample_rows(run)`
//! and `sample_rows(timestamp_ms) WHERE alert = 1` (partial: only the alert
//! rows), so `WHERE metric = .. AND timestamp_ms > ..` on the views uses the
//! series index and the table's key, and deleting a run (from
//! `sample_rows`) is cheap. `sample_rows(run)` is created by the second run
//! into a file: while the file holds one run, every row has the same `run`,
//! and the index would serve no query.
//!
//! Files created before this layout keep theirs (a rowid table with an
//! index `sample_rows_series_time`): runs append to either the same way,
//! and the views read both alike.
//!
//! Version 1 kept a second copy of the alert rows in an `alert_rows` table.
//! A version 1 database is upgraded in the first run that appends to it, in
//! that run's transaction: `alert_rows` (the same rows as `sample_rows`
//! with `alert = 1`, written by the same calls) is dropped and the `alerts`
//! view now reads `sample_rows`. Builds that only know version 1 refuse
//! the upgraded file as newer than they understand.
//!
//! A run is one transaction: `open` begins it (`BEGIN IMMEDIATE`, so a
//! concurrent run waits for the lock instead of failing mid-way) and inserts
//! the `runs` row; `finish` completes that row and commits. Dropping the sink
//! rolls everything back, so a failed run leaves no rows (an aborted first
//! run leaves an empty database: even the schema is rolled back). A second
//! run on the same database waits up to 10 minutes for the first to finish.
//!
//! The first run into a directory (no `spillway.sqlite` yet) is a bulk load:
//! it fills a fresh database under a temp name with no journal and no sync
//! (`journal_mode = OFF`, `synchronous = OFF`: a crash loses only the temp
//! file, which nobody reads), builds the indexes after the rows are in
//! (one sort instead of a B-tree insert per row), fsyncs
//! and links the file into place without replacing anything. If another run
//! created the database meanwhile, the loaded run is copied into it in one
//! ordinary transaction instead. Later runs append to the existing file in place,
//! crash-safe: a rollback journal and `synchronous = FULL`.
//! Inserts reuse prepared statements of 64 rows each (each execution has a
//! fixed cost: reset, step, cursor setup); the series id is looked up once
//! per write call, not per row.

use super::{FlaggedSample, RecordSink, RunInfo, RunOutcome, SinkError};
use crate::fsutil::AtomicFile;
use crate::model::time::format_rfc3339_ms;
use crate::model::Labels;
use rusqlite::{Connection, ErrorCode};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

pub(super) const DB_NAME: &str = "spillway.sqlite";

/// Bumped with every incompatible schema change; newer databases are refused.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    from_ms INTEGER NOT NULL,
    to_ms INTEGER NOT NULL,
    step_ms INTEGER NOT NULL,
    queries TEXT NOT NULL,
    samples INTEGER,
    alerts INTEGER,
    failed_queries TEXT
);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    query TEXT NOT NULL,
    metric TEXT NOT NULL,
    labels TEXT NOT NULL,
    UNIQUE (metric, labels, query)
);
CREATE TABLE IF NOT EXISTS sample_rows (
    run INTEGER NOT NULL,
    series_id INTEGER NOT NULL REFERENCES series(id),
    timestamp_ms INTEGER NOT NULL,
    value REAL,
    out_of_range INTEGER NOT NULL,
    alert INTEGER NOT NULL,
    PRIMARY KEY (series_id, timestamp_ms, run)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS samples AS
    SELECT u.run_id, s.query, s.metric, s.labels, r.timestamp_ms, r.value, r.out_of_range, r.alert
    FROM sample_rows r JOIN series s ON s.id = r.series_id JOIN runs u ON u.rowid = r.run;
CREATE VIEW IF NOT EXISTS alerts AS
    SELECT u.run_id, s.query, s.metric, s.labels, r.timestamp_ms, r.value, r.out_of_range, r.alert
    FROM sample_rows r JOIN series s ON s.id = r.series_id JOIN runs u ON u.rowid = r.run
    WHERE r.alert = 1;
";

/// Version 1 → 2: the copy of the alert rows goes, the `alerts` view reads
/// `sample_rows` (followed by [`SCHEMA`] and [`ensure_indexes`] for the new view and index).
const UPGRADE_FROM_1: &str = "
DROP VIEW IF EXISTS alerts;
DROP TABLE IF EXISTS alert_rows;
";

/// Built after a bulk load (the file then holds one run: no index by run).
/// Rows by series and time need no index: that is the table's own order.
const ALERT_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS sample_rows_alert_time ON sample_rows(timestamp_ms) WHERE alert = 1;";

/// Built by the second run into a file ([`ensure_indexes`]).
const RUN_INDEX: &str = "CREATE INDEX IF NOT EXISTS sample_rows_run ON sample_rows(run);";

/// Copies a bulk-loaded run (database `fresh`) into the main database,
/// mapping its series ids onto the main database's; `?1` is the run's new key.
const MERGE: &str = "
INSERT INTO series (query, metric, labels)
    SELECT query, metric, labels FROM fresh.series WHERE true ON CONFLICT DO NOTHING;
INSERT INTO sample_rows (run, series_id, timestamp_ms, value, out_of_range, alert)
    SELECT ?1, m.id, r.timestamp_ms, r.value, r.out_of_range, r.alert
    FROM fresh.sample_rows r JOIN fresh.series f ON f.id = r.series_id
    JOIN series m ON m.metric = f.metric AND m.labels = f.labels AND m.query = f.query;
";

/// Opens a database this sink writes (the run's file, or the one a loaded
/// run is merged into), set up alike for both.
///
/// Another run appending to the same database holds the write lock for its
/// whole duration: wait for it rather than fail.
///
/// The SQLite we link enforces foreign keys by default. Every row's
/// `series_id` is one this connection just read or inserted in the same
/// transaction, so the check finds nothing, yet it costs a lookup in
/// `series` per row and, because a failing check would abort the
/// statement, makes SQLite keep a statement journal for every multi-row
/// insert: in an append, a copy of each page the insert touches (measured:
/// CHANGELOG, Performance). `OR IGNORE` in [`insert_sql`] keeps the other
/// constraints from doing the same.
fn open_for_writing(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(600))?;
    conn.execute_batch("PRAGMA foreign_keys = OFF;")?;
    Ok(conn)
}

/// Page cache sizes (`PRAGMA cache_size`, negative: KiB) of a bulk load
/// and of an append; see [`SqliteSink::begin`].
const LOAD_CACHE: i64 = -16 * 1024;
const APPEND_CACHE: i64 = -64 * 1024;

const INSERT_SERIES: &str =
    "INSERT INTO series (query, metric, labels) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";
const SELECT_SERIES: &str =
    "SELECT id FROM series WHERE metric = ?2 AND labels = ?3 AND query = ?1";
/// Rows per multi-row `INSERT`: one statement execution (reset, step,
/// cursor setup) carries this many rows instead of one. The run and series
/// are the same in every row, bound once as `?1` and `?2`.
pub const BATCH_ROWS: usize = 64;

/// `INSERT OR IGNORE INTO sample_rows (...) VALUES (?1, ?2, ?3, ?4, ?5, ?6), (?1, ?2, ?7, ...)`
/// for `rows` rows. A series has one value per timestamp: a second sample
/// for a (series, timestamp) already in the run (the same query listed
/// twice, or an answer repeating a series) is not stored again, rather
/// than failing the run on the table's key.
pub fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR IGNORE INTO sample_rows (run, series_id, timestamp_ms, value, out_of_range, alert) VALUES ",
    );
    for i in 0..rows {
        let p = 3 + 4 * i;
        let sep = if i == 0 { "" } else { "," };
        sql.push_str(&format!(
            "{sep}(?1, ?2, ?{p}, ?{}, ?{}, ?{})",
            p + 1,
            p + 2,
            p + 3
        ));
    }
    sql
}

static INSERT_BATCH: LazyLock<String> = LazyLock::new(|| insert_sql(BATCH_ROWS));
static INSERT_ONE: LazyLock<String> = LazyLock::new(|| insert_sql(1));

pub(super) struct SqliteSink {
    path: PathBuf,
    conn: Connection,
    /// The temp file of a bulk load (first run into the directory); `None` when appending.
    fresh: Option<AtomicFile>,
    run_id: String,
    /// The run's rowid in `runs`, stored in every row instead of the longer id.
    run_key: i64,
    /// The last write's (query, labels) and series id: a series arriving in
    /// consecutive calls is looked up once.
    last_series: Option<(String, Labels, i64)>,
    committed: bool,
}

impl SqliteSink {
    pub(super) fn open(dir: &Path, run: &RunInfo) -> Result<SqliteSink, SinkError> {
        let path = dir.join(DB_NAME);
        let fresh = if path.exists() {
            None
        } else {
            Some(
                AtomicFile::create(dir, DB_NAME).map_err(|error| SinkError::Create {
                    path: path.clone(),
                    error,
                })?,
            )
        };
        let target = fresh.as_ref().map_or(path.as_path(), |f| f.temp_path());
        let conn = open_for_writing(target).map_err(|error| SinkError::Sqlite {
            path: path.clone(),
            action: "open",
            error,
        })?;
        let mut sink = SqliteSink {
            path,
            conn,
            fresh,
            run_id: run.run_id.clone(),
            run_key: 0,
            last_series: None,
            committed: false,
        };
        sink.begin(run)?;
        Ok(sink)
    }

    fn err(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> SinkError + '_ {
        move |error| SinkError::Sqlite {
            path: self.path.clone(),
            action,
            error,
        }
    }

    /// Sets up the connection, starts the run's transaction, checks or
    /// creates the schema and records the run.
    fn begin(&mut self, run: &RunInfo) -> Result<(), SinkError> {
        let conn = &self.conn;
        // A rollback journal, not WAL: a run only appends, and appended pages
        // need no journal entry, while WAL would write every page twice (log,
        // then checkpoint). DELETE, not TRUNCATE: a run is one transaction,
        // so removing the journal once costs nothing, and no empty
        // `-journal` file is left next to the database. FULL sync makes a
        // finished run survive a power cut. The page cache (64 MiB) keeps
        // index pages resident during a long transaction. A fresh file has
        // no index during the load (they are built after it), so 16 MiB
        // is enough there and keeps the whole export under 100 MB. A fresh
        // file gets 16 KiB pages (a database keeps its page size): fewer
        // page splits and cell moves per row and per index entry; measured
        // on the sinks bench, about 15% less CPU than 4 KiB, and less than 64 KiB.
        let pragmas = if self.fresh.is_some() {
            // Nobody else sees the temp file; it is fsynced before it is linked in.
            format!(
                "PRAGMA page_size = 16384;
                 PRAGMA journal_mode = OFF;
                 PRAGMA synchronous = OFF;
                 PRAGMA cache_size = {LOAD_CACHE};"
            )
        } else {
            format!(
                "PRAGMA journal_mode = DELETE;
                 PRAGMA synchronous = FULL;
                 PRAGMA cache_size = {APPEND_CACHE};"
            )
        };
        conn.execute_batch(&pragmas)
            .map_err(self.err("configure"))?;
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(self.err("lock"))?;

        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(self.err("read the schema version of"))?;
        if version > SCHEMA_VERSION {
            return Err(SinkError::SchemaVersion {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < SCHEMA_VERSION {
            upgrade(conn, version).map_err(self.err("create the schema in"))?;
        }
        // A fresh file gets its indexes after the load.
        if self.fresh.is_none() {
            ensure_indexes(conn).map_err(self.err("index"))?;
        }

        let queries = serde_json::to_string(&run.queries).expect("strings always serialize");
        let inserted = conn.execute(
            "INSERT INTO runs (run_id, started_at, from_ms, to_ms, step_ms, queries) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                run.run_id,
                format_rfc3339_ms(run.started_ms),
                run.from_ms,
                run.to_ms,
                run.step_ms,
                queries
            ],
        );
        match inserted {
            Ok(_) => {
                self.run_key = conn.last_insert_rowid();
                Ok(())
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::ConstraintViolation =>
            {
                Err(SinkError::RunExists {
                    path: self.path.clone(),
                    run_id: run.run_id.clone(),
                })
            }
            Err(e) => Err(self.err("insert into")(e)),
        }
    }
}

/// The id of (query, labels) in `series`, inserting it when new.
fn series_id(conn: &Connection, query: &str, labels: &Labels) -> rusqlite::Result<i64> {
    let mut json = String::new();
    super::push_json_labels(&mut json, labels);
    let params = rusqlite::params![query, labels.metric_name(), json];
    conn.prepare_cached(INSERT_SERIES)?.execute(params)?;
    conn.prepare_cached(SELECT_SERIES)?
        .query_row(params, |row| row.get(0))
}

/// Inserts rows with prepared statements, [`BATCH_ROWS`] rows per
/// execution; the run and series are bound once and stay bound (SQLite
/// keeps bindings across executions).
fn insert_rows(
    conn: &Connection,
    run_key: i64,
    series_id: i64,
    samples: &[FlaggedSample],
) -> rusqlite::Result<()> {
    let mut batches = samples.chunks_exact(BATCH_ROWS);
    if batches.len() > 0 {
        let mut stmt = conn.prepare_cached(&INSERT_BATCH)?;
        stmt.raw_bind_parameter(1, run_key)?;
        stmt.raw_bind_parameter(2, series_id)?;
        for batch in &mut batches {
            for (i, s) in batch.iter().enumerate() {
                bind_row(&mut stmt, 3 + 4 * i, s)?;
            }
            stmt.raw_execute()?;
        }
    }
    let rest = batches.remainder();
    if !rest.is_empty() {
        let mut stmt = conn.prepare_cached(&INSERT_ONE)?;
        stmt.raw_bind_parameter(1, run_key)?;
        stmt.raw_bind_parameter(2, series_id)?;
        for s in rest {
            bind_row(&mut stmt, 3, s)?;
            stmt.raw_execute()?;
        }
    }
    Ok(())
}

/// Binds one row's own columns from parameter `first` on.
fn bind_row(
    stmt: &mut rusqlite::CachedStatement<'_>,
    first: usize,
    s: &FlaggedSample,
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(first, s.timestamp_ms)?;
    // SQLite turns NaN into NULL anyway; saying so keeps it explicit.
    stmt.raw_bind_parameter(first + 1, (!s.value.is_nan()).then_some(s.value))?;
    stmt.raw_bind_parameter(first + 2, s.out_of_range)?;
    stmt.raw_bind_parameter(first + 3, s.alert)
}

impl RecordSink for SqliteSink {
    fn write(
        &mut self,
        query: &str,
        labels: &Labels,
        samples: &[FlaggedSample],
    ) -> Result<(), SinkError> {
        if samples.is_empty() {
            return Ok(());
        }
        let series = match &self.last_series {
            Some((q, l, id)) if q == query && l == labels => *id,
            _ => {
                let id = series_id(&self.conn, query, labels).map_err(self.err("insert into"))?;
                self.last_series = Some((query.to_string(), labels.clone(), id));
                id
            }
        };
        insert_rows(&self.conn, self.run_key, series, samples).map_err(self.err("insert into"))
    }

    fn finish(mut self: Box<Self>, outcome: &RunOutcome) -> Result<Vec<PathBuf>, SinkError> {
        let failed =
            serde_json::to_string(&outcome.failed_queries).expect("strings always serialize");
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?1, samples = ?2, alerts = ?3, failed_queries = ?4 \
                 WHERE run_id = ?5",
                rusqlite::params![
                    format_rfc3339_ms(outcome.finished_ms),
                    outcome.samples as i64,
                    outcome.alerts as i64,
                    failed,
                    self.run_id
                ],
            )
            .map_err(self.err("record the run in"))?;
        if self.fresh.is_some() {
            self.conn
                .execute_batch(ALERT_INDEX)
                .map_err(self.err("index"))?;
        }
        self.conn
            .execute_batch("COMMIT")
            .map_err(self.err("commit to"))?;
        self.committed = true;
        if let Some(mut fresh) = self.fresh.take() {
            match fresh.commit_new() {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    merge(&self.path, fresh.temp_path()).map_err(self.err("append the run to"))?;
                }
                Err(error) => {
                    return Err(SinkError::Write {
                        path: self.path.clone(),
                        error,
                    })
                }
            }
        }
        Ok(vec![self.path.clone()])
    }
}

/// Brings the schema of the main database from `version` to [`SCHEMA_VERSION`]
/// (0: an empty file; 1: alert rows stored twice), inside the caller's transaction.
fn upgrade(conn: &Connection, version: i64) -> rusqlite::Result<()> {
    if version == 1 {
        conn.execute_batch(UPGRADE_FROM_1)?;
    }
    conn.execute_batch(SCHEMA)?;
    conn.pragma_update(Some("main"), "user_version", SCHEMA_VERSION)
}

/// Makes sure a database has every index before a run appends to it: the
/// first append to a bulk-loaded file builds the index by run (one sort of
/// the first run's rows). SQLite's sorter keeps as much in memory as the
/// page cache may hold, so the sort runs with the load's cache, and the
/// connection gets its own back after.
fn ensure_indexes(conn: &Connection) -> rusqlite::Result<()> {
    let cache: i64 = conn.pragma_query_value(None, "cache_size", |row| row.get(0))?;
    conn.execute_batch(&format!(
        "PRAGMA cache_size = {LOAD_CACHE}; {ALERT_INDEX} {RUN_INDEX} PRAGMA cache_size = {cache};"
    ))
}

/// Another run created `path` while this one bulk-loaded `fresh`: append the
/// loaded run to it in one crash-safe transaction, as a later run would.
fn merge(path: &Path, fresh: &Path) -> rusqlite::Result<()> {
    let mut conn = open_for_writing(path)?;
    conn.execute_batch("PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL;")?;
    conn.execute(
        "ATTACH DATABASE ?1 AS fresh",
        [fresh.to_string_lossy().into_owned()],
    )?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(Some("main"), "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        // A newer spillway created it meanwhile: its schema is not ours to write.
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "schema version {version} is newer than this spillway understands ({SCHEMA_VERSION})"
            )),
        ));
    }
    if version < SCHEMA_VERSION {
        upgrade(&tx, version)?;
    }
    ensure_indexes(&tx)?;
    tx.execute("INSERT INTO main.runs SELECT * FROM fresh.runs", [])?;
    let run = tx.last_insert_rowid();
    for statement in MERGE.split(';').filter(|s| !s.trim().is_empty()) {
        let mut stmt = tx.prepare(statement)?;
        if stmt.parameter_count() > 0 {
            stmt.execute([run])?;
        } else {
            stmt.execute([])?;
        }
    }
    tx.commit()
}

impl Drop for SqliteSink {
    /// Abort: nothing of this run stays. Closing the connection would roll
    /// back too; doing it here makes it explicit and immediate.
    fn drop(&mut self) {
        if !self.committed {
            self.conn.execute_batch("ROLLBACK").ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{self, Row};
    use super::super::{open, Format};
    use super::*;

    /// Rows of a view for one run, sorted (views have no insertion order).
    fn rows(db: &Connection, table: &str, run_id: &str) -> Vec<Row> {
        let mut stmt = db
            .prepare(&format!(
                "SELECT query, metric, labels, timestamp_ms, value, out_of_range, alert \
                 FROM {table} WHERE run_id = ?1"
            ))
            .unwrap();
        let rows = stmt
            .query_map([run_id], |r| {
                let labels: String = r.get(2)?;
                let labels: serde_json::Value = serde_json::from_str(&labels).unwrap();
                Ok(Row {
                    query: r.get(0)?,
                    metric: r.get(1)?,
                    labels: testutil::json_labels(&labels),
                    timestamp_ms: r.get(3)?,
                    value: r.get::<_, Option<f64>>(4)?.unwrap_or(f64::NAN),
                    out_of_range: r.get(5)?,
                    alert: r.get(6)?,
                })
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        sorted(rows)
    }

    /// The rows the test feed makes, as SQLite gives them back: it stores
    /// integral REALs compactly and loses the sign of -0.
    fn stored_rows(alerts_only: bool) -> Vec<Row> {
        let mut rows = testutil::expected(alerts_only);
        for r in &mut rows {
            if r.value == 0.0 {
                r.value = 0.0;
            }
        }
        sorted(rows)
    }

    fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
        rows.sort_by(|a, b| {
            (&a.query, &a.metric, &a.labels, a.timestamp_ms).cmp(&(
                &b.query,
                &b.metric,
                &b.labels,
                b.timestamp_ms,
            ))
        });
        rows
    }

    /// Column `column` (text) of every row `sql` gives.
    fn texts(db: &Connection, sql: &str, column: usize) -> Vec<String> {
        db.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(column))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// How SQLite plans `select`, one step per `; `.
    fn query_plan(db: &Connection, select: &str) -> String {
        texts(db, &format!("EXPLAIN QUERY PLAN {select}"), 3).join("; ")
    }

    fn count(db: &Connection, sql: &str) -> i64 {
        db.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn second_run() -> RunInfo {
        RunInfo {
            run_id: "20240102T160405Z".into(),
            started_ms: 1_704_211_445_000,
            ..testutil::run_info()
        }
    }

    #[test]
    fn appends_runs_and_reads_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for run in [testutil::run_info(), second_run()] {
            let mut sink = open(Format::Sqlite, dir.path(), &run).unwrap();
            testutil::feed(sink.as_mut());
            let paths = sink.finish(&testutil::outcome()).unwrap();
            assert_eq!(paths, [dir.path().join(DB_NAME)]);
        }
        let db = Connection::open(dir.path().join(DB_NAME)).unwrap();
        for run in [testutil::run_info(), second_run()] {
            assert_eq!(rows(&db, "samples", &run.run_id), stored_rows(false));
            assert_eq!(rows(&db, "alerts", &run.run_id), stored_rows(true));
        }
        assert_eq!(count(&db, "SELECT count(*) FROM runs"), 2);
        let run: (
            String,
            String,
            String,
            i64,
            i64,
            i64,
            String,
            i64,
            i64,
            String,
        ) = db
            .query_row(
                "SELECT run_id, started_at, finished_at, from_ms, to_ms, step_ms, queries, \
                 samples, alerts, failed_queries FROM runs ORDER BY run_id LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            run,
            (
                "20240102T150405Z".into(),
                "2024-01-02T15:04:05Z".into(),
                "2024-01-02T15:05:00.500Z".into(),
                1_704_121_445_000,
                1_704_207_845_000,
                60_000,
                r#"["cpu","q,\"odd\"\nquery"]"#.into(),
                9,
                3,
                r#"["broken("]"#.into(),
            )
        );
        // NaN is NULL, infinities are kept, labels are queryable JSON.
        assert_eq!(
            count(&db, "SELECT count(*) FROM samples WHERE value IS NULL"),
            2
        );
        assert_eq!(
            count(&db, "SELECT count(*) FROM samples WHERE value > 1e308"),
            2
        );
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM samples WHERE json_extract(labels, '$.instance') = 'h1:9100'"
            ),
            10
        );
        // Each (query, labels) is stored once, whatever the number of runs.
        assert_eq!(count(&db, "SELECT count(*) FROM series"), 3);
        let version: i64 = db
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    /// Two first runs into one directory both bulk-load a fresh file; the
    /// second to finish finds the database taken and appends to it.
    #[test]
    fn concurrent_first_runs_both_land() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = open(Format::Sqlite, dir.path(), &testutil::run_info()).unwrap();
        let mut b = open(Format::Sqlite, dir.path(), &second_run()).unwrap();
        testutil::feed(a.as_mut());
        testutil::feed(b.as_mut());
        b.finish(&testutil::outcome()).unwrap();
        a.finish(&testutil::outcome()).unwrap();
        let db = Connection::open(dir.path().join(DB_NAME)).unwrap();
        for run in [testutil::run_info(), second_run()] {
            assert_eq!(rows(&db, "samples", &run.run_id), stored_rows(false));
            assert_eq!(rows(&db, "alerts", &run.run_id), stored_rows(true));
        }
        assert_eq!(count(&db, "SELECT count(*) FROM series"), 3);
        let entries = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(entries, 1, "no temp file is left");
    }

    #[test]
    fn indexes_exist() {
        let dir = tempfile::tempdir().unwrap();
        let sink = open(Format::Sqlite, dir.path(), &testutil::run_info()).unwrap();
        sink.finish(&RunOutcome::default()).unwrap();
        let db = Connection::open(dir.path().join(DB_NAME)).unwrap();
        let plan = query_plan(&db, BY_METRIC_AND_TIME);
        // The view's filter reaches the series by metric, then the rows by
        // the table's own key: no index by series and time is needed.
        assert!(
            plan.contains("INDEX sqlite_autoindex_series_1 (metric=?)"),
            "{plan}"
        );
        assert!(
            plan.contains("USING PRIMARY KEY (series_id=? AND timestamp_ms>?)"),
            "{plan}"
        );
        // One run in the file: no index by run yet.
        assert_eq!(index_names(&db), ["sample_rows_alert_time"]);
        // A bulk-loaded file keeps the page size chosen for the load.
        assert_eq!(count(&db, "PRAGMA page_size"), 16_384);
        // The alerts view reaches the partial index of the alert rows by time.
        let plan = query_plan(&db, "SELECT * FROM alerts WHERE timestamp_ms > 5");
        assert!(
            plan.contains("USING INDEX sample_rows_alert_time (timestamp_ms>?)"),
            "{plan}"
        );
        drop(db);

        // The second run builds the index by run, so deleting a run does not scan.
        let sink = open(Format::Sqlite, dir.path(), &second_run()).unwrap();
        sink.finish(&RunOutcome::default()).unwrap();
        let db = Connection::open(dir.path().join(DB_NAME)).unwrap();
        assert_eq!(
            index_names(&db),
            ["sample_rows_alert_time", "sample_rows_run"]
        );
        let plan = query_plan(&db, "DELETE FROM sample_rows WHERE run = 1");
        assert!(
            plan.contains("SEARCH sample_rows USING INDEX sample_rows_run (run=?)"),
            "{plan}"
        );
    }

    /// What users ask most: one metric's samples from a time on.
    const BY_METRIC_AND_TIME: &str =
        "SELECT * FROM samples WHERE metric = 'x' AND timestamp_ms > 5";

    fn index_names(db: &Connection) -> Vec<String> {
        let mut names = texts(
            db,
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
            0,
        );
        names.sort();
        names
    }

    /// The version 1 schema, as earlier builds created it: alert rows stored
    /// twice, in `alert_rows` too.
    const SCHEMA_V1: &str = "
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT,
            from_ms INTEGER NOT NULL, to_ms INTEGER NOT NULL, step_ms INTEGER NOT NULL,
            queries TEXT NOT NULL, samples INTEGER, alerts INTEGER, failed_queries TEXT);
        CREATE TABLE series (id INTEGER PRIMARY KEY, query TEXT NOT NULL, metric TEXT NOT NULL,
            labels TEXT NOT NULL, UNIQUE (metric, labels, query));
        CREATE TABLE sample_rows (run INTEGER NOT NULL, series_id INTEGER NOT NULL REFERENCES series(id),
            timestamp_ms INTEGER NOT NULL, value REAL, out_of_range INTEGER NOT NULL, alert INTEGER NOT NULL);
        CREATE TABLE alert_rows (run INTEGER NOT NULL, series_id INTEGER NOT NULL REFERENCES series(id),
            timestamp_ms INTEGER NOT NULL, value REAL, out_of_range INTEGER NOT NULL, alert INTEGER NOT NULL);
        CREATE VIEW samples AS
            SELECT u.run_id, s.query, s.metric, s.labels, r.timestamp_ms, r.value, r.out_of_range, r.alert
            FROM sample_rows r JOIN series s ON s.id = r.series_id JOIN runs u ON u.rowid = r.run;
        CREATE VIEW alerts AS
            SELECT u.run_id, s.query, s.metric, s.labels, r.timestamp_ms, r.value, r.out_of_range, r.alert
            FROM alert_rows r JOIN series s ON s.id = r.series_id JOIN runs u ON u.rowid = r.run;
        CREATE INDEX sample_rows_series_time ON sample_rows(series_id, timestamp_ms);
        CREATE INDEX sample_rows_run ON sample_rows(run);
        CREATE INDEX alert_rows_time ON alert_rows(timestamp_ms);
        CREATE INDEX alert_rows_run ON alert_rows(run);
        PRAGMA user_version = 1;
        INSERT INTO runs (run_id, started_at, from_ms, to_ms, step_ms, queries, samples, alerts)
            VALUES ('old', '2023-01-01T00:00:00Z', 0, 60000, 60000, '[\"up\"]', 2, 1);
        INSERT INTO series (query, metric, labels) VALUES ('up', 'up', '{\"job\":\"a\"}');
        INSERT INTO sample_rows VALUES (1, 1, 0, 1.5, 0, 0), (1, 1, 60000, 99, 1, 1);
        INSERT INTO alert_rows VALUES (1, 1, 60000, 99, 1, 1);
    ";

    /// A version 1 database is upgraded by the next run, in its transaction:
    /// its alerts still read back, the copy is gone, new runs land as usual.
    #[test]
    fn a_version_1_database_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_NAME);
        Connection::open(&path)
            .unwrap()
            .execute_batch(SCHEMA_V1)
            .unwrap();
        // An aborted run leaves the database at version 1, untouched.
        let mut aborted = open(Format::Sqlite, dir.path(), &second_run()).unwrap();
        testutil::feed(aborted.as_mut());
        drop(aborted);
        let db = Connection::open(&path).unwrap();
        assert_eq!(count(&db, "SELECT count(*) FROM alert_rows"), 1);
        assert_eq!(count(&db, "PRAGMA user_version"), 1);
        drop(db);

        let mut sink = open(Format::Sqlite, dir.path(), &testutil::run_info()).unwrap();
        testutil::feed(sink.as_mut());
        sink.finish(&testutil::outcome()).unwrap();
        let db = Connection::open(&path).unwrap();
        assert_eq!(count(&db, "PRAGMA user_version"), SCHEMA_VERSION);
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM sqlite_master WHERE name LIKE 'alert_rows%'"
            ),
            0
        );
        let old: Vec<(i64, f64)> = db
            .prepare("SELECT timestamp_ms, value FROM alerts WHERE run_id = 'old'")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(old, [(60_000, 99.0)]);
        assert_eq!(
            count(&db, "SELECT count(*) FROM samples WHERE run_id = 'old'"),
            2
        );
        let run = testutil::run_info().run_id;
        assert_eq!(rows(&db, "samples", &run), stored_rows(false));
        assert_eq!(rows(&db, "alerts", &run), stored_rows(true));
        // The file keeps its rowid layout and the index by series and time
        // that goes with it; the views still find rows through it.
        assert_eq!(
            index_names(&db),
            [
                "sample_rows_alert_time",
                "sample_rows_run",
                "sample_rows_series_time"
            ]
        );
        let plan = query_plan(&db, BY_METRIC_AND_TIME);
        assert!(
            plan.contains("USING INDEX sample_rows_series_time (series_id=? AND timestamp_ms>?)"),
            "{plan}"
        );
    }

    /// The rows' inserts carry no check that could abort them, in a bulk
    /// load and in an append: no foreign-key check (it would look up
    /// `series` per row) and no aborting NOT NULL check. Either would make
    /// SQLite keep a statement journal (a copy of every page an insert touches).
    #[test]
    fn inserts_carry_no_check_that_could_abort_them() {
        let dir = tempfile::tempdir().unwrap();
        for run in [testutil::run_info(), second_run()] {
            let sink = SqliteSink::open(dir.path(), &run).unwrap();
            let mut explain = sink
                .conn
                .prepare(&format!("EXPLAIN {}", *INSERT_BATCH))
                .unwrap();
            // Parameters left unbound: EXPLAIN only compiles the insert.
            let opcodes: Vec<String> = explain
                .raw_query()
                .mapped(|r| r.get(1))
                .map(Result::unwrap)
                .collect();
            drop(explain);
            for checked in ["FkCounter", "OpenRead", "HaltIfNull"] {
                assert!(!opcodes.iter().any(|o| o == checked), "{opcodes:?}");
            }
            Box::new(sink).finish(&RunOutcome::default()).unwrap();
        }
    }

    /// A series has one sample per timestamp in a run: written twice (the
    /// same query listed twice), it is stored once, in a new file and in an
    /// append alike, and the run still lands.
    #[test]
    fn a_repeated_sample_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        for run in [testutil::run_info(), second_run()] {
            let mut sink = open(Format::Sqlite, dir.path(), &run).unwrap();
            testutil::feed(sink.as_mut());
            testutil::feed(sink.as_mut());
            sink.finish(&testutil::outcome()).unwrap();
            let db = Connection::open(dir.path().join(DB_NAME)).unwrap();
            assert_eq!(rows(&db, "samples", &run.run_id), stored_rows(false));
            assert_eq!(rows(&db, "alerts", &run.run_id), stored_rows(true));
        }
    }

    /// Issue 11, item 12: an export run left an empty
    /// `spillway.sqlite-journal` next to the database.
    #[test]
    fn no_journal_file_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let names = || -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let mut sink = open(Format::Sqlite, dir.path(), &testutil::run_info()).unwrap();
        testutil::feed(sink.as_mut());
        sink.finish(&testutil::outcome()).unwrap();
        assert_eq!(names(), [DB_NAME]);
        let mut aborted = open(Format::Sqlite, dir.path(), &second_run()).unwrap();
        testutil::feed(aborted.as_mut());
        drop(aborted);
        assert_eq!(names(), [DB_NAME]);
    }

    #[test]
    fn abort_rolls_back_the_whole_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = open(Format::Sqlite, dir.path(), &testutil::run_info()).unwrap();
        testutil::feed(first.as_mut());
        first.finish(&testutil::outcome()).unwrap();

        let mut aborted = open(Format::Sqlite, dir.path(), &second_run()).unwrap();
        testutil::feed(aborted.as_mut());
        drop(aborted);

        let db = Connection::open(dir.path().join(DB_NAME)).unwrap();
        assert_eq!(count(&db, "SELECT count(*) FROM runs"), 1);
        assert_eq!(count(&db, "SELECT count(*) FROM samples"), 9);
        assert_eq!(count(&db, "SELECT count(*) FROM alerts"), 3);
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM samples WHERE run_id = '20240102T160405Z'"
            ),
            0
        );
    }

    #[test]
    fn aborted_first_run_leaves_no_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(Format::Sqlite, dir.path(), &testutil::run_info()).unwrap();
        testutil::feed(sink.as_mut());
        drop(sink);
        let db = Connection::open(dir.path().join(DB_NAME)).unwrap();
        let tables = count(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
        );
        assert_eq!(tables, 0, "even the schema is rolled back");
        // The next run creates the schema again.
        let sink = open(Format::Sqlite, dir.path(), &testutil::run_info()).unwrap();
        sink.finish(&RunOutcome::default()).unwrap();
        assert_eq!(count(&db, "SELECT count(*) FROM runs"), 1);
    }

    #[test]
    fn same_run_id_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sink = open(Format::Sqlite, dir.path(), &testutil::run_info()).unwrap();
        sink.finish(&RunOutcome::default()).unwrap();
        let err = match open(Format::Sqlite, dir.path(), &testutil::run_info()) {
            Err(e) => e,
            Ok(_) => panic!("second open succeeded"),
        };
        assert!(matches!(err, SinkError::RunExists { .. }), "{err}");
        assert!(err.to_string().contains(DB_NAME), "{err}");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Connection::open(dir.path().join(DB_NAME)).unwrap();
        db.pragma_update(None, "user_version", 7).unwrap();
        drop(db);
        let err = match open(Format::Sqlite, dir.path(), &testutil::run_info()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("open succeeded"),
        };
        assert!(
            err.contains("schema version 7") && err.contains(DB_NAME),
            "{err}"
        );
    }
}
