//! `deskpulse-collector`: the central server and its admin commands.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use deskpulse_collector::clock::{SharedClock, SystemClock};
use deskpulse_collector::config::{self, LogFormat, ProcessEnv, ServeFlags, StoreFlags};
use deskpulse_collector::exit::{CommandResult, Failure, init_logging};
use deskpulse_collector::server::{self, ServerContext};
use deskpulse_collector::store::Role;
use deskpulse_collector::{admin, panics};
use tokio_util::sync::CancellationToken;

/// jemalloc, not glibc's malloc: under a fleet's first inventories a third
/// of the collector's CPU went to glibc's `malloc_consolidate`,
/// `unlink_chunk` and friends (perf, 19,000 agents), churning through
/// tonic's per-message zstd contexts and decoded inventories.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The Deskpulse collector: enrolls agents, stores inventory and health, and
/// serves the technician API on one TLS port.
#[derive(Parser)]
#[command(name = "deskpulse-collector", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. Prints `listening ADDR` on stdout once it accepts
    /// connections; logs go to stderr.
    Serve {
        // Boxed: the serve flags (with the SMTP ones) are by far the
        // largest variant.
        #[command(flatten)]
        flags: Box<ServeFlags>,
        /// Start a new, empty fleet although the data dir already holds one
        /// (its CA) and the database is new. Without it, `serve` refuses
        /// such a data dir: its database was lost and should be restored.
        /// A brand-new data dir needs no --init.
        #[arg(long)]
        init: bool,
    },
    /// Write a consistent copy of the live SQLite database to FILE (which
    /// must not exist); PostgreSQL is backed up with pg_dump.
    Backup {
        #[command(flatten)]
        store: StoreFlags,
        /// The backup file to write.
        #[arg(long, value_name = "FILE")]
        to: std::path::PathBuf,
    },
    /// Put a backup made by `backup` in place as the data dir's database.
    /// Stop the collector first.
    Restore {
        #[command(flatten)]
        store: StoreFlags,
        /// The backup file.
        #[arg(long, value_name = "FILE")]
        from: std::path::PathBuf,
    },
    /// Manage agent enrollment tokens.
    #[command(subcommand)]
    EnrollToken(EnrollTokenCommand),
    /// Manage technician API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage local accounts: technicians who sign in to the web console
    /// with a password.
    #[command(subcommand)]
    User(UserCommand),
    /// The fleet CA.
    #[command(subcommand)]
    Ca(CaCommand),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit hash chain and its signed anchors in this data dir;
    /// exits 1 naming the first problem.
    Verify {
        #[command(flatten)]
        store: StoreFlags,
    },
}

#[derive(Subcommand)]
enum EnrollTokenCommand {
    /// Print a new enrollment token on stdout.
    Create {
        #[command(flatten)]
        store: StoreFlags,
        /// How long the token works, e.g. 24h, 30m, 7d (at most 30 days).
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: Duration,
        /// How many agents may enroll with it (1 to 10000).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        uses: u32,
        /// Make a one-use token that re-links this host (a host name or
        /// id), e.g. after reinstalling its PC. An ordinary token never
        /// re-links: it makes a new host.
        #[arg(long, value_name = "HOST")]
        relink: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new API token on stdout, creating the technician if new.
    Create {
        #[command(flatten)]
        store: StoreFlags,
        /// What the token may do.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The technician's name.
        #[arg(long)]
        name: String,
        /// How long the token works, e.g. 90d or 12h; default: until
        /// revoked (`deskpulse token revoke ID`).
        #[arg(long, value_name = "DURATION", value_parser = parse_token_expiry)]
        expires: Option<Duration>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Make a local account, creating the technician if new. The password
    /// is typed twice without echo, or read as one line of stdin.
    Create {
        #[command(flatten)]
        store: StoreFlags,
        /// The technician's name.
        name: String,
        /// What the account may do.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// List the local accounts.
    List {
        #[command(flatten)]
        store: StoreFlags,
    },
    /// Set a new password (typed or from stdin); the account's web
    /// sessions end.
    Password {
        #[command(flatten)]
        store: StoreFlags,
        /// The technician's name.
        name: String,
    },
    /// Delete a local account and end its web sessions; the technician's
    /// API tokens and history stay.
    Delete {
        #[command(flatten)]
        store: StoreFlags,
        /// The technician's name.
        name: String,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Print the CA certificate (PEM) on stdout and its pin on stderr.
    Export {
        #[command(flatten)]
        store: StoreFlags,
    },
    /// Start a CA rotation: a new CA issues host certificates, the current
    /// one stays trusted until `ca retire` (docs/ca-rotation.md).
    Rotate {
        #[command(flatten)]
        store: StoreFlags,
        /// The new CA certificate, PEM, instead of one made here.
        #[arg(long, value_name = "FILE", requires = "key")]
        cert: Option<std::path::PathBuf>,
        /// The new CA's private key, PEM (with --cert).
        #[arg(long, value_name = "FILE", requires = "cert")]
        key: Option<std::path::PathBuf>,
    },
    /// Each fleet CA: pin, dates, state, and the hosts holding its
    /// certificates.
    Status {
        #[command(flatten)]
        store: StoreFlags,
    },
    /// End a CA rotation: the old CA is no longer trusted.
    Retire {
        #[command(flatten)]
        store: StoreFlags,
        /// Retire even though hosts still hold certificates from the old
        /// CA (they must enroll again).
        #[arg(long)]
        force: bool,
    },
    /// Install the fleet CA (certificate and key, PEM) into this replica's
    /// data dir, so every replica issues from the same CA.
    Import {
        #[command(flatten)]
        store: StoreFlags,
        /// The CA certificate, PEM (ca.pem from the first replica).
        #[arg(long, value_name = "FILE")]
        cert: std::path::PathBuf,
        /// The CA private key, PEM (ca.key from the first replica).
        #[arg(long, value_name = "FILE")]
        key: std::path::PathBuf,
    },
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| format!("{e}; try e.g. 24h"))?;
    if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(30 * 24 * 3600) {
        return Err("must be between 1m and 30d".into());
    }
    Ok(ttl)
}

fn parse_token_expiry(text: &str) -> Result<Duration, String> {
    let lifetime = humantime::parse_duration(text).map_err(|e| format!("{e}; try e.g. 90d"))?;
    if lifetime.is_zero() || lifetime > admin::MAX_API_TOKEN_LIFETIME {
        return Err("must be more than 0 and at most 10 years".into());
    }
    Ok(lifetime)
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report("deskpulse-collector"),
    }
}

fn runtime() -> CommandResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))
}

fn run(command: Command) -> CommandResult {
    // Both ring and aws-lc could end up linked; pick one explicitly so rustls
    // never has to guess (and panic).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = SystemClock;
    match command {
        Command::Serve { flags, init } => {
            let config = config::resolve_serve(&flags, &ProcessEnv).map_err(Failure::usage)?;
            init_logging(config.log_format == LogFormat::Json, "info");
            panics::install_hook();
            runtime()?.block_on(serve(config, init))
        }
        Command::Backup { store, to } => {
            let store = config::resolve_store_flags(&store, &ProcessEnv).map_err(Failure::usage)?;
            init_logging(false, "warn");
            runtime()?.block_on(admin::backup(&store, &clock, &to))
        }
        Command::Restore { store, from } => {
            let store = config::resolve_store_flags(&store, &ProcessEnv).map_err(Failure::usage)?;
            init_logging(false, "warn");
            runtime()?.block_on(admin::restore(&store, &clock, &from))
        }
        Command::EnrollToken(EnrollTokenCommand::Create {
            store,
            ttl,
            uses,
            relink,
        }) => {
            let store = config::resolve_store_flags(&store, &ProcessEnv).map_err(Failure::usage)?;
            init_logging(false, "warn");
            runtime()?.block_on(admin::create_enrollment_token(
                &store,
                &clock,
                ttl,
                uses,
                relink.as_deref(),
            ))
        }
        Command::Token(TokenCommand::Create {
            store,
            role,
            name,
            expires,
        }) => {
            let store = config::resolve_store_flags(&store, &ProcessEnv).map_err(Failure::usage)?;
            admin::validate_technician_name(&name).map_err(Failure::usage)?;
            init_logging(false, "warn");
            runtime()?.block_on(admin::create_api_token(
                &store, &clock, &name, role, expires,
            ))
        }
        Command::User(command) => {
            init_logging(false, "warn");
            let store_flags = match &command {
                UserCommand::Create { store, .. }
                | UserCommand::List { store }
                | UserCommand::Password { store, .. }
                | UserCommand::Delete { store, .. } => store,
            };
            let store =
                config::resolve_store_flags(store_flags, &ProcessEnv).map_err(Failure::usage)?;
            let runtime = runtime()?;
            match command {
                UserCommand::Create { name, role, .. } => {
                    runtime.block_on(admin::create_local_user(&store, &clock, &name, role))
                }
                UserCommand::List { .. } => {
                    runtime.block_on(admin::list_local_users(&store, &clock))
                }
                UserCommand::Password { name, .. } => {
                    runtime.block_on(admin::reset_local_password(&store, &clock, &name))
                }
                UserCommand::Delete { name, .. } => {
                    runtime.block_on(admin::delete_local_user(&store, &clock, &name))
                }
            }
        }
        Command::Ca(CaCommand::Export { store }) => {
            let store = config::resolve_store_flags(&store, &ProcessEnv).map_err(Failure::usage)?;
            init_logging(false, "warn");
            runtime()?.block_on(admin::export_ca(&store, &clock))
        }
        Command::Audit(AuditCommand::Verify { store }) => {
            let store = config::resolve_store_flags(&store, &ProcessEnv).map_err(Failure::usage)?;
            init_logging(false, "warn");
            runtime()?.block_on(admin::verify_audit(&store, &clock))
        }
        Command::Ca(CaCommand::Rotate { store, cert, key }) => {
            let store = config::resolve_store_flags(&store, &ProcessEnv).map_err(Failure::usage)?;
            init_logging(false, "warn");
            let files = cert.as_deref().zip(key.as_deref());
            runtime()?.block_on(admin::rotation::rotate(&store, &clock, files))
        }
        Command::Ca(CaCommand::Status { store }) => {
            let store = config::resolve_store_flags(&store, &ProcessEnv).map_err(Failure::usage)?;
            init_logging(false, "warn");
            runtime()?.block_on(admin::rotation::status(&store, &clock))
        }
        Command::Ca(CaCommand::Retire { store, force }) => {
            let store = config::resolve_store_flags(&store, &ProcessEnv).map_err(Failure::usage)?;
            init_logging(false, "warn");
            runtime()?.block_on(admin::rotation::retire(&store, &clock, force))
        }
        Command::Ca(CaCommand::Import { store, cert, key }) => {
            let store = config::resolve_store_flags(&store, &ProcessEnv).map_err(Failure::usage)?;
            init_logging(false, "warn");
            runtime()?.block_on(admin::import_ca(&store, &clock, &cert, &key))
        }
    }
}

async fn serve(config: config::ServeConfig, init: bool) -> CommandResult {
    let clock: SharedClock = deskpulse_collector::clock::serve_clock().map_err(Failure::usage)?;
    let (limits, open_files) =
        server::admission::ConnectionLimits::for_this_process(config.max_connections)
            .map_err(Failure::usage)?;
    // E-mail notifications' SMTP server: a bad setting stops here, before
    // any port is bound.
    let mailer = config
        .smtp
        .as_ref()
        .map(deskpulse_collector::mail::Mailer::new)
        .transpose()
        .map_err(Failure::usage)?;
    let dir = admin::open_for_serve(&config.store, clock.as_ref(), init).await?;
    let listener = server::bind(config.listen)
        .await
        .map_err(Failure::runtime)?;
    let web_listener = match config.web_listen {
        Some(addr) => Some(server::bind(addr).await.map_err(Failure::runtime)?),
        None => None,
    };
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let listener = deskpulse_collector::metrics::bind(addr)
                .await
                .map_err(Failure::runtime)?;
            let handle = deskpulse_collector::metrics::install().map_err(Failure::runtime)?;
            Some((listener, handle))
        }
        None => None,
    };
    let identity = dir
        .server_identity(&config.hostnames, clock.now_ms())
        .map_err(Failure::runtime)?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::runtime(format!("cannot read the bound address: {e}")))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    // Replicas sharing a PostgreSQL store reach each other's agents and
    // technicians through it; an embedded store has one collector.
    let dispatch = if deskpulse_collector::store::is_postgres_url(&config.store.database_url) {
        let relay = server::relay::Relay::connect(
            &config.store.database_url,
            &dir.replica_id,
            shutdown.clone(),
        )
        .await
        .map_err(|e| Failure::runtime(format!("cannot start the replica relay: {e}")))?;
        Arc::new(server::dispatch::Dispatch::with_relay(relay))
    } else {
        Arc::default()
    };
    let ctx = ServerContext {
        store: dir.store.clone(),
        clock,
        ca: Arc::new(server::rotation::LiveCas::new(dir.ca)),
        replica: dir.replica_id.clone(),
        shutdown,
        dispatch,
        audit: dir.audit.clone(),
    };
    tokio::spawn(panics::critical(
        "job dispatch",
        ctx.dispatch
            .clone()
            .follow(ctx.store.clone(), ctx.clock.clone(), ctx.shutdown.clone()),
    ));
    tracing::info!(%addr, data_dir = %config.store.data_dir.display(), "collector listening");

    server::admission::log_limits(&limits, open_files);
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening {addr}");
        // After the `listening` line, which tests and scripts read first.
        if let Some(web_addr) = web_listener.as_ref().and_then(|l| l.local_addr().ok()) {
            tracing::info!(%web_addr, "web console listening");
            let _ = writeln!(stdout, "web console https://{web_addr}/");
        }
        let _ = stdout.flush();
    }
    let writes = deskpulse_collector::ingest::WriteHealth::default();
    if let Some((listener, handle)) = metrics {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "metrics listening");
        }
        tokio::spawn(panics::critical(
            "metrics",
            deskpulse_collector::metrics::serve(
                listener,
                handle,
                ctx.store.clone(),
                writes.clone(),
                ctx.shutdown.clone(),
            ),
        ));
    }
    tokio::spawn(panics::critical(
        "history maintenance",
        server::maintain_history(ctx.clone(), config.retention),
    ));
    tokio::spawn(panics::critical(
        "rule timers",
        server::advance_rule_timers(ctx.clone()),
    ));
    // Webhooks go out from their own task: ingest and rules only write the
    // outbox, so a slow receiver never holds them up.
    if let Some(smtp) = &config.smtp {
        tracing::info!(host = %smtp.host, port = smtp.port, tls = ?smtp.tls, "e-mail notifications go through this SMTP server");
    }
    let deliverer =
        deskpulse_collector::webhooks::Deliverer::new(ctx.store.clone(), ctx.clock.clone())
            .with_mailer(mailer);
    tokio::spawn(panics::critical(
        "webhook delivery",
        deskpulse_collector::webhooks::run(deliverer, ctx.shutdown.clone()),
    ));
    // D28: the chain head is signed into the anchor file every minute (and
    // once more on shutdown), outside the database.
    let anchoring = tokio::spawn(panics::critical(
        "audit anchoring",
        deskpulse_collector::audit::run_anchoring(
            ctx.audit.clone(),
            ctx.store.clone(),
            ctx.clock.clone(),
            ctx.shutdown.clone(),
        ),
    ));
    let follow = server::rotation::CaFollow {
        data_dir: config.store.data_dir.clone(),
        hostnames: config.hostnames.clone(),
    };
    server::serve(
        ctx,
        writes,
        listener,
        web_listener,
        &identity,
        follow,
        limits,
        config.shutdown_grace,
    )
    .await
    .map_err(Failure::runtime)?;
    // The anchoring task signs the final head once shutdown is cancelled;
    // wait for it, briefly, so a clean stop leaves that anchor written.
    let _ = tokio::time::timeout(Duration::from_secs(5), anchoring).await;
    tracing::info!("collector stopped");
    Ok(())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown requested; draining");
    shutdown.cancel();
}
