use clap::Parser;

fn main() {
    let cli = hookline::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOOKLINE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    match hookline::cli::main(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
