//! SQL written once for both backends: the SQL of the store engine's
//! per-transaction traits, the store's transactions, and its reads. A query
//! is built with sqlx's `QueryBuilder`, which writes each backend's
//! placeholders (`?` on SQLite, `$1` on PostgreSQL), through [`Dialect`]:
//! the few operations and words the shared SQL needs, which both databases
//! get from one blanket impl. Row mappings are [`Columns`]'
//! (`store/rows.rs`). What cannot be shared is each backend's
//! [`tickets::BackendSql`].
//!
//! - [`access`]: API tokens and the technicians behind them, a host's
//!   current certificate.
//! - [`audit`]: the audit log: `AuditTx`, the one append path, the chaining
//!   of pre-0008 rows, and the reads.
//! - [`employee`]: the employee's side of tickets (issue 23): public
//!   notes, who reported each employee ticket, the reads `my-tickets` and
//!   a report's `Ack` are answered from.
//! - [`enroll`]: enrollment, in the caller's transaction.
//! - [`health`]: health history retention.
//! - [`hosts`]: the host filter.
//! - [`jobs`]: `JobTx`, the job transactions and the job reads.
//! - [`policy`]: the fleet policy in force.
//! - [`problems`]: fleet-wide problems (issue 23): `ProblemTx` for the
//!   ticket engine's connection, `ProblemQueries`, the list, show and
//!   resolve.
//! - [`relink`]: the re-link approval queue: requests recorded at
//!   enrollment, approved (the new enrollment takes over the host it
//!   claimed) or denied.
//! - [`renewal`]: renewed host certificates, recorded beside the current
//!   one and made current on first use.
//! - [`revocation`]: revoking hosts, API tokens and enrollment tokens; API
//!   token checks, expiry and last use; the token lists.
//! - [`suggestions`]: `SuggestTx` (the knowledge-base reads and stored
//!   suggestions of a ticket that opens), and the change correlation of a
//!   ticket (issue 23).
//! - [`tickets`]: `TicketTx`, the ticket transactions, the reports that are
//!   events, the ticket list and the change log.
//! - [`web`]: the web console's local accounts and sessions (issue 22).
//! - [`webhooks`]: the webhook rows, claiming and recording deliveries, the
//!   list and the events column's text form.

pub(crate) mod access;
pub(crate) mod audit;
pub(crate) mod employee;
pub(crate) mod enroll;
pub(crate) mod fleet_ca;
pub(crate) mod health;
pub(crate) mod hosts;
pub(crate) mod jobs;
pub(crate) mod policy;
pub(crate) mod problems;
pub(crate) mod relink;
pub(crate) mod renewal;
pub(crate) mod revocation;
pub(crate) mod suggestions;
pub(crate) mod tickets;
pub(crate) mod triage;
pub(crate) mod web;
pub(crate) mod webhooks;

use std::future::Future;
use std::pin::Pin;

use sqlx::{Database, Encode, Executor, IntoArguments, Pool, QueryBuilder, Type};

use crate::store::StoreResult;
use crate::store::rows::Columns;

/// The count of rows a statement changed, as each backend reports it.
pub(crate) trait RowsAffected {
    /// How many rows the statement changed.
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// A boxed future of a store result. The shared functions that run several
/// statements in a transaction return one: the Send check of their future
/// is made here, once, with the database generic; made at each concrete
/// caller, it fails on the executor bound (rust-lang/rust#100013).
pub(crate) type SendFuture<'a, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'a>>;

/// A value to bind, of a type both backends take.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'v> {
    /// Text.
    Text(&'v str),
    /// Text or NULL.
    MaybeText(Option<&'v str>),
    /// An integer.
    Int(i64),
    /// An integer or NULL.
    MaybeInt(Option<i64>),
    /// A yes/no (an integer on SQLite).
    Flag(bool),
    /// A blob.
    Bytes(&'v [u8]),
}

/// Appends `values` as bound parameters, separated by commas.
pub(crate) fn push_values<B: Dialect>(query: &mut QueryBuilder<B>, values: &[Value<'_>]) {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            query.push(", ");
        }
        B::value(query, *value);
    }
}

/// Appends ` IN (…)` with `values` as bound parameters; `values` must not
/// be empty (`IN ()` is not SQL).
pub(crate) fn push_in<'v, B: Dialect>(
    query: &mut QueryBuilder<B>,
    values: impl IntoIterator<Item = Value<'v>>,
) {
    let values: Vec<Value<'v>> = values.into_iter().collect();
    query.push(" IN (");
    push_values(query, &values);
    query.push(")");
}

/// What the shared queries need of a database: binding the value types the
/// store uses, and fetching rows read through [`Columns`].
pub(crate) trait Dialect: Database {
    /// The function that finds text in text (1-based position, 0 when
    /// absent): `instr` on SQLite, `strpos` on PostgreSQL.
    const FIND: &'static str;
    /// What follows a text column in ORDER BY or a row comparison to order
    /// it byte by byte: SQLite's default, `COLLATE "C"` on PostgreSQL.
    const BYTE_ORDER: &'static str;
    /// What follows a LIKE pattern so that a backslash is an ordinary
    /// character, as it always is in SQLite's LIKE.
    const LIKE_LITERAL: &'static str;
    /// What follows a SELECT to lock the rows it reads until the
    /// transaction ends: `FOR UPDATE` on PostgreSQL; nothing on SQLite,
    /// whose write transactions hold the one write lock from their start.
    const LOCK_ROWS: &'static str;
    /// [`Dialect::LOCK_ROWS`], passing over the rows another transaction
    /// holds, so that replicas claiming the same work split it.
    const CLAIM_ROWS: &'static str;
    /// [`Dialect::CLAIM_ROWS`] for a join: only the rows of the table
    /// named `alias` are claimed.
    fn claim_rows_of(query: &mut QueryBuilder<Self>, alias: &str);
    /// The larger of two numbers: `MAX` on SQLite, `GREATEST` on
    /// PostgreSQL.
    const GREATEST: &'static str;
    /// A statement that makes the transactions named `name` run one at a
    /// time fleet-wide (a transaction-scoped advisory lock on PostgreSQL);
    /// none on SQLite, whose write transactions already do.
    fn one_at_a_time(name: &str) -> Option<QueryBuilder<Self>>;
    /// Appends `value` as a bound text parameter.
    fn text(query: &mut QueryBuilder<Self>, value: &str);
    /// Appends `value` as a bound integer parameter.
    fn int(query: &mut QueryBuilder<Self>, value: i64);
    /// Appends `value` as a bound yes/no parameter (an integer on SQLite).
    fn flag(query: &mut QueryBuilder<Self>, value: bool);
    /// Appends `value` as a bound floating-point parameter.
    fn real(query: &mut QueryBuilder<Self>, value: f64);
    /// Appends `value` as a bound blob parameter.
    fn bytes(query: &mut QueryBuilder<Self>, value: &[u8]);
    /// Appends `value` as a bound parameter.
    fn value(query: &mut QueryBuilder<Self>, value: Value<'_>);
    /// Runs `query`, a statement, and counts the rows it changed.
    fn execute<'a>(
        pool: &'a Pool<Self>,
        query: QueryBuilder<Self>,
    ) -> impl Future<Output = StoreResult<u64>> + Send + 'a;
    /// Runs `query` and maps every row with `row`.
    fn all<'a, T: Send + 'a>(
        pool: &'a Pool<Self>,
        query: QueryBuilder<Self>,
        row: fn(&dyn Columns) -> StoreResult<T>,
    ) -> impl Future<Output = StoreResult<Vec<T>>> + Send + 'a;
    /// Runs `query` and maps its row, if any, with `row`.
    fn optional<'a, T: Send + 'a>(
        pool: &'a Pool<Self>,
        query: QueryBuilder<Self>,
        row: fn(&dyn Columns) -> StoreResult<T>,
    ) -> impl Future<Output = StoreResult<Option<T>>> + Send + 'a;
    /// [`Dialect::all`] on a connection, inside its transaction.
    fn all_in<'a, T: Send + 'a>(
        conn: &'a mut Self::Connection,
        query: QueryBuilder<Self>,
        row: fn(&dyn Columns) -> StoreResult<T>,
    ) -> impl Future<Output = StoreResult<Vec<T>>> + Send + 'a;
    /// [`Dialect::optional`] on a connection, inside its transaction.
    fn optional_in<'a, T: Send + 'a>(
        conn: &'a mut Self::Connection,
        query: QueryBuilder<Self>,
        row: fn(&dyn Columns) -> StoreResult<T>,
    ) -> impl Future<Output = StoreResult<Option<T>>> + Send + 'a;
    /// [`Dialect::execute`] on a connection, inside its transaction.
    fn execute_in<'a>(
        conn: &'a mut Self::Connection,
        query: QueryBuilder<Self>,
    ) -> impl Future<Output = StoreResult<u64>> + Send + 'a;
}

/// Whether `DB` is PostgreSQL: the blanket impl below picks each backend's
/// SQL text by it.
const fn postgres<DB: Database>() -> bool {
    matches!(DB::NAME.as_bytes(), b"PostgreSQL")
}

impl<DB> Dialect for DB
where
    DB: Database,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
    for<'t> f64: Encode<'t, DB> + Type<DB>,
    for<'t> &'t [u8]: Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    DB::QueryResult: RowsAffected,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB> + Send,
    DB::Row: Columns,
{
    const FIND: &'static str = if postgres::<DB>() { "strpos" } else { "instr" };
    const BYTE_ORDER: &'static str = if postgres::<DB>() {
        " COLLATE \"C\""
    } else {
        ""
    };
    const LIKE_LITERAL: &'static str = if postgres::<DB>() { " ESCAPE ''" } else { "" };
    const LOCK_ROWS: &'static str = if postgres::<DB>() { " FOR UPDATE" } else { "" };
    const CLAIM_ROWS: &'static str = if postgres::<DB>() {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };

    fn text(query: &mut QueryBuilder<Self>, value: &str) {
        query.push_bind(value);
    }

    fn int(query: &mut QueryBuilder<Self>, value: i64) {
        query.push_bind(value);
    }

    fn flag(query: &mut QueryBuilder<Self>, value: bool) {
        query.push_bind(value);
    }

    fn real(query: &mut QueryBuilder<Self>, value: f64) {
        query.push_bind(value);
    }

    const GREATEST: &'static str = if postgres::<DB>() { "GREATEST" } else { "MAX" };

    fn one_at_a_time(name: &str) -> Option<QueryBuilder<Self>> {
        postgres::<DB>().then(|| {
            let mut sql = QueryBuilder::new("SELECT pg_advisory_xact_lock(hashtextextended(");
            Self::text(&mut sql, &format!("deskpulse.{name}"));
            sql.push(", 0))");
            sql
        })
    }

    fn claim_rows_of(query: &mut QueryBuilder<Self>, alias: &str) {
        if !Self::CLAIM_ROWS.is_empty() {
            query.push(format!(" FOR UPDATE OF {alias} SKIP LOCKED"));
        }
    }

    fn bytes(query: &mut QueryBuilder<Self>, value: &[u8]) {
        query.push_bind(value);
    }

    fn value(query: &mut QueryBuilder<Self>, value: Value<'_>) {
        match value {
            Value::Text(v) => query.push_bind(v),
            Value::MaybeText(v) => query.push_bind(v),
            Value::Int(v) => query.push_bind(v),
            Value::MaybeInt(v) => query.push_bind(v),
            Value::Flag(v) => query.push_bind(v),
            Value::Bytes(v) => query.push_bind(v),
        };
    }

    async fn execute(pool: &Pool<Self>, mut query: QueryBuilder<Self>) -> StoreResult<u64> {
        Ok(query.build().execute(pool).await?.rows_affected())
    }

    async fn all<'a, T: Send + 'a>(
        pool: &'a Pool<Self>,
        mut query: QueryBuilder<Self>,
        row: fn(&dyn Columns) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let rows = query.build().fetch_all(pool).await?;
        rows.iter().map(|r| row(r)).collect()
    }

    async fn optional<'a, T: Send + 'a>(
        pool: &'a Pool<Self>,
        mut query: QueryBuilder<Self>,
        row: fn(&dyn Columns) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let found = query.build().fetch_optional(pool).await?;
        found.as_ref().map(|r| row(r)).transpose()
    }

    async fn all_in<'a, T: Send + 'a>(
        conn: &'a mut Self::Connection,
        mut query: QueryBuilder<Self>,
        row: fn(&dyn Columns) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let rows = query.build().fetch_all(conn).await?;
        rows.iter().map(|r| row(r)).collect()
    }

    async fn optional_in<'a, T: Send + 'a>(
        conn: &'a mut Self::Connection,
        mut query: QueryBuilder<Self>,
        row: fn(&dyn Columns) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let found = query.build().fetch_optional(conn).await?;
        found.as_ref().map(|r| row(r)).transpose()
    }

    async fn execute_in(
        conn: &mut Self::Connection,
        mut query: QueryBuilder<Self>,
    ) -> StoreResult<u64> {
        Ok(query.build().execute(conn).await?.rows_affected())
    }
}
