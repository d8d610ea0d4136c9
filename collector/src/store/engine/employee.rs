//! The employee's side of tickets (issue 23), as the ticket engine needs
//! it: a worklog note a technician marked public. [`EmployeeTx`] is a
//! supertrait of `TicketTx`, so the engine writes the note in the change's
//! transaction like any other; its SQL is in `store/sql/employee.rs`, with
//! the reads `my-tickets` is answered from.

use crate::store::StoreResult;

/// What the ticket engine writes for the employee's side, in its
/// transaction.
pub trait EmployeeTx: Send {
    /// Appends a worklog note marked public: the employee who reported the
    /// ticket reads it.
    async fn public_worklog(
        &mut self,
        ticket: i64,
        at_ms: i64,
        author: &str,
        note: &str,
    ) -> StoreResult<()>;
}
