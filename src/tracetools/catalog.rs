//! The public traces `tracebench trace fetch` knows by name: where they live, what the
//! cached file is called, and the SHA-256 where one has been recorded.
//!
//! Sizes are only given where measured on a downloaded copy; `None` means unknown.

/// One public trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownTrace {
    /// The name users type (`mooncake-conversation`, ...).
    pub name: &'static str,
    /// The file name in the cache directory (and under a `--base-url` override).
    pub file_name: &'static str,
    /// The public download address.
    pub url: &'static str,
    /// Size in bytes, where known.
    pub size_bytes: Option<u64>,
    /// Lowercase hex SHA-256 of the file, where recorded.
    pub sha256: Option<&'static str>,
    /// One line on what it is.
    pub about: &'static str,
}

/// Every known trace, in the order `trace list` shows them.
pub const KNOWN_TRACES: [KnownTrace; 8] = [
    KnownTrace {
        name: "mooncake-conversation",
        file_name: "mooncake_conversation_trace.jsonl",
        url: "https://raw.githubusercontent.com/kvcache-ai/Mooncake/main/FAST25-release/traces/conversation_trace.jsonl",
        size_bytes: Some(3_029_533),
        sha256: Some("b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df"),
        about: "Mooncake (Kimi) chat, 12,031 requests over one hour, 512-token blocks",
    },
    KnownTrace {
        name: "mooncake-toolagent",
        file_name: "mooncake_toolagent_trace.jsonl",
        url: "https://raw.githubusercontent.com/kvcache-ai/Mooncake/main/FAST25-release/traces/toolagent_trace.jsonl",
        size_bytes: None,
        sha256: None,
        about: "Mooncake tool and agent calls, 23,608 requests, 512-token blocks",
    },
    KnownTrace {
        name: "mooncake-synthetic",
        file_name: "mooncake_synthetic_trace.jsonl",
        url: "https://raw.githubusercontent.com/kvcache-ai/Mooncake/main/FAST25-release/traces/synthetic_trace.jsonl",
        size_bytes: None,
        sha256: None,
        about: "Mooncake synthetic, 3,993 requests with Poisson arrivals",
    },
    KnownTrace {
        name: "mooncake-arxiv",
        file_name: "mooncake_arxiv_trace.jsonl",
        url: "https://raw.githubusercontent.com/kvcache-ai/Mooncake/main/FAST25-release/arxiv-trace/mooncake_trace.jsonl",
        size_bytes: None,
        sha256: None,
        about: "Mooncake trace of the original arXiv paper",
    },
    KnownTrace {
        name: "qwen-bailian-a",
        file_name: "qwen_traceA_blksz_16.jsonl",
        url: "https://media.githubusercontent.com/media/alibaba-edu/qwen-bailian-usagetraces-anon/refs/heads/main/qwen_traceA_blksz_16.jsonl",
        size_bytes: None,
        sha256: None,
        about: "Qwen-Bailian to-C chat, two hours, sessions, 16-token blocks (about 130 MB)",
    },
    KnownTrace {
        name: "qwen-bailian-b",
        file_name: "qwen_traceB_blksz_16.jsonl",
        url: "https://media.githubusercontent.com/media/alibaba-edu/qwen-bailian-usagetraces-anon/refs/heads/main/qwen_traceB_blksz_16.jsonl",
        size_bytes: None,
        sha256: None,
        about: "Qwen-Bailian to-B API use, two hours, sessions, 16-token blocks (about 130 MB)",
    },
    KnownTrace {
        name: "azure-2023-conv",
        file_name: "azure_llm_2023_conv.csv",
        url: "https://raw.githubusercontent.com/Azure/AzurePublicDataset/master/data/AzureLLMInferenceTrace_conv.csv",
        size_bytes: Some(719_188),
        sha256: Some("2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8"),
        about: "Azure LLM inference 2023, conversation, 19,366 requests over one hour",
    },
    KnownTrace {
        name: "azure-2023-code",
        file_name: "azure_llm_2023_code.csv",
        url: "https://raw.githubusercontent.com/Azure/AzurePublicDataset/master/data/AzureLLMInferenceTrace_code.csv",
        size_bytes: None,
        sha256: None,
        about: "Azure LLM inference 2023, code completion, one hour",
    },
];

/// The known trace called `name`, if any.
pub fn find(name: &str) -> Option<&'static KnownTrace> {
    KNOWN_TRACES.iter().find(|t| t.name == name)
}

/// The known names, comma-separated, for error messages.
pub fn known_names() -> String {
    KNOWN_TRACES
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}
