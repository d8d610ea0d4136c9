//! The change-log part of the technician API: `ListChanges`, and the
//! change-log entry as the wire carries it (also shown with hosts and
//! tickets).

use deskpulse_proto::v1::{InventoryChange, ListChangesRequest, ListChangesResponse};
use tonic::{Request, Response, Status};

use super::{DEFAULT_CHANGES, MAX_CHANGES, TechnicianApi, internal};
use crate::store::{ChangeQuery, ChangeRow, Role};

pub(super) fn change_message(row: ChangeRow) -> InventoryChange {
    let kind = match (&row.old_value, &row.new_value) {
        _ if row.section == "inventory" => "baseline",
        (None, _) => "added",
        (_, None) => "removed",
        _ => "changed",
    };
    InventoryChange {
        host_id: row.host_id,
        hostname: row.hostname,
        observed_at_unix_ms: row.observed_at_ms,
        section: row.section,
        item: row.item,
        old_value: row.old_value.unwrap_or_default(),
        new_value: row.new_value.unwrap_or_default(),
        kind: kind.into(),
    }
}

impl TechnicianApi {
    pub(super) async fn list_changes_impl(
        &self,
        request: Request<ListChangesRequest>,
    ) -> Result<Response<ListChangesResponse>, Status> {
        self.authorize(&request, Role::Viewer, "listing changes")
            .await?;
        let request = request.into_inner();
        let host_id = if request.host.trim().is_empty() {
            None
        } else {
            Some(self.resolve_host(&request.host).await?.id)
        };
        let mut sections = Vec::new();
        for text in &request.sections {
            let parsed =
                deskpulse_proto::sections::parse(text).map_err(Status::invalid_argument)?;
            sections.extend(
                parsed
                    .into_iter()
                    .map(|s| deskpulse_proto::sections::name(s).to_owned()),
            );
        }
        let limit = match request.limit {
            0 => DEFAULT_CHANGES,
            n if n > MAX_CHANGES => {
                return Err(Status::invalid_argument(format!(
                    "limit {n} is too large; the most is {MAX_CHANGES}"
                )));
            }
            n => n,
        };
        let mut rows = self
            .ctx
            .store
            .list_changes(&ChangeQuery {
                host_id,
                since_ms: request.since_unix_ms,
                sections,
                limit: limit + 1,
            })
            .await
            .map_err(internal)?;
        let truncated = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        Ok(Response::new(ListChangesResponse {
            changes: rows.into_iter().map(change_message).collect(),
            truncated,
        }))
    }
}
