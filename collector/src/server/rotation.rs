//! The fleet CAs on a running server (docs/ca-rotation.md): the set in
//! force ([`LiveCas`]), followed from the store so that a `ca rotate` or
//! `ca retire` run on any replica reaches every replica within
//! [`FOLLOW_EVERY`], and what the agent service makes of it: the CA bundle
//! and early-renewal word sent at each session's start, and the refusal of
//! a host certificate from a retired CA.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deskpulse_proto::v1::TrustedCas;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tonic::Status;

use super::ServerContext;
use super::agent::AgentIdentity;
use crate::datadir::rotation::{CaSet, signature};
use crate::store::CaState;

/// How often the server looks at the store's CAs.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(5);

/// The CA set in force on this server; sessions subscribe to see a
/// retirement at once.
#[derive(Debug)]
pub struct LiveCas(watch::Sender<Arc<CaSet>>);

impl LiveCas {
    /// Starts with `set`.
    pub fn new(set: CaSet) -> Self {
        Self(watch::Sender::new(Arc::new(set)))
    }

    /// A set of one CA that has never rotated (in-process tests).
    pub fn single(ca: crate::pki::CertificateAuthority) -> Self {
        Self::new(CaSet {
            active: ca,
            old: None,
            known: Vec::new(),
        })
    }

    /// The set in force.
    pub fn get(&self) -> Arc<CaSet> {
        self.0.borrow().clone()
    }

    /// Tells every subscriber of a new set.
    fn set(&self, set: CaSet) {
        self.0.send_replace(Arc::new(set));
    }

    /// Notified at each change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<CaSet>> {
        self.0.subscribe()
    }
}

/// What a replica needs to follow the store's CAs: its data dir and the
/// names its server certificate carries.
#[derive(Debug, Clone)]
pub struct CaFollow {
    /// The data dir.
    pub data_dir: PathBuf,
    /// The server certificate's extra names (`--hostname`).
    pub hostnames: Vec<String>,
}

/// Until shutdown: every [`FOLLOW_EVERY`], compares the store's CAs with
/// the set in force and, when they differ, brings the data dir in line,
/// issues the server certificate from the serving CA if it changed, and
/// swaps the TLS settings new connections get.
pub async fn follow(ctx: ServerContext, follow: CaFollow, tls: watch::Sender<TlsAcceptor>) {
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let records = match ctx.store.fleet_cas().await {
            Ok(records) => records,
            Err(error) => {
                tracing::debug!(%error, "reading the fleet CAs failed");
                continue;
            }
        };
        if signature(records.iter()) == ctx.ca.get().signature() {
            continue;
        }
        let reloaded = async {
            let set = crate::datadir::reload_cas(&follow.data_dir, ctx.store.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            let identity = crate::datadir::server_identity(
                &follow.data_dir,
                &set,
                &follow.hostnames,
                ctx.clock.now_ms(),
            )
            .map_err(|e| e.to_string())?;
            let acceptor = super::admission::tls_acceptor(&identity, &set.client_roots_pem())?;
            Ok::<_, String>((set, acceptor))
        }
        .await;
        match reloaded {
            Ok((set, acceptor)) => {
                tracing::info!(
                    active = %set.active.fingerprint(),
                    serving = %set.serving().fingerprint(),
                    "the fleet's CAs changed; new connections use them"
                );
                ctx.ca.set(set);
                tls.send_replace(acceptor);
                last_error = None;
            }
            Err(error) => {
                // Once per distinct problem: it is retried every tick.
                if last_error.as_ref() != Some(&error) {
                    tracing::error!(%error, "the fleet's CAs changed but this replica cannot follow");
                    last_error = Some(error);
                }
            }
        }
    }
}

/// The refusal of a host certificate whose CA was retired, or `None`.
pub fn retired_refusal(set: &CaSet, identity: &AgentIdentity) -> Option<Status> {
    let issuer = set.issuer_of(&identity.cert_der)?;
    if issuer.record.state != CaState::Retired {
        return None;
    }
    Some(Status::unauthenticated(format!(
        "this host certificate was issued by the fleet CA {} that was retired{}; this PC must \
         enroll again with a fresh token",
        crate::store::sql::fleet_ca::short(&issuer.record.sha256),
        issuer
            .record
            .retired_at_ms
            .map(|ms| format!(" at {}", super::renewal::format_ms(ms)))
            .unwrap_or_default()
    )))
}

/// The bundle to send at a session's start, with the early-renewal word
/// when the host's certificate is not from the active CA.
pub fn trusted_cas(set: &CaSet, identity: &AgentIdentity) -> TrustedCas {
    let from_active = crate::pki::rotation::issued_by(&identity.cert_der, set.active.cert_der());
    TrustedCas {
        ca_bundle_pem: set.bundle_pem(),
        renew_now: !from_active,
    }
}
