//! Hot reload, as linkerd does it: when a watched file changes (or on SIGHUP), build the whole new
//! configuration first; publish it only if every file loaded and checked. A bad or half-written
//! file keeps the old configuration, is logged (without secrets) and counted in
//! `mutual_config_reloads_total{result="failure"}`; the next change is tried again. New handshakes
//! use the new material. Established connections keep the material they were accepted with,
//! unless the new policy or CRLs no longer allow their peer: live re-authorization (`live.rs`)
//! then ends them (audited, counted in `mutual_authz_terminated_total`).
//!
//! The parent directories are watched, not the files, so replacement by rename (`mv new cert.pem`,
//! Kubernetes' `..data` symlink swap) is seen as well as writes in place. Events are debounced so a
//! burst (truncate + write + chmod, or cert then key) becomes one reload.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::ProxyError;

/// How long the files must be quiet before a reload is attempted.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Something whose configuration can be rebuilt from its files and published atomically.
pub trait Reload: Send + Sync + 'static {
    /// Rebuilds from the files and publishes; on error nothing changes.
    fn reload(&self) -> Result<(), ProxyError>;
    /// The files that feed the configuration.
    fn watched_files(&self) -> Vec<PathBuf>;
    /// For log lines.
    fn name(&self) -> &str;
}

/// Starts watching `target`'s files and SIGHUP; runs until `shutdown`. The returned watcher must
/// be kept alive (dropping it stops file events; SIGHUP keeps working).
pub fn spawn(
    target: Arc<dyn Reload>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> Result<notify::RecommendedWatcher, ProxyError> {
    spawn_tracked(target, metrics, shutdown).map(|(w, _)| w)
}

/// [`spawn`], also returning the reload loop's task: it ends once `shutdown` has fired and any
/// reload already running has finished, so a supervisor that removes a listener can wait for it
/// before withdrawing what that listener publishes (its expiry series, its readiness deadline),
/// and a late reload of the removed listener cannot publish them again.
pub fn spawn_tracked(
    target: Arc<dyn Reload>,
    metrics: Arc<Metrics>,
    mut shutdown: Shutdown,
) -> Result<(notify::RecommendedWatcher, tokio::task::JoinHandle<()>), ProxyError> {
    let files = target.watched_files();
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let (dirs, names) = watch_set(&files);
    let names = Arc::new(names);
    let names_cb = Arc::clone(&names);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = ev.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| names_cb.contains(n) || n.to_string_lossy().starts_with("..data"))
        });
        if relevant {
            let _ = tx.send(());
        }
    })
    .map_err(|e| ProxyError::Watch {
        path: files.first().cloned().unwrap_or_default(),
        detail: e.to_string(),
    })?;
    for d in &dirs {
        watcher
            .watch(d, RecursiveMode::NonRecursive)
            .map_err(|e| ProxyError::Watch {
                path: d.clone(),
                detail: e.to_string(),
            })?;
    }
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut pushed = pushes(&files, &shutdown);
    let task = tokio::spawn(async move {
        loop {
            let why = tokio::select! {
                // Shutdown first: a stopped listener never starts another reload.
                biased;
                _ = shutdown.wait() => return,
                ev = rx.recv() => {
                    if ev.is_none() { return; }
                    // Debounce: wait until the files have been quiet for DEBOUNCE.
                    loop {
                        match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                            Ok(Some(())) => continue,
                            Ok(None) => return,
                            Err(_) => break,
                        }
                    }
                    "file change"
                },
                _ = hup.recv() => "SIGHUP",
                Some(()) = pushed.recv() => "workload api",
            };
            let t = Arc::clone(&target);
            // Loading files and parsing keys is blocking work: keep it off the async workers.
            let res = tokio::task::spawn_blocking(move || t.reload()).await;
            match res {
                Ok(Ok(())) => {
                    metrics.reload(true);
                    tracing::info!(
                        listener = target.name(),
                        trigger = why,
                        "configuration reloaded"
                    );
                }
                Ok(Err(e)) => {
                    metrics.reload(false);
                    tracing::warn!(
                        listener = target.name(),
                        trigger = why,
                        "reload failed, keeping the previous configuration: {e}"
                    );
                }
                Err(e) => {
                    metrics.reload(false);
                    tracing::error!(listener = target.name(), "reload task failed: {e}");
                }
            }
        }
    });
    Ok((watcher, task))
}

/// One message per push of material from the Workload API to any of `files`' memory sources
/// ([`mutual_tls::memory`]): a push triggers a reload as a file change does, without debounce
/// (the three items arrive together).
fn pushes(files: &[PathBuf], shutdown: &Shutdown) -> mpsc::UnboundedReceiver<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let sources: BTreeSet<String> = files
        .iter()
        .filter_map(|f| mutual_tls::memory::source_of(f))
        .collect();
    for src in sources {
        let mut gen = mutual_tls::memory::subscribe(&src);
        let (tx, mut sd) = (tx.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = sd.wait() => return,
                    r = gen.changed() => {
                        if r.is_err() || tx.send(()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    rx
}

/// Parent directories to watch and file names to react to.
fn watch_set(files: &[PathBuf]) -> (BTreeSet<PathBuf>, BTreeSet<OsString>) {
    let mut dirs = BTreeSet::new();
    let mut names = BTreeSet::new();
    // A key in a PKCS#11 token (`--key pkcs11:...`) is no file to watch.
    // Nor is material pushed by the Workload API ([`pushes`]).
    for f in files
        .iter()
        .filter(|f| !mutual_tls::load::is_pkcs11(f) && !mutual_tls::memory::is_memory(f))
    {
        let parent = match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => Path::new(".").to_path_buf(),
        };
        dirs.insert(parent.canonicalize().unwrap_or(parent));
        if let Some(n) = f.file_name() {
            names.insert(n.to_os_string());
        }
    }
    (dirs, names)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        files: Vec<PathBuf>,
        ok: AtomicUsize,
        fail: AtomicUsize,
    }

    impl Reload for Counting {
        fn reload(&self) -> Result<(), ProxyError> {
            let text = std::fs::read_to_string(&self.files[0])?;
            if text.starts_with("good") {
                self.ok.fetch_add(1, Ordering::SeqCst);
                Ok(())
            } else {
                self.fail.fetch_add(1, Ordering::SeqCst);
                Err(ProxyError::NoPolicy)
            }
        }
        fn watched_files(&self) -> Vec<PathBuf> {
            self.files.clone()
        }
        fn name(&self) -> &str {
            "t"
        }
    }

    /// Polls `f` for up to 60 s: an upper bound for a loaded machine, not a delay.
    async fn until(f: impl Fn() -> bool) -> bool {
        for _ in 0..2400 {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    #[tokio::test]
    async fn reloads_on_write_and_rename_and_counts_failures() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cert.pem");
        std::fs::write(&f, "good 0").unwrap();
        std::fs::write(dir.path().join("other"), "x").unwrap();
        let t = Arc::new(Counting {
            files: vec![f.clone()],
            ok: AtomicUsize::new(0),
            fail: AtomicUsize::new(0),
        });
        let m = Arc::new(Metrics::new());
        let (_trig, sd) = crate::shutdown::channel();
        let _w = spawn(t.clone(), Arc::clone(&m), sd).unwrap();

        std::fs::write(&f, "good 1").unwrap();
        assert!(until(|| t.ok.load(Ordering::SeqCst) == 1).await);

        let tmp = dir.path().join("cert.pem.tmp");
        std::fs::write(&tmp, "good 2").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert!(until(|| t.ok.load(Ordering::SeqCst) == 2).await);

        std::fs::write(&f, "garbage").unwrap();
        assert!(until(|| t.fail.load(Ordering::SeqCst) == 1).await);
        // The loop counts the failure after the reload returns: wait for it rather than race it.
        assert!(
            until(|| m
                .encode()
                .contains("mutual_config_reloads_total{result=\"failure\"} 1"))
            .await
        );

        // Unrelated files in the same directory do not trigger reloads.
        let before = t.ok.load(Ordering::SeqCst) + t.fail.load(Ordering::SeqCst);
        std::fs::write(dir.path().join("other"), "y").unwrap();
        tokio::time::sleep(DEBOUNCE * 3).await;
        assert_eq!(
            t.ok.load(Ordering::SeqCst) + t.fail.load(Ordering::SeqCst),
            before
        );
    }
}
