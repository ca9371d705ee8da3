//! What every command that runs async code or logs needs, once: the tokio runtimes (a
//! single-threaded one for the CLI commands, which do one thing at a time against an async
//! store, and `with_store` on it; a multi-threaded one for the long-running servers), the stop signal of the daemons and
//! the stderr log subscriber.
use anyhow::Context;

/// A single-threaded runtime: the CLI does one thing at a time, and the store is async.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs `f` on the inventory of the CA in `dir` (on the CLI runtime), then closes the store:
/// how a CLI command reads or changes the inventory.
pub fn with_store<T>(
    dir: &std::path::Path,
    f: impl std::ops::AsyncFnOnce(&mutual_store::Store) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    runtime()?.block_on(async {
        let store = mutual_pki::ca::open_store(dir).await?;
        let r = f(&store).await;
        store.close().await;
        r
    })
}

/// A multi-threaded runtime for a server: `threads` workers (`None`: one per CPU).
pub fn server_runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let n = match threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(n)
        .thread_name("mutual-worker")
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

/// Resolves at SIGTERM or Ctrl-C: how a long-running command (`renew --daemon`, `agent`) is
/// told to stop. Call it inside the runtime; the handlers are installed before it returns.
pub fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install signal handlers")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
}

/// Logs to stderr as `text` or `json`, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a log file or a pipe gets no ANSI codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let b = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(filter);
    // try_init: a second initialisation (tests, demo) is harmless.
    let _ = if format == "json" {
        b.json().try_init()
    } else {
        b.try_init()
    };
}
