//! Entry point: flags, logging, the runtime, Ctrl-C, exit codes.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use xorrent::cli::{self, Cli};

fn main() -> ExitCode {
    let args = Cli::parse();
    if let Err(e) = args.validate() {
        e.exit();
    }
    raise_fd_limit();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match &args.log {
        Some(f) => tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_new(f)
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(cli::LogWriter)
            .with_ansi(ansi)
            .init(),
        // Without --log, warnings read like the rest of the output.
        None => tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_writer(cli::LogWriter)
            .with_ansi(false)
            .event_format(cli::PlainLog)
            .init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cancel = CancellationToken::new();
    let result = runtime.block_on(async {
        let c = cancel.clone();
        tokio::spawn(async move {
            // First Ctrl-C or SIGTERM: stop cleanly. Second: leave at once.
            if stop_signal().await {
                eprintln!("\nstopping (Ctrl-C again to quit at once)...");
                c.cancel();
                if stop_signal().await {
                    std::process::exit(130);
                }
            }
        });
        cli::run(args, cancel).await
    });
    // Blocking hash workers may still hold pieces; don't wait on them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::error_text(&e));
            ExitCode::from(cli::exit_code(&e))
        }
    }
}

/// Ctrl-C (SIGINT) or SIGTERM; false if neither can be watched.
async fn stop_signal() -> bool {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return tokio::signal::ctrl_c().await.is_ok();
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.is_ok(),
        r = term.recv() => r.is_some(),
    }
}

/// Many torrents mean many open files: take the hard limit on file
/// descriptors, as servers do (the soft default, 1024, is not enough).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
