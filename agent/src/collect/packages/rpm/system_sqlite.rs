//! The few SQLite calls the rpmdb reader needs, made through the system's
//! own `libsqlite3.so.0`, loaded at run time.
//!
//! Linking SQLite into the agent would cost every PC about a megabyte for
//! one query that only RPM systems run, and every RPM system with an
//! SQLite rpmdb has the library, since `rpm` itself links it. The library
//! is loaded for one read and unloaded after it, so the agent maps it only
//! while it reads.
//!
//! Only read-only use is wrapped: open (`SQLITE_OPEN_READONLY`), prepare,
//! step, read a blob column, finalize and close, and the error message.
//! Handles are closed on every path by their guards' `Drop`.
#![allow(
    unsafe_code,
    reason = "calls into the system's libsqlite3 through libloading; each unsafe block states why it is sound"
)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The run-time name of the system's SQLite (its soname, present without
/// the development package).
pub const SYSTEM_LIBRARY: &str = "libsqlite3.so.0";

const SQLITE_OK: c_int = 0;
const SQLITE_ROW: c_int = 100;
const SQLITE_DONE: c_int = 101;
const SQLITE_OPEN_READONLY: c_int = 0x0000_0001;
const SQLITE_OPEN_NOMUTEX: c_int = 0x0000_8000;

/// How long a read waits for a writer's lock (rpm installing a package)
/// before giving up, as rusqlite's default did.
const BUSY_TIMEOUT_MS: c_int = 5_000;

/// `sqlite3` and `sqlite3_stmt` are opaque to their users.
type RawDb = c_void;
type RawStmt = c_void;

type OpenV2 = unsafe extern "C" fn(*const c_char, *mut *mut RawDb, c_int, *const c_char) -> c_int;
type BusyTimeout = unsafe extern "C" fn(*mut RawDb, c_int) -> c_int;
type PrepareV2 = unsafe extern "C" fn(
    *mut RawDb,
    *const c_char,
    c_int,
    *mut *mut RawStmt,
    *mut *const c_char,
) -> c_int;
type Step = unsafe extern "C" fn(*mut RawStmt) -> c_int;
type ColumnBlob = unsafe extern "C" fn(*mut RawStmt, c_int) -> *const c_void;
type ColumnBytes = unsafe extern "C" fn(*mut RawStmt, c_int) -> c_int;
type Finalize = unsafe extern "C" fn(*mut RawStmt) -> c_int;
type Close = unsafe extern "C" fn(*mut RawDb) -> c_int;
type ErrMsg = unsafe extern "C" fn(*mut RawDb) -> *const c_char;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// The library is missing or lacks a function we call.
    #[error("the system's SQLite library cannot be used ({0})")]
    NoLibrary(String),
    /// SQLite refused to open or query the database.
    #[error("{0}")]
    Query(String),
}

/// The loaded library and the functions we call. The function pointers
/// stay valid as long as `_library` is loaded, which is as long as `self`.
struct Api {
    open_v2: OpenV2,
    busy_timeout: BusyTimeout,
    prepare_v2: PrepareV2,
    step: Step,
    column_blob: ColumnBlob,
    column_bytes: ColumnBytes,
    finalize: Finalize,
    close: Close,
    errmsg: ErrMsg,
    _library: libloading::Library,
}

impl Api {
    fn load(name: &str) -> Result<Self, SqliteError> {
        let missing = |e: libloading::Error| {
            // libloading's own text is only "dlopen failed"; dlerror's
            // message (which names the file) is its source.
            let line =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string);
            SqliteError::NoLibrary(line.replace('\n', " "))
        };
        // SAFETY: loading runs the library's initialisers. libsqlite3's only
        // set up its own static state; it is a system library that rpm
        // itself loads.
        let library = unsafe { libloading::Library::new(name) }.map_err(missing)?;
        // SAFETY: for every `get` below, the type is the C signature that
        // sqlite3.h declares for that name, stable across SQLite 3 versions;
        // the pointers are copied out of their `Symbol`s and used only
        // while `library` is held in the same `Api`.
        unsafe {
            Ok(Self {
                open_v2: *library
                    .get::<OpenV2>(b"sqlite3_open_v2\0")
                    .map_err(missing)?,
                busy_timeout: *library
                    .get::<BusyTimeout>(b"sqlite3_busy_timeout\0")
                    .map_err(missing)?,
                prepare_v2: *library
                    .get::<PrepareV2>(b"sqlite3_prepare_v2\0")
                    .map_err(missing)?,
                step: *library.get::<Step>(b"sqlite3_step\0").map_err(missing)?,
                column_blob: *library
                    .get::<ColumnBlob>(b"sqlite3_column_blob\0")
                    .map_err(missing)?,
                column_bytes: *library
                    .get::<ColumnBytes>(b"sqlite3_column_bytes\0")
                    .map_err(missing)?,
                finalize: *library
                    .get::<Finalize>(b"sqlite3_finalize\0")
                    .map_err(missing)?,
                close: *library.get::<Close>(b"sqlite3_close\0").map_err(missing)?,
                errmsg: *library
                    .get::<ErrMsg>(b"sqlite3_errmsg\0")
                    .map_err(missing)?,
                _library: library,
            })
        }
    }
}

/// An open connection; closed on drop.
struct Connection<'api> {
    api: &'api Api,
    handle: *mut RawDb,
}

impl Connection<'_> {
    /// The connection's last error, as one line.
    fn error(&self) -> SqliteError {
        // SAFETY: `handle` is a live connection (closed only in `drop`);
        // sqlite3_errmsg returns a NUL-terminated UTF-8 string that SQLite
        // owns and keeps valid until the next call on this connection, and
        // it is copied before any other call.
        let message = unsafe {
            let text = (self.api.errmsg)(self.handle);
            if text.is_null() {
                "out of memory".to_owned()
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            }
        };
        SqliteError::Query(message.replace('\n', " "))
    }
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        // SAFETY: every statement on this connection is a `Statement` that
        // borrows it, so all were finalized before it is closed; closing
        // NULL is a no-op.
        unsafe {
            (self.api.close)(self.handle);
        }
    }
}

/// A prepared statement; finalized on drop.
struct Statement<'db, 'api> {
    db: &'db Connection<'api>,
    handle: *mut RawStmt,
}

impl Drop for Statement<'_, '_> {
    fn drop(&mut self) {
        // SAFETY: `handle` came from sqlite3_prepare_v2 on `db`, which is
        // still open (it outlives this borrow), and is finalized only here.
        unsafe {
            (self.db.api.finalize)(self.handle);
        }
    }
}

/// Opens `path` read-only with the library called `library` and calls
/// `each` with the first column of every row `sql` returns, as bytes (a
/// NULL or empty value as an empty slice).
pub fn each_blob(
    library: &str,
    path: &Path,
    sql: &str,
    mut each: impl FnMut(&[u8]),
) -> Result<(), SqliteError> {
    let api = Api::load(library)?;
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| SqliteError::Query("the path holds a NUL byte".to_owned()))?;
    let c_sql = CString::new(sql)
        .map_err(|_| SqliteError::Query("the query holds a NUL byte".to_owned()))?;

    let mut handle: *mut RawDb = std::ptr::null_mut();
    // SAFETY: both strings are NUL-terminated and outlive the call;
    // `handle` is a valid out-pointer; a NULL VFS name means the default.
    let opened = unsafe {
        (api.open_v2)(
            c_path.as_ptr(),
            &raw mut handle,
            SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
            std::ptr::null(),
        )
    };
    // SQLite hands back a connection even when opening fails, to carry the
    // error message; the guard closes it either way.
    let db = Connection { api: &api, handle };
    if db.handle.is_null() {
        return Err(SqliteError::Query("out of memory".to_owned()));
    }
    if opened != SQLITE_OK {
        return Err(db.error());
    }
    // SAFETY: `db.handle` is an open connection.
    unsafe {
        (api.busy_timeout)(db.handle, BUSY_TIMEOUT_MS);
    }

    let mut stmt_handle: *mut RawStmt = std::ptr::null_mut();
    // SAFETY: `c_sql` is NUL-terminated (length -1 says so) and outlives
    // the call; the out-pointers are valid; a NULL tail pointer is allowed.
    let prepared = unsafe {
        (api.prepare_v2)(
            db.handle,
            c_sql.as_ptr(),
            -1,
            &raw mut stmt_handle,
            std::ptr::null_mut(),
        )
    };
    let stmt = Statement {
        db: &db,
        handle: stmt_handle,
    };
    if prepared != SQLITE_OK {
        return Err(db.error());
    }
    if stmt.handle.is_null() {
        return Err(SqliteError::Query("the query is empty".to_owned()));
    }
    loop {
        // SAFETY: `stmt.handle` is a live prepared statement.
        match unsafe { (api.step)(stmt.handle) } {
            SQLITE_ROW => {
                // SAFETY: the statement is on a row; column 0 exists (the
                // query selects one column, and SQLite answers NULL for a
                // column out of range). sqlite3_column_bytes is called after
                // sqlite3_column_blob, as SQLite documents, so the length is
                // that of the returned buffer, which stays valid until the
                // next step or finalize; the slice is dropped before either.
                let blob = unsafe {
                    let data = (api.column_blob)(stmt.handle, 0);
                    let len = (api.column_bytes)(stmt.handle, 0);
                    match usize::try_from(len) {
                        Ok(len) if !data.is_null() && len > 0 => {
                            std::slice::from_raw_parts(data.cast::<u8>(), len)
                        }
                        _ => &[],
                    }
                };
                each(blob);
            }
            SQLITE_DONE => return Ok(()),
            _ => return Err(db.error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_a_one_line_error() {
        let error = each_blob(
            "libdeskpulse-no-such-sqlite.so.0",
            Path::new("/nonexistent"),
            "SELECT 1",
            |_| {},
        )
        .expect_err("no such library");
        assert!(matches!(error, SqliteError::NoLibrary(_)), "{error:?}");
        let line = error.to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("libdeskpulse-no-such-sqlite.so.0"), "{line}");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named_by_sqlite() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rpmdb.sqlite");
        std::fs::write(&path, vec![0x5a; 8192]).expect("write");
        let error = each_blob(SYSTEM_LIBRARY, &path, "SELECT blob FROM Packages", |_| {})
            .expect_err("not a database");
        assert!(matches!(error, SqliteError::Query(_)), "{error:?}");
        assert!(error.to_string().contains("not a database"), "{error}");
    }

    #[test]
    fn a_missing_database_is_not_created() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rpmdb.sqlite");
        let error = each_blob(SYSTEM_LIBRARY, &path, "SELECT 1", |_| {}).expect_err("missing");
        assert!(matches!(error, SqliteError::Query(_)), "{error:?}");
        assert!(!path.exists(), "opened read-only, so nothing is created");
    }

    #[test]
    fn a_bad_query_is_named_by_sqlite() {
        let fixture = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/rpm/rpmdb.sqlite");
        let error = each_blob(
            SYSTEM_LIBRARY,
            &fixture,
            "SELECT blob FROM NoSuchTable",
            |_| {},
        )
        .expect_err("no such table");
        assert!(error.to_string().contains("no such table"), "{error}");
    }

    #[test]
    fn every_row_and_null_values_are_seen() {
        let fixture = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/rpm/rpmdb.sqlite");
        let mut lengths = Vec::new();
        each_blob(
            SYSTEM_LIBRARY,
            &fixture,
            "SELECT blob FROM Packages UNION ALL SELECT NULL",
            |blob| lengths.push(blob.len()),
        )
        .expect("reads");
        assert_eq!(lengths.len(), 4, "three packages and the NULL row");
        assert!(lengths[..3].iter().all(|n| *n > 100), "{lengths:?}");
        assert_eq!(lengths[3], 0);
    }
}
