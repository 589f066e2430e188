//! The `shardlog` command.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shardlog_stream::{Engine, EngineOptions};

#[derive(Parser, Debug)]
#[command(
    name = "shardlog",
    version,
    about = "A durable, Kinesis-compatible log storage engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the Kinesis Data Streams API.
    Serve {
        /// Data directory (created if missing).
        #[arg(long, env = "SHARDLOG_DATA_DIR", default_value = "data/local")]
        data_dir: PathBuf,
        /// Address and port to listen on.
        #[arg(long, env = "SHARDLOG_LISTEN", default_value = "127.0.0.1:4567")]
        listen: SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHARDLOG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { data_dir, listen } => serve(data_dir, listen),
    }
}

fn serve(data_dir: PathBuf, listen: SocketAddr) -> anyhow::Result<()> {
    let engine = Engine::open(&data_dir, EngineOptions::default())
        .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let (listener, addr) = shardlog_server::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (is another server running there?)"))?;
        tracing::info!(%addr, data_dir = %data_dir.display(), "shardlog serving the Kinesis API");
        shardlog_server::serve(listener, engine, shutdown_signal())
            .await
            .context("server failed")?;
        tracing::info!("stopped; logs are synced");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
