//! The ticket part of the technician API: `ListTickets`, `GetTicket`,
//! `CreateTicket` and `UpdateTicket` (assign, note, status, resolve,
//! escalate, reopen), and the ticket as the wire carries it.

use deskpulse_proto::v1::update_ticket_request::Change;
use deskpulse_proto::v1::{
    CreateTicketRequest, GetTicketRequest, GetTicketResponse, ListTicketsRequest,
    ListTicketsResponse, Ticket, UpdateTicketRequest,
};
use tonic::{Request, Response, Status};

use super::{DEFAULT_CHANGES, MAX_CHANGES, TechnicianApi, internal, text_arg};
use crate::rules::priority::Priority;
use crate::store::{
    AuditEntry, Role, TICKET_STATUSES, TicketChange, TicketQuery, TicketRefusal, TicketRow,
    WorklogEntry,
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
    }
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
        let change = match request.change {
            Some(Change::Assign(name)) => {
                let name = text_arg("the assignee", &name, 64)?;
                TicketChange::Assign(if name == "me" {
                    caller.name.clone()
                } else {
                    name
                })
            }
            Some(Change::Note(text)) => TicketChange::Note(text_arg("the note", &text, MAX_NOTE)?),
            Some(Change::Status(status)) => {
                TicketChange::Status(status.trim().to_ascii_lowercase())
            }
            Some(Change::Resolve(text)) => {
                TicketChange::Resolve(text_arg("the resolution", &text, MAX_NOTE)?)
            }
            Some(Change::Escalate(true)) => TicketChange::Escalate,
            Some(Change::Reopen(true)) => TicketChange::Reopen,
            _ => {
                return Err(Status::invalid_argument(
                    "a ticket update must set one change",
                ));
            }
        };
        let updated = self
            .ctx
            .store
            .update_ticket(
                request.id,
                &change,
                &caller.name,
                &AuditEntry::by(&caller, "", String::new(), String::new()),
                self.ctx.clock.now_ms(),
            )
            .await
            .map_err(internal)?;
        match updated {
            Ok(_) => self.anchor_audit().await,
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
