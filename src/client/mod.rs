//! The streaming OpenAI-compatible client: pooled HTTP, the SSE reader (bytes in, events
//! out) and the timing of one request's chunks.
//!
//! [`sse`] knows the event-stream format only; [`chunk`] knows what an OpenAI chunk means;
//! [`stream`] times one response from its reads; [`http`] owns request bodies, timeouts and
//! reqwest's pool; [`direct`] the client's own keep-alive connections. Only [`http`] and
//! [`direct`] touch the network.

pub mod arrival;
pub mod chunk;
pub mod direct;
pub mod http;
pub mod sse;
pub mod stream;

pub use direct::ConnectionCounts;
pub use http::{
    Api, ApiKey, ChunkClock, Client, ClientConfig, ClientError, Endpoint, Exchange, HttpClient,
    PromptBody, Tag,
};
pub use sse::{DEFAULT_MAX_EVENT_BYTES, SseError, SseEvent, SseReader};
pub use stream::{Flow, OutputHook, StreamResult, StreamTimer};
