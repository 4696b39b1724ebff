//! The simulated OpenAI-compatible server: an axum app plus `serve(listener, shutdown)`,
//! with fixed and engine timing models and fault injection.
