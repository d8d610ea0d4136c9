//! The webhook part of the technician API: `AddWebhook`, `RemoveWebhook`
//! and `SetWebhookEnabled` (admin, audited) and `ListWebhooks` (any role,
//! with delivery counts).

use deskpulse_proto::v1::{
    AddWebhookRequest, ListWebhooksRequest, ListWebhooksResponse, RemoveWebhookRequest,
    RemoveWebhookResponse, SetWebhookEnabledRequest, Webhook,
};
use tonic::{Request, Response, Status};

use super::{TechnicianApi, internal};
use crate::store::{NewWebhook, Role, WebhookStatus};

fn webhook_message(w: WebhookStatus) -> Webhook {
    Webhook {
        id: w.id,
        url: w.url,
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
        let url = crate::webhooks::check_url(&request.url).map_err(Status::invalid_argument)?;
        let events =
            crate::webhooks::parse_events(&request.events).map_err(Status::invalid_argument)?;
        let secret =
            crate::webhooks::check_secret(&request.secret).map_err(Status::invalid_argument)?;
        let id = self
            .ctx
            .store
            .add_webhook(
                &NewWebhook {
                    url: url.clone(),
                    events: events.clone(),
                    secret,
                    created_by: caller.name.clone(),
                },
                self.ctx.clock.now_ms(),
            )
            .await
            .map_err(internal)?;
        let names: Vec<&str> = events.iter().map(|e| e.name()).collect();
        self.audit(
            &caller,
            "webhook.add",
            id.to_string(),
            format!("{url}; events {}", names.join(",")),
        )
        .await?;
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
        if !self
            .ctx
            .store
            .set_webhook_enabled(request.id, request.enabled)
            .await
            .map_err(internal)?
        {
            return Err(Status::not_found(format!("no webhook {}", request.id)));
        }
        let hook = self.webhook_status(request.id).await?;
        let action = if request.enabled {
            "webhook.enable"
        } else {
            "webhook.disable"
        };
        self.audit(&caller, action, request.id.to_string(), hook.url.clone())
            .await?;
        Ok(Response::new(hook))
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
        if !self.ctx.store.remove_webhook(id).await.map_err(internal)? {
            return Err(Status::not_found(format!("no webhook {id}")));
        }
        self.audit(&caller, "webhook.remove", id.to_string(), url)
            .await?;
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
