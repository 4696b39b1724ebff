//! `tracebench replay`: replay a trace against a server (or the built-in simulator with
//! `--sim`), write `run.json`, `requests.jsonl` and the reports into the output directory,
//! and print the console report. [`replay_once`] is one run without the console, shared
//! with `tracebench sweep`.
//!
//! Exit codes: 0 completed; 1 completed but `--max-failed-ratio` was exceeded; 2 usage or
//! input error; 130 interrupted (the partial reports are still written).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::EXIT_THRESHOLD_FAILED;
use super::prompts::PromptArgs;
use super::sim::SimReplayArgs;
use super::trace_input::{PreparedTrace, TraceInputArgs};
use crate::client::{
    Api, ApiKey, ChunkClock, Client, ClientConfig, ClientError, ConnectionCounts,
    DEFAULT_MAX_EVENT_BYTES, Endpoint, HttpClient, PromptBody,
};
use crate::metrics::Summary;
use crate::prompt::Tokenizer;
use crate::replay::calibrate::{self, Calibration};
use crate::replay::output::{self, PreparedDir};
use crate::replay::prompts::BuilderPrompts;
use crate::replay::{DispatchInput, DispatchOptions, Pacer, RunSetup};
use crate::report::{
    Connections, GoodputSlo, GoodputTerm, PLANNED_REQUESTS_KEY, RunInfo, SCHEMA_VERSION,
    parse_goodput_term,
};
use crate::schedule::{self, Arrivals, Plan, PlanOptions, SessionMode};
use crate::trace::TraceRecord;

/// Exit code of an interrupted run (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Length of the probe prompt used to measure the chat template overhead, tokens.
const CALIBRATION_PROBE_TOKENS: u32 = 64;

/// Replay a trace against an OpenAI-compatible server and report what it did.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Which trace and how to reshape its timeline.
    #[command(flatten)]
    pub trace: TraceInputArgs,

    /// Where to send and how.
    #[command(flatten)]
    pub target: TargetArgs,

    /// How prompts are made.
    #[command(flatten)]
    pub prompt: PromptArgs,

    /// When to send.
    #[command(flatten)]
    pub load: LoadArgs,

    /// What to write.
    #[command(flatten)]
    pub out: OutputArgs,

    /// The built-in simulator's settings (with `--sim`).
    #[command(flatten)]
    pub sim: SimReplayArgs,
}

/// The server and the requests.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// Server URL, with or without the trailing /v1 (http://127.0.0.1:8000/v1).
    #[arg(long, value_name = "URL", required_unless_present = "sim")]
    pub base_url: Option<String>,

    /// Replay against the built-in simulator, started in-process (see --sim-* options).
    #[arg(long, conflicts_with = "base_url")]
    pub sim: bool,

    /// Model id to request (default: the first id of GET /v1/models).
    #[arg(long = "model", id = "target_model", value_name = "ID")]
    pub model: Option<String>,

    /// Endpoint: chat (/v1/chat/completions) or completions (/v1/completions).
    #[arg(long, value_enum, default_value_t = Api::Chat)]
    pub api: Api,

    /// Extra request header NAME:VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,

    /// Environment variable holding the API key (sent as a bearer token, never written).
    #[arg(long, value_name = "NAME", default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,

    /// JSON object merged last into every request body (its keys replace ours).
    #[arg(long, value_name = "JSON")]
    pub extra_body: Option<String>,

    /// Do not measure the chat template overhead (prompts are then not corrected for it).
    #[arg(long)]
    pub no_calibrate: bool,

    /// Limit on establishing a connection, seconds.
    #[arg(
        long,
        value_name = "S",
        default_value_t = 10.0,
        allow_negative_numbers = true
    )]
    pub connect_timeout: f64,

    /// Limit from the send to the first output token, seconds (default: none).
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub first_token_timeout: Option<f64>,

    /// Limit on a whole request, seconds (default: none).
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub timeout: Option<f64>,

    /// Largest SSE event accepted, bytes; a larger one fails the request as a protocol error.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_EVENT_BYTES,
          allow_negative_numbers = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_event_bytes: usize,

    /// HTTP stack for the streamed requests: direct (the client's own keep-alive
    /// connections, opened before the run; plain http without a proxy) or reqwest (also
    /// used for https, proxies and credentials in the URL).
    #[arg(long, value_enum, value_name = "CLIENT", default_value = "direct")]
    pub http_client: HttpClient,

    /// Clock for the streamed chunks (TTFT, ITL, end-to-end): kernel (when the kernel
    /// received the bytes, `SO_TIMESTAMPNS`: the client's own lag in reading them is not
    /// counted; direct transport only, the read time otherwise) or read (when the client
    /// read them).
    #[arg(long, value_enum, value_name = "CLOCK", default_value = "kernel")]
    pub chunk_clock: ChunkClock,
}

/// When requests are sent.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Replace the trace's timestamps by synthetic arrivals at R requests/s (inf: all at once).
    #[arg(
        long,
        value_name = "R",
        conflicts_with = "concurrency",
        allow_negative_numbers = true
    )]
    pub request_rate: Option<f64>,

    /// Gamma shape of synthetic gaps: 1 is Poisson, below 1 burstier.
    #[arg(
        allow_negative_numbers = true,
        long,
        value_name = "B",
        default_value_t = 1.0,
        requires = "request_rate"
    )]
    pub burstiness: f64,

    /// Closed loop: N requests in flight, each slot sending the next as the last finishes.
    #[arg(long, value_name = "N", conflicts_with = "max_concurrency",
          allow_negative_numbers = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub concurrency: Option<usize>,

    /// Cap on requests in flight; requests over it wait in order (their wait is recorded).
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_concurrency: Option<usize>,

    /// Session turns: ignore (own timestamps), gate (after the parent finished), think
    /// (parent finished + think time). Default: gate for traces with sessions.
    #[arg(long, value_enum, value_name = "MODE")]
    pub sessions: Option<SessionMode>,

    /// With --sessions gate or think: build each follow-up turn once its parent finished,
    /// carrying the parent's generated text where the parent's prompt ends (blocks prompts;
    /// prompts then depend on the server's output).
    #[arg(long)]
    pub sessions_live: bool,

    /// Cap on the think time of --sessions think, seconds.
    #[arg(
        long,
        value_name = "S",
        default_value_t = 60.0,
        allow_negative_numbers = true
    )]
    pub max_think: f64,

    /// Prompts built ahead of the send loop.
    #[arg(long, value_name = "N", default_value_t = 256, allow_negative_numbers = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub lookahead: usize,

    /// Idle connections opened before the run and kept open while it lasts, so that a
    /// request rarely connects on its way out (default: the most requests the plan sends
    /// within any 250 ms, 4 to 1,024, at most --max-concurrency; 0: connect on demand).
    /// Applies to --http-client direct.
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1024))]
    pub warm_connections: Option<usize>,

    /// Threads for sending and reading streams (default: the cores this process may use,
    /// `taskset` included). With one, sends and streams share one thread.
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub client_threads: Option<usize>,

    /// After Ctrl-C, how long requests in flight may finish before they are cancelled, s.
    #[arg(
        long,
        value_name = "S",
        default_value_t = 10.0,
        allow_negative_numbers = true
    )]
    pub grace: f64,
}

/// What is written.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Output directory (default: a new time-stamped folder under tracebench-out/). One
    /// that already holds a run is refused unless --force.
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Overwrite the run already in --output DIR (and the --save-tics FILE).
    #[arg(long)]
    pub force: bool,

    /// No progress bars (they are off anyway when stdout is not a terminal).
    #[arg(long)]
    pub no_progress: bool,

    /// Exit with code 1 when more than this share (0–1) of sent requests failed. Without
    /// it, a run exits 1 only when every sent request failed (`--max-failed-ratio 1` allows
    /// even that).
    #[arg(long, value_name = "F", allow_negative_numbers = true)]
    pub max_failed_ratio: Option<f64>,

    /// Also write the seed's raw result format to FILE.
    #[arg(long, value_name = "FILE")]
    pub save_tics: Option<PathBuf>,

    /// Goodput objectives in ms, vLLM's form: ttft:500 tpot:50 e2el:10000.
    #[arg(long, value_name = "METRIC:MS", num_args = 1.., value_parser = parse_goodput_term)]
    pub goodput: Vec<GoodputTerm>,
}

/// What one run produced.
#[derive(Debug)]
pub struct ReplayReport {
    /// Its output directory.
    pub dir: PathBuf,
    /// Its summary.
    pub summary: Summary,
    /// It was interrupted.
    pub partial: bool,
}

/// Runs `tracebench replay`: every flag checked and the trace loaded before the output
/// directory is made, so a usage error leaves nothing behind.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    check_args(&args)?;
    output::check_unused(args.out.output.as_deref(), args.out.force)?;
    if let Some(tics) = &args.out.save_tics {
        let made = args.out.output.as_deref();
        output::check_new_file_in(tics, "--save-tics", args.out.force, made)?;
    }
    let trace = args.trace.load()?;
    let plan = make_plan(&trace.records, &args.load, args.prompt.seed)?;

    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let dir = output::prepare_dir(args.out.output.as_deref(), args.out.force)?;
        let stop = CancellationToken::new();
        crate::replay::stop_on_signals(stop.clone(), secs("--grace", args.load.grace)?);
        let report = match replay_once(&args, trace, plan, &dir, stop).await {
            Err(err) if err.is::<InterruptedBeforeStart>() => {
                eprintln!("{err}");
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
            report => report?,
        };
        print!("{}", crate::report::console::render(&report.summary));
        eprintln!("results in {}", report.dir.display());
        Ok(ExitCode::from(exit_code(&args.out, &report)))
    })
}

/// Every check of the flags that needs neither the trace nor the server.
pub fn check_args(args: &ReplayArgs) -> anyhow::Result<()> {
    check_prompt_api(args)?;
    args.trace.timeline_options()?;
    let target = &args.target;
    if let Some(url) = &target.base_url {
        Endpoint::parse(url)?;
    }
    extra_body(target)?;
    limit_secs("--connect-timeout", target.connect_timeout)?;
    opt_limit_secs("--first-token-timeout", target.first_token_timeout)?;
    opt_limit_secs("--timeout", target.timeout)?;

    let load = &args.load;
    secs("--max-think", load.max_think)?;
    if load.sessions_live && load.sessions == Some(SessionMode::Ignore) {
        anyhow::bail!(
            "--sessions-live needs --sessions gate or think (a turn is built from its parent's \
             output), not --sessions ignore"
        );
    }
    secs("--grace", load.grace)?;
    if let Some(ratio) = args.out.max_failed_ratio
        && !(0.0..=1.0).contains(&ratio)
    {
        anyhow::bail!("--max-failed-ratio {ratio}: expected a share from 0 to 1");
    }
    Ok(())
}

/// Without `--max-failed-ratio`, the failed share above which a run exits 1: just under
/// 1, so a run in which nothing succeeded is never green.
const ALL_FAILED_SHARE: f64 = 1.0 - 1e-9;

/// The exit code a finished run earns.
pub fn exit_code(out: &OutputArgs, report: &ReplayReport) -> u8 {
    let failed_share = report.summary.failure_share.unwrap_or(0.0);
    if report.partial {
        EXIT_INTERRUPTED
    } else if failed_share > out.max_failed_ratio.unwrap_or(ALL_FAILED_SHARE) {
        EXIT_THRESHOLD_FAILED
    } else {
        0
    }
}

/// One replay of `trace` by `plan` into `dir` (already prepared), without the console
/// report. If it fails before writing anything, a `dir` it made is removed again.
pub async fn replay_once(
    args: &ReplayArgs,
    trace: PreparedTrace,
    plan: Plan,
    dir: &PreparedDir,
    stop: CancellationToken,
) -> anyhow::Result<ReplayReport> {
    let report = replay_into(args, trace, plan, &dir.path, stop).await;
    if report.is_err() {
        dir.discard_if_empty();
    }
    report
}

async fn replay_into(
    args: &ReplayArgs,
    prepared: PreparedTrace,
    plan: Plan,
    dir: &Path,
    stop: CancellationToken,
) -> anyhow::Result<ReplayReport> {
    raise_open_files_limit();
    let (sim, base_url) = start_target(args)?;
    let (client, tokenizer, builder, calibration) = tokio::select! {
        biased;
        _ = stop.cancelled() => return Err(InterruptedBeforeStart.into()),
        ready = prepare_requests(args, &prepared, &base_url) => ready?,
    };

    let mut run_info = run_info(
        args,
        &prepared,
        &client,
        tokenizer.as_ref(),
        &calibration,
        &plan,
    );
    let client = Arc::new(client);
    let setup = RunSetup {
        input: DispatchInput {
            plan: Arc::new(plan),
            records: prepared.records.into(),
            prompts: Arc::new(BuilderPrompts {
                builder,
                overhead_tokens: calibration.overhead_tokens,
            }),
            transport: client.clone(),
            options: dispatch_options(&args.load, tokenizer)?,
        },
        dir: dir.to_path_buf(),
        run_info: run_info.clone(),
        progress: !args.out.no_progress && std::io::stdout().is_terminal(),
    };
    // The calibration's connection is not the run's: counted from here.
    let before = client.connection_counts();
    let result = crate::replay::execute_on(setup, stop, args.load.client_threads).await?;
    if let Some(sim) = sim {
        let _ = sim.shutdown().await;
    }
    record_connections(dir, &mut run_info, &client, before);

    let summary =
        crate::report::write_run_reports(dir, &run_info, &result.records, result.partial)?;
    if let Some(path) = &args.out.save_tics {
        crate::report::write_tics(path, &result.records)?;
    }
    if let Some(err) = result.write_error {
        return Err(err).context("requests.jsonl is incomplete");
    }
    Ok(ReplayReport {
        dir: dir.to_path_buf(),
        summary,
        partial: result.partial,
    })
}

/// At the end of a run on the direct transport: logs how many connections it opened ahead
/// of the sends and on the send path, and writes them into `run.json` (and so into the
/// reports written after it). Nothing with reqwest, which does not count its connections.
/// A failed rewrite is logged: the `run.json` written at the start stays, and the reports
/// are still written.
fn record_connections(dir: &Path, run: &mut RunInfo, client: &Client, before: ConnectionCounts) {
    if !client.is_direct() {
        return;
    }
    let after = client.connection_counts();
    let connections = Connections {
        opened_ahead: after.ahead.saturating_sub(before.ahead),
        opened_on_send: after.on_send.saturating_sub(before.on_send),
    };
    tracing::info!(
        "connections: {} opened ahead of the sends, {} by a send",
        connections.opened_ahead,
        connections.opened_on_send
    );
    run.connections = Some(connections);
    if let Some(config) = run.config.as_object_mut() {
        let used = serde_json::to_value(client.chunk_clock_used()).unwrap_or_default();
        config.insert("chunk_clock_used".to_string(), used);
    }
    if let Err(err) = output::rewrite_run_info(dir, run) {
        tracing::warn!("run.json keeps no connection counts: {err}");
    }
}

/// Starts the simulator for `--sim`; returns it and the base URL to use.
fn start_target(args: &ReplayArgs) -> anyhow::Result<(Option<crate::sim::SimHandle>, String)> {
    if !args.target.sim {
        let url = args
            .target
            .base_url
            .clone()
            .context("--base-url URL is required")?;
        return Ok((None, url));
    }
    let tokenizer = args.prompt.tokenizer(Some(&args.sim.model))?;
    let config = args.sim.to_config(Some(tokenizer))?;
    let sim = crate::sim::spawn(config).context("cannot start the simulator")?;
    let url = sim.base_url();
    eprintln!("simulator listening on {url}");
    Ok((Some(sim), url))
}

/// `--extra-body`, parsed.
fn extra_body(
    target: &TargetArgs,
) -> anyhow::Result<Option<serde_json::Map<String, serde_json::Value>>> {
    let Some(text) = &target.extra_body else {
        return Ok(None);
    };
    let body = serde_json::from_str(text)
        .with_context(|| format!("--extra-body {text:?}: expected a JSON object"))?;
    Ok(Some(body))
}

/// A stop (Ctrl-C, SIGTERM) came while the server was still being asked about itself:
/// nothing was sent, nothing is written.
#[derive(Debug, thiserror::Error)]
#[error("interrupted before the first request: nothing was sent")]
pub struct InterruptedBeforeStart;

/// How long each question to the server before the run (the model list, the calibration
/// probe) may take when `--timeout` does not say: a server that accepts and never answers
/// must not hold the run forever.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The client (with the model), the tokenizer, the prompt builder and the calibration:
/// everything asked of the server before the first request.
async fn prepare_requests(
    args: &ReplayArgs,
    prepared: &PreparedTrace,
    base_url: &str,
) -> anyhow::Result<(
    Client,
    Arc<dyn Tokenizer>,
    crate::prompt::PromptBuilder,
    Calibration,
)> {
    let client = build_client(&args.target, base_url).await?;
    let tokenizer = args.prompt.tokenizer(Some(&client.config().model))?;
    let builder = args.prompt.builder(tokenizer.clone(), &prepared.records)?;

    let limit = setup_limit(client.config());
    let calibration = tokio::time::timeout(limit, run_calibration(&args.target, &client, &builder))
        .await
        .unwrap_or_else(|_| {
            let error = format!("the probe got no answer within {limit:?}");
            Calibration::failed(CALIBRATION_PROBE_TOKENS, error)
        });
    eprintln!("{}", calibration.describe());
    Ok((client, tokenizer, builder, calibration))
}

/// [`SETUP_TIMEOUT`], or `--timeout` when that is shorter.
fn setup_limit(config: &ClientConfig) -> Duration {
    config
        .total_timeout
        .map_or(SETUP_TIMEOUT, |total| total.min(SETUP_TIMEOUT))
}

async fn build_client(target: &TargetArgs, base_url: &str) -> anyhow::Result<Client> {
    let mut config = ClientConfig {
        endpoint: Endpoint::parse(base_url)?,
        api: target.api,
        model: target.model.clone().unwrap_or_default(),
        headers: target.headers.clone(),
        api_key: ApiKey::from_env(&target.api_key_env),
        extra_body: extra_body(target)?,
        connect_timeout: limit_secs("--connect-timeout", target.connect_timeout)?,
        first_token_timeout: opt_limit_secs("--first-token-timeout", target.first_token_timeout)?,
        total_timeout: opt_limit_secs("--timeout", target.timeout)?,
        max_event_bytes: target.max_event_bytes,
        http_client: target.http_client,
        chunk_clock: target.chunk_clock,
    };
    if target.model.is_none() {
        let client = Client::new(config.clone())?;
        let limit = setup_limit(&config);
        config.model = match tokio::time::timeout(limit, client.first_model()).await {
            Ok(Ok(model)) => model,
            Ok(Err(err)) => return Err(unreachable_or(err, &client).await),
            Err(_) => anyhow::bail!(
                "the server at {} did not answer GET /v1/models within {limit:?} (pass --model \
                 if it does not serve that endpoint)",
                config.endpoint.shown()
            ),
        };
        tracing::info!("model: {}", config.model);
    }
    Ok(Client::new(config)?)
}

/// The server's address could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("the server is not reachable at {url}: {cause}")]
pub struct Unreachable {
    /// The server root, credentials hidden.
    pub url: String,
    /// Why the connection failed.
    pub cause: std::io::Error,
}

/// Classifies a failed `GET /v1/models`: when a plain TCP connection to the server's
/// address fails too, the server is not reachable (and `--model` would not help), so the
/// error says that with the connection's own error; otherwise it is `err` as it is.
async fn unreachable_or(err: ClientError, client: &Client) -> anyhow::Error {
    let config = client.config();
    let Ok(root) = reqwest::Url::parse(&config.endpoint.root) else {
        return err.into();
    };
    match tcp_connect(&root, config.connect_timeout).await {
        Err(cause) => Unreachable {
            url: config.endpoint.shown(),
            cause,
        }
        .into(),
        Ok(()) => err.into(),
    }
}

/// Opens (and closes) one TCP connection to the host and port of `url`.
async fn tcp_connect(url: &reqwest::Url, timeout: Duration) -> std::io::Result<()> {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(80);
    let connect = tokio::net::TcpStream::connect((host, port));
    match tokio::time::timeout(timeout, connect).await {
        Ok(stream) => stream.map(drop),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no connection within {timeout:?} (--connect-timeout)"),
        )),
    }
}

/// `--prompt-as-tokens` sends token ids, which only `/v1/completions` accepts.
fn check_prompt_api(args: &ReplayArgs) -> anyhow::Result<()> {
    if args.prompt.prompt_as_tokens && args.target.api == Api::Chat {
        anyhow::bail!("--prompt-as-tokens needs --api completions (chat messages take text)");
    }
    Ok(())
}

async fn run_calibration(
    target: &TargetArgs,
    client: &Client,
    builder: &crate::prompt::PromptBuilder,
) -> Calibration {
    // One block of its own id, so `--prompt blocks` can build it too.
    let mut probe_record = TraceRecord::new(Duration::ZERO, CALIBRATION_PROBE_TOKENS, 1, 0);
    probe_record.prefix = Some(crate::trace::PrefixBlocks {
        hash_ids: vec![u64::MAX],
        block_size: CALIBRATION_PROBE_TOKENS,
    });
    let probe = match builder.build(&probe_record, 0) {
        Ok(probe) => probe,
        Err(err) => {
            tracing::warn!("cannot build the calibration probe: {err}");
            return Calibration::none(CALIBRATION_PROBE_TOKENS);
        }
    };
    if target.no_calibrate {
        return Calibration::none(probe.tokens);
    }
    let body = match probe.token_ids {
        Some(ids) => PromptBody::TokenIds(ids),
        None => PromptBody::Text(probe.text),
    };
    calibrate::calibrate(client, &body, probe.tokens).await
}

/// The plan: arrivals from the flags, sessions defaulting to `gate` when the trace has any.
pub fn make_plan(records: &[TraceRecord], load: &LoadArgs, seed: u64) -> anyhow::Result<Plan> {
    let arrivals = match (load.request_rate, load.concurrency) {
        (Some(rate), _) => Arrivals::Synthetic {
            rate_per_s: rate,
            burstiness: load.burstiness,
        },
        (None, Some(_)) => Arrivals::Synthetic {
            rate_per_s: f64::INFINITY,
            burstiness: 1.0,
        },
        (None, None) => Arrivals::Trace,
    };
    let sessions = load
        .sessions
        .unwrap_or(match schedule::has_sessions(records) {
            true => SessionMode::Gate,
            false => SessionMode::Ignore,
        });
    if load.sessions_live && sessions == SessionMode::Ignore {
        anyhow::bail!(
            "--sessions-live: the trace has no sessions (no parent_chat_id links) and \
             --sessions is ignore, so no turn has a parent's output to carry"
        );
    }
    let options = PlanOptions {
        arrivals,
        sessions,
        max_think: secs("--max-think", load.max_think)?,
        seed,
    };
    let plan = schedule::plan(records, &options)?;
    let counts = plan.session_counts;
    if counts.children + counts.missing_parents > 0 {
        tracing::info!(
            "sessions {sessions:?}: {} follow-up turns, {} whose parent is not in the trace",
            counts.children,
            counts.missing_parents
        );
    }
    Ok(plan)
}

fn dispatch_options(
    load: &LoadArgs,
    tokenizer: Arc<dyn Tokenizer>,
) -> anyhow::Result<DispatchOptions> {
    Ok(DispatchOptions {
        max_concurrency: load.concurrency.or(load.max_concurrency),
        lookahead: load.lookahead,
        grace: secs("--grace", load.grace)?,
        lead_in: Duration::from_millis(100),
        pacer: Pacer::Precise,
        tokenizer: Some(tokenizer),
        sessions_live: load.sessions_live,
        warm_connections: load.warm_connections,
    })
}

fn run_info(
    args: &ReplayArgs,
    prepared: &PreparedTrace,
    client: &Client,
    tokenizer: &dyn Tokenizer,
    calibration: &Calibration,
    plan: &Plan,
) -> RunInfo {
    let load = &args.load;
    let target = &args.target;
    RunInfo {
        schema_version: SCHEMA_VERSION,
        tracebench_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: chrono::Local::now().to_rfc3339(),
        trace: args.trace.trace.clone(),
        base_url: match target.sim {
            true => format!("sim {}", client.config().endpoint.shown()),
            false => client.config().endpoint.shown(),
        },
        model: client.config().model.clone(),
        tokenizer: tokenizer.name().to_string(),
        prompt_mode: args.prompt.prompt.as_str().to_string(),
        seed: args.prompt.seed,
        goodput: GoodputSlo::from_terms(&args.out.goodput),
        max_concurrency: load.concurrency.or(load.max_concurrency),
        calibration: serde_json::to_value(calibration).ok(),
        config: json!({
            PLANNED_REQUESTS_KEY: plan.entries.len(),
            "trace": prepared.summary(),
            "api": target.api,
            "headers": target.headers.iter().map(|h| h.split(':').next()).collect::<Vec<_>>(),
            "extra_body": target.extra_body,
            "request_rate": load.request_rate,
            "burstiness": load.burstiness,
            "concurrency": load.concurrency,
            "sessions": plan.sessions,
            "session_counts": plan.session_counts,
            "max_think_s": load.max_think,
            "connect_timeout_s": target.connect_timeout,
            "first_token_timeout_s": target.first_token_timeout,
            "timeout_s": target.timeout,
            "max_event_bytes": target.max_event_bytes,
            "http_client": target.http_client,
            "http_client_used": match client.is_direct() {
                true => HttpClient::Direct,
                false => HttpClient::Reqwest,
            },
            "chunk_clock": target.chunk_clock,
            // Rewritten at the end of the run (`record_connections`), when every
            // connection is known.
            "chunk_clock_used": client.chunk_clock_used(),
            "warm_connections": load.warm_connections,
            "grace_s": load.grace,
            "client_threads": load
                .client_threads
                .unwrap_or_else(crate::replay::default_client_threads),
        }),
        // Known at the end of the run only (`record_connections`).
        connections: None,
    }
}

/// A duration from a seconds flag, refusing negatives and NaN.
fn secs(flag: &str, seconds: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(seconds)
        .with_context(|| format!("{flag} {seconds}: expected a non-negative number of seconds"))
}

/// A time limit from a seconds flag: zero would fail every request, so it is refused too.
fn limit_secs(flag: &str, seconds: f64) -> anyhow::Result<Duration> {
    let limit = secs(flag, seconds)?;
    if limit.is_zero() {
        anyhow::bail!(
            "{flag} {seconds}: expected a positive number of seconds (0 would fail every request)"
        );
    }
    Ok(limit)
}

fn opt_limit_secs(flag: &str, seconds: Option<f64>) -> anyhow::Result<Option<Duration>> {
    seconds.map(|s| limit_secs(flag, s)).transpose()
}

/// Raises the soft open-files limit to the hard one: every stream in flight holds a socket.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!("open-files limit: {limit}"),
        Err(err) => tracing::warn!("cannot raise the open-files limit: {err}"),
    }
}
