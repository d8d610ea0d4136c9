//! The fleet-wide problem part of the technician API (issue 23):
//! `ListProblems`, `GetProblem` and `ResolveProblem`, and a problem as the
//! wire carries it. Roles as for tickets: any role reads, a technician or
//! an admin resolves, audited in the store's transaction and anchored.

use deskpulse_proto::v1::{
    GetProblemRequest, GetProblemResponse, ListProblemsRequest, ListProblemsResponse, Problem,
    ResolveProblemRequest,
};
use tonic::{Request, Response, Status};

use super::tickets::ticket_message;
use super::{TechnicianApi, internal, text_arg};
use crate::rules::problems::{CommonChange, ProblemRefusal, ProblemRow};
use crate::store::{AuditEntry, ProblemDetail, Role};

/// Problems listed when the request names no limit, and the most.
const DEFAULT_PROBLEMS: u32 = 50;
const MAX_PROBLEMS: u32 = 1000;
/// The longest resolution kept, as for a ticket.
const MAX_RESOLUTION: usize = 10_000;

/// A problem as the wire carries it.
pub(crate) fn problem_message(row: ProblemRow, common: Option<&CommonChange>) -> Problem {
    Problem {
        id: row.id,
        kind: row.kind,
        key: row.key,
        title: row.title,
        status: row.status,
        priority: row.priority,
        hosts: row.hosts,
        tickets: row.tickets,
        open_tickets: row.open_tickets,
        opened_at_unix_ms: row.opened_at_ms,
        updated_at_unix_ms: row.updated_at_ms,
        resolved_at_unix_ms: row.resolved_at_ms.unwrap_or(0),
        resolved_by: row.resolved_by.unwrap_or_default(),
        resolution: row.resolution.unwrap_or_default(),
        common_change: common.map(CommonChange::describe).unwrap_or_default(),
    }
}

/// A problem with its tickets, common changes and timeline.
pub(crate) fn problem_response(detail: ProblemDetail) -> GetProblemResponse {
    let id = detail.problem.id;
    let common = detail.common_changes.first().cloned();
    GetProblemResponse {
        problem: Some(problem_message(detail.problem, common.as_ref())),
        tickets: detail
            .tickets
            .into_iter()
            .map(|row| {
                let mut ticket = ticket_message(row);
                ticket.problem_id = id;
                ticket
            })
            .collect(),
        common_changes: detail
            .common_changes
            .iter()
            .map(|c| deskpulse_proto::v1::CommonChange {
                section: c.section.clone(),
                item: c.item.clone(),
                new_value: c.new.clone().unwrap_or_default(),
                added: c.added,
                hosts: c.hosts,
                of_hosts: c.of_hosts,
                text: c.describe(),
            })
            .collect(),
        timeline: detail
            .log
            .into_iter()
            .map(|e| deskpulse_proto::v1::WorklogEntry {
                at_unix_ms: e.at_ms,
                author: e.author,
                note: e.note,
                public: e.public,
            })
            .collect(),
    }
}

impl TechnicianApi {
    /// The problem ticket `id` joined; 0 when none.
    pub(super) async fn problem_of(&self, id: i64) -> Result<i64, Status> {
        Ok(self
            .ctx
            .store
            .problem_of_ticket(id)
            .await
            .map_err(internal)?
            .unwrap_or(0))
    }

    pub(super) async fn list_problems_impl(
        &self,
        request: Request<ListProblemsRequest>,
    ) -> Result<Response<ListProblemsResponse>, Status> {
        self.authorize(&request, Role::Viewer, "listing problems")
            .await?;
        let request = request.into_inner();
        let status = request.status.trim().to_ascii_lowercase();
        if !matches!(status.as_str(), "" | "open" | "resolved") {
            return Err(Status::invalid_argument(format!(
                "unknown problem status {status:?}; expected open or resolved"
            )));
        }
        let limit = match request.limit {
            0 => DEFAULT_PROBLEMS,
            n if n > MAX_PROBLEMS => {
                return Err(Status::invalid_argument(format!(
                    "limit {n} is too large; the most is {MAX_PROBLEMS}"
                )));
            }
            n => n,
        };
        let listed = self
            .ctx
            .store
            .list_problems((!status.is_empty()).then_some(status.as_str()), limit)
            .await
            .map_err(internal)?;
        Ok(Response::new(ListProblemsResponse {
            problems: listed
                .into_iter()
                .map(|p| problem_message(p.problem, p.common_change.as_ref()))
                .collect(),
        }))
    }

    pub(super) async fn get_problem_impl(
        &self,
        request: Request<GetProblemRequest>,
    ) -> Result<Response<GetProblemResponse>, Status> {
        self.authorize(&request, Role::Viewer, "showing a problem")
            .await?;
        let id = request.into_inner().id;
        let detail = self
            .ctx
            .store
            .problem(id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no problem {id}")))?;
        Ok(Response::new(problem_response(detail)))
    }

    pub(super) async fn resolve_problem_impl(
        &self,
        request: Request<ResolveProblemRequest>,
    ) -> Result<Response<GetProblemResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Technician, "resolving a problem")
            .await?;
        let request = request.into_inner();
        let resolution = text_arg("the resolution", &request.resolution, MAX_RESOLUTION)?;
        let now_ms = self.ctx.clock.now_ms();
        let outcome = self
            .ctx
            .store
            .resolve_problem(
                request.id,
                &resolution,
                &caller.name,
                &AuditEntry::by(&caller, "", String::new(), String::new()),
                now_ms,
            )
            .await
            .map_err(internal)?;
        match outcome {
            Ok(_) => {}
            Err(ProblemRefusal::NotFound) => {
                return Err(Status::not_found(format!("no problem {}", request.id)));
            }
            Err(ProblemRefusal::Invalid(why)) => return Err(Status::failed_precondition(why)),
        }
        self.ctx
            .audit
            .anchor_or_warn(self.ctx.store.as_ref(), self.ctx.clock.now_ms())
            .await;
        let detail = self
            .ctx
            .store
            .problem(request.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no problem {}", request.id)))?;
        Ok(Response::new(problem_response(detail)))
    }
}
