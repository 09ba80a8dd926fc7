//! The `harrier` binary: arguments, config, run, exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use harrier::config::Config;

/// A DogStatsD-compatible metrics aggregation server.
///
/// Every config key can be overridden with an environment variable HARRIER_<KEY>, e.g. HARRIER_INTERVAL=5s, or as
/// Veneur reads them, VENEUR_<KEY WITHOUT UNDERSCORES> (e.g. VENEUR_DATADOGAPIKEY); HARRIER_ ones win.
#[derive(Debug, Parser)]
#[command(name = "harrier", version, about, long_about = None, after_help = ENV_HELP)]
#[command(args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// YAML configuration (see config.example.yaml; Veneur's files work too). Without it: a local server on
    /// udp://127.0.0.1:8125 printing each 10 s flush to stdout.
    #[arg(short = 'f', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Load and check the configuration, then exit: 0 if valid (settings Harrier ignores are listed as
    /// warnings), 1 with the reason if not.
    #[arg(long)]
    validate_config: bool,
    /// The same, but also exit 1 when there are such warnings.
    #[arg(long)]
    validate_config_strict: bool,
    /// Print the effective configuration (file, then VENEUR_ and HARRIER_ variables) as YAML, secrets redacted,
    /// and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Debug, Subcommand)]
// Parsed once at start: the size of the largest variant (emit's many flags) costs nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    Emit(harrier::client::EmitArgs),
    Top(harrier::top::TopArgs),
    Capture(harrier::capture::cli::CaptureArgs),
    Replay(harrier::capture::cli::ReplayArgs),
}

const ENV_HELP: &str = "Every config key can be overridden with an environment variable HARRIER_<KEY>, e.g. \
HARRIER_INTERVAL=5s, or as Veneur reads them, VENEUR_<KEY WITHOUT UNDERSCORES> (e.g. VENEUR_DATADOGAPIKEY); \
HARRIER_ ones win.";

/// Veneur's flags are Go-style, with one dash (`-f`, `-validate-config`): they are accepted as written, up to a
/// subcommand (`emit`, `top`, `capture`, `replay`: whose arguments are left as they are).
fn arguments() -> Vec<std::ffi::OsString> {
    let mut subcommand = false;
    let mut after_config_flag = false;
    std::env::args_os()
        .enumerate()
        .map(|(i, a)| {
            let s = a.to_str();
            let value_of_config =
                std::mem::replace(&mut after_config_flag, matches!(s, Some("-f" | "--config" | "-config")));
            if i == 0 || subcommand {
                return a;
            }
            match s {
                Some(name) if SUBCOMMANDS.contains(&name) && !value_of_config => {
                    subcommand = true;
                    a
                }
                Some("-config" | "-validate-config" | "-validate-config-strict" | "-print-config") => {
                    format!("-{}", a.to_string_lossy()).into()
                }
                _ => a,
            }
        })
        .collect()
}

/// The subcommands, whose arguments [`arguments`] leaves as they are.
const SUBCOMMANDS: [&str; 4] = ["emit", "top", "capture", "replay"];

/// `harrier top`: 0 done, 2 bad usage (by clap), 1 the table could not be fetched or shown.
fn top(args: &harrier::top::TopArgs) -> ExitCode {
    match harrier::top::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harrier top: {e}");
            ExitCode::from(1)
        }
    }
}

/// `harrier capture`: 0 captured, 2 bad usage (by clap), 1 failed.
fn capture(args: &harrier::capture::cli::CaptureArgs) -> ExitCode {
    match harrier::capture::cli::capture(args) {
        Ok(s) => {
            eprintln!(
                "harrier capture: {} records ({} bytes of payload) in {} ({} bytes)",
                s.records,
                s.bytes,
                args.output.display(),
                s.file_bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harrier capture: {e}");
            ExitCode::from(1)
        }
    }
}

/// `harrier replay`: 0 sent, 2 bad usage (by clap), 1 failed (what was sent before is reported).
fn replay(args: &harrier::capture::cli::ReplayArgs) -> ExitCode {
    let report = |s: &harrier::capture::cli::Summary| {
        let skipped = if s.too_large > 0 {
            format!(", {} too large for a datagram skipped", s.too_large)
        } else {
            String::new()
        };
        eprintln!(
            "harrier replay: sent {} records ({} bytes) to {}{skipped}",
            s.records, s.bytes, args.to
        );
    };
    match harrier::capture::cli::replay(args, report) {
        Ok(s) => {
            report(&s);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harrier replay: {e}");
            ExitCode::from(1)
        }
    }
}

/// `harrier emit`: 0 sent, 2 bad usage (nothing sent), 1 not sent.
fn emit(args: &harrier::client::EmitArgs) -> ExitCode {
    let (target, message) = match harrier::client::build(args) {
        Ok(built) => built,
        Err(e) => {
            eprintln!("harrier emit: {e}");
            return ExitCode::from(2);
        }
    };
    let line = message.line();
    match harrier::client::send(&target, &line, std::time::Duration::from_secs(5)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harrier emit: cannot send to {target}: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    // Before any other thread starts (the runtime's, the workers').
    harrier::allocator::return_freed_memory();
    let args = Args::parse_from(arguments());
    match &args.command {
        Some(Command::Emit(emit_args)) => return emit(emit_args),
        Some(Command::Top(top_args)) => return top(top_args),
        Some(Command::Capture(capture_args)) => return capture(capture_args),
        Some(Command::Replay(replay_args)) => return replay(replay_args),
        None => {}
    }
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("harrier: invalid configuration: {e}");
            return ExitCode::from(1);
        }
    };
    if args.print_config {
        print!("{}", config.to_redacted_yaml());
        return ExitCode::SUCCESS;
    }
    if args.validate_config || args.validate_config_strict {
        for w in &config.warnings {
            eprintln!("harrier: warning: {w}");
        }
        let source = args
            .config
            .as_deref()
            .map_or("(defaults)".into(), |p| p.display().to_string());
        if args.validate_config_strict && !config.warnings.is_empty() {
            eprintln!("harrier: configuration {source} has warnings (strict validation)");
            return ExitCode::from(1);
        }
        println!("harrier: configuration {source} is valid");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = harrier::logging::init(config.log_format, &config.log_level) {
        eprintln!("harrier: {e}");
        return ExitCode::from(1);
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Flushes, sink encoding, forwarding, imports, HTTP: up to 4 threads, at most one per core.
        .worker_threads(std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4))
        .thread_name("harrier-io")
        .on_thread_start(harrier::pipeline::background_priority)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(run(config));
    // A sink still blocked (e.g. stdout piped to a reader that stopped reading) must not hold the exit: the final
    // flush was already bounded by one interval.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

async fn run(config: Config) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let interval = config.interval;
    let server = match harrier::server::start(config, Vec::new()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let listening: Vec<String> = server.addresses.iter().map(ToString::to_string).collect();
    tracing::info!(
        "harrier {}: listening on {}; flushing every {interval:?}",
        harrier::VERSION,
        listening.join(", ")
    );
    if let Some(grpc) = server.grpc_address {
        tracing::info!("gRPC imports on {grpc}");
    }
    if let Some(http) = server.http_address {
        tracing::info!("HTTP on {http}");
    }
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{which}: stopping, with a final flush");
    server.shutdown().await;
    ExitCode::SUCCESS
}
