//! `mutual run --config FILE`: many listeners in one process, and reloading the config file
//! listener by listener. A reload first checks the whole new file (and loads every changed
//! listener's certificates, and binds every new address); only when all of that worked does
//! anything change, so a broken edit changes nothing. Then, per listener name:
//!
//! - same block: untouched (its own file watch keeps reloading its certificates, CRLs, policy);
//! - changed block, same address: the socket is kept, a new generation starts accepting on it,
//!   and the open connections are handed over and re-checked against the new policy and CRLs
//!   (live re-authorization: only peers no longer allowed are closed);
//! - changed address, or removed: the old listener stops accepting and drains (up to its
//!   `drain_timeout`, then its remaining connections are closed);
//! - added: started.
//!
//! A listener with enrollment keys (`ca_url`...) is enrolled (when its files do not hold a
//! valid certificate yet) and gets its renewal task through an [`Enroller`] before its files
//! are loaded, at start and whenever a reload adds or changes its block; the renewal task lives
//! and ends with that generation of the listener.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::config::{self, ListenerKind, ListenerSpec, RunConfig};
use crate::connect::Connect;
use crate::live::Registry;
use crate::reload::Reload;
use crate::serve::Serve;
use crate::shutdown::{self, Trigger};
use crate::{ProxyError, Shared};

/// One running generation of a listener.
struct Running {
    spec: ListenerSpec,
    /// A duplicate of the listening socket, so a new generation can accept on the same one.
    socket: std::net::TcpListener,
    stop: Trigger,
    task: JoinHandle<usize>,
    /// Serve listeners' open connections (None for connect).
    conns: Option<Arc<Registry>>,
    /// Triggers of earlier generations of this listener whose connections this one took over:
    /// kept alive (a dropped trigger reads as "drain"), fired when this generation drains.
    predecessors: Vec<Trigger>,
    _watcher: notify::RecommendedWatcher,
    /// The file/SIGHUP reload loop (see `reload::spawn_tracked`): awaited before this
    /// generation's series and readiness deadline are withdrawn.
    reload_loop: Option<JoinHandle<()>>,
    _renewal: Renewal,
}

/// Enrolls a listener that names an online CA (`ca_url`, `token_file`, `root_sha256`) into its
/// certificate and key files when they do not hold a valid certificate yet, and starts its
/// renewal. The binary implements it (mutual-enroll is beside this crate, not below it); the
/// supervisor calls it on a blocking thread, before the listener's files are loaded.
pub trait Enroller: Send + Sync {
    /// The renewal task of this listener (spawned on the current runtime), if any.
    fn enroll(&self, spec: &ListenerSpec) -> Result<Option<JoinHandle<()>>, ProxyError>;
}

/// A generation's renewal task: aborted when the generation is dropped (retired, replaced, or
/// never started because the reload failed), so a listener has one renewer at a time.
#[derive(Default)]
struct Renewal(Option<JoinHandle<()>>);

impl Drop for Renewal {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// The listeners of one process and the config file they come from.
pub struct Supervisor {
    path: PathBuf,
    shared: Shared,
    running: tokio::sync::Mutex<HashMap<String, Running>>,
    /// Generations that stopped accepting and are draining.
    draining: Mutex<Vec<JoinHandle<()>>>,
    /// The process-wide part of the file as first loaded (it cannot change without a restart).
    globals: String,
    enroller: Option<Arc<dyn Enroller>>,
}

/// A listener built and bound, not yet accepting.
struct Prepared {
    spec: ListenerSpec,
    socket: Option<tokio::net::TcpListener>,
    renewal: Renewal,
}

/// An error about one listener, with its name and line.
fn in_listener(spec: &ListenerSpec, e: ProxyError) -> ProxyError {
    ProxyError::InListener {
        listener: spec.name.clone(),
        line: spec.line,
        source: Box::new(e),
    }
}

fn globals_of(c: &RunConfig) -> String {
    format!(
        "{:?}{:?}{:?}{:?}",
        c.metrics, c.audit_log, c.threads, c.log_format
    )
}

/// Loads a listener's material without starting it (a reload is all or nothing).
pub fn check_listener(spec: &ListenerSpec) -> Result<(), ProxyError> {
    match &spec.kind {
        ListenerKind::Serve(cfg) => crate::serve::check(cfg),
        ListenerKind::Connect(cfg) => {
            cfg.material()?;
            Ok(())
        }
    }
}

async fn bind_dup(
    addr: &str,
) -> Result<(tokio::net::TcpListener, std::net::TcpListener), ProxyError> {
    let l = crate::bind(addr).await?;
    dup(l)
}

fn dup(
    l: tokio::net::TcpListener,
) -> Result<(tokio::net::TcpListener, std::net::TcpListener), ProxyError> {
    let std = l.into_std()?;
    let keep = std.try_clone()?;
    Ok((tokio::net::TcpListener::from_std(std)?, keep))
}

impl Supervisor {
    /// Starts every listener of `cfg` (loaded from `path`), enrolling those with enrollment
    /// keys through `enroller` first. Any failure: nothing keeps running.
    pub async fn start(
        path: &Path,
        cfg: RunConfig,
        shared: &Shared,
        enroller: Option<Arc<dyn Enroller>>,
    ) -> Result<Arc<Supervisor>, ProxyError> {
        let sup = Arc::new(Supervisor {
            path: path.to_path_buf(),
            shared: shared.clone(),
            running: tokio::sync::Mutex::new(HashMap::new()),
            draining: Mutex::new(Vec::new()),
            globals: globals_of(&cfg),
            enroller,
        });
        let mut running = sup.running.lock().await;
        for spec in cfg.listeners {
            let renewal = sup.enroll(&spec).await?;
            let (l, keep) = bind_dup(&spec.listen).await?;
            let r = sup.launch(spec, l, keep, None, renewal)?;
            running.insert(r.spec.name.clone(), r);
        }
        drop(running);
        Ok(sup)
    }

    /// The config file this supervisor reloads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The addresses listeners are bound to, by name (useful with port 0).
    pub async fn local_addrs(&self) -> Vec<(String, std::net::SocketAddr)> {
        let running = self.running.lock().await;
        let mut v: Vec<_> = running
            .iter()
            .filter_map(|(n, r)| r.socket.local_addr().ok().map(|a| (n.clone(), a)))
            .collect();
        v.sort();
        v
    }

    /// Enrolls `spec` when it has enrollment keys (on a blocking thread: enrolling waits for
    /// the CA) and returns its renewal task.
    async fn enroll(&self, spec: &ListenerSpec) -> Result<Renewal, ProxyError> {
        let (Some(enroller), Some(_)) = (&self.enroller, &spec.enroll) else {
            return Ok(Renewal::default());
        };
        let (enroller, spec2) = (Arc::clone(enroller), spec.clone());
        let task = tokio::task::spawn_blocking(move || enroller.enroll(&spec2))
            .await
            .map_err(|e| ProxyError::Io(std::io::Error::other(e)))?
            .map_err(|e| in_listener(spec, e))?;
        Ok(Renewal(task))
    }

    fn launch(
        &self,
        spec: ListenerSpec,
        listener: tokio::net::TcpListener,
        socket: std::net::TcpListener,
        conns: Option<Arc<Registry>>,
        renewal: Renewal,
    ) -> Result<Running, ProxyError> {
        let (stop, sd) = shutdown::channel();
        let metrics = Arc::clone(&self.shared.metrics);
        let (task, (watcher, reload_loop), conns) = match &spec.kind {
            ListenerKind::Serve(cfg) => {
                let s = Serve::with_registry((**cfg).clone(), &self.shared, conns)?;
                let conns = Arc::clone(s.registry());
                let w = crate::reload::spawn_tracked(
                    Arc::clone(&s) as Arc<dyn Reload>,
                    metrics,
                    sd.clone(),
                )?;
                (tokio::spawn(s.run(listener, sd)), w, Some(conns))
            }
            ListenerKind::Connect(cfg) => {
                let c = Connect::new((**cfg).clone(), &self.shared)?;
                let w = crate::reload::spawn_tracked(
                    Arc::clone(&c) as Arc<dyn Reload>,
                    metrics,
                    sd.clone(),
                )?;
                (tokio::spawn(c.run(listener, sd)), w, None)
            }
        };
        Ok(Running {
            spec,
            socket,
            stop,
            task,
            conns,
            predecessors: Vec::new(),
            _watcher: watcher,
            reload_loop: Some(reload_loop),
            _renewal: renewal,
        })
    }

    /// Stops a generation's accepting and file watching; when `drain`, its open connections get
    /// the drain timeout and are then closed (a removed or moved listener). Otherwise they were
    /// handed to the next generation and live on.
    /// The new generation `new` takes `old`'s open connections: `old` stops accepting and
    /// leaves them running (TCP and HTTP alike: an HTTP keep-alive connection is not told to
    /// close), until `new` itself drains.
    fn hand_over(&self, old: Running, new: &mut Running) {
        old.stop.hand_over();
        let name = old.spec.name.clone();
        let task = old.task;
        new.predecessors.extend(old.predecessors);
        new.predecessors.push(old.stop);
        let h = tokio::spawn(async move {
            let left = task.await.unwrap_or(0);
            if left > 0 {
                tracing::debug!(listener = %name, "{left} connection(s) handed to the new generation");
            }
        });
        if let Ok(mut d) = self.draining.lock() {
            d.retain(|h| !h.is_finished());
            d.push(h);
        }
    }

    fn retire(&self, r: Running, drain: bool) {
        r.stop.fire();
        for p in &r.predecessors {
            p.fire();
        }
        let name = r.spec.name.clone();
        let conns = r.conns;
        let task = r.task;
        let h = tokio::spawn(async move {
            let left = task.await.unwrap_or(0);
            if drain {
                if let Some(c) = conns {
                    let n = c.drain_all();
                    if n > 0 {
                        tracing::info!(listener = %name, "drain timeout: closed {n} connection(s)");
                    }
                }
            } else if left > 0 {
                tracing::debug!(listener = %name, "{left} connection(s) handed to the new generation");
            }
        });
        if let Ok(mut d) = self.draining.lock() {
            d.retain(|h| !h.is_finished());
            d.push(h);
        }
    }

    /// Re-reads the config file and applies it listener by listener. On any error nothing
    /// changes and the error (with every line) is returned.
    pub async fn reload(&self) -> Result<(), ProxyError> {
        let cfg = config::load(&self.path)?;
        if globals_of(&cfg) != self.globals {
            tracing::warn!(
                "metrics, audit_log, threads and log_format changes take effect after a restart"
            );
        }
        let names: std::collections::HashSet<String> =
            cfg.listeners.iter().map(|l| l.name.clone()).collect();
        let mut running = self.running.lock().await;
        // Phase 1: check and bind everything that changes; any error: nothing has changed.
        let mut prepared = Vec::new();
        for spec in cfg.listeners {
            let old = running.get(&spec.name);
            if old.is_some_and(|o| o.spec.fingerprint() == spec.fingerprint()) {
                continue;
            }
            // A new or changed block that enrolls: before its files are loaded.
            let renewal = self.enroll(&spec).await?;
            let spec2 = spec.clone();
            tokio::task::spawn_blocking(move || check_listener(&spec2))
                .await
                .map_err(|e| ProxyError::Io(std::io::Error::other(e)))?
                .map_err(|e| in_listener(&spec, e))?;
            let same_addr = old.is_some_and(|o| o.spec.listen == spec.listen);
            let socket = if same_addr {
                None
            } else {
                Some(crate::bind(&spec.listen).await?)
            };
            prepared.push(Prepared {
                spec,
                socket,
                renewal,
            });
        }
        // Phase 2: swap.
        for p in prepared {
            let name = p.spec.name.clone();
            let mut old = running.remove(&name);
            let old_loop = old.as_mut().and_then(|o| o.reload_loop.take());
            // The old generation's role, when the block changed kind (serve <-> connect): its
            // series goes once the new generation is running.
            let stale_role = old
                .as_ref()
                .map(|o| o.spec.cert_role())
                .filter(|r| *r != p.spec.cert_role());
            let result = match (old, p.socket) {
                (Some(old), None) => {
                    // Same address: keep the socket; hand the open connections over when both
                    // generations are serve listeners.
                    let (l, keep) =
                        match old
                            .socket
                            .try_clone()
                            .map_err(ProxyError::from)
                            .and_then(|s| {
                                s.set_nonblocking(true)?;
                                dup(tokio::net::TcpListener::from_std(s)?)
                            }) {
                            Ok(x) => x,
                            Err(e) => {
                                running.insert(name, old);
                                return Err(e);
                            }
                        };
                    let handover = matches!(p.spec.kind, ListenerKind::Serve(_))
                        .then(|| old.conns.clone())
                        .flatten();
                    // A connect listener's connections need no registry to carry on.
                    let handed = handover.is_some()
                        || (matches!(p.spec.kind, ListenerKind::Connect(_))
                            && matches!(old.spec.kind, ListenerKind::Connect(_)));
                    match self.launch(p.spec, l, keep, handover, p.renewal) {
                        Ok(mut r) => {
                            if handed {
                                self.hand_over(old, &mut r);
                            } else {
                                self.retire(old, true);
                            }
                            Ok(r)
                        }
                        Err(e) => {
                            running.insert(name.clone(), old);
                            Err(e)
                        }
                    }
                }
                (old, Some(l)) => {
                    let (l, keep) = dup(l)?;
                    match self.launch(p.spec, l, keep, None, p.renewal) {
                        Ok(r) => {
                            if let Some(old) = old {
                                self.retire(old, true);
                            }
                            Ok(r)
                        }
                        Err(e) => {
                            if let Some(old) = old {
                                running.insert(name.clone(), old);
                            }
                            Err(e)
                        }
                    }
                }
                (None, None) => continue, // unreachable: a new name always gets a socket
            };
            match result {
                Ok(r) => {
                    tracing::info!(listener = %name, "listener (re)started from the config file");
                    if let Some(role) = stale_role {
                        if let Some(l) = old_loop {
                            let _ = l.await;
                        }
                        self.shared.metrics.forget_cert_expiry(&name, role);
                    }
                    running.insert(name, r);
                }
                Err(e) => {
                    tracing::error!(listener = %name, "cannot start the new listener, keeping the old one: {e}");
                    return Err(e);
                }
            }
        }
        let removed: Vec<String> = running
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for name in removed {
            if let Some(mut r) = running.remove(&name) {
                tracing::info!(listener = %name, "listener removed from the config file: draining");
                let role = r.spec.cert_role();
                let reload_loop = r.reload_loop.take();
                self.retire(r, true);
                // Its reload loop has stopped (and any reload it was running has published)
                // before its series and deadline go: nothing can bring them back.
                if let Some(l) = reload_loop {
                    let _ = l.await;
                }
                self.shared.metrics.forget_cert_expiry(&name, role);
                self.shared
                    .metrics
                    .ready
                    .forget_deadline(&format!("certificate {name}"));
            }
        }
        Ok(())
    }

    /// Stops every listener and waits for their drains (each up to its drain timeout).
    /// Returns the connections still open.
    pub async fn shutdown(&self) -> usize {
        let mut running = self.running.lock().await;
        let mut tasks = Vec::new();
        let mut handed_over = Vec::new();
        let start = tokio::time::Instant::now();
        for (_, r) in running.drain() {
            r.stop.fire();
            for p in &r.predecessors {
                p.fire();
            }
            tasks.push(r.task);
            if let (Some(c), ListenerKind::Serve(cfg)) = (r.conns, &r.spec.kind) {
                handed_over.push((c, cfg.limits.drain_timeout));
            }
        }
        drop(running);
        let mut left = 0;
        for t in tasks {
            left += t.await.unwrap_or(0);
        }
        // Connections handed over from an earlier generation (a changed block) are not in the
        // current generation's drain count: give them the same drain timeout via the registry.
        for (c, drain) in handed_over {
            while !c.is_empty() && start.elapsed() < drain {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            if !c.is_empty() {
                // Drain timeout: end them so each writes its audit line before the exit.
                c.drain_all();
                let grace = tokio::time::Instant::now();
                while !c.is_empty() && grace.elapsed() < std::time::Duration::from_secs(2) {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
            left = left.max(c.len());
        }
        let draining: Vec<_> = match self.draining.lock() {
            Ok(mut d) => d.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for d in draining {
            d.abort();
        }
        left
    }
}

/// The config file as a reload target: file watching (its directory), SIGHUP, debounce and the
/// `mutual_config_reloads_total` counter come from [`crate::reload`].
pub struct ConfigReload {
    pub sup: Arc<Supervisor>,
    pub handle: tokio::runtime::Handle,
}

impl Reload for ConfigReload {
    fn reload(&self) -> Result<(), ProxyError> {
        // Runs on a blocking thread (reload::spawn), where blocking on the runtime is allowed.
        self.handle.block_on(self.sup.reload())
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        vec![self.sup.path.clone()]
    }

    fn name(&self) -> &str {
        "config"
    }
}
