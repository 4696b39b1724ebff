//! Planning: a pure, seeded function from trace records and options to the instants at
//! which each request is sent. No clock and no tokio here.
