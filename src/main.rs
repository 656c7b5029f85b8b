//! The `ringmq` binary: flags → [`ringmq::config::Config`] → broker.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("passwd") {
        std::process::exit(ringmq::auth::passwd::main(&args[2..]));
    }
    let loaded = match ringmq::cli::Cli::load(&args) {
        Ok(l) => l,
        Err(ringmq::cli::CliError::Flags(e)) => e.exit(),
        Err(ringmq::cli::CliError::File(e)) => {
            eprintln!("ringmq: {e}");
            std::process::exit(2);
        }
    };
    if loaded.cli.print_config {
        print!("{}", loaded.render());
        return;
    }
    let cli = loaded.cli;
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level).unwrap_or_else(|e| {
        eprintln!("ringmq: --log-level '{}': {e}", cli.log_level);
        std::process::exit(2);
    });
    // Logs go to stderr; stdout carries only the "listening on" lines.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringmq: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = ringmq::broker::run(config) {
        eprintln!("ringmq: {e}");
        std::process::exit(1);
    }
}
