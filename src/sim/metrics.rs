//! The simulator's counters and gauges, and their rendering as Prometheus text with vLLM's
//! metric names (`vllm:num_requests_running`, `vllm:prefix_cache_hits_total`, ...), so
//! tools built for vLLM read them. Counters are lock-free atomics shared by all tasks.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters and gauges of one simulated server.
#[derive(Debug, Default)]
pub struct SimMetrics {
    /// Requests running (engine: admitted to the batch; fixed: in flight).
    pub running: AtomicU64,
    /// Requests queued for admission (engine mode only).
    pub waiting: AtomicU64,
    /// KV cache usage in millionths of the capacity.
    pub kv_usage_ppm: AtomicU64,
    /// Prompt tokens looked up in the prefix cache.
    pub prefix_cache_queries: AtomicU64,
    /// Prompt tokens found in the prefix cache.
    pub prefix_cache_hits: AtomicU64,
    /// Prompt tokens of admitted requests.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated.
    pub generation_tokens: AtomicU64,
    /// Requests that finished all their tokens.
    pub requests_finished: AtomicU64,
}

impl SimMetrics {
    /// Adds `n` to a counter.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The prefix cache hit ratio so far (hits / queries, in tokens), 0 before any query.
    pub fn prefix_hit_ratio(&self) -> f64 {
        let queries = self.prefix_cache_queries.load(Ordering::Relaxed);
        let hits = self.prefix_cache_hits.load(Ordering::Relaxed);
        if queries == 0 {
            0.0
        } else {
            hits as f64 / queries as f64
        }
    }

    /// Prometheus text exposition (format 0.0.4) for model `model`.
    pub fn render(&self, model: &str) -> String {
        let labels = format!("{{model_name=\"{}\",engine=\"0\"}}", escape_label(model));
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{labels} {value}\n"
            );
        };
        metric(
            "vllm:num_requests_running",
            "gauge",
            "Number of requests in model execution batches.",
            get(&self.running).to_string(),
        );
        metric(
            "vllm:num_requests_waiting",
            "gauge",
            "Number of requests waiting to be processed.",
            get(&self.waiting).to_string(),
        );
        metric(
            "vllm:kv_cache_usage_perc",
            "gauge",
            "KV-cache usage. 1 means 100 percent usage.",
            format!("{}", get(&self.kv_usage_ppm) as f64 / 1e6),
        );
        metric(
            "vllm:prefix_cache_queries_total",
            "counter",
            "Prefix cache queries, in terms of number of queried tokens.",
            get(&self.prefix_cache_queries).to_string(),
        );
        metric(
            "vllm:prefix_cache_hits_total",
            "counter",
            "Prefix cache hits, in terms of number of cached tokens.",
            get(&self.prefix_cache_hits).to_string(),
        );
        metric(
            "vllm:prompt_tokens_total",
            "counter",
            "Number of prefill tokens processed.",
            get(&self.prompt_tokens).to_string(),
        );
        metric(
            "vllm:generation_tokens_total",
            "counter",
            "Number of generation tokens processed.",
            get(&self.generation_tokens).to_string(),
        );
        metric(
            "vllm:request_success_total",
            "counter",
            "Count of successfully processed requests.",
            get(&self.requests_finished).to_string(),
        );
        out
    }
}

/// Escapes a Prometheus label value.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_vllm_names_with_total_suffix_on_counters() {
        let m = SimMetrics::default();
        SimMetrics::add(&m.prefix_cache_hits, 32);
        m.kv_usage_ppm.store(250_000, Ordering::Relaxed);
        let text = m.render("my\"model");
        assert!(text.contains(
            "vllm:prefix_cache_hits_total{model_name=\"my\\\"model\",engine=\"0\"} 32\n"
        ));
        assert!(text.contains("# TYPE vllm:prefix_cache_queries_total counter\n"));
        assert!(
            text.contains(
                "vllm:kv_cache_usage_perc{model_name=\"my\\\"model\",engine=\"0\"} 0.25\n"
            )
        );
        assert!(text.contains("vllm:num_requests_waiting{"));
    }
}
