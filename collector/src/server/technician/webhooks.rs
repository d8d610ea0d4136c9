//! The webhook part of the technician API: `AddWebhook`, `RemoveWebhook`
//! and `SetWebhookEnabled` (admin, audited) and `ListWebhooks` (any role,
//! with delivery counts). A Slack or Teams URL, its own secret, is shown
//! and audited as its host only.

use deskpulse_proto::v1::{
    AddWebhookRequest, ListWebhooksRequest, ListWebhooksResponse, RemoveWebhookRequest,
    RemoveWebhookResponse, SetWebhookEnabledRequest, Webhook,
};
use tonic::{Request, Response, Status};

use super::{TechnicianApi, internal};
use crate::store::{AuditEntry, NewWebhook, Role, WebhookStatus};

fn webhook_message(w: WebhookStatus) -> Webhook {
    Webhook {
        id: w.id,
        url: crate::webhooks::route::shown_url(&w.url, w.route.format),
        format: w.route.format.name().to_owned(),
        priorities: w.route.priorities,
        assignee: w.route.assignee.unwrap_or_default(),
        next_attempt_unix_ms: w.next_attempt_at_ms.unwrap_or(0),
        last_attempts: w.last_attempts,
        events: w.events.iter().map(|e| e.name().to_owned()).collect(),
        enabled: w.enabled,
        created_at_unix_ms: w.created_at_ms,
        created_by: w.created_by,
        pending: w.pending,
        delivered: w.delivered,
        failed: w.failed,
        last_attempt_unix_ms: w.last_attempt_at_ms.unwrap_or(0),
        last_error: w.last_error.unwrap_or_default(),
    }
}

impl TechnicianApi {
    async fn webhook_status(&self, id: i64) -> Result<Webhook, Status> {
        self.ctx
            .store
            .list_webhooks()
            .await
            .map_err(internal)?
            .into_iter()
            .find(|w| w.id == id)
            .map(webhook_message)
            .ok_or_else(|| Status::not_found(format!("no webhook {id}")))
    }

    /// AddWebhook: admin only; the secret is checked and stored, never
    /// logged or audited.
    pub(super) async fn add_webhook_impl(
        &self,
        request: Request<AddWebhookRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let caller = self
            .authorize(&request, Role::Admin, "adding a webhook")
            .await?;
        let request = request.into_inner();
        let destination = crate::webhooks::route::check_destination(
            &request.url,
            &request.format,
            &request.events,
            &request.priorities,
            &request.assignee,
            &request.secret,
        )
        .map_err(Status::invalid_argument)?;
        let crate::webhooks::route::Destination {
            url,
            route,
            events,
            secret,
        } = destination;
        let names = events
            .iter()
            .map(|e| e.name())
            .collect::<Vec<_>>()
            .join(",");
        let id = self
            .ctx
            .store
            .add_webhook(
                &NewWebhook {
                    url: url.clone(),
                    events: events.clone(),
                    secret,
                    created_by: caller.name.clone(),
                    route: route.clone(),
                },
                &|id: &i64| {
                    AuditEntry::by(
                        &caller,
                        "webhook.add",
                        id.to_string(),
                        format!(
                            "{}{}; events {names}{}{}",
                            crate::webhooks::route::shown_url(&url, route.format),
                            match route.format {
                                crate::model::WebhookFormat::Generic => String::new(),
                                other => format!("; format {}", other.name()),
                            },
                            if route.priorities.is_empty() {
                                String::new()
                            } else {
                                format!("; priorities {}", route.priorities.join(","))
                            },
                            route
                                .assignee
                                .as_deref()
                                .map(|a| format!("; assignee {a}"))
                                .unwrap_or_default(),
                        ),
                    )
                },
                self.ctx.clock.now_ms(),
            )
            .await
            .map_err(internal)?;
        self.anchor_audit().await;
        Ok(Response::new(self.webhook_status(id).await?))
    }

    /// SetWebhookEnabled: admin only.
    pub(super) async fn set_webhook_enabled_impl(
        &self,
        request: Request<SetWebhookEnabledRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let caller = self
            .authorize(&request, Role::Admin, "pausing or resuming a webhook")
            .await?;
        let request = request.into_inner();
        let url = self.webhook_status(request.id).await?.url;
        let action = if request.enabled {
            "webhook.enable"
        } else {
            "webhook.disable"
        };
        let entry = AuditEntry::by(&caller, action, request.id.to_string(), url);
        if !self
            .ctx
            .store
            .set_webhook_enabled(request.id, request.enabled, &entry, self.ctx.clock.now_ms())
            .await
            .map_err(internal)?
        {
            return Err(Status::not_found(format!("no webhook {}", request.id)));
        }
        self.anchor_audit().await;
        Ok(Response::new(self.webhook_status(request.id).await?))
    }

    /// RemoveWebhook: admin only.
    pub(super) async fn remove_webhook_impl(
        &self,
        request: Request<RemoveWebhookRequest>,
    ) -> Result<Response<RemoveWebhookResponse>, Status> {
        let caller = self
            .authorize(&request, Role::Admin, "removing a webhook")
            .await?;
        let id = request.into_inner().id;
        let url = self.webhook_status(id).await?.url;
        let entry = AuditEntry::by(&caller, "webhook.remove", id.to_string(), url);
        if !self
            .ctx
            .store
            .remove_webhook(id, &entry, self.ctx.clock.now_ms())
            .await
            .map_err(internal)?
        {
            return Err(Status::not_found(format!("no webhook {id}")));
        }
        self.anchor_audit().await;
        Ok(Response::new(RemoveWebhookResponse { id }))
    }

    pub(super) async fn list_webhooks_impl(
        &self,
        request: Request<ListWebhooksRequest>,
    ) -> Result<Response<ListWebhooksResponse>, Status> {
        self.authorize(&request, Role::Viewer, "listing webhooks")
            .await?;
        let webhooks = self.ctx.store.list_webhooks().await.map_err(internal)?;
        Ok(Response::new(ListWebhooksResponse {
            webhooks: webhooks.into_iter().map(webhook_message).collect(),
        }))
    }
}
