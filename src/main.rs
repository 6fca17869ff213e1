use clap::Parser;

/// Every event is parsed, mapped and sent as a tree of small allocations: glibc's allocator took
/// over a third of the instructions per delivered event (callgrind), mimalloc far less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = hookline::cli::Cli::parse();
    let tracer = match hookline::telemetry::provider() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = init_logs(tracer.as_ref()) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let code = match hookline::cli::main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    if let Some(tracer) = tracer {
        // The last spans are exported before the process ends.
        let _ = tracer.shutdown();
    }
    std::process::exit(code);
}

/// Logs to stderr (`HOOKLINE_LOG` filters them), and Hookline's own spans to OpenTelemetry when
/// it is configured, whatever the log level.
fn init_logs(tracer: Option<&opentelemetry_sdk::trace::SdkTracerProvider>) -> Result<(), String> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKLINE_LOG")
        .unwrap_or_else(|_| "info".into());
    // Colour only for a person at a terminal: not in a file, a pipe or a log shipper, and never
    // with NO_COLOR set (no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let logs = match std::env::var("HOOKLINE_LOG_FORMAT").as_deref() {
        // One JSON object per line, for log shippers.
        Ok("json") => fmt.json().flatten_event(true).with_filter(filter).boxed(),
        Ok("text") | Ok("") | Err(_) => fmt.with_filter(filter).boxed(),
        Ok(other) => {
            return Err(format!(
                "HOOKLINE_LOG_FORMAT={other:?} is not a log format: use json or text"
            ));
        }
    };
    let spans = tracer.map(|t| {
        hookline::telemetry::layer(t).with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("hookline", tracing::Level::INFO),
        )
    });
    tracing_subscriber::registry().with(logs).with(spans).init();
    Ok(())
}
