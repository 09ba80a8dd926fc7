//! The `harrier` binary: arguments, config, run, exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use harrier::config::Config;

const USAGE: &str = "\
harrier: a DogStatsD-compatible metrics aggregation server

USAGE:
    harrier [--config FILE]
    harrier --validate-config [--config FILE]
    harrier --validate-config-strict [--config FILE]
    harrier --print-config [--config FILE]

OPTIONS:
    -f, --config FILE       YAML configuration (see config.example.yaml). Without it: a local server on
                            udp://127.0.0.1:8125 printing each 10 s flush to stdout.
        --validate-config   Load and check the configuration, then exit: 0 if valid, 1 with the reason if not.
                            Veneur config files are read too; settings Harrier ignores are listed as warnings.
        --validate-config-strict
                            The same, but also exit 1 when there are such warnings.
        --print-config      Print the effective configuration (file, then VENEUR_ and HARRIER_ variables) as
                            YAML, secrets redacted, and exit.
    -V, --version           Print the version and exit.
    -h, --help              Print this help and exit.

Every config key can be overridden with an environment variable HARRIER_<KEY>, e.g. HARRIER_INTERVAL=5s, or as
Veneur reads them, VENEUR_<KEY WITHOUT UNDERSCORES> (e.g. VENEUR_DATADOGAPIKEY); HARRIER_ ones win.
";

struct Args {
    config: Option<PathBuf>,
    validate_only: bool,
    strict: bool,
    print: bool,
}

enum Parsed {
    Run(Args),
    Exit(ExitCode),
}

fn parse_args() -> Parsed {
    let mut args = Args {
        config: None,
        validate_only: false,
        strict: false,
        print: false,
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        let arg = arg.to_string_lossy().into_owned();
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "-f" | "--config" | "-config" => {
                let value = inline.map(PathBuf::from).or_else(|| it.next().map(PathBuf::from));
                match value {
                    Some(v) => args.config = Some(v),
                    None => {
                        eprintln!("harrier: {flag} needs a file name\n\n{USAGE}");
                        return Parsed::Exit(ExitCode::from(2));
                    }
                }
            }
            "--validate-config" | "-validate-config" => args.validate_only = true,
            "--print-config" | "-print-config" => args.print = true,
            "--validate-config-strict" | "-validate-config-strict" => {
                args.validate_only = true;
                args.strict = true;
            }
            "-V" | "--version" => {
                println!("harrier {}", harrier::VERSION);
                return Parsed::Exit(ExitCode::SUCCESS);
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return Parsed::Exit(ExitCode::SUCCESS);
            }
            other => {
                eprintln!("harrier: unknown argument {other:?}\n\n{USAGE}");
                return Parsed::Exit(ExitCode::from(2));
            }
        }
    }
    Parsed::Run(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Parsed::Run(a) => a,
        Parsed::Exit(code) => return code,
    };
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("harrier: invalid configuration: {e}");
            return ExitCode::from(1);
        }
    };
    if args.print {
        print!("{}", config.to_redacted_yaml());
        return ExitCode::SUCCESS;
    }
    if args.validate_only {
        for w in &config.warnings {
            eprintln!("harrier: warning: {w}");
        }
        let source = args
            .config
            .as_deref()
            .map_or("(defaults)".into(), |p| p.display().to_string());
        if args.strict && !config.warnings.is_empty() {
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
        .worker_threads(config.num_workers.clamp(1, 4))
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
