//! The knowledge-base part of the technician API: `SearchKb`, a ranked
//! search of resolved tickets (those that only recovered by themselves
//! when asked).

use deskpulse_proto::v1::{KbMatch, SearchKbRequest, SearchKbResponse};
use tonic::{Request, Response, Status};

use super::{TechnicianApi, internal};
use crate::store::Role;

/// The default and the largest number of knowledge-base matches.
const DEFAULT_KB: u32 = 20;
const MAX_KB: u32 = 200;

impl TechnicianApi {
    pub(super) async fn search_kb_impl(
        &self,
        request: Request<SearchKbRequest>,
    ) -> Result<Response<SearchKbResponse>, Status> {
        self.authorize(&request, Role::Viewer, "searching the knowledge base")
            .await?;
        let request = request.into_inner();
        if request.query.trim().is_empty() {
            return Err(Status::invalid_argument(
                "the search is empty: give one or more words",
            ));
        }
        let limit = match request.limit {
            0 => DEFAULT_KB,
            n if n > MAX_KB => {
                return Err(Status::invalid_argument(format!(
                    "limit {n} is too large; the most is {MAX_KB}"
                )));
            }
            n => n,
        };
        let terms = crate::store::search_terms(&request.query);
        let hits = self
            .ctx
            .store
            .search_kb(&terms, limit, request.include_auto)
            .await
            .map_err(internal)?;
        Ok(Response::new(SearchKbResponse {
            matches: hits
                .into_iter()
                .map(|h| KbMatch {
                    ticket_id: h.ticket_id,
                    host_id: h.host_id,
                    hostname: h.hostname,
                    title: h.title,
                    rule: h.rule,
                    resolution: h.resolution,
                    resolved_at_unix_ms: h.resolved_at_ms.unwrap_or(0),
                    rank: h.rank,
                })
                .collect(),
        }))
    }
}
