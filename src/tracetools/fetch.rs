//! Downloading public traces into the cache directory.
//!
//! A download goes to `NAME.part` and is renamed only once complete and (where a SHA-256 is
//! recorded) verified, so a half file is never taken for a whole one. An interrupted
//! download resumes from the `.part` file with an HTTP range request; a server that ignores
//! the range gets a clean restart. Synchronous (ureq): callable from any thread, with or
//! without a tokio runtime around.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::catalog::{self, KnownTrace};

/// Environment variable overriding the cache directory.
pub const TRACE_DIR_ENV: &str = "TRACEBENCH_TRACE_DIR";
/// Environment variable overriding the download base URL (tests point it at 127.0.0.1).
pub const BASE_URL_ENV: &str = "TRACEBENCH_TRACE_BASE_URL";

/// No byte for this long means the connection is dead.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting takes at most this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Copy buffer size.
const CHUNK_BYTES: usize = 64 * 1024;

/// Where to cache and where to download from.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Cache directory; `None` takes `TRACEBENCH_TRACE_DIR` or `~/.cache/tracebench/traces`.
    pub cache_dir: Option<PathBuf>,
    /// Base URL; `None` takes `TRACEBENCH_TRACE_BASE_URL` or the trace's public address.
    /// With a base URL the file is fetched from `BASE/FILE_NAME`.
    pub base_url: Option<String>,
    /// No progress bar and no "fetching" line.
    pub quiet: bool,
}

/// A download that failed. The `.part` file is kept unless it is known to be wrong.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The name is not in the catalog.
    #[error("{name}: no such file, and not a known trace name (known: {known})")]
    UnknownName {
        /// What was asked for.
        name: String,
        /// The known names.
        known: String,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP status {status}")]
    Status {
        /// The address.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The connection failed or broke off.
    #[error("{url}: download failed: {reason} (run again to resume)")]
    Network {
        /// The address.
        url: String,
        /// What the transport said.
        reason: String,
    },
    /// Fewer bytes arrived than the server announced.
    #[error("{url}: download ended after {got} of {expected} bytes (run again to resume)")]
    Incomplete {
        /// The address.
        url: String,
        /// Bytes in the `.part` file.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// The file's SHA-256 is not the recorded one; the `.part` file was deleted.
    #[error("{name}: SHA-256 mismatch: expected {expected}, got {actual} (partial file deleted)")]
    Checksum {
        /// The trace name.
        name: String,
        /// The recorded digest.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A local file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's error.
        source: io::Error,
    },
}

/// The cache directory these options select.
pub fn cache_dir(opts: &FetchOptions) -> PathBuf {
    if let Some(dir) = &opts.cache_dir {
        return dir.clone();
    }
    if let Some(dir) = std::env::var_os(TRACE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("tracebench").join("traces")
}

/// Where `trace` is (or will be) cached.
pub fn cached_path(trace: &KnownTrace, opts: &FetchOptions) -> PathBuf {
    cache_dir(opts).join(trace.file_name)
}

/// The address `trace` is downloaded from.
pub fn url_for(trace: &KnownTrace, opts: &FetchOptions) -> String {
    let base = opts
        .base_url
        .clone()
        .or_else(|| std::env::var(BASE_URL_ENV).ok().filter(|b| !b.is_empty()));
    match base {
        Some(base) => format!("{}/{}", base.trim_end_matches('/'), trace.file_name),
        None => trace.url.to_string(),
    }
}

/// An existing file as is; a known name from the cache, fetched first if absent.
pub fn resolve(trace: &str, opts: &FetchOptions) -> anyhow::Result<PathBuf> {
    let path = Path::new(trace);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let Some(known) = catalog::find(trace) else {
        return Err(FetchError::UnknownName {
            name: trace.to_string(),
            known: catalog::known_names(),
        }
        .into());
    };

    let cached = cached_path(known, opts);
    if cached.is_file() {
        return Ok(cached);
    }
    if !opts.quiet {
        eprintln!(
            "{}: not cached yet, fetching into {}",
            known.name,
            cached.display()
        );
    }
    Ok(fetch(known, opts)?)
}

/// Downloads `trace` into the cache unless it is there; returns the cached path.
pub fn fetch(trace: &KnownTrace, opts: &FetchOptions) -> Result<PathBuf, FetchError> {
    let dest = cached_path(trace, opts);
    if dest.is_file() {
        return Ok(dest);
    }
    let dir = cache_dir(opts);
    fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;

    let part = part_path(&dest);
    let url = url_for(trace, opts);
    download(&url, &part, opts.quiet)?;
    verify(trace, &part)?;
    fs::rename(&part, &dest).map_err(|e| io_error(&dest, e))?;
    Ok(dest)
}

/// `FILE.part`, beside the destination.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// Downloads `url` into `part`, resuming from its current length where the server allows.
fn download(url: &str, part: &Path, quiet: bool) -> Result<(), FetchError> {
    let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let response = request(url, have)?;

    // 206: the server continues where we stopped; anything else starts from zero.
    let resumed = response.status() == 206;
    let body_len = response
        .header("Content-Length")
        .and_then(|v| v.parse::<u64>().ok());
    let start = if resumed { have } else { 0 };
    let expected = body_len.map(|n| n + start);
    let mut file = open_part(part, resumed)?;

    let bar = progress_bar(expected, start, quiet);
    let copied = copy_body(response.into_reader(), &mut file, &bar, url, part);
    bar.finish_and_clear();
    let got = start + copied?;
    match expected {
        Some(expected) if got != expected => Err(FetchError::Incomplete {
            url: url.to_string(),
            got,
            expected,
        }),
        _ => Ok(()),
    }
}

/// Sends the GET, with a range header when resuming; a refused range restarts cleanly.
fn request(url: &str, have: u64) -> Result<ureq::Response, FetchError> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(READ_TIMEOUT)
        .build();
    let mut req = agent.get(url).set("Accept-Encoding", "identity");
    if have > 0 {
        req = req.set("Range", &format!("bytes={have}-"));
    }
    match req.call() {
        Ok(response) => Ok(response),
        Err(ureq::Error::Status(416, _)) if have > 0 => request(url, 0),
        Err(ureq::Error::Status(status, _)) => Err(FetchError::Status {
            url: url.to_string(),
            status,
        }),
        Err(err) => Err(FetchError::Network {
            url: url.to_string(),
            reason: err.to_string(),
        }),
    }
}

fn open_part(part: &Path, append: bool) -> Result<File, FetchError> {
    let mut options = OpenOptions::new();
    options.create(true);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    options.open(part).map_err(|e| io_error(part, e))
}

fn progress_bar(total: Option<u64>, done: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::no_length(),
    };
    let template = "{bytes}/{total_bytes} {wide_bar} {bytes_per_sec} eta {eta}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_position(done);
    bar
}

/// Copies the body to the file; returns the bytes written.
fn copy_body(
    mut body: impl Read,
    file: &mut File,
    bar: &ProgressBar,
    url: &str,
    part: &Path,
) -> Result<u64, FetchError> {
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut written = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = file.flush();
                return Err(FetchError::Network {
                    url: url.to_string(),
                    reason: e.to_string(),
                });
            }
        };
        file.write_all(&buf[..n]).map_err(|e| io_error(part, e))?;
        written += n as u64;
        bar.inc(n as u64);
    }
    file.flush().map_err(|e| io_error(part, e))?;
    Ok(written)
}

/// Checks the SHA-256 where one is recorded; deletes the `.part` file on a mismatch.
fn verify(trace: &KnownTrace, part: &Path) -> Result<(), FetchError> {
    let Some(expected) = trace.sha256 else {
        return Ok(());
    };
    let actual = sha256_file(part)?;
    if actual == expected {
        return Ok(());
    }
    let _ = fs::remove_file(part);
    Err(FetchError::Checksum {
        name: trace.name.to_string(),
        expected: expected.to_string(),
        actual,
    })
}

/// Lowercase hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = file.read(&mut buf).map_err(|e| io_error(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn io_error(path: &Path, source: io::Error) -> FetchError {
    FetchError::Io {
        path: path.display().to_string(),
        source,
    }
}
