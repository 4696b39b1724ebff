//! The streaming OpenAI-compatible client: pooled HTTP, the SSE reader (bytes in, events
//! out) and the timing of one request's chunks.
