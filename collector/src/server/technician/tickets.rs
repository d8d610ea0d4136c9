//! The ticket part of the technician API: `ListTickets`, `GetTicket`,
//! `CreateTicket` and `UpdateTicket` (assign, note, status, resolve,
//! escalate, reopen), and the ticket as the wire carries it.

use deskpulse_proto::v1::update_ticket_request::Change;
use deskpulse_proto::v1::{
    CreateTicketRequest, GetTicketRequest, GetTicketResponse, ListTicketsRequest,
    ListTicketsResponse, Ticket, UpdateTicketRequest,
};
use tonic::{Request, Response, Status};

use super::{DEFAULT_CHANGES, MAX_CHANGES, TechnicianApi, internal, text_arg, text_check};
use crate::rules::priority::Priority;
use crate::server::ServerContext;
use crate::store::{
    AuditEntry, Caller, Role, StoreError, TICKET_STATUSES, TicketChange, TicketQuery,
    TicketRefusal, TicketRow, WorklogEntry,
};

fn ticket_response(row: TicketRow, worklog: Vec<WorklogEntry>) -> GetTicketResponse {
    GetTicketResponse {
        ticket: Some(ticket_message(row)),
        worklog: worklog
            .into_iter()
            .map(|e| deskpulse_proto::v1::WorklogEntry {
                at_unix_ms: e.at_ms,
                author: e.author,
                note: e.note,
                public: e.public,
            })
            .collect(),
        ..Default::default()
    }
}

/// The longest note or resolution kept.
const MAX_NOTE: usize = 10_000;

pub(super) fn ticket_message(row: TicketRow) -> Ticket {
    Ticket {
        id: row.id,
        host_id: row.host_id,
        hostname: row.hostname,
        rule: row.rule,
        subject: row.subject,
        title: row.title,
        status: row.status,
        priority: row.priority,
        severity: row.severity,
        assignee: row.assignee.unwrap_or_default(),
        escalation: row.escalation,
        occurrences: row.occurrences,
        flaps: row.flaps,
        opened_at_unix_ms: row.opened_at_ms,
        updated_at_unix_ms: row.updated_at_ms,
        resolved_at_unix_ms: row.resolved_at_ms.unwrap_or(0),
        response_due_unix_ms: row.response_due_ms,
        resolution_due_unix_ms: row.resolution_due_ms,
        evidence_json: row.evidence,
        resolution: row.resolution.unwrap_or_default(),
        responded_at_unix_ms: row.responded_at_ms.unwrap_or(0),
        // Named by `GetTicket` (and `GetProblem`); lists leave it 0.
        problem_id: 0,
    }
}

/// What a technician asks of a ticket, before it is checked: the API's
/// `UpdateTicket` and the web console's ticket actions both come to this.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ChangeAsked<'a> {
    /// Assign to this technician ("me": the caller).
    Assign(&'a str),
    /// Add this note.
    Note(&'a str),
    /// Add this note, marked public: the reporting employee reads it.
    PublicNote(&'a str),
    /// Set this status.
    Status(&'a str),
    /// Resolve with this resolution.
    Resolve(&'a str),
    /// Escalate one level.
    Escalate,
    /// Reopen.
    Reopen,
}

/// The change `caller` asked for, checked, or the one line saying what is
/// wrong with it. Whether the ticket allows it is the store's to say.
pub(crate) fn check_change(
    caller: &Caller,
    asked: ChangeAsked<'_>,
) -> Result<TicketChange, String> {
    Ok(match asked {
        ChangeAsked::Assign(name) => {
            let name = text_check("the assignee", name, 64)?;
            TicketChange::Assign(if name == "me" {
                caller.name.clone()
            } else {
                name
            })
        }
        ChangeAsked::Note(text) => TicketChange::Note(text_check("the note", text, MAX_NOTE)?),
        ChangeAsked::PublicNote(text) => {
            TicketChange::PublicNote(text_check("the note", text, MAX_NOTE)?)
        }
        ChangeAsked::Status(status) => TicketChange::Status(status.trim().to_ascii_lowercase()),
        ChangeAsked::Resolve(text) => {
            TicketChange::Resolve(text_check("the resolution", text, MAX_NOTE)?)
        }
        ChangeAsked::Escalate => TicketChange::Escalate,
        ChangeAsked::Reopen => TicketChange::Reopen,
    })
}

/// Makes `change` to ticket `id` as `caller`: the store writes the change,
/// its worklog line and its audit entry in one transaction, and the audit
/// head is anchored at once after it. The caller's role must have been
/// checked ([`super::role_refusal`], the technician role).
pub(crate) async fn change_ticket(
    ctx: &ServerContext,
    caller: &Caller,
    id: i64,
    change: &TicketChange,
) -> Result<Result<(), TicketRefusal>, StoreError> {
    let updated = ctx
        .store
        .update_ticket(
            id,
            change,
            &caller.name,
            &AuditEntry::by(caller, "", String::new(), String::new()),
            ctx.clock.now_ms(),
        )
        .await?;
    if updated.is_ok() {
        ctx.audit
            .anchor_or_warn(ctx.store.as_ref(), ctx.clock.now_ms())
            .await;
    }
    Ok(updated.map(|_| ()))
}

fn parse_priority(text: &str) -> Result<Option<Priority>, Status> {
    match text.trim() {
        "" => Ok(None),
        text => Priority::parse(text)
            .map(Some)
            .map_err(Status::invalid_argument),
    }
}

impl TechnicianApi {
    pub(super) async fn list_tickets_impl(
        &self,
        request: Request<ListTicketsRequest>,
    ) -> Result<Response<ListTicketsResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Viewer, "listing tickets")
            .await?;
        let request = request.into_inner();
        let assignee = match request.assignee.trim() {
            "" => None,
            "me" => Some(caller.name.clone()),
            name => Some(name.to_owned()),
        };
        let status = request.status.trim().to_ascii_lowercase();
        let open_only = status == "open";
        if !status.is_empty() && !TICKET_STATUSES.contains(&status.as_str()) {
            return Err(Status::invalid_argument(format!(
                "unknown status {status:?}; expected one of {}",
                TICKET_STATUSES.join(", ")
            )));
        }
        let priority = request.priority.trim().to_ascii_uppercase();
        if !priority.is_empty() && !["P1", "P2", "P3", "P4"].contains(&priority.as_str()) {
            return Err(Status::invalid_argument(format!(
                "unknown priority {priority:?}; expected P1, P2, P3 or P4"
            )));
        }
        let host_id = if request.host.trim().is_empty() {
            None
        } else {
            Some(self.resolve_host(&request.host).await?.id)
        };
        let limit = match request.limit {
            0 => DEFAULT_CHANGES,
            n if n > MAX_CHANGES => {
                return Err(Status::invalid_argument(format!(
                    "limit {n} is too large; the most is {MAX_CHANGES}"
                )));
            }
            n => n,
        };
        let rows = self
            .ctx
            .store
            .list_tickets(&TicketQuery {
                open_only,
                status: (!status.is_empty() && !open_only).then_some(status),
                host_id,
                priority: (!priority.is_empty()).then_some(priority),
                assignee,
                rule: None,
                limit,
            })
            .await
            .map_err(internal)?;
        Ok(Response::new(ListTicketsResponse {
            tickets: rows.into_iter().map(ticket_message).collect(),
        }))
    }

    pub(super) async fn get_ticket_impl(
        &self,
        request: Request<GetTicketRequest>,
    ) -> Result<Response<GetTicketResponse>, Status> {
        self.authorize(&request, Role::Viewer, "showing a ticket")
            .await?;
        let id = request.into_inner().id;
        let (row, log) = self
            .ctx
            .store
            .ticket(id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no ticket {id}")))?;
        let mut response = ticket_response(row.clone(), log);
        self.add_context(&mut response, &row).await?;
        if let Some(ticket) = &mut response.ticket {
            ticket.problem_id = self.problem_of(id).await?;
        }
        Ok(Response::new(response))
    }

    pub(super) async fn create_ticket_impl(
        &self,
        request: Request<CreateTicketRequest>,
    ) -> Result<Response<GetTicketResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Technician, "opening a ticket")
            .await?;
        let request = request.into_inner();
        let title = text_arg("the title", &request.title, 200)?;
        let priority = parse_priority(&request.priority)?;
        let host = self.resolve_host(&request.host).await?;
        let row = self
            .ctx
            .store
            .create_ticket(
                &host.id,
                &title,
                priority,
                &caller.name,
                &AuditEntry::by(&caller, "", String::new(), String::new()),
                self.ctx.clock.now_ms(),
            )
            .await
            .map_err(internal)?;
        let (row, log) = self
            .ctx
            .store
            .ticket(row.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::internal("the new ticket vanished"))?;
        let mut response = ticket_response(row.clone(), log);
        // Earlier tickets on the host show at once whether this is a repeat.
        self.add_context(&mut response, &row).await?;
        Ok(Response::new(response))
    }

    pub(super) async fn update_ticket_impl(
        &self,
        request: Request<UpdateTicketRequest>,
    ) -> Result<Response<GetTicketResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Technician, "changing a ticket")
            .await?;
        let request = request.into_inner();
        let asked = match &request.change {
            Some(Change::Assign(name)) => ChangeAsked::Assign(name),
            Some(Change::Note(text)) => ChangeAsked::Note(text),
            Some(Change::PublicNote(text)) => ChangeAsked::PublicNote(text),
            Some(Change::Status(status)) => ChangeAsked::Status(status),
            Some(Change::Resolve(text)) => ChangeAsked::Resolve(text),
            Some(Change::Escalate(true)) => ChangeAsked::Escalate,
            Some(Change::Reopen(true)) => ChangeAsked::Reopen,
            _ => {
                return Err(Status::invalid_argument(
                    "a ticket update must set one change",
                ));
            }
        };
        let change = check_change(&caller, asked).map_err(Status::invalid_argument)?;
        match change_ticket(&self.ctx, &caller, request.id, &change)
            .await
            .map_err(internal)?
        {
            Ok(()) => {}
            Err(TicketRefusal::NotFound) => {
                return Err(Status::not_found(format!("no ticket {}", request.id)));
            }
            Err(TicketRefusal::Invalid(why)) => return Err(Status::failed_precondition(why)),
        }
        let (row, log) = self
            .ctx
            .store
            .ticket(request.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no ticket {}", request.id)))?;
        Ok(Response::new(ticket_response(row, log)))
    }
}
